"""`ralexctl`: live with Ralex from the terminal.

One module per command group; this one only assembles them:

- ralex_ctl/cli/stack.py: init, up, down, status, attach, logs, dashboard
- ralex_ctl/cli/budget.py: route, budget ..., spend
- ralex_ctl/cli/alerts.py: alerts ...
- ralex_ctl/cli/doctor.py: doctor
- ralex_ctl/keys.py: keys ...; ralex_ctl/connect.py: connect; ralex_ctl/sandbox.py: sandbox ...
- ralex_ctl/cli/output.py: the consoles and the one-line error path every command shares
"""

from __future__ import annotations

from typing import Annotated

import typer

from ralex import __version__
from ralex_ctl.cli import alerts, budget, doctor, stack
from ralex_ctl.cli.output import STATE, console, fail
from ralex_ctl.connect import connect_command
from ralex_ctl.errors import RalexError
from ralex_ctl.keys import keys_app
from ralex_ctl.sandbox import sandbox_app

app = typer.Typer(
    name="ralexctl",
    help="Ralex: a budget-aware AI coding stack. Example: ralexctl route \"fix the typo in app.py\"",
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


# `ralexctl --help` lists the commands in this order.
app.command("route")(budget.route_command)
app.command()(stack.init)
app.command()(stack.up)
app.command()(stack.down)
app.command()(stack.status)
app.command()(stack.attach)
app.command()(stack.logs)
app.command()(stack.dashboard)
app.add_typer(budget.budget_app, name="budget")
app.command()(budget.spend)
app.add_typer(keys_app, name="keys")
app.command("connect")(connect_command)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(alerts.alerts_app, name="alerts")
app.command()(doctor.doctor)


def main() -> None:
    try:
        app()
    except RalexError as exc:
        if STATE["verbose"]:
            raise
        fail(exc)
