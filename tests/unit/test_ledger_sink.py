"""A ledger row is never refused for its content, and a row Postgres still refuses is never lost:
it stays in the journal, is counted, retried at the next start, and its cost still counts today."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ralex.ledger.journal import Journal, replay
from ralex.ledger.rows import LedgerRow, row_to_json
from ralex.ledger.store import LEDGER_COLUMNS, row_values, settings_update
from ralex.ledger.writer import LedgerWriter, insert_rows
from ralex.proxy.runtime import with_unrecorded

NOON = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAY = date(2026, 11, 26)
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=5000)


def row(cost: float = 0.0465, reason: str = "task looks smart", key: str = "agent", status: str = "ok",
        day: date = DAY) -> LedgerRow:
    return LedgerRow(ts=NOON, budget_day=day, alias_requested="auto", status=status, request_id=uuid.uuid4(),
                     alias_routed="smart", upstream_model="anthropic/claude-sonnet-4.5", reason=reason,
                     tier="full", cost_usd=cost, cost_source="upstream", key_name=key, route_kind="task-smart")


# --- the INSERT parameters: the one writer of ledger text ----------------------------------------------

@settings(max_examples=200)
@given(reason=ANY_TEXT, error=ANY_TEXT, model=ANY_TEXT)
def test_every_text_parameter_of_a_row_is_text_postgres_takes(reason: str, error: str, model: str):
    values = row_values(replace(row(reason=reason), error=error, upstream_model=model))
    for value in values:
        if isinstance(value, str):
            assert "\x00" not in value
            value.encode("utf-8")


def test_the_insert_parameters_keep_plain_text_and_numbers_as_they_are():
    plain = replace(row(reason="task looks smart (score +2.0: review 'review the <b>auth</b> module')"),
                    error="RateLimitError: 'slow down'\nretry later", prompt_tokens=120)
    assert row_values(plain) == tuple(getattr(plain, name) for name in LEDGER_COLUMNS)
    nul = row_values(row(reason="small-edit 'hi,\x00can you fix'"))
    assert nul[LEDGER_COLUMNS.index("reason")] == "small-edit 'hi,\ufffdcan you fix'"
    assert nul[LEDGER_COLUMNS.index("cost_usd")] == 0.0465


def test_a_settings_change_is_stored_whoever_names_itself():
    update = settings_update(daily_limit=5, by="ops\x00team")
    assert update is not None
    assert update[1]["by"] == "ops\ufffdteam"


# --- rows Postgres refuses ----------------------------------------------------------------------------

class FakeConnection:
    """An async psycopg connection whose INSERT refuses rows with a negative cost (a CHECK), and is
    away (OperationalError) while ``away`` is set."""

    def __init__(self) -> None:
        self.inserted: dict[str, tuple[Any, ...]] = {}
        self.away = False
        self.closed = False

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        before = dict(self.inserted)
        try:
            yield
        except BaseException:
            self.inserted = before
            raise

    @contextlib.asynccontextmanager
    async def cursor(self) -> AsyncIterator[FakeConnection]:
        yield self

    async def executemany(self, query: str, params: list[tuple[Any, ...]]) -> None:
        for values in params:
            await self.execute(query, values)

    async def execute(self, query: str, values: tuple[Any, ...]) -> None:
        if self.away:
            raise psycopg.OperationalError("connection refused")
        record = dict(zip(LEDGER_COLUMNS, values, strict=True))
        if record["cost_usd"] < 0:
            raise psycopg.errors.CheckViolation('new row for relation "ledger" violates check constraint')
        for value in values:
            if isinstance(value, str) and "\x00" in value:
                raise psycopg.errors.CharacterNotInRepertoire("invalid byte sequence for encoding UTF8: 0x00")
        self.inserted.setdefault(str(record["request_id"]), values)

    async def close(self) -> None:
        self.closed = True


async def test_insert_rows_writes_the_others_and_returns_and_logs_the_refused(caplog: pytest.LogCaptureFixture):
    conn = FakeConnection()
    good, bad, nul = row(), row(cost=-1.0), row(reason="quoted\x00nul")
    refused = await insert_rows(conn, [good, bad, nul])  # type: ignore[arg-type]
    assert refused == [bad]
    assert set(conn.inserted) == {str(good.request_id), str(nul.request_id)}  # NUL is never a reason to refuse
    assert f"rejected the row of request {bad.request_id}" in caplog.text


async def test_insert_rows_raises_when_postgres_is_away():
    conn = FakeConnection()
    conn.away = True
    with pytest.raises(psycopg.OperationalError):
        await insert_rows(conn, [row()])  # type: ignore[arg-type]


async def test_the_writer_keeps_a_refused_row_in_the_journal_and_counts_it(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture):
    journal = Journal(tmp_path / "ledger-journal.jsonl")
    conn = FakeConnection()
    writer = LedgerWriter("postgresql://unused", journal=journal)

    async def connection() -> FakeConnection:
        return conn

    writer._connection = connection  # type: ignore[method-assign,assignment]
    writer.start()
    good, bad = row(cost=0.01), row(cost=-0.5, key="laptop")
    writer.submit(good)
    writer.submit(bad)
    assert await writer.drain(5)
    await writer.stop(1)

    assert list(conn.inserted) == [str(good.request_id)]
    assert (writer.written, writer.pending) == (1, 0)
    assert writer.rejected == {str(bad.request_id): bad}
    assert writer.rejected_usd == -0.5
    assert writer.unwritten() == [bad]
    assert "kept in the journal" in caplog.text
    assert not (tmp_path / "ledger-journal.rejected.jsonl").exists()  # no file nobody reads
    journal.rewrite((), writer.unwritten())  # what the runtime does at stop and on compaction
    journal.close()
    assert replay(journal.path) == [bad]  # the next start tries it again


def test_a_start_replays_the_journal_and_the_rows_earlier_versions_set_aside(tmp_path: Path):
    journal = Journal(tmp_path / "ledger-journal.jsonl")
    settled, held, aside = row(), row(status="interrupted"), row(reason="quoted\x00nul")
    journal.hold(replace(settled, status="interrupted"))
    journal.settled(settled)
    journal.hold(held)
    journal.close()
    rejected_file = tmp_path / "ledger-journal.rejected.jsonl"
    rejected_file.write_text(json.dumps(row_to_json(aside)) + "\n")  # as set_aside wrote it

    replayed = replay(tmp_path / "ledger-spool.jsonl", rejected_file, journal.path)
    assert sorted(map(str, (r.request_id for r in replayed))) == sorted(
        str(r.request_id) for r in (settled, held, aside))
    assert next(r for r in replayed if r.request_id == settled.request_id).status == "ok"  # settled beats hold
    assert next(r for r in replayed if r.request_id == aside.request_id).reason == "quoted\x00nul"


def test_the_days_spend_after_a_restart_counts_the_rows_postgres_refused():
    """Live spend never exceeds what a restart recovers: billed money Postgres does not hold yet
    still counts, in all and for its key; other days' rows do not."""
    refused = [row(cost=0.0465), row(cost=0.00072, key="laptop"), row(cost=9.0, day=date(2026, 11, 25))]
    spent, by_key = with_unrecorded(0.0710, {"agent": 0.0710}, refused, DAY)
    assert spent == pytest.approx(0.0710 + 0.0465 + 0.00072)
    assert by_key == {"agent": pytest.approx(0.0710 + 0.0465), "laptop": pytest.approx(0.00072)}
    assert with_unrecorded(0.0710, {"agent": 0.0710}, [], DAY) == (0.0710, {"agent": 0.0710})
