"""The one owner of the proxy process's Ralex state: settings, prices, budget engine, ledger
writer, journal and background tasks, with public ``start()``/``stop()`` called from the server's
lifespan. The LiteLLM callback (:mod:`ralex.proxy.hooks`) and the admin routes
(:mod:`ralex.proxy.routes`) use it only through the public methods here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any, Final

import httpx
import psycopg
from prometheus_client import Counter

from ralex.budget import budget_day, usd
from ralex.config import load_config
from ralex.engine import BudgetEngine, Crossing, InFlight, Rejected
from ralex.keys import ClientKey, ClientKeyError, check_name, hash_key, new_key, parse_key_budget
from ralex.ledger.journal import COMPACT_BYTES, Journal, replay
from ralex.ledger.rows import LedgerRow
from ralex.ledger.shared import LedgerAway, SharedLedger
from ralex.ledger.store import (
    CROSSINGS_ON_DAY,
    INSERT_KEY,
    RECORD_CROSSING,
    REVOKE_KEY,
    SELECT_KEYS,
    SELECT_SETTINGS,
    SET_KEY_BUDGET,
    SPEND_GROUPS,
    SPENT_BY_KEY_ON_DAY,
    SPENT_ON_DAY,
    key_from_row,
    settings_from_row,
    settings_update,
    spend_query,
)
from ralex.ledger.writer import LedgerWriter, insert_rows
from ralex.pricing import Price, afetch_prices, routing_config, with_overrides
from ralex.proxy.settings import load_settings
from ralex.request import ChatRequest
from ralex.request import prepare as prepare_text_reading
from ralex.sinks import log_to_stderr

log = logging.getLogger("ralex.proxy")
READY_TIMEOUT: Final = 15.0
GENERATION_LOOKUP_DELAYS: Final = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
"""OpenRouter answers a generation lookup 404 for a few seconds after the generation ends."""
STARTUP_LOOKUP_DELAYS: Final = (0.0, 1.0, 2.0)
"""At start the journal's streams ended seconds ago at least; a short wait bounds the start-up delay."""
SCOPES_REFRESH_SECONDS: Final = 1.0
"""How often a replica re-reads every replica's spend and holds (routing's view; admission asks Postgres)."""
ORPHANS_SWEEP_SECONDS: Final = 5.0
"""How often a replica looks for replicas that are gone and settles what they left."""


REPLICA_SPEND: Final = Counter(
    "ralex_replica_spend_usd", "Dollars settled by this proxy replica since it started (the ledger rows it wrote), "
    "by key. With several replicas, Prometheus scrapes each: sum by (replica).", ["replica", "key"])
REPLICA_REQUESTS: Final = Counter(
    "ralex_replica_requests", "Requests this proxy replica recorded since it started, by key and ledger status "
    "(ok, refused, error, cancelled, abandoned, interrupted).", ["replica", "key", "status"])


class NotReady(RuntimeError):
    """The runtime could not start (Postgres away, broken prices); the message names the cause."""


class UnknownKey(LookupError):
    """No client key of that name; the message names the fix."""


