"""`ralexctl`: live with Ralex from the terminal."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console

from ralex import __version__
from ralex.budget import BudgetError, BudgetSnapshot, budget_day, parse_budget, usd
from ralex.classify import classify
from ralex.config import ConfigError, load_config
from ralex.ledger.store import BudgetSettings, LedgerUnavailable, connect, read_settings, spent_on
from ralex.policy import ALIASES, Decision, RouteInput, UnknownAlias, route
from ralex.pricing import routing_config
from ralex.request import estimate_prompt_tokens
from ralex_ctl.errors import PricesUnknown, RalexError
from ralex_ctl.prices import load_prices

app = typer.Typer(
    name="ralexctl",
    help="Ralex: a budget-aware AI coding stack. Example: ralexctl route \"fix the typo in app.py\"",
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
STATE = {"verbose": False}


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


def _version(value: bool) -> None:
    if value:
        console.print(f"ralexctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Ralex: OpenCode behind a LiteLLM proxy that cannot overspend."""
    STATE["verbose"] = verbose


@app.command("route")
def route_command(
    prompt: Annotated[str, typer.Argument(help="The task text, as a user would type it.")],
    remaining: Annotated[str | None, typer.Option(
        "--remaining", "-r", help="Dollars left today (default: today's real figure from the ledger, "
        "else the full daily budget).", envvar="RALEX_REMAINING")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Alias the client asks for: auto, cheap, smart, "
                                                              "yolo.")] = "auto",
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Output tokens the client asks "
                                                                        "for.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Show where the proxy would send a prompt, and why.

    Example: ralexctl route --json "refactor the auth module" --remaining 1.20
    """
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
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    if isinstance(outcome, Decision):
        console.print(f"[bold]{outcome.alias}[/bold] -> {outcome.model}  "
                      f"(tier {snapshot.tier}, {usd(left)} left, max_tokens {outcome.max_tokens})")
        console.print(f"why: {outcome.reason}")
    else:
        console.print(f"[red]refused ({outcome.status})[/red]: {outcome.message}")


def main() -> None:
    try:
        app()
    except RalexError as exc:
        if STATE["verbose"]:
            raise
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(1) from None
