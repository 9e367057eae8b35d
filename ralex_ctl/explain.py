"""`ralexctl route`: the decision the proxy would take for a prompt.

With the stack up, the running proxy answers (`POST /ralex/route`: live budget, live caps, live
prices). With it down, the same engine preview runs here, on the ledger's settings if it can be
reached and on offline prices (:mod:`ralex_ctl.prices`), and the answer says so.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from ralex.budget import BudgetError, budget_day, parse_budget
from ralex.config import ConfigError, load_config
from ralex.engine import BudgetEngine, Rejected
from ralex.ledger.store import BudgetSettings, LedgerUnavailable, connect, read_settings, spent_on
from ralex.params import ALIASES
from ralex.pricing import routing_config
from ralex_ctl.errors import PricesUnknown, RalexError
from ralex_ctl.prices import offline_prices


def _config_path() -> Path | None:
    env = os.environ.get("RALEX_CONFIG")
    if env:
        return Path(env)
    local = Path.cwd() / "config" / "ralex.yaml"
    return local if local.exists() else None


def _ledger_today(now: datetime) -> tuple[BudgetSettings, float] | None:
    """Live budget settings and the spend of ``now``'s budget day from the ledger, if it can be reached."""
    dsn = os.environ.get("RALEX_DATABASE_URL")
    if not dsn:
        return None
    try:
        with connect(dsn) as conn:
            settings = read_settings(conn)
            return settings, spent_on(conn, budget_day(now, settings.timezone))
    except (LedgerUnavailable, psycopg.Error):
        return None


def request_body(prompt: str, model: str, max_tokens: int | None) -> dict[str, Any]:
    if model not in ALIASES:
        raise RalexError(f"unknown model {model!r}; use one of: {', '.join(ALIASES)}")
    if max_tokens is not None and max_tokens <= 0:
        raise RalexError(f"--max-tokens must be a positive number of tokens, not {max_tokens}")
    if not prompt.strip():
        raise RalexError("the prompt is empty; give the task text, e.g. ralexctl route \"fix the typo in hello.py\"")
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def parse_remaining(remaining: str | None) -> float | None:
    if remaining is None:
        return None
    try:
        return parse_budget(remaining)
    except BudgetError as exc:
        raise RalexError(f"--remaining: {exc}") from None


def explain_offline(body: dict[str, Any], remaining: float | None, now: datetime | None = None) -> dict[str, Any]:
    """The engine's preview computed here: config, ledger settings if reachable, offline prices; at one
    moment ``now`` (default: this machine's clock), so the day's spend and the day it is charged to agree."""
    now = now or datetime.now(UTC)
    try:
        config = load_config(_config_path())
    except ConfigError as exc:
        raise RalexError(str(exc)) from None
    prices, source = offline_prices(config)
    try:
        routing = routing_config(config, prices)
    except ConfigError as exc:
        raise PricesUnknown(f"{exc}. Add the model's prices under `prices:` in config/ralex.yaml") from None
    today = _ledger_today(now)
    if today is not None:
        settings, spent = today
    else:
        d = config.budget
        settings, spent = BudgetSettings(d.daily_limit, d.timezone, d.thresholds()), 0.0
    engine = BudgetEngine(routing, settings, spent, clock=lambda: now, sink=lambda row: None)
    try:
        payload, _ = engine.explain(body, remaining)
    except Rejected as exc:
        raise RalexError(exc.message) from None
    budget = "live settings from the ledger" if today is not None else "config/ralex.yaml defaults"
    return {**payload, "source": f"computed here (stack down): {budget}", "prices": source}
