"""`ralexctl keys`: a proxy key per client (Claude Code on a laptop, a colleague's Aider), each with an
optional daily sub-budget inside the global budget.

The proxy holds the keys (hashed, in Postgres) and applies every change to the key's next request;
these commands only validate the input and call its master-key routes (``/ralex/keys``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ralex.budget import sub_budget_text, usd
from ralex.keys import ClientKeyError, check_name, parse_key_budget
from ralex_ctl.errors import RalexError
from ralex_ctl.project import find_project
from ralex_ctl.proxy_api import ProxyClient
from ralex_ctl.textout import safe_line

keys_app = typer.Typer(help="A proxy key per client, each with an optional daily sub-budget (live). "
                            "Example: ralexctl keys add laptop-claude --budget 2",
                       no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
# As ralexctl's own console: piped output is not cut to 80 columns (COLUMNS still wins).
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160, emoji=False)

NameArg = Annotated[str, typer.Argument(help="The key's name: 1-40 lowercase letters, digits and '-'.")]


def _name(name: str) -> str:
    try:
        return check_name(name)
    except ClientKeyError as exc:
        raise RalexError(str(exc)) from None


def _budget(value: str | None) -> float | None:
    try:
        return parse_key_budget(value)
    except ClientKeyError as exc:
        raise RalexError(str(exc)) from None


def _client() -> ProxyClient:
    return ProxyClient(find_project())


def budget_text(key: dict[str, Any]) -> str:
    return usd(key["daily_budget"]) + "/day" if key.get("daily_budget") is not None else "global only"


def allows_text(key: dict[str, Any]) -> str:
    """What the key's sub-budget allows (:func:`ralex.budget.sub_budget_text`), or the global budget's rule."""
    if key.get("daily_budget") is None:
        return "no sub-budget: the day's budget and its tiers apply"
    return sub_budget_text(float(key["daily_budget"]))


def summary_line(budget: dict[str, Any]) -> str | None:
    """One line for `ralexctl status`: each active key's spend today against its sub-budget."""
    keys = budget.get("keys") or []
    if not keys:
        return None
    parts = [f"{k['name']} {usd(k['spent_today'])}" + (f"/{usd(k['daily_budget'])}" if k.get("daily_budget")
                                                       is not None else "") for k in keys]
    return "keys today: " + ", ".join(parts)


@keys_app.command("add")
def keys_add(
    name: NameArg,
    budget: Annotated[str | None, typer.Option("--budget", "-b", help="Daily sub-budget in dollars (default: the "
                                                                       "global budget only).")] = None,
) -> None:
    """Create a key for one client; the key is printed once and never again.

    Its requests may call only the model routes, are attributed to NAME in the ledger, and are held to
    its sub-budget inside the global one (whichever is tighter wins).
    Example: ralexctl keys add laptop-claude --budget 2
    """
    name, limit = _name(name), _budget(budget)
    created = _client().add_key(name, limit)
    console.print(f"[green]key {safe_line(created['name'])} created[/green] ({allows_text(created)}); "
                  "it is shown only now, store it in the client's settings:", highlight=False)
    sys.stdout.write(created["key"] + "\n")
    sys.stdout.flush()


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every key with its sub-budget, today's spend and holds, and whether it is revoked.

    Example: ralexctl keys list --json
    """
    data = _client().keys()
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    if not data["keys"]:
        console.print("no client keys yet; create one with: ralexctl keys add laptop-claude --budget 2",
                      highlight=False)
        return
    table = Table(title=f"Client keys, budget day {data['day']}", title_justify="left")
    for column in ("name", "daily sub-budget", "spent today", "held", "created", "revoked"):
        table.add_column(column, justify="right" if column in ("spent today", "held") else "left")
    for key in data["keys"]:
        table.add_row(safe_line(key["name"]), budget_text(key), usd(key["spent_today"]), usd(key["held"]),
                      key["created_at"][:16].replace("T", " "),
                      key["revoked_at"][:16].replace("T", " ") if key["revoked_at"] else "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: NameArg) -> None:
    """Revoke a key at once: its next request is refused (401 naming it). Its spend stays in the ledger.

    Example: ralexctl keys revoke laptop-claude
    """
    name = _name(name)
    revoked = _client().revoke_key(name)
    console.print(f"[green]key {safe_line(revoked['name'])} revoked[/green]; its requests are refused from now on",
                  highlight=False)


@keys_app.command("budget", context_settings={"ignore_unknown_options": True})
def keys_budget(
    name: NameArg,
    amount: Annotated[str, typer.Argument(help="Dollars per day, e.g. 2 or 0.50, or none for the global budget "
                                               "only.")],
) -> None:
    """Set a key's daily sub-budget, live: the key's next request already uses it.

    Example: ralexctl keys budget laptop-claude 5
    """
    name, limit = _name(name), _budget(amount)
    changed = _client().set_key_budget(name, limit)
    console.print(f"[green]key {safe_line(changed['name'])}: {budget_text(changed)}[/green] (live; spent today "
                  f"{usd(changed['spent_today'])})", highlight=False)
