"""Reservations shared through Postgres by every proxy replica (``RALEX_RESERVATIONS=shared``).

Admission is one round trip: ``ralex_reserve`` (migration 0008) holds a request's worst case if it fits
the day's budget and the key's sub-budget, with one conditional update per scope in a fixed order, in
one transaction. Settling needs no call of its own: the request's ledger row, inserted by the ledger
writer, moves its hold to spent (a trigger), exactly once per request id.

Each replica holds a Postgres advisory lock on its name for as long as it lives. A replica whose lock
can be taken is gone: whoever takes it settles what it left (its journal, then its holds) and forgets
it. This module is the SQL and the connections; pricing what a dead replica left is the runtime's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, Decimal
from typing import Any, Final

import psycopg

from ralex.ledger.rows import LedgerRow, row_from_json
from ralex.ledger.store import row_record

log = logging.getLogger("ralex.ledger")

RESERVE: Final = "SELECT * FROM ralex_reserve(%s, %s, %s, %s, %s, %s, %s, %s, %s)"
RELEASE: Final = "SELECT ralex_release(%s)"
NOTE_GENERATION: Final = "UPDATE reservation SET generation_id = %s WHERE request_id = %s"
SCOPES_ON_DAY: Final = "SELECT scope, spent_usd, held_usd FROM budget_scope WHERE budget_day = %s"
REGISTER: Final = (
    "INSERT INTO proxy_replica (id, journal) VALUES (%s, %s)"
    " ON CONFLICT (id) DO UPDATE SET journal = EXCLUDED.journal, started_at = now()"
)
OTHER_REPLICAS: Final = "SELECT id, journal FROM proxy_replica WHERE id <> %s ORDER BY started_at"
TRY_LOCK: Final = "SELECT pg_try_advisory_lock(ralex_replica_lock(%s))"
UNLOCK: Final = "SELECT pg_advisory_unlock(ralex_replica_lock(%s))"
LEFT_HOLDS: Final = "SELECT record, generation_id FROM reservation WHERE replica = %s"
FORGET: Final = "DELETE FROM proxy_replica WHERE id = %s"
RELEASE_EXPIRED: Final = "SELECT count(ralex_release(request_id)) FROM reservation WHERE expires_at < now()"
CENT_FRACTIONS: Final = Decimal("1e-8")
"""The ledger's money columns hold 8 decimals: holds are rounded up to them, never down."""
KEEPALIVE: Final = "keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=3"
"""A replica whose host vanishes loses its lock within ~11 s, not at the kernel's two-hour default."""


HOLDS_COMMIT: Final = "off"
"""Holds (and their release) commit without waiting for the disk: a request's hold is worth ~0.7 ms of a
WAL flush on every admission, and lives only as long as the request. What Postgres itself might lose in
a crash of its own (the last fraction of a second of holds, never a ledger row: the writer commits
durably) is bounded by the requests in flight at that moment; their ledger rows still count in full."""


class LedgerAway(RuntimeError):
    """Postgres cannot be reached: admission cannot be checked against the shared budget."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``ralex_reserve`` answered: admitted or not, the budget that refused, both scopes' figures."""

    admitted: bool
    refused_by: str | None
    day_spent: float
    day_held: float
    key_spent: float
    key_held: float


def money(amount: float) -> Decimal:
    """Dollars as the ledger stores them, rounded up to its 8 decimals (a hold never shrinks)."""
    return Decimal(repr(float(amount))).quantize(CENT_FRACTIONS, rounding=ROUND_CEILING)


