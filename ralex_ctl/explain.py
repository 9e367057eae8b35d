"""`ralexctl route`: the decision the proxy would take for a prompt, computed by the same policy code."""

from __future__ import annotations

import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from ralex.budget import BudgetError, BudgetSnapshot, budget_day, parse_budget
from ralex.classify import classify
from ralex.config import ConfigError, load_config
from ralex.ledger.store import BudgetSettings, LedgerUnavailable, connect, read_settings, spent_on
from ralex.params import ALIASES
from ralex.policy import Decision, Refusal, RouteInput, UnknownAlias, route, with_caps
from ralex.pricing import routing_config
from ralex.request import estimate_prompt_tokens
from ralex_ctl.errors import PricesUnknown, RalexError
from ralex_ctl.prices import load_prices


def _config_path() -> Path | None:
    env = os.environ.get("RALEX_CONFIG")
    if env:
        return Path(env)
    local = Path.cwd() / "config" / "ralex.yaml"
    return local if local.exists() else None


def _ledger_today() -> tuple[BudgetSettings, float] | None:
    """Live budget settings and today's spend from the ledger, if it can be reached."""
    dsn = os.environ.get("RALEX_DATABASE_URL")
    if not dsn:
        return None
    try:
        with connect(dsn) as conn:
            settings = read_settings(conn)
            return settings, spent_on(conn, budget_day(datetime.now(UTC), settings.timezone))
    except (LedgerUnavailable, psycopg.Error):
        return None


def explain(prompt: str, remaining: str | None, model: str, max_tokens: int | None
            ) -> tuple[dict[str, object], Decision | Refusal, str, float]:
    """The JSON payload of `ralexctl route`, the policy's outcome, the budget tier and the dollars left."""
    if model not in ALIASES:
        raise RalexError(f"unknown model {model!r}; use one of: {', '.join(ALIASES)}")
    try:
        config = load_config(_config_path())
    except ConfigError as exc:
        raise RalexError(str(exc)) from None
    prices = load_prices(config)
    try:
        routing = routing_config(config, prices)
    except ConfigError as exc:
        raise PricesUnknown(f"{exc}. Start the stack once (prices are cached in the ledger) or set "
                            "OPENROUTER_API_BASE/OPENROUTER_API_KEY") from None
    limit, timezone, thresholds = config.budget.daily_limit, config.budget.timezone, config.budget.thresholds()
    today = _ledger_today()
    if today is not None:
        limit, timezone, thresholds = today[0].daily_limit, today[0].timezone, today[0].thresholds
        routing = with_caps(routing, today[0].caps)
    if remaining is None:
        left = limit - today[1] if today else limit
    else:
        try:
            left = parse_budget(remaining)
        except BudgetError as exc:
            raise RalexError(f"--remaining: {exc}") from None
    limit = max(limit, left)
    snapshot = BudgetSnapshot(limit=limit, spent=limit - left, reserved=0.0, timezone=timezone,
                              now=datetime.now(UTC), thresholds=thresholds)
    tokens = estimate_prompt_tokens([{"role": "user", "content": prompt}])
    try:
        outcome = route(RouteInput(model, prompt, tokens, max_tokens), snapshot, routing)
    except UnknownAlias as exc:
        raise RalexError(str(exc)) from None
    verdict = classify(prompt, config.routing.smart_threshold)
    payload: dict[str, object] = {
        "prompt": prompt,
        "requested": model,
        "remaining": left,
        "tier": snapshot.tier,
        "classification": {"label": verdict.label, "score": verdict.score, "signals": list(verdict.matched)},
    }
    if isinstance(outcome, Decision):
        payload.update({
            "decision": "route", "alias": outcome.alias, "model": outcome.model, "reason": outcome.reason,
            "max_tokens": outcome.max_tokens, "worst_case_usd": outcome.worst_case, "reserve_usd": outcome.reserve,
            "fallbacks": [asdict(f) for f in outcome.fallbacks],
        })
    else:
        payload.update({"decision": "refuse", "status": outcome.status, "message": outcome.message,
                        "needed_usd": outcome.needed})
    return payload, outcome, snapshot.tier, left
