"""Client keys: names, hashing, sub-budgets, and the admission rule (whichever budget is tighter wins)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from ralex.budget import BudgetSnapshot, KeyAllowance, ReservationBook, Thresholds, binding, refused_by
from ralex.engine import Rejected
from ralex.keys import ClientKeyError, check_name, hash_key, new_key, parse_key_budget
from ralex.ledger.journal import Journal, replay
from ralex.ledger.rows import LedgerRow, row_from_json, row_to_json
from ralex.policy import Decision, RouteInput, RoutingConfig, route
from tests.unit.test_engine import body, setup

NOON = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


# --- keys and names ----------------------------------------------------------------------------

def test_a_new_key_is_long_random_and_stored_only_as_its_hash():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    key = keys.pop()
    assert key.startswith("sk-ralex-")
    assert len(key.removeprefix("sk-ralex-")) >= 32
    digest = hash_key(key)
    assert digest == hash_key(key)
    assert len(digest) == 64
    assert key not in digest
    assert hash_key(key + "x") != digest


@pytest.mark.parametrize("name", ["laptop-claude", "a", "x" * 40, "ci-2", "0"])
def test_good_names(name: str):
    assert check_name(name) == name


@pytest.mark.parametrize(("name", "fix"), [
    ("Laptop", "lowercase letters"), ("", "1-40"), ("x" * 41, "1-40"), ("my key", "lowercase letters"),
    ("a_b", "lowercase letters"), ("café", "lowercase letters"), (None, "lowercase letters"), (5, "1-40"),
    ("agent", "reserved"), ("operator", "reserved"),
])
def test_bad_names_are_refused_naming_the_fix(name: object, fix: str):
    with pytest.raises(ClientKeyError, match=fix):
        check_name(name)


@pytest.mark.parametrize(("given", "parsed"), [("2", 2.0), ("$0.50", 0.5), (3, 3.0), ("0", 0.0), (None, None),
                                               ("none", None), ("None", None), ("off", None)])
def test_sub_budgets(given: object, parsed: float | None):
    assert parse_key_budget(given) == parsed


@pytest.mark.parametrize(("given", "fix"), [("lots", "not a number"), ("-1", "zero or more"), ("nan", "zero or more"),
                                            ("20000", "typo"), (True, "not a number")])
def test_bad_sub_budgets_name_the_fix(given: object, fix: str):
    with pytest.raises(ClientKeyError, match=fix):
        parse_key_budget(given)


# --- the admission rule ------------------------------------------------------------------------

def test_a_hold_must_fit_both_the_day_and_the_key_whichever_is_tighter():
    key = KeyAllowance("laptop", limit=1.0, spent=0.7, reserved=0.2)  # $0.10 left on the key
    assert refused_by(0.05, day_spent=1.0, day_reserved=0.0, day_limit=5.0, key=key) is None
    assert refused_by(0.15, day_spent=1.0, day_reserved=0.0, day_limit=5.0, key=key) == "key"
    assert refused_by(0.05, day_spent=4.97, day_reserved=0.0, day_limit=5.0, key=key) == "day"
    assert refused_by(0.15, day_spent=4.97, day_reserved=0.0, day_limit=5.0, key=key) == "day"  # both: the day
    assert refused_by(0.15, day_spent=1.0, day_reserved=0.0, day_limit=5.0) is None  # no sub-budget: the day only
    assert binding(0.5, key) == "key"
    assert binding(0.05, key) == "day"
    assert binding(0.05, None) == "day"


def test_the_book_holds_a_keys_requests_against_its_sub_budget_and_the_day_together():
    book = ReservationBook(date(2026, 11, 26), spent=1.0, spent_by_key={"laptop": 0.5})
    assert book.try_reserve("r1", 0.3, 5.0, client="laptop", client_limit=1.0)
    assert not book.try_reserve("r2", 0.3, 5.0, client="laptop", client_limit=1.0)  # 0.5 + 0.3 + 0.3 > 1
    assert book.try_reserve("r3", 0.3, 5.0, client="ci", client_limit=1.0)  # another key: its own allowance
    assert book.try_reserve("r4", 0.3, 5.0, client="agent")  # no sub-budget
    assert book.reserved_by("laptop") == pytest.approx(0.3)
    book.settle("r1", 0.1)
    assert book.spent_by_key["laptop"] == pytest.approx(0.6)
    assert book.spent == pytest.approx(1.1)
    assert book.try_reserve("r2", 0.3, 5.0, client="laptop", client_limit=1.0)
    book.roll_over(date(2026, 11, 27), 0.0)
    assert book.spent_by_key == {}


def snapshot(remaining_day: float, key: KeyAllowance | None) -> BudgetSnapshot:
    return BudgetSnapshot(5.0, 5.0 - remaining_day, 0.0, "UTC", NOON, Thresholds(), key)


@pytest.mark.parametrize(("day_left", "key_left", "tier"), [
    (4.0, 5.0, "full"), (4.0, 3.0, "economy"), (4.0, 1.0, "emergency"), (0.3, 9.0, "emergency"),
    (1.0, 9.0, "economy"), (1.0, 3.0, "economy"),
])
def test_the_tier_is_the_lower_of_the_days_and_the_keys_scaled_to_its_size(day_left: float, key_left: float,
                                                                            tier: str):
    """The day by its thresholds ($2 / $0.50); a $10 key by the same shape scaled: $4 / $1."""
    snap = snapshot(day_left, KeyAllowance("laptop", 10.0, 10.0 - key_left, 0.0))
    assert snap.remaining == pytest.approx(min(day_left, key_left))
    assert snap.tier == tier


def test_a_one_dollar_key_reaches_smart_until_forty_percent_of_it_is_left(cfg: RoutingConfig):
    fresh = route(RouteInput("smart", "design a plugin system", 100, 100),
                  snapshot(4.0, KeyAllowance("alice", 1.0, 0.0, 0.0)), cfg)
    assert isinstance(fresh, Decision)
    assert (fresh.alias, fresh.tier) == ("smart", "full")
    spent = route(RouteInput("smart", "design a plugin system", 100, 100),
                  snapshot(4.0, KeyAllowance("alice", 1.0, 0.65, 0.0)), cfg)
    assert isinstance(spent, Decision)
    assert (spent.alias, spent.tier) == ("cheap", "economy")
    assert "smart needs more than $0.40 left of key alice's $1.00 sub-budget ($0.35 left)" in spent.reason


def test_a_nearly_spent_key_steps_down_like_a_nearly_spent_day(cfg: RoutingConfig):
    snap = snapshot(4.0, KeyAllowance("laptop", 2.0, 1.4, 0.0))  # $0.60 left on the key, under 40 % of $2
    decision = route(RouteInput("smart", "design a plugin system", 100, 100), snap, cfg)
    assert isinstance(decision, Decision)
    assert (decision.alias, decision.tier) == ("cheap", "economy")
    assert "smart needs more than $0.80 left of key laptop's $2.00 sub-budget ($0.60 left)" in decision.reason
    day = route(RouteInput("smart", "design a plugin system", 100, 100), snapshot(1.5, None), cfg)
    assert isinstance(day, Decision)
    assert "smart needs more than $2.00 left ($1.50 left)" in day.reason
    assert isinstance(route(RouteInput("smart", "design a plugin system", 100, 100), snapshot(4.0, None), cfg),
                      Decision)


def test_the_refusal_names_the_key_its_spend_the_reset_and_the_fix():
    snap = snapshot(4.0, KeyAllowance("laptop-claude", 2.0, 1.99, 0.0))
    message = snap.exhausted_message(0.05)
    assert message.startswith("Key laptop-claude: daily sub-budget $2.00 exhausted ($1.99 spent; $0.01 left, "
                              "this request needs up to $0.05); resets at 00:00 UTC (in 12h00m).")
    assert message.endswith("Raise it with: ralexctl keys budget laptop-claude 5")
    day_bound = snapshot(0.01, KeyAllowance("laptop-claude", 2.0, 0.0, 0.0)).exhausted_message(0.05)
    assert day_bound.startswith("Daily budget $5.00 exhausted")


# --- the engine ----------------------------------------------------------------------------------

def test_a_key_over_its_sub_budget_gets_a_402_naming_it_while_others_are_served():
    s = setup()
    s.engine.set_key_budgets({"laptop": 0.00006, "ci": None})
    first = s.engine.admit(body(), "laptop")
    assert first.decision.reserve > 0.00006 / 2  # one fits; the rest cannot carry even 64 output tokens
    with pytest.raises(Rejected) as caught:
        s.engine.admit(body(), "laptop")
    assert caught.value.status == 402
    assert caught.value.message.startswith("Key laptop: daily sub-budget $0.000060 exhausted")
    assert "ralexctl keys budget laptop" in caught.value.message
    assert caught.value.headers["x-ralex-key"] == "laptop"
    assert s.engine.admit(body(), "ci").client == "ci"  # global only
    assert s.engine.admit(body(), "agent").client == "agent"
    assert s.engine.crossed == set()  # a key's exhaustion is not the day's 100 %
    assert not [e for e in s.engine.events if e.kind == "refused"]  # nor a toast in the agent
    [refused] = [r for r in s.rows if r.status == "refused"]
    assert refused.key_name == "laptop"


def test_settlement_attributes_the_cost_to_the_key():
    s = setup()
    s.engine.set_key_budgets({"laptop": 1.0})
    flight = s.engine.admit(body(), "laptop")
    assert s.holds[-1].key_name == "laptop"  # the journal's hold names the key
    row = s.engine.settle(flight.key, 0.00002, cost_source="upstream")
    assert row is not None
    assert row.key_name == "laptop"
    assert s.engine.key_usage("laptop") == (pytest.approx(0.00002), 0.0)
    failed = s.engine.admit(body(), "laptop")
    s.engine.note_failed_attempt(failed.key, "cheap", billable=True)
    assert s.engine.fail(failed.key, "timeout").key_name == "laptop"  # type: ignore[union-attr]
    assert s.engine.key_usage("laptop")[0] == pytest.approx(0.00002 + failed.decision.worst_case)


def test_a_raised_sub_budget_applies_to_the_next_request():
    s = setup()
    s.engine.set_key_budgets({"laptop": 0.0})
    with pytest.raises(Rejected):
        s.engine.admit(body(), "laptop")
    s.engine.set_key_budgets({"laptop": 1.0})
    assert s.engine.admit(body(), "laptop").client == "laptop"


# --- the journal carries the key -----------------------------------------------------------------

def test_the_journal_replays_each_rows_key(tmp_path: Path):
    journal = Journal(tmp_path / "journal.jsonl")
    rows = [LedgerRow(ts=NOON, budget_day=date(2026, 11, 26), alias_requested="cheap", status="interrupted",
                      request_id=uuid.uuid4(), cost_usd=0.01, cost_source="hold", key_name=name)
            for name in ("laptop", "agent", "operator")]
    for row in rows:
        journal.hold(row)
    journal.close()
    assert sorted(r.key_name for r in replay(tmp_path / "journal.jsonl")) == ["agent", "laptop", "operator"]


def test_a_journal_line_from_before_keys_reads_back_as_the_agents():
    line = row_to_json(LedgerRow(ts=NOON, budget_day=date(2026, 11, 26), alias_requested="cheap", status="ok"))
    del line["key_name"]
    assert row_from_json(json.loads(json.dumps(line))).key_name == "agent"


def test_keys_add_and_connect_say_what_a_sub_budget_allows():
    from ralex.budget import sub_budget_text

    assert sub_budget_text(1.0) == ("$1.00/day: smart while more than $0.40 of it is left, cheap down to $0.10, "
                                    "then short emergency answers; never past the day's budget")
