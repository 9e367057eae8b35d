"""`ralexctl alerts`: where budget alerts are sent (Alertmanager)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from ralex_ctl import stack
from ralex_ctl.cli.output import console
from ralex_ctl.errors import RalexError
from ralex_ctl.project import Project, find_project, read_env_text, replace_file
from ralex_ctl.textout import safe_line

alerts_app = typer.Typer(help="Where budget alerts are sent (Alertmanager): webhook, ntfy, Slack, Discord, email.",
                         invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})


def _alertmanager(project: Project) -> Any:
    from ralex_ctl import alerts as alerting

    try:
        container = stack.containers(project).get(alerting.SERVICE)
    except RalexError:  # no Docker engine: amtool cannot run either, and says so
        container = None
    return alerting.Alertmanager(project, container)


def _apply_alerts(project: Project, changes: dict[str, str], done: str) -> None:
    """Render alertmanager.yml from .env with ``changes``; amtool must accept it before .env or the
    config file is touched; then a running Alertmanager loads it."""
    from ralex_ctl import alerts as alerting

    if not project.env_path.exists():
        raise RalexError(f"{project.env_path} does not exist: run `ralexctl init` first")
    current = project.env_path.read_text()
    text = alerting.update_env(current, changes) if changes else current
    config = alerting.render(read_env_text(text))
    manager = _alertmanager(project)
    manager.check(config)
    if text != current:
        replace_file(project.env_path, text.encode())
    outcome = alerting.install(project, config, manager)
    console.print(f"[green]{safe_line(done)}[/green]; {safe_line(outcome)}", highlight=False)


@alerts_app.callback()
def alerts_list(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
                ) -> None:
    """Show the alert receivers. Example: ralexctl alerts"""
    if ctx.invoked_subcommand is not None:
        return
    _show_alerts(as_json)


@alerts_app.command("list")
def alerts_list_command(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show the alert receivers and whether Alertmanager has them.

    Example: ralexctl alerts list
    """
    _show_alerts(as_json)


def _show_alerts(as_json: bool) -> None:
    from ralex_ctl import alerts as alerting

    project = find_project()
    env = project.dotenv()
    found = alerting.receivers(env)
    state = alerting.config_state(project, env)
    if as_json:
        sys.stdout.write(json.dumps({"receivers": [{"kind": r.kind, "target": r.shown(), "variable": r.variable}
                                                   for r in found], "config": state}, indent=2) + "\n")
        return
    if not found:
        console.print("no alert receiver: budget alerts stay in Prometheus and Grafana; add one, e.g. "
                      f"ralexctl alerts add ntfy {alerting.EXAMPLES['ntfy']}", highlight=False)
    for r in found:
        console.print(f"{r.kind:<8} {safe_line(r.shown())}  [grey50]({r.variable})[/grey50]", highlight=False)
    if state == "stale" or (found and state == "absent"):
        console.print(f"[yellow]{alerting.CONFIG} does not match .env:[/yellow] ralexctl alerts apply", highlight=False)


@alerts_app.command("add")
def alerts_add(
    kind: Annotated[str, typer.Argument(help="webhook, ntfy, slack, discord or email.")],
    target: Annotated[str, typer.Argument(help="The URL (webhook, ntfy topic, Slack or Discord webhook) or the "
                                               "email address.")],
    smtp_host: Annotated[str | None, typer.Option("--smtp-host", help="email: SMTP server as host:port.")] = None,
    smtp_from: Annotated[str | None, typer.Option("--smtp-from", help="email: the sender address.")] = None,
    smtp_user: Annotated[str | None, typer.Option("--smtp-user", help="email: SMTP login.")] = None,
    smtp_password: Annotated[str | None, typer.Option("--smtp-password", envvar="RALEX_SMTP_PASSWORD",
                                                      help="email: SMTP password.")] = None,
) -> None:
    """Send budget alerts to a receiver (one per kind; adding a kind again replaces its target).

    Each threshold is sent once per budget day. Examples: ralexctl alerts add ntfy https://ntfy.sh/my-topic,
    ralexctl alerts add email you@example.com --smtp-host smtp.example.com:587 --smtp-from ralex@example.com
    """
    from ralex_ctl import alerts as alerting

    kind = alerting.kind_of(kind)
    receiver = alerting.Receiver(kind, alerting.check_target(kind, target))
    changes = {receiver.variable: receiver.target}
    smtp = {alerting.SMTP_HOST: smtp_host, alerting.SMTP_FROM: smtp_from, alerting.SMTP_USER: smtp_user,
            alerting.SMTP_PASSWORD: smtp_password}
    changes.update({name: value for name, value in smtp.items() if value is not None})
    _apply_alerts(find_project(), changes, f"alerts go to {kind} {receiver.shown()}")


@alerts_app.command("remove")
def alerts_remove(kind: Annotated[str, typer.Argument(help="webhook, ntfy, slack, discord or email.")]) -> None:
    """Stop sending alerts to a receiver kind.

    Example: ralexctl alerts remove slack
    """
    from ralex_ctl import alerts as alerting

    kind = alerting.kind_of(kind)
    _apply_alerts(find_project(), {alerting.KINDS[kind]: ""}, f"no more alerts to {kind}")


@alerts_app.command("apply")
def alerts_apply() -> None:
    """Write alertmanager.yml from the receivers in .env (after editing .env by hand) and reload Alertmanager.

    Example: ralexctl alerts apply
    """
    _apply_alerts(find_project(), {}, "receivers from .env applied")


@alerts_app.command("test")
def alerts_test() -> None:
    """Send a test alert through Alertmanager to every receiver.

    Example: ralexctl alerts test
    """
    from ralex_ctl import alerts as alerting

    project = find_project()
    found = alerting.receivers(project.dotenv())
    if not found:
        raise RalexError("no alert receiver to test; add one, e.g. ralexctl alerts add ntfy "
                         f"{alerting.EXAMPLES['ntfy']}")
    _alertmanager(project).send_test()
    console.print(f"test alert sent to {', '.join(r.kind for r in found)} (arrives in about 5 s)", highlight=False)
