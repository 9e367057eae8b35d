"""Ralex inside the LiteLLM proxy: a thin adapter from LiteLLM's callbacks to the budget engine.

Wired in the generated LiteLLM config as ``litellm_settings.callbacks: [ralex.proxy.hooks.handler]``.

- ``async_pre_call_hook``: route + reserve (or refuse with 400/402), rewrite model/max_tokens/fallbacks.
- ``async_post_call_response_headers_hook``: ``x-ralex-*`` headers explaining the decision.
- ``async_log_success_event``: settle to the real cost (OpenRouter's ``usage.cost``).
- ``async_log_failure_event`` / ``async_post_call_failure_hook``: failed attempts cost nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Final

import psycopg
from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger

from ralex.budget import budget_day
from ralex.config import load_config
from ralex.engine import BudgetEngine, Rejected
from ralex.ledger.store import SELECT_SETTINGS, SPENT_ON_DAY, settings_from_row
from ralex.ledger.writer import LedgerWriter
from ralex.pricing import Price, afetch_prices, routing_config, with_overrides
from ralex.proxy.settings import load_settings

log = logging.getLogger("ralex.proxy")
if not logging.getLogger("ralex").handlers:  # LiteLLM configures only its own loggers
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("ralex").addHandler(_handler)
    logging.getLogger("ralex").setLevel(logging.INFO)
CHAT_CALLS: Final = frozenset({"completion", "acompletion"})
META_KEY: Final = "ralex_request_id"
META_HEADERS: Final = "ralex_headers"
READY_TIMEOUT: Final = 15.0


def _metadata(kwargs: dict[str, Any]) -> dict[str, Any]:
    params = kwargs.get("litellm_params") or {}
    return params.get("metadata") or kwargs.get("metadata") or {}


def _real_cost(response: Any) -> float | None:
    """OpenRouter's own figure for what the request cost."""
    usage = getattr(response, "usage", None)
    cost = getattr(usage, "cost", None) if usage is not None else None
    if cost is None:
        hidden = getattr(response, "_hidden_params", None) or {}
        cost = (hidden.get("additional_headers") or {}).get("llm_provider-x-litellm-response-cost")
    return float(cost) if cost is not None else None


