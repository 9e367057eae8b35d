"""Shared reservations, the pure parts: a replica's view of the shared ledger (ReservationBook.observe),
admission split in plan / commit / refuse, journal names per replica, replica names, secret files."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ralex.budget import ReservationBook
from ralex.config import ConfigError, read_secret_files
from ralex.engine import Rejected
from ralex.ledger.shared import money
from ralex.proxy.runtime import journal_path
from ralex.proxy.settings import REPLICA_ID, replica_name
from tests.unit.test_engine import body, setup

DAY = date(2026, 11, 26)


def test_observed_holds_of_other_replicas_count_beside_this_replicas_own():
    book = ReservationBook(DAY, 1.0, {"ana": 0.2})
    book.take("r1", 0.3, "ana")
    book.observe(DAY, spent=1.5, held=0.8, by_key={"ana": (0.25, 0.5)})

    assert book.spent == 1.5
    assert book.reserved == pytest.approx(0.8)  # 0.3 its own + 0.5 the others'
    assert book.reserved_by("ana") == pytest.approx(0.5)
    assert book.spent_by_key["ana"] == 0.25
    assert not book.fits(3.21, 5.0)
    assert book.fits(2.7, 5.0)


def test_an_observation_of_another_day_changes_nothing_and_a_new_day_forgets_the_others():
    book = ReservationBook(DAY, 1.0)
    book.observe(date(2026, 11, 25), spent=9.0, held=9.0, by_key={})
    assert (book.spent, book.reserved) == (1.0, 0.0)
    book.observe(DAY, spent=1.0, held=2.0, by_key={"ana": (0.0, 2.0)})
    book.roll_over(date(2026, 11, 27), 0.0)
    assert (book.spent, book.reserved, book.reserved_by("ana")) == (0.0, 0.0, 0.0)


def test_plan_holds_nothing_commit_holds_and_refuse_is_a_402_naming_the_fix():
    s = setup(limit=5.0)
    plan = s.engine.plan(body(max_tokens=500))
    assert s.engine.snapshot().reserved == 0.0
    assert s.engine.in_flight == {}

    flight = s.engine.commit(plan)
    assert s.engine.snapshot().reserved == pytest.approx(plan.decision.reserve)
    assert flight.key == plan.key == flight.headers["x-ralex-request-id"]
    assert [str(h.request_id) for h in s.holds] == [plan.key]

    other = s.engine.plan(body(max_tokens=500))
    s.engine.observe(s.engine.today(), spent=4.99999, held=plan.decision.reserve, by_key={})
    with pytest.raises(Rejected) as refused:
        s.engine.refuse(other)
    assert refused.value.status == 402
    assert "ralexctl budget set" in refused.value.message
    assert s.rows[-1].status == "refused"


def test_each_replica_keeps_its_own_journal_next_to_the_shared_name():
    base = Path("/var/lib/ralex/spool/ledger-journal.jsonl")
    assert journal_path(base, None) == base
    assert journal_path(base, "proxy-2") == Path("/var/lib/ralex/spool/ledger-journal.proxy-2.jsonl")
    assert journal_path(base, "proxy-1") != journal_path(base, "proxy-2")


@given(st.text(max_size=300))
def test_any_host_name_makes_a_valid_replica_name(host: str):
    name = replica_name(host)
    assert REPLICA_ID.fullmatch(name), name
    assert "/" not in name


@pytest.mark.parametrize("value", ["../x", "", "a/b", "x\n", "x\r", "x\u2028", "-lead", "a" * 65])
def test_a_bad_replica_id_is_refused_naming_the_rule(value: str, monkeypatch: pytest.MonkeyPatch):
    from ralex.config import ConfigError as Error
    from ralex.proxy.settings import load_settings

    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-x")
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-master")
    monkeypatch.setenv("RALEX_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv("RALEX_REPLICA_ID", value)
    if value == "":
        assert REPLICA_ID.fullmatch(load_settings().replica_id)
        return
    with pytest.raises(Error, match="RALEX_REPLICA_ID must be 1-64 letters"):
        load_settings()


def test_holds_are_rounded_up_to_the_ledgers_eight_decimals():
    assert money(0.000123456789) == Decimal("0.00012346")
    assert money(0.1) == Decimal("0.10000000")
    assert money(1e-12) == Decimal("0.00000001")
    assert money(0.0) == Decimal("0E-8")


def test_secret_files_fill_only_what_the_environment_lacks(tmp_path: Path):
    (tmp_path / "OPENROUTER_API_KEY").write_text("sk-or-from-file\n")
    (tmp_path / "LITELLM_MASTER_KEY").write_text("sk-file")
    env = {"RALEX_SECRETS_DIR": str(tmp_path), "LITELLM_MASTER_KEY": "sk-env"}
    found = read_secret_files(("OPENROUTER_API_KEY", "LITELLM_MASTER_KEY", "RALEX_AGENT_KEY"), env)
    assert found == ["OPENROUTER_API_KEY"]
    assert env["OPENROUTER_API_KEY"] == "sk-or-from-file"
    assert env["LITELLM_MASTER_KEY"] == "sk-env"
    assert "RALEX_AGENT_KEY" not in env


@pytest.mark.parametrize("content", ["", "\n", "two\nlines", "nul\0here", "cr\rhere"])
def test_a_secret_file_with_no_single_value_is_refused_naming_the_file(tmp_path: Path, content: str):
    (tmp_path / "RALEX_AGENT_KEY").write_text(content)
    with pytest.raises(ConfigError, match="RALEX_AGENT_KEY"):
        read_secret_files(("RALEX_AGENT_KEY",), {"RALEX_SECRETS_DIR": str(tmp_path)})


def test_a_keys_own_summary_names_its_sub_budget_and_never_the_days():
    from ralex.budget import key_summary

    line = key_summary("ana", 2.0, 0.4, 0.1, "resets at 00:00 UTC (in 6h12m)")
    assert line == "Key ana: $0.40 of $2.00 spent (20%) · $1.50 left · resets at 00:00 UTC (in 6h12m)"
    assert key_summary("ana", None, 0.0123, 0.0, "resets").startswith("Key ana: $0.0123 spent today (no sub-budget")
    assert "left" in key_summary("ana", 0.0, 0.0, 0.0, "r")