class SharedLedger:
    def __init__(self, dsn: str, replica: str, journal: str | None, *, pool_size: int = 4,
                 hold_ttl: float = 600.0) -> None:
        """``hold_ttl``: seconds after which a hold still in Postgres is a leak (longer than the replica
        takes to charge a request that never reports back)."""
        self._dsn = dsn
        self._hold_ttl = hold_ttl
        self.replica = replica
        self._journal = journal
        self._pool_size = pool_size
        self._idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        self._open = 0
        self._presence: psycopg.AsyncConnection[Any] | None = None
        self._sweeper: psycopg.AsyncConnection[Any] | None = None

    # --- lifetime ---------------------------------------------------------------------------------
    async def start(self, wait: float = 30.0) -> None:
        """Take this replica's lock (waiting up to ``wait`` s while a sweeper settles its previous life)
        and register it. Raises RuntimeError when another live replica has the same name."""
        self._presence = await self._connect()
        deadline = asyncio.get_running_loop().time() + wait
        while not await _locked(self._presence, self.replica):
            if asyncio.get_running_loop().time() > deadline:
                await self._presence.close()
                raise RuntimeError(f"another proxy replica runs as {self.replica!r}; give each replica its own "
                                   "RALEX_REPLICA_ID")
            await asyncio.sleep(0.5)
        await self._presence.execute(REGISTER, (self.replica, self._journal))

    async def keep_presence(self) -> None:
        """Hold this replica's lock for good: when its connection drops (a Postgres restart), take it again."""
        while True:
            await asyncio.sleep(2)
            conn = self._presence
            try:
                if conn is None or conn.closed:
                    raise psycopg.OperationalError("presence connection closed")
                await conn.execute("SELECT 1")
            except (psycopg.Error, OSError):
                with contextlib.suppress(psycopg.Error, OSError):
                    self._presence = fresh = await self._connect()
                    if await _locked(fresh, self.replica):
                        await fresh.execute(REGISTER, (self.replica, self._journal))
                        log.warning("ralex: replica %s took its lock again after losing Postgres", self.replica)

    async def close(self) -> None:
        for conn in (self._presence, self._sweeper):
            if conn is not None:
                with contextlib.suppress(psycopg.Error, OSError):
                    await conn.close()
        while not self._idle.empty():
            with contextlib.suppress(psycopg.Error, OSError):
                await self._idle.get_nowait().close()

    async def _connect(self, *, fast: bool = False) -> psycopg.AsyncConnection[Any]:
        dsn = psycopg.conninfo.make_conninfo(self._dsn, **psycopg.conninfo.conninfo_to_dict(KEEPALIVE))
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=3)
        if fast:  # see HOLDS_COMMIT
            await conn.execute(f"SET synchronous_commit = {HOLDS_COMMIT}")
        return conn

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._idle.empty() and self._open < self._pool_size:
            self._open += 1
            try:
                conn = await self._connect(fast=True)
            except (psycopg.Error, OSError) as exc:
                self._open -= 1
                raise LedgerAway(str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed") \
                    from None
        else:
            conn = await self._idle.get()
        healthy = True
        try:
            yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError):
            healthy = False
            raise
        finally:
            if healthy and not conn.closed:
                self._idle.put_nowait(conn)
            else:
                self._open -= 1
                with contextlib.suppress(psycopg.Error, OSError):
                    await conn.close()

    async def _call(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One statement on a pooled connection; a broken connection is replaced and the call tried once
        more (each call is one transaction: a retry after a lost answer is what ``ralex_reserve``'s
        unique request id is for). Raises :class:`LedgerAway`."""
        for attempt in (1, 2):
            try:
                async with self._connection() as conn:
                    cursor = await conn.execute(query, params)
                    return await cursor.fetchall() if cursor.description else []
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                if attempt == 2:
                    raise LedgerAway(str(exc).strip().splitlines()[0] if str(exc).strip() else "connection lost") \
                        from None
        raise AssertionError("unreachable")

    # --- the request path -------------------------------------------------------------------------
    async def reserve(self, request_id: str, day: date, key: str, amount: float, day_limit: float,
                      key_limit: float | None, record: LedgerRow) -> Verdict:
        """Hold ``amount`` for ``request_id`` if it fits the day's and the key's remaining budgets."""
        try:
            rows = await self._call(RESERVE, (
                request_id, day, key, money(amount), Decimal(repr(float(day_limit))),
                None if key_limit is None else Decimal(repr(float(key_limit))), self.replica,
                row_record(record), self._hold_ttl))
        except psycopg.errors.UniqueViolation:  # a retry: the first try held it, and its answer was lost
            await self.release(request_id)
            raise LedgerAway("the shared ledger's answer was lost") from None
        admitted, refused_by, *figures = rows[0]
        day_spent, day_held, key_spent, key_held = (float(f or 0) for f in figures)
        return Verdict(bool(admitted), refused_by, day_spent, day_held, key_spent, key_held)

    async def release(self, request_id: str) -> None:
        """Give back the hold of a request that was admitted but never forwarded."""
        await self._call(RELEASE, (request_id,))

    async def note_generation(self, request_id: str, generation_id: str) -> None:
        """The upstream's id of a request in flight, so a sweeper can ask what it cost if this replica dies."""
        with contextlib.suppress(LedgerAway):
            await self._call(NOTE_GENERATION, (generation_id, request_id))

    async def scopes(self, day: date) -> dict[str, tuple[float, float]]:
        """Every scope of ``day``: '' (the day) and each key name -> (spent, held), all replicas together."""
        return {str(r[0]): (float(r[1]), float(r[2])) for r in await self._call(SCOPES_ON_DAY, (day,))}

    # --- what dead replicas left ------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def orphans(self) -> AsyncIterator[list[tuple[str, str | None]]]:
        """The replicas that are gone (their lock could be taken), with their journal path; their locks
        are held here until the block ends, so each is recovered by one replica only."""
        if self._sweeper is None or self._sweeper.closed:
            self._sweeper = await self._connect()
        conn = self._sweeper
        taken: list[tuple[str, str | None]] = []
        try:
            for replica, journal in await (await conn.execute(OTHER_REPLICAS, (self.replica,))).fetchall():
                if await _locked(conn, replica):
                    taken.append((replica, journal))
            yield taken
        finally:
            for replica, _ in taken:
                with contextlib.suppress(psycopg.Error, OSError):
                    await conn.execute(UNLOCK, (replica,))

    async def left_holds(self, replica: str) -> list[LedgerRow]:
        """The rows ``replica``'s unsettled holds leave (status interrupted, at the hold), with the upstream's
        generation id where it was noted."""
        rows = []
        for record, generation in await self._call(LEFT_HOLDS, (replica,)):
            row = row_from_json(record)
            if generation and not row.generation_id:
                row.generation_id = generation
            rows.append(row)
        return rows

    async def forget(self, replica: str) -> None:
        await self._call(FORGET, (replica,))

    async def release_expired(self) -> int:
        """Give back holds past their expiry (leaks: see migration 0008); returns how many."""
        rows = await self._call(RELEASE_EXPIRED, ())
        return int(rows[0][0]) if rows else 0


async def _locked(conn: psycopg.AsyncConnection[Any], replica: str) -> bool:
    row = await (await conn.execute(TRY_LOCK, (replica,))).fetchone()
    return bool(row and row[0])