class RalexHooks(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self.engine: BudgetEngine | None = None
        self.writer: LedgerWriter | None = None
        self._start_lock: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Started on the first request, in the loop that serves requests: LiteLLM imports
        # callbacks while loading its config, possibly in a loop that does not live on.

    # --- start-up ------------------------------------------------------------------------------
    async def _ensure_started(self) -> BudgetEngine:
        if self.engine is not None:
            return self.engine
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.engine is None:
                await self._start()
        assert self.engine is not None
        return self.engine

    async def _start(self) -> None:
        self.settings = load_settings()
        self.config = load_config(self.settings.config_path)
        self.prices = self._load_prices() or with_overrides(
            self.config, await afetch_prices(self.settings.openrouter_api_base, self.settings.openrouter_api_key))
        clock = self.settings.clock()
        async with await psycopg.AsyncConnection.connect(self.settings.database_url, connect_timeout=5) as conn:
            row = await (await conn.execute(SELECT_SETTINGS)).fetchone()
            assert row is not None, "budget settings are seeded by ralex-proxy before LiteLLM starts"
            budget = settings_from_row(row)
            spent = await self._spent_on(conn, budget_day(clock(), budget.timezone))
        spool = self.settings.spool_path or self.settings.runtime_dir / "ledger-spool.jsonl"
        self.writer = LedgerWriter(self.settings.database_url, spool=spool)
        self.writer.start()
        self.engine = BudgetEngine(routing_config(self.config, self.prices), budget, spent, clock=clock,
                                   sink=self.writer.submit,
                                   sticky_ttl=self.config.routing.sticky_turn_ttl_seconds)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(coro) for coro in (self._listen(), self._sweep(), self._refresh_prices())]
        log.info("ralex: budget %s/day (%s), $%.4f spent today", budget.daily_limit, budget.timezone, spent)

    def _load_prices(self) -> dict[str, Price] | None:
        path = self.settings.runtime_dir / "prices.json"
        if not path.exists():
            return None
        return {model: Price(**p) for model, p in json.loads(path.read_text()).items()}

    @staticmethod
    async def _spent_on(conn: psycopg.AsyncConnection[Any], day: Any) -> float:
        row = await (await conn.execute(SPENT_ON_DAY, (day,))).fetchone()
        return float(row[0]) if row else 0.0

    # --- background tasks ------------------------------------------------------------------------
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
        if row is None or self.engine is None:
            return
        new = settings_from_row(row)
        spent = None
        if new.timezone != self.engine.settings.timezone:
            spent = await self._spent_on(conn, budget_day(self.engine.clock(), new.timezone))
        if new != self.engine.settings:
            self.engine.apply_settings(new, spent)
            log.info("ralex: budget settings now %s/day (%s), caps %s", new.daily_limit, new.timezone,
                     {name: spec.max_cost_per_request for name, spec in self.engine.routing.aliases.items()})

    async def _sweep(self) -> None:
        horizon = self.settings.upstream_timeout * 2 + 60
        while True:
            await asyncio.sleep(15)
            if self.engine is not None:
                for row in self.engine.expire(horizon):
                    log.warning("ralex: request %s never reported back; charged its hold", row.request_id)

    async def _refresh_prices(self) -> None:
        while True:
            await asyncio.sleep(self.config.price_refresh_seconds)
            try:
                fetched = await afetch_prices(self.settings.openrouter_api_base, self.settings.openrouter_api_key)
                self.prices = with_overrides(self.config, {**self.prices, **fetched})
                if self.engine is not None:
                    self.engine.set_routing(routing_config(self.config, self.prices))
            except Exception as exc:
                log.warning("ralex: price refresh failed (%s); keeping the last known prices", exc)

    # --- LiteLLM callbacks -------------------------------------------------------------------------
    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict[str, Any],
                                  call_type: Any) -> dict[str, Any]:
        if call_type not in CHAT_CALLS:
            raise HTTPException(400, f"Ralex serves chat completions only (/v1/chat/completions), not {call_type}")
        try:
            engine = await asyncio.wait_for(self._ensure_started(), READY_TIMEOUT)
        except Exception as exc:
            log.exception("ralex: not ready")
            raise HTTPException(503, f"Ralex budget guard is not ready ({exc}); check `docker compose logs "
                                     "litellm` and that postgres is healthy") from None
        try:
            flight = engine.admit(data)
        except Rejected as rejected:
            raise HTTPException(rejected.status, rejected.message, headers=rejected.headers) from None
        decision = flight.decision
        data["model"] = decision.alias
        data.pop("max_completion_tokens", None)
        data["max_tokens"] = decision.max_tokens
        data["fallbacks"] = [{decision.alias: [{"model": fb.alias, "max_tokens": fb.max_tokens}
                                               for fb in decision.fallbacks]}] if decision.fallbacks else []
        metadata = data.setdefault("metadata", {})
        metadata[META_KEY] = flight.key
        metadata[META_HEADERS] = flight.headers
        return data

    async def async_post_call_response_headers_hook(self, data: dict[str, Any], user_api_key_dict: Any,
                                                    response: Any, request_headers: Any = None,
                                                    litellm_call_info: Any = None) -> dict[str, str] | None:
        headers = (data.get("metadata") or {}).get(META_HEADERS)
        return dict(headers) if headers else None

    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        key = _metadata(kwargs).get(META_KEY)
        if self.engine is None or key is None:
            return
        usage = getattr(response_obj, "usage", None)
        prompt = getattr(usage, "prompt_tokens", None)
        completion = getattr(usage, "completion_tokens", None)
        alias = _metadata(kwargs).get("model_group")
        cost = _real_cost(response_obj)
        source = "upstream"
        if cost is None:
            spec = self.engine.routing.aliases.get(alias or "", None)
            flight = self.engine.in_flight.get(key)
            spec = spec or (self.engine.routing.aliases[flight.decision.alias] if flight else None)
            if spec is None or prompt is None or completion is None:
                return
            cost, source = spec.prompt_price * prompt + spec.completion_price * completion, "prices"
        spec = self.engine.routing.aliases.get(alias or "")
        model = spec.model if spec else None
        self.engine.settle(key, cost, cost_source=source, model=model, alias=alias, prompt_tokens=prompt,
                           completion_tokens=completion)

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        key = _metadata(kwargs).get(META_KEY)
        if self.engine is not None and key is not None:
            self.engine.note_failed_attempt(key)

    async def async_post_call_failure_hook(self, request_data: dict[str, Any], original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        key = (request_data.get("metadata") or {}).get(META_KEY)
        if self.engine is not None and key is not None:
            self.engine.fail(key, f"{type(original_exception).__name__}: {original_exception}")
        return None


handler = RalexHooks()


def _register_routes() -> None:
    try:
        from litellm.proxy.proxy_server import app
    except ImportError:  # imported outside the proxy (tests, tools)
        return
    from ralex.proxy.routes import register

    register(app, handler)


_register_routes()
