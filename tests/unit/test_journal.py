"""The write-ahead journal: what a restart replays into the ledger after the proxy died."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

from ralex.ledger.journal import Journal, replay
from ralex.ledger.rows import LedgerRow, row_to_json

NOON = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def hold_row(request_id: uuid.UUID, reserve: float = 0.0042) -> LedgerRow:
    """The row an admitted request leaves if the proxy dies before it settles: charged at its hold."""
    return LedgerRow(ts=NOON, budget_day=date(2026, 11, 26), alias_requested="auto", status="interrupted",
                     request_id=request_id, alias_routed="smart", upstream_model="anthropic/claude-sonnet-4.5",
                     reason="task looks smart", tier="full", stream=True, max_tokens=200,
                     estimated_cost_usd=reserve, reserved_usd=reserve, cost_usd=reserve, cost_source="hold",
                     turn_key="t1", session_key="s1", error="the proxy stopped before the request settled",
                     route_kind="task-smart")


def settled_row(request_id: uuid.UUID, cost: float = 0.0011) -> LedgerRow:
    return LedgerRow(ts=NOON, budget_day=date(2026, 11, 26), alias_requested="auto", status="ok",
                     request_id=request_id, alias_routed="smart", upstream_model="anthropic/claude-sonnet-4.5",
                     reason="task looks smart", tier="full", stream=True, prompt_tokens=120, completion_tokens=50,
                     max_tokens=200, estimated_cost_usd=0.0042, reserved_usd=0.0042, cost_usd=cost,
                     cost_source="usage", latency_ms=850, turn_key="t1", session_key="s1", route_kind="task-smart")


def test_a_settled_request_replays_as_its_settled_row_only(tmp_path: Path):
    journal = Journal(tmp_path / "journal.jsonl")
    rid = uuid.uuid4()
    journal.hold(hold_row(rid))
    journal.settled(settled_row(rid))
    journal.close()

    assert replay(tmp_path / "journal.jsonl") == [settled_row(rid)]


def test_a_request_that_never_settled_replays_as_interrupted_at_its_hold(tmp_path: Path):
    journal = Journal(tmp_path / "journal.jsonl")
    rid = uuid.uuid4()
    journal.hold(hold_row(rid, reserve=0.0042))
    journal.close()

    [row] = replay(tmp_path / "journal.jsonl")
    assert row == hold_row(rid, reserve=0.0042)
    assert (row.status, row.cost_usd, row.cost_source) == ("interrupted", 0.0042, "hold")


def test_pending_is_the_replay_of_the_open_journal(tmp_path: Path):
    journal = Journal(tmp_path / "journal.jsonl")
    done, open_ = uuid.uuid4(), uuid.uuid4()
    journal.hold(hold_row(done))
    journal.hold(hold_row(open_))
    journal.settled(settled_row(done))

    assert journal.pending() == [settled_row(done), hold_row(open_)]
    journal.close()


def test_a_line_cut_short_by_a_kill_mid_write_is_skipped(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    done, cut = uuid.uuid4(), uuid.uuid4()
    journal.hold(hold_row(done))
    journal.settled(settled_row(done))
    journal.hold(hold_row(cut))
    journal.close()
    line = json.dumps({"row": row_to_json(settled_row(cut))}, separators=(",", ":"))
    with path.open("a") as fh:
        fh.write(line[: len(line) // 2])  # the process died here

    assert replay(path) == [settled_row(done), hold_row(cut)]


def test_every_journal_line_is_one_complete_json_object(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.hold(hold_row(uuid.uuid4()))
    journal.settled(settled_row(uuid.uuid4()))
    journal.close()

    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [next(iter(json.loads(line))) for line in lines[:-1]] == ["hold", "row"]
    assert journal.size == path.stat().st_size


def test_rewrite_keeps_exactly_the_given_holds_and_rows(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    old = [uuid.uuid4() for _ in range(5)]
    for rid in old:
        journal.hold(hold_row(rid))
        journal.settled(settled_row(rid))
    still_open, unwritten = uuid.uuid4(), uuid.uuid4()
    journal.hold(hold_row(still_open))
    before = journal.size

    journal.rewrite([hold_row(still_open)], [settled_row(unwritten)])

    assert replay(path) == [settled_row(unwritten), hold_row(still_open)]
    assert journal.size == path.stat().st_size < before
    assert not path.with_suffix(".tmp").exists()

    later = uuid.uuid4()
    journal.hold(hold_row(later))  # the journal keeps appending after a rewrite
    journal.close()
    assert replay(path) == [settled_row(unwritten), hold_row(still_open), hold_row(later)]


def test_rewrite_with_nothing_open_empties_the_journal(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.hold(hold_row(uuid.uuid4()))
    journal.rewrite((), ())
    journal.close()
    assert path.read_text() == ""
    assert replay(path) == []


def test_legacy_bare_row_lines_are_read_as_rows(tmp_path: Path):
    path = tmp_path / "ledger-spool.jsonl"
    first, second = uuid.uuid4(), uuid.uuid4()
    record = row_to_json(settled_row(first))
    record.pop("generation_id", None)  # older versions wrote rows without it
    path.write_text(json.dumps(record) + "\n" + json.dumps(row_to_json(settled_row(second))) + "\n")

    assert replay(path) == [settled_row(first), settled_row(second)]


def test_a_legacy_row_and_a_new_hold_for_the_same_request_replay_as_the_row(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    rid = uuid.uuid4()
    path.write_text(json.dumps({"hold": row_to_json(hold_row(rid))}) + "\n"
                    + json.dumps(row_to_json(settled_row(rid))) + "\n")
    assert replay(path) == [settled_row(rid)]


def test_a_missing_journal_replays_nothing(tmp_path: Path):
    assert replay(tmp_path / "never-written.jsonl") == []


def test_the_journal_is_private_to_the_proxy(tmp_path: Path):
    journal = Journal(tmp_path / "run" / "journal.jsonl")
    journal.close()
    assert (tmp_path / "run" / "journal.jsonl").stat().st_mode & 0o777 == 0o600