class ProxyRuntime:
    def __init__(self) -> None:
        self._engine: BudgetEngine | None = None
        self.writer: LedgerWriter | None = None
        self.journal: Journal | None = None
        self._start_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self._keys: dict[str, ClientKey] = {}
        """Client keys by name (revoked ones too: they are named when used)."""
        self._key_hashes: dict[str, ClientKey] = {}
        self.shared: SharedLedger | None = None
        """Reservations shared through Postgres (RALEX_RESERVATIONS=shared); None: this process's book."""

    # --- lifetime --------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._engine is not None

    async def ready(self) -> BudgetEngine:
        """The engine, starting the runtime first if the lifespan has not (bounded wait)."""
        if self._engine is not None:
            return self._engine
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        try:
            async with asyncio.timeout(READY_TIMEOUT), self._start_lock:
                if self._engine is None:
                    await self.start()
        except Exception as exc:
            log.exception("ralex: not ready")
            raise NotReady(str(exc) or type(exc).__name__) from None
        assert self._engine is not None
        return self._engine

    async def start(self) -> None:
        """Load settings and prices, replay the journal into Postgres, then open for requests."""
        if self._engine is not None:
            return
        log_to_stderr()  # LiteLLM configures only its own loggers; each of Ralex's records is one line
        self.settings = settings = load_settings()
        self.config = load_config(settings.config_path)
        self.prices = self._stored_prices() or with_overrides(
            self.config, await afetch_prices(settings.openrouter_api_base, settings.openrouter_api_key))
        clock = settings.clock()
        self._http = httpx.AsyncClient(timeout=10)
        await asyncio.to_thread(prepare_text_reading)  # so no request pays for building the tables
        journal = Journal(journal_path(settings.journal_path or settings.runtime_dir / "ledger-journal.jsonl",
                                       settings.replica_id if settings.reservations == "shared" else None))
        if settings.reservations == "shared":  # this replica's lock first: nobody sweeps what it recovers
            self.shared = SharedLedger(settings.database_url, settings.replica_id, str(journal.path),
                                       hold_ttl=self.abandon_after() + 120)
            await self.shared.start()
        # written by earlier versions: the spool, and rows Postgres refused (set aside, never replayed)
        legacy: tuple[Path, ...] = (journal.path.with_name("ledger-spool.jsonl"),
                                    journal.path.with_suffix(".rejected.jsonl"))
        if self.shared is not None:  # a single proxy's journal, left from before the replicas (replays are idempotent)
            single = settings.journal_path or settings.runtime_dir / "ledger-journal.jsonl"
            legacy = (*legacy, single, single.with_suffix(".rejected.jsonl"))
        async with await psycopg.AsyncConnection.connect(settings.database_url, connect_timeout=5) as conn:
            replayed = await self._price_interrupted(replay(*legacy, journal.path))
            refused = await insert_rows(conn, replayed) if replayed else []
            if replayed:
                interrupted = sum(1 for r in replayed if r.status == "interrupted")
                log.warning("ralex: journal replayed %d rows (%d requests interrupted, charged at their hold)",
                            len(replayed), interrupted)
            journal.rewrite((), refused)  # what Postgres still refuses stays, for the next start
            if self.shared is not None:  # holds of this replica's previous life that its journal did not hold
                left = await self._price_interrupted(await self.shared.left_holds(self.shared.replica))
                refused += await insert_rows(conn, left) if left else []
                if left:
                    log.warning("ralex: %d holds of this replica's previous run charged (%s)", len(left),
                                usd(sum(r.cost_usd for r in left)))
            for path in legacy:
                path.unlink(missing_ok=True)
            row = await (await conn.execute(SELECT_SETTINGS)).fetchone()
            assert row is not None, "budget settings are seeded by ralex-proxy before LiteLLM starts"
            budget = settings_from_row(row)
            today = budget_day(clock(), budget.timezone)
            spent, spent_by_key = with_unrecorded(await _spent_on(conn, today), await _spent_by_key_on(conn, today),
                                                  refused, today)
            crossed = [r[0] for r in await (await conn.execute(CROSSINGS_ON_DAY, (today,))).fetchall()]
            self._set_keys([key_from_row(r) for r in await (await conn.execute(SELECT_KEYS)).fetchall()])
        self.journal = journal
        self.writer = LedgerWriter(settings.database_url, journal=journal, rejected=refused)
        if refused:
            log.error("ralex: Postgres rejected %d journal rows ($%.8f); they stay in the journal, count in "
                      "today's spend and are retried at the next start", len(refused), self.writer.rejected_usd)
        self.writer.start()
        self.replica = settings.replica_id
        REPLICA_SPEND.labels(self.replica, "agent").inc(0)  # the series exists from the start
        self._engine = BudgetEngine(routing_config(self.config, self.prices), budget, spent, clock=clock,
                                    sink=self._record, hold_sink=journal.hold,
                                    sticky_ttl=self.config.routing.sticky_turn_ttl_seconds,
                                    crossed_today=crossed, on_crossing=self._record_crossing,
                                    spent_by_key=spent_by_key, key_budgets=self._key_budgets(), day=today)
        for coro in (self._listen(), self._sweep(), self._refresh_prices()):
            self._spawn(coro)
        if self.shared is not None:
            await self._refresh_scopes_once()
            for coro in (self.shared.keep_presence(), self._refresh_scopes(), self._sweep_orphans()):
                self._spawn(coro)
            log.info("ralex: replica %s, reservations shared through Postgres", self.shared.replica)
        log.info("ralex: budget %s/day (%s), %s spent today", usd(budget.daily_limit), budget.timezone, usd(spent))

    async def stop(self, timeout: float = 8.0) -> None:
        """Drain the ledger writer; whatever Postgres did not take stays in the journal."""
        if self._engine is None or self.writer is None or self.journal is None:
            return
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.writer.stop(timeout)
        queued = self.writer.unwritten()
        open_holds = self._engine.open_holds()
        self.journal.rewrite(open_holds, queued)
        self.journal.close()
        if self._http is not None:
            await self._http.aclose()
        if self.shared is not None:
            await self.shared.close()
            self.shared = None
        log.info("ralex: stopped; %d rows and %d open holds left in the journal for the next start",
                 len(queued), len(open_holds))
        self._engine = None

    def _record(self, row: LedgerRow) -> None:
        """Every finished row: to the ledger writer (journal first), and to this replica's counters."""
        assert self.writer is not None
        self.writer.submit(row)
        REPLICA_REQUESTS.labels(self.replica, row.key_name, row.status).inc()
        if row.cost_usd:
            REPLICA_SPEND.labels(self.replica, row.key_name).inc(row.cost_usd)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _stored_prices(self) -> dict[str, Price] | None:
        path = self.settings.runtime_dir / "prices.json"
        if not path.exists():
            return None
        return {model: Price(**p) for model, p in json.loads(path.read_text()).items()}

    @property
    def engine(self) -> BudgetEngine | None:
        return self._engine

    # --- admission ---------------------------------------------------------------------------------
    async def admit(self, engine: BudgetEngine, body: dict[str, Any], client: str, api: str,
                    read: ChatRequest | None) -> InFlight:
        """Route and hold a request, or raise :class:`ralex.engine.Rejected`: in this process's book, or
        with shared reservations in Postgres (one round trip; a refusal there is routed once more on the
        figures it returned, which may find a cheaper route that fits, then refused)."""
        shared = self.shared
        if shared is None:
            return engine.admit(body, client, api, read)
        for _ in range(2):
            plan = engine.plan(body, client, api, read)
            record = engine.hold_row(engine.flight(plan))
            asked = asyncio.ensure_future(shared.reserve(
                plan.key, record.budget_day, client, plan.decision.reserve, engine.settings.daily_limit,
                engine.client_limit(client), record))
            try:
                verdict = await asyncio.shield(asked)
            except LedgerAway as exc:
                raise Rejected(503, f"Ralex cannot reach the shared budget ledger (Postgres: {exc}); nothing was "
                                    "sent upstream. Check that postgres is up, then try again") from None
            except asyncio.CancelledError:  # the client left: a hold taken meanwhile is given back
                self._spawn(_release_when_done(shared, asked, plan.key))
                raise
            engine.observe(record.budget_day, verdict.day_spent, verdict.day_held,
                           {client: (verdict.key_spent, verdict.key_held)})
            if verdict.admitted:
                return engine.commit(plan)
        engine.refuse(plan)

    # --- settling what the answer did not price ---------------------------------------------------
    def note_generation(self, flight: InFlight) -> None:
        """A stream started: journal its generation id, so a restart (or, with replicas, a sweeper) can
        ask OpenRouter what it cost."""
        if self._engine is not None and self.journal is not None:
            self.journal.hold(self._engine.hold_row(flight))
        if self.shared is not None and flight.generation_id:
            self._spawn(self.shared.note_generation(flight.key, flight.generation_id))

    async def _price_interrupted(self, rows: list[LedgerRow]) -> list[LedgerRow]:
        """Interrupted requests whose generation is known are charged OpenRouter's figure, not the hold."""
        async def priced(row: LedgerRow) -> LedgerRow:
            if row.status != "interrupted" or not row.generation_id:
                return row
            found = await self.generation_cost(row.generation_id, delays=STARTUP_LOOKUP_DELAYS)
            if found is None:
                return row
            return replace(row, cost_usd=found[0], cost_source="generation", prompt_tokens=found[1],
                           completion_tokens=found[2])

        return list(await asyncio.gather(*(priced(row) for row in rows)))

    def settle_from_upstream(self, key: str, generation_id: str | None, *, alias: str | None,
                             status: str = "ok", error: str | None = None) -> None:
        """The answer carried no cost (a cut stream, a missing usage chunk): ask OpenRouter for the
        generation's cost in the background, and charge the hold if it cannot say."""
        flight = self._engine.in_flight.get(key) if self._engine is not None else None
        if flight is None or flight.settling:
            return
        flight.settling = True
        self._spawn(self._settle_from_generation(key, generation_id, alias, status, error))

    async def _settle_from_generation(self, key: str, generation_id: str | None, alias: str | None,
                                      status: str, error: str | None) -> None:
        engine = self._engine
        if engine is None:
            return
        found = await self.generation_cost(generation_id) if generation_id else None
        if found is None:
            engine.settle_at_hold(key, status, error)
            return
        cost, prompt, completion, model = found
        engine.settle(key, cost, cost_source="generation", alias=alias, model=model, prompt_tokens=prompt,
                      completion_tokens=completion, status=status, generation_id=generation_id)

    async def generation_cost(self, generation_id: str, delays: tuple[float, ...] = GENERATION_LOOKUP_DELAYS,
                              ) -> tuple[float, int | None, int | None, str | None] | None:
        """OpenRouter's own record of a generation: (total_cost, prompt, completion tokens, model)."""
        if self._http is None:
            return None
        url = f"{self.settings.openrouter_api_base.rstrip('/')}/generation"
        headers = {"Authorization": f"Bearer {self.settings.openrouter_api_key}"}
        for delay in delays:
            await asyncio.sleep(delay)
            try:
                response = await self._http.get(url, params={"id": generation_id}, headers=headers)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    data = response.json()["data"]
                    return (float(data["total_cost"]), data.get("tokens_prompt"), data.get("tokens_completion"),
                            data.get("model"))
            elif response.status_code not in (404, 429) and response.status_code < 500:
                break
        log.warning("ralex: no cost for generation %s from OpenRouter; charging the hold", generation_id)
        return None

    # --- alerts ------------------------------------------------------------------------------------
    def _record_crossing(self, crossing: Crossing) -> None:
        """Store a threshold crossing (once per day, off the request path); the exporter publishes it."""
        self._spawn(self._store_crossing(crossing))

    async def _store_crossing(self, crossing: Crossing) -> None:
        log.info("ralex: %d %% of the budget of %s reached (%s of %s)", crossing.threshold, crossing.day,
                 usd(crossing.spent), usd(crossing.limit))
        delay = 0.5
        for _ in range(12):  # about ten minutes of Postgres outage; the next start re-detects it anyway
            try:
                async with await psycopg.AsyncConnection.connect(self.settings.database_url, autocommit=True,
                                                                 connect_timeout=3) as conn:
                    await conn.execute(RECORD_CROSSING, (crossing.day, crossing.threshold, crossing.at,
                                                         crossing.spent, crossing.limit))
                return
            except (psycopg.Error, OSError) as exc:
                log.warning("ralex: cannot record the %d %% alert yet (%s)", crossing.threshold, exc)
                await asyncio.sleep(delay)
                delay = min(60.0, delay * 2)

    async def status_view(self, since: int | None = None) -> dict[str, Any]:
        """What the agent may know: budget left, tier, alert level, reset time and recent events."""
        engine = await self.ready()
        snap = engine.snapshot()
        events = engine.events_since(since)
        return {
            "limit": snap.limit,
            "spent": round(snap.spent, 6),
            "remaining": round(max(0.0, snap.remaining), 6),
            "fraction_used": round(snap.fraction_used, 6),
            "tier": snap.tier,
            "alert_level": max(engine.crossed, default=0),
            "thresholds": list(engine.settings.alert_thresholds),
            "resets_at": snap.reset_at.isoformat(),
            "timezone": snap.timezone,
            "summary": snap.summary(),
            "events": [{"id": e.id, "kind": e.kind, "at": e.at.isoformat(), "text": e.text} for e in events],
            "last_event_id": engine.events[-1].id if engine.events else 0,
        }

    # --- background tasks --------------------------------------------------------------------------
    async def _listen(self) -> None:
        """Apply budget changes (ralexctl budget set ...) as soon as Postgres announces them."""
        backoff = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.settings.database_url, autocommit=True, connect_timeout=3
                ) as conn:
                    await conn.execute("LISTEN ralex_budget")
                    log.info("ralex: listening for budget changes")
                    await self._reload_settings(conn)
                    backoff = 0.1
                    while True:
                        # Wake on NOTIFY, and re-read at least every second in case one was missed.
                        async for _ in conn.notifies(timeout=1.0, stop_after=1):
                            pass
                        await self._reload_settings(conn)
            except (psycopg.Error, OSError) as exc:
                log.warning("ralex: settings listener lost Postgres (%s); retrying", str(exc).strip()[:200])
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)

    async def _reload_settings(self, conn: psycopg.AsyncConnection[Any]) -> None:
        row = await (await conn.execute(SELECT_SETTINGS)).fetchone()
        engine = self._engine
        if row is None or engine is None:
            return
        new = settings_from_row(row)
        await self._reload_keys(conn)
        spent = by_key = day = None
        if new.timezone != engine.settings.timezone:
            day = budget_day(engine.clock(), new.timezone)
            spent, by_key = await _spent_on(conn, day), await _spent_by_key_on(conn, day)
        if new != engine.settings:
            engine.apply_settings(new, spent, by_key, day=day)
            log.info("ralex: budget settings now %s/day (%s), caps %s", usd(new.daily_limit), new.timezone,
                     " · ".join(f"{name} {usd(spec.max_cost_per_request)}"
                                for name, spec in engine.routing.aliases.items()))

    def abandon_after(self) -> float:
        """Seconds after which a request that never reported back is charged its hold."""
        return self.settings.upstream_timeout * 2 + 60

    async def _sweep(self) -> None:
        horizon = self.abandon_after()
        while True:
            await asyncio.sleep(5)
            engine, writer, journal = self._engine, self.writer, self.journal
            if engine is None or writer is None or journal is None:
                continue
            for row in engine.expire(horizon):
                log.warning("ralex: request %s never reported back; charged its hold", row.request_id)
            if journal.size > COMPACT_BYTES:
                journal.rewrite(engine.open_holds(), writer.unwritten())

    # --- replicas ---------------------------------------------------------------------------------
    async def _refresh_scopes_once(self) -> None:
        engine, shared = self._engine, self.shared
        if engine is None or shared is None:
            return
        day = engine.today()
        scopes = await shared.scopes(day)
        if "" in scopes:
            spent, held = scopes.pop("")
            engine.observe(day, spent, held, scopes)

    async def _refresh_scopes(self) -> None:
        """Every replica's spend and holds, for routing, alerts and views (admission asks Postgres itself)."""
        while True:
            await asyncio.sleep(SCOPES_REFRESH_SECONDS)
            with contextlib.suppress(LedgerAway):
                await self._refresh_scopes_once()

    async def _sweep_orphans(self) -> None:
        while True:
            try:
                await self.recover_orphans()
            except (psycopg.Error, OSError, LedgerAway) as exc:
                log.warning("ralex: cannot look for replicas that are gone (%s)", str(exc).strip()[:200])
            await asyncio.sleep(ORPHANS_SWEEP_SECONDS)

    async def recover_orphans(self) -> int:
        """Settle what replicas that are gone left: the rows of their journal (where this replica can read
        it: a volume the replicas share), then their holds, each at OpenRouter's figure for its generation,
        else at the hold. Returns how many replicas were recovered."""
        shared = self.shared
        if shared is None:
            return 0
        recovered = 0
        async with shared.orphans() as gone:
            released = await shared.release_expired()
            if released:
                log.warning("ralex: %d holds outlived their requests (a release that found Postgres away); given "
                            "back", released)
            for replica, journal in gone:
                path = Path(journal) if journal else None
                rows = replay(path) if path is not None and path.exists() else []
                rows = await self._price_interrupted(rows)
                async with await psycopg.AsyncConnection.connect(self.settings.database_url,
                                                                 connect_timeout=5) as conn:
                    refused = await insert_rows(conn, rows) if rows else []
                    left = await self._price_interrupted(await shared.left_holds(replica))
                    refused += await insert_rows(conn, left) if left else []
                if refused:
                    log.error("ralex: Postgres rejected %d rows replica %s left; its journal is kept", len(refused),
                              replica)
                    continue
                if path is not None:
                    path.unlink(missing_ok=True)
                await shared.forget(replica)
                recovered += 1
                log.warning("ralex: replica %s is gone; settled %d rows of its journal and %d holds it left (%s)",
                            replica, len(rows), len(left), usd(sum(r.cost_usd for r in left)))
        if recovered:
            await self._refresh_scopes_once()
        return recovered

    async def _refresh_prices(self) -> None:
        while True:
            await asyncio.sleep(self.config.price_refresh_seconds)
            try:
                fetched = await afetch_prices(self.settings.openrouter_api_base, self.settings.openrouter_api_key)
                self.prices = with_overrides(self.config, {**self.prices, **fetched})
                if self._engine is not None:
                    self._engine.set_routing(routing_config(self.config, self.prices))
            except Exception as exc:
                log.warning("ralex: price refresh failed (%s); keeping the last known prices", exc)

    # --- what the admin routes show and change ------------------------------------------------------
    async def budget_view(self) -> dict[str, Any]:
        engine = await self.ready()
        snap = engine.snapshot()
        writer = self.writer
        return {
            "day": snap.day.isoformat(),
            "limit": snap.limit,
            "spent": snap.spent,
            "reserved": snap.reserved,
            "remaining": snap.remaining,
            "fraction_used": snap.fraction_used,
            "tier": snap.tier,
            "timezone": snap.timezone,
            "now": snap.now.isoformat(),
            "resets_at": snap.reset_at.isoformat(),
            "summary": snap.summary(),
            "in_flight": engine.book.in_flight(),
            "reservations": "shared" if self.shared is not None else "memory",
            "replica": self.replica,
            "alert_thresholds": list(engine.settings.alert_thresholds),
            "alerts_crossed_today": sorted(engine.crossed),
            "thresholds": {
                "smart_min_remaining": snap.thresholds.smart_min_remaining,
                "cheap_min_remaining": snap.thresholds.cheap_min_remaining,
                "emergency_max_tokens": snap.thresholds.emergency_max_tokens,
            },
            "prices": {name: {"model": spec.model, "prompt": spec.prompt_price, "completion": spec.completion_price,
                              "max_cost_per_request": spec.max_cost_per_request}
                       for name, spec in engine.routing.aliases.items()},
            "settings_updated_at": engine.settings.updated_at.isoformat() if engine.settings.updated_at else None,
            "keys": [self._key_view(k, engine) for k in self._keys.values() if k.active],
            "ledger": {
                "pending": writer.pending if writer else 0,
                "lag_seconds": writer.lag_seconds if writer else 0.0,
                "written": writer.written if writer else 0,
                "write_failures": writer.failures if writer else 0,
                "rejected": len(writer.rejected) if writer else 0,
                "rejected_usd": round(writer.rejected_usd, 8) if writer else 0.0,
            },
        }

    async def change_settings(self, by: str = "api", **changes: Any) -> dict[str, Any]:
        """Validate and store a live settings change, apply it, and return the new budget view.

        Raises :class:`ralex.budget.BudgetError` (and ValueError/TypeError) naming the fix.
        """
        await self.ready()
        update = settings_update(by=by, **changes)
        async with await psycopg.AsyncConnection.connect(self.settings.database_url, connect_timeout=5) as conn:
            if update is not None:
                async with conn.transaction():
                    await conn.execute(*update)
            await self._reload_settings(conn)
        return await self.budget_view()

    async def spend(self, days: int, by: str) -> dict[str, Any]:
        if by not in SPEND_GROUPS:
            raise ValueError(f"by must be one of {', '.join(SPEND_GROUPS)}")
        if not 1 <= days <= 366:
            raise ValueError("days must be between 1 and 366")
        today = (await self.ready()).today()  # rolled over: no request may have come since midnight
        async with await psycopg.AsyncConnection.connect(self.settings.database_url, connect_timeout=5) as conn:
            cursor = await conn.execute(spend_query(by), {"day": today, "days": days})
            rows = await cursor.fetchall()
        return {"days": days, "by": by, "today": today.isoformat(), "rows": [
            {"day": r[0].isoformat(), "key": r[1], "requests": int(r[2]), "refusals": int(r[3]),
             "spent": float(r[4])} for r in rows]}

    # --- client keys -------------------------------------------------------------------------------
    def client_key(self, plain: str) -> ClientKey | None:
        """The client key a bearer token is (active or revoked), by its hash; None if unknown."""
        return self._key_hashes.get(hash_key(plain)) if plain else None

    def key_active(self, name: str) -> bool:
        key = self._keys.get(name)
        return key is not None and key.active

    def _set_keys(self, keys: list[ClientKey]) -> None:
        self._keys = {k.name: k for k in keys}
        self._key_hashes = {k.key_hash: k for k in keys}
        if self._engine is not None:
            self._engine.set_key_budgets(self._key_budgets())

    def _key_budgets(self) -> dict[str, float | None]:
        return {k.name: k.daily_budget for k in self._keys.values() if k.active}

    async def _reload_keys(self, conn: psycopg.AsyncConnection[Any]) -> None:
        rows = await (await conn.execute(SELECT_KEYS)).fetchall()
        keys = [key_from_row(r) for r in rows]
        if keys != list(self._keys.values()):
            self._set_keys(keys)

    def _key_view(self, key: ClientKey, engine: BudgetEngine) -> dict[str, Any]:
        spent, held = engine.key_usage(key.name)
        return {"name": key.name, "daily_budget": key.daily_budget, "spent_today": round(spent, 8),
                "held": round(held, 8),
                "remaining": round(key.daily_budget - spent - held, 8) if key.daily_budget is not None else None,
                "created_at": key.created_at.isoformat(),
                "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None}

    async def keys_view(self) -> dict[str, Any]:
        """Every client key with today's spend and holds; ``agent`` and ``operator`` spend beside them."""
        engine = await self.ready()
        others = {name: dict(zip(("spent_today", "held"), engine.key_usage(name), strict=True))
                  for name in ("agent", "operator")}
        snap = engine.snapshot()
        return {"day": snap.day.isoformat(), "resets_at": snap.reset_at.isoformat(), "reset_line": snap.reset_line(),
                "keys": [self._key_view(k, engine) for k in self._keys.values()],
                "others": {n: {k: round(v, 8) for k, v in u.items()} for n, u in others.items()}}

    async def _key_write(self, query: str, params: tuple[Any, ...]) -> ClientKey | None:
        async with await psycopg.AsyncConnection.connect(self.settings.database_url, connect_timeout=5) as conn:
            async with conn.transaction():
                row = await (await conn.execute(query, params)).fetchone()
            await self._reload_keys(conn)
        return key_from_row(row) if row is not None else None

    async def add_key(self, name: object, budget: object = None) -> dict[str, Any]:
        """Create a client key; the answer holds the plain key, which is never stored nor shown again.

        Raises ClientKeyError naming the fix (bad name or budget, a name already taken)."""
        engine = await self.ready()
        name, limit = check_name(name), parse_key_budget(budget)
        taken = self._keys.get(name)
        if taken is not None:
            raise ClientKeyError(
                f"a key named {name!r} already exists" + (" (revoked: names are never reused, so its spend stays "
                                                          "its own)" if not taken.active else "")
                + f"; pick another name, e.g. {name[:36]}-2")
        plain = new_key()
        try:
            key = await self._key_write(INSERT_KEY, (name, hash_key(plain), limit))
        except psycopg.errors.UniqueViolation:
            raise ClientKeyError(f"a key named {name!r} already exists; pick another name") from None
        assert key is not None
        return {**self._key_view(key, engine), "key": plain}

    async def revoke_key(self, name: object) -> dict[str, Any]:
        """Revoke a key at once: its next request is refused with 401. Raises UnknownKey."""
        engine = await self.ready()
        key = await self._key_write(REVOKE_KEY, (check_name(name),))
        if key is None:
            raise UnknownKey(f"no key named {name!r}; see ralexctl keys list")
        return self._key_view(key, engine)

    async def set_key_budget(self, name: object, budget: object) -> dict[str, Any]:
        """Change a key's daily sub-budget (None: the global budget only), applied to its next request."""
        engine = await self.ready()
        name, limit = check_name(name), parse_key_budget(budget)
        if name in self._keys and not self._keys[name].active:
            raise ClientKeyError(f"key {name!r} is revoked; create a new one with ralexctl keys add")
        key = await self._key_write(SET_KEY_BUDGET, (limit, name))
        if key is None:
            raise UnknownKey(f"no key named {name!r}; see ralexctl keys list")
        return self._key_view(key, engine)

    async def explain(self, body: dict[str, Any], remaining: float | None = None) -> dict[str, Any]:
        """The decision the proxy would take for ``body`` now (raises engine.Rejected for a bad body)."""
        engine = await self.ready()
        payload, _ = engine.explain(body, remaining)
        return {**payload, "source": "proxy", "prices": "live (OpenRouter)"}


def journal_path(path: Path, replica: str | None) -> Path:
    """The journal of one replica: ``ledger-journal.jsonl`` becomes ``ledger-journal.<replica>.jsonl``,
    so replicas sharing a volume never write, replay or replace each other's file."""
    return path if replica is None else path.with_name(f"{path.stem}.{replica}{path.suffix}")


async def _release_when_done(shared: SharedLedger, asked: asyncio.Future[Any], key: str) -> None:
    with contextlib.suppress(Exception):
        if (await asyncio.wait_for(asked, 30)).admitted:
            await shared.release(key)


def with_unrecorded(spent: float, by_key: dict[str, float], rows: list[LedgerRow], day: date
                    ) -> tuple[float, dict[str, float]]:
    """``day``'s spend (in all, by key) as Postgres holds it, plus the rows it refused: billed money the
    ledger does not hold yet still counts, so a restart never gives it back."""
    by_key = dict(by_key)
    for row in rows:
        if row.budget_day == day:
            spent += row.cost_usd
            by_key[row.key_name] = by_key.get(row.key_name, 0.0) + row.cost_usd
    return spent, by_key


async def _spent_by_key_on(conn: psycopg.AsyncConnection[Any], day: date) -> dict[str, float]:
    rows = await (await conn.execute(SPENT_BY_KEY_ON_DAY, (day,))).fetchall()
    return {str(r[0]): float(r[1]) for r in rows}


async def _spent_on(conn: psycopg.AsyncConnection[Any], day: date) -> float:
    row = await (await conn.execute(SPENT_ON_DAY, (day,))).fetchone()
    return float(row[0]) if row else 0.0


runtime = ProxyRuntime()
"""The process's runtime; the server's lifespan starts and stops it."""
