"""Off-the-hot-path ledger writes that survive a Postgres restart and the death of the proxy.

Requests hand rows to :meth:`LedgerWriter.submit`: one append to the journal
(:mod:`ralex.ledger.journal`), no database round trip. A background task writes them in batches;
when Postgres is away the rows stay queued and are retried with backoff. Rows carry their own
UUID and are inserted once per id (:data:`ralex.ledger.store.INSERT_LEDGER`), so a retry after an
unclear commit, or a journal replay, never counts a request twice.

No row is refused for its text (:func:`ralex.ledger.store.row_values` encodes it for Postgres). A row
Postgres still rejects is a bug, and is treated as one: logged as an error, counted in
:attr:`LedgerWriter.rejected` (``/ralex/budget``'s ``ledger.rejected``), kept in the journal and
tried again at the next start, where its cost still counts in the day's spend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg

from ralex.ledger.journal import Journal
from ralex.ledger.rows import LedgerRow
from ralex.ledger.store import INSERT_LEDGER, row_values

log = logging.getLogger("ralex.ledger")
AWAY: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError, OSError)
"""Postgres is away (or the connection broke): retry later, the rows are fine."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def insert_rows(conn: psycopg.AsyncConnection[Any], rows: list[LedgerRow]) -> list[LedgerRow]:
    """Insert rows (idempotent); a row Postgres rejects does not stop the others. Returns the rejected,
    each named in an error log line.

    Raises psycopg.OperationalError when Postgres is away.
    """
    try:
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(INSERT_LEDGER, [row_values(r) for r in rows])
        return []
    except AWAY:
        raise
    except Exception:  # some row was refused: find which, one by one
        pass
    refused = []
    for row in rows:
        try:
            async with conn.transaction():
                await conn.execute(INSERT_LEDGER, row_values(row))
        except AWAY:
            raise
        except Exception as exc:  # whatever the cause, the row is kept, never dropped
            log.error("ledger: Postgres rejected the row of request %s (%s, $%.8f) (%s: %s)", row.request_id,
                      row.status, row.cost_usd, type(exc).__name__, _first_line(exc))
            refused.append(row)
    return refused


class LedgerWriter:
    def __init__(self, dsn: str, *, journal: Journal | None = None, batch_size: int = 500,
                 max_backoff: float = 2.0, rejected: Iterable[LedgerRow] = ()) -> None:
        """``rejected``: rows Postgres refused before (at the start's journal replay), kept with the
        ones it refuses from now on."""
        self._dsn = dsn
        self.journal = journal
        self._batch_size = batch_size
        self._max_backoff = max_backoff
        self._queue: deque[tuple[float, LedgerRow]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None
        self.rejected: dict[str, LedgerRow] = {str(r.request_id): r for r in rejected}
        """Rows Postgres refused, by request id: kept in the journal and tried again at the next start."""

    # --- the request side: no I/O ----------------------------------------------------------
    def submit(self, row: LedgerRow) -> None:
        if self.journal is not None:
            self.journal.settled(row)
        self._queue.append((time.monotonic(), row))
        self._idle.clear()
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def queued(self) -> Iterator[LedgerRow]:
        return (row for _, row in self._queue)

    def unwritten(self) -> list[LedgerRow]:
        """Every row not in Postgres: queued, and refused (what a journal rewrite must keep)."""
        return [*self.queued(), *self.rejected.values()]

    @property
    def rejected_usd(self) -> float:
        return sum(row.cost_usd for row in self.rejected.values())

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest row not yet in Postgres (0 when all are written)."""
        return time.monotonic() - self._queue[0][0] if self._queue else 0.0

    # --- background --------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ralex-ledger-writer")

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted row is in Postgres (bounded)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what Postgres takes within ``timeout``; the rest stays in the journal for the next start."""
        await self.drain(timeout)
        self._stopping = True
        self._wake.set()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, connect_timeout=3, autocommit=False)
        return self._conn

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [row for _, row in list(self._queue)[: self._batch_size]]
            refused: list[LedgerRow] = []
            try:
                await self._write(batch)
            except AWAY as exc:
                self.failures += 1
                self.last_error = _first_line(exc)
                log.warning("ledger: Postgres unavailable (%s); %d rows queued, retrying", self.last_error,
                            len(self._queue))
                await self._reset_connection()
                await asyncio.sleep(backoff)
                backoff = min(self._max_backoff, backoff * 2)
                continue
            except Exception as exc:  # a row Postgres rejects: write the others, keep it
                self.failures += 1
                self.last_error = _first_line(exc)
                await self._reset_connection()
                try:
                    refused = await self._write_one_by_one(batch)
                except Exception as again:  # away, or no connection at all: the whole batch waits
                    self.last_error = _first_line(again)
                    await self._reset_connection()
                    await asyncio.sleep(backoff)
                    backoff = min(self._max_backoff, backoff * 2)
                    continue
                self.keep(refused)
            for _ in batch:
                self._queue.popleft()
            self.written += len(batch) - len(refused)
            backoff = 0.05

    async def _write(self, batch: list[LedgerRow]) -> None:
        conn = await self._connection()
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(INSERT_LEDGER, [row_values(r) for r in batch])

    async def _write_one_by_one(self, batch: list[LedgerRow]) -> list[LedgerRow]:
        return await insert_rows(await self._connection(), batch)

    async def _reset_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
        self._conn = None

    # --- rows Postgres refuses ---------------------------------------------------------------
    def keep(self, rows: list[LedgerRow]) -> None:
        """Rows Postgres rejected stay unwritten: in :attr:`rejected` and in the journal (their lines are
        there, and every rewrite keeps :meth:`unwritten`), tried again at the next start."""
        if not rows:
            return
        for row in rows:
            self.rejected[str(row.request_id)] = row
        log.error("ledger: %d rows Postgres rejected are kept in the journal (%d, $%.8f in all) and retried at "
                  "the next start; see ledger.rejected in /ralex/budget", len(rows), len(self.rejected),
                  self.rejected_usd)
