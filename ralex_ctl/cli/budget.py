"""`ralexctl route, budget, spend`: where a prompt would go, today's budget, and what was spent."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from ralex.budget import BUDGET_TIERS, BudgetError, parse_budget, parse_caps, usd
from ralex_ctl import render
from ralex_ctl.cli.output import console
from ralex_ctl.errors import RalexError
from ralex_ctl.project import Project, find_project
from ralex_ctl.proxy_api import ProxyClient
from ralex_ctl.textout import safe_line


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
    from ralex_ctl.explain import explain_offline, parse_remaining, request_body

    body = request_body(prompt, model, max_tokens)
    what_if = parse_remaining(remaining)
    payload = None
    try:
        project: Project | None = find_project()
    except RalexError:  # not inside a Ralex folder: compute it here
        project = None
    if project is not None and project.env_path.exists():
        from ralex_ctl.proxy_api import ProxyClient, ProxyUnavailable

        try:
            payload = ProxyClient(project, timeout=5).route(body, what_if)
        except ProxyUnavailable:
            payload = None
    if payload is None:
        payload = explain_offline(body, what_if)
    payload = {"prompt": prompt, **payload}
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    if payload["decision"] == "route":
        console.print(f"[bold]{safe_line(payload['alias'])}[/bold] -> {safe_line(payload['model'])}  "
                      f"(tier {safe_line(payload['tier'])}, {usd(payload['remaining'])} left, "
                      f"max_tokens {safe_line(payload['max_tokens'])}, worst case {usd(payload['worst_case_usd'])})")
        console.print(f"why: {safe_line(payload['reason'])}")
    else:
        console.print(f"[red]refused ({safe_line(payload['status'])})[/red]: {safe_line(payload['message'])}")
    console.print(f"[dim]from: {safe_line(payload['source'])}; prices: {safe_line(payload['prices'])}[/dim]")


# --- money ------------------------------------------------------------------------------------

budget_app = typer.Typer(help="Show or change today's budget (live, no restart).", invoke_without_command=True,
                         context_settings={"help_option_names": ["-h", "--help"]})


@budget_app.callback()
def budget_show(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
                ) -> None:
    """Show today's budget. Example: ralexctl budget"""
    if ctx.invoked_subcommand is not None:
        return
    data = ProxyClient(find_project()).budget()
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        _print_budget(data)


@budget_app.command("set")
def budget_set(
    amount: Annotated[str, typer.Argument(help="Dollars per day, e.g. 10 or 7.50.")],
    timezone: Annotated[str | None, typer.Option("--timezone", "-t", help="Also change the reset timezone.")] = None,
) -> None:
    """Set the daily budget; the next request already uses it.

    Example: ralexctl budget set 10
    """
    _apply_budget(daily_limit=budget_amount(amount), timezone=timezone)


@budget_app.command("tier")
def budget_tier(name: Annotated[str, typer.Argument(help=f"One of: {', '.join(BUDGET_TIERS)}.")]) -> None:
    """Set the daily budget to a named tier (lite $2, standard $5, power $10, max $20).

    Example: ralexctl budget tier power
    """
    if name not in BUDGET_TIERS:
        raise RalexError(f"unknown tier {name!r}; use one of: "
                         + ", ".join(f"{n} (${v:g})" for n, v in BUDGET_TIERS.items()))
    _apply_budget(daily_limit=BUDGET_TIERS[name])


@budget_app.command("cap")
def budget_cap(
    alias: Annotated[str, typer.Argument(help="cheap, smart or yolo.")],
    amount: Annotated[str, typer.Argument(help="Most one request may cost, in dollars, e.g. 0.05.")],
) -> None:
    """Set an alias's per-request cap; the next request already uses it.

    The shipped caps suit a coding agent (presets: `ralexctl budget caps`).
    Example: ralexctl budget cap smart 0.50
    """
    try:
        caps = parse_caps({alias: amount})
    except BudgetError as exc:
        raise RalexError(str(exc)) from None
    _apply_budget(caps=caps)


@budget_app.command("caps")
def budget_caps(
    preset: Annotated[str, typer.Argument(help="agent (the default) or strict.")],
) -> None:
    """Set every per-request cap at once from a named preset, live.

    agent: sized for a coding agent's steps (cheap $0.10, smart $0.60, yolo $0.10).
    strict: sized for one-shot chat prompts (cheap $0.001, smart $0.01, yolo $0.0005); refuses agent steps.
    Example: ralexctl budget caps strict
    """
    from ralex.budget import cap_preset

    try:
        caps = cap_preset(preset)
    except BudgetError as exc:
        raise RalexError(str(exc)) from None
    _apply_budget(caps=caps)


@budget_app.command("alerts")
def budget_alerts(
    thresholds: Annotated[list[str], typer.Argument(help="Percentages of the daily budget, e.g. 50 80 95 100.")],
) -> None:
    """Set the alert thresholds, live: each notifies once per budget day (in the agent, and by Alertmanager).

    Example: ralexctl budget alerts 50 80 95
    """
    from ralex.budget import parse_thresholds

    try:
        levels = parse_thresholds(thresholds)
    except BudgetError as exc:
        raise RalexError(str(exc)) from None
    _apply_budget(alert_thresholds=list(levels))


def _apply_budget(**changes: object) -> None:
    data = ProxyClient(find_project()).set_budget(**{k: v for k, v in changes.items() if v is not None})
    console.print("[green]budget updated (live)[/green]")
    _print_budget(data)


def _print_budget(data: dict[str, Any]) -> None:
    console.print(render.budget_line(data))
    console.print(render.caps_line(data))
    console.print(render.alerts_line(data))


def spend(
    days: Annotated[int, typer.Option("--days", "-d", min=1, max=366, help="How many days back.")] = 7,
    by: Annotated[str, typer.Option("--by", help="Group by alias, model, reason or key.")] = "alias",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
) -> None:
    """Spend per day from the ledger, with totals.

    Example: ralexctl spend --days 7 --by model
    """
    if by not in ("alias", "model", "reason", "key"):
        raise RalexError(f"--by {by!r}: use alias, model, reason or key")
    data = ProxyClient(find_project()).spend(days, by)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    elif as_csv:
        sys.stdout.write(render.spend_csv(data))
    elif not data["rows"]:
        console.print(f"no requests in the last {days} days")
    else:
        console.print(render.spend_table(data))


def budget_amount(value: str) -> float:
    try:
        return BUDGET_TIERS[value] if value in BUDGET_TIERS else parse_budget(value)
    except BudgetError as exc:
        raise RalexError(str(exc)) from None
