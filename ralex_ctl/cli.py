"""`ralexctl`: live with Ralex from the terminal."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import webbrowser
from dataclasses import asdict
from pathlib import Path
from typing import IO, Annotated, Any, Final, NoReturn

import docker.errors
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ralex import __version__
from ralex.budget import BUDGET_TIERS, BudgetError, parse_budget, parse_caps, usd, zone
from ralex_ctl import board, render, stack
from ralex_ctl.board import Verdict as Check
from ralex_ctl.connect import connect_command
from ralex_ctl.errors import RalexError
from ralex_ctl.keys import keys_app
from ralex_ctl.keys import summary_line as keys_summary
from ralex_ctl.logview import LogView
from ralex_ctl.project import (
    DASHBOARD_PROFILE,
    REQUIRED,
    BadEnvValue,
    Project,
    compose_path,
    env_value,
    find_project,
    normalize_project_name,
    read_env_text,
    render_env,
    replace_file,
    update_env,
)
from ralex_ctl.proxy_api import ProxyClient
from ralex_ctl.sandbox import TOOLCHAINS, detect_toolchain, network_check, sandbox_app, toolchain_env
from ralex_ctl.sandbox import summary as sandbox_summary
from ralex_ctl.sandbox import summary_line as sandbox_line
from ralex_ctl.textout import safe_line

app = typer.Typer(
    name="ralexctl",
    help="Ralex: a budget-aware AI coding stack. Example: ralexctl route \"fix the typo in app.py\"",
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped or redirected output is not cut to 80 columns: tables keep full model names (COLUMNS still wins).
# Text from outside goes through safe_line; emoji codes stay text (`:x:` in a message is not an emoji).
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160,
                  emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)
STATE = {"verbose": False}


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


# --- setting up -------------------------------------------------------------------------------

def _secret(prefix: str = "") -> str:
    return prefix + secrets.token_hex(24)


def _local_timezone() -> str:
    tz = os.environ.get("TZ")
    if tz and "/" in tz:
        return tz
    try:
        link = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in link:
            return link.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"


@app.command()
def init(
    openrouter_key: Annotated[str | None, typer.Option("--openrouter-key", envvar="OPENROUTER_API_KEY",
                                                       help="Your OpenRouter API key (sk-or-...).")] = None,
    budget: Annotated[str | None, typer.Option("--budget", "-b", help="Daily budget: a tier (lite=2, standard=5, "
                                                                       "power=10, max=20) or dollars.")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", "-t", help="Timezone whose midnight resets the "
                                                                            "budget.")] = None,
    workspace: Annotated[Path | None, typer.Option("--workspace", "-w", help="Folder the agent works in.")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="Memory limits: small (a 2-3 GB board such as "
                                                "a 2 GB Pi 4) or standard; default: chosen by this machine's RAM.")
                       ] = None,
    agent: Annotated[str, typer.Option("--agent", help=f"The agent's toolchain: {', '.join(TOOLCHAINS)}, or auto "
                                       "(from the workspace's files: pyproject.toml means python).")] = "auto",
    dashboard: Annotated[bool, typer.Option("--dashboard/--no-dashboard", help="Run the Grafana budget dashboard "
                                            "(later: ralexctl dashboard on|off).")] = True,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing .env.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", "--non-interactive",
                                      help="Ask nothing; use options, environment and defaults.")] = False,
) -> None:
    """Create .env from .env.example with generated secrets.

    Example: ralexctl init --openrouter-key sk-or-v1-... --budget power --timezone Europe/Berlin -y
    """
    project = find_project()
    if project.env_path.exists() and not force:
        raise RalexError(f"{project.env_path} already exists; keep it, or run `ralexctl init --force` to replace it")
    if agent != "auto" and agent not in TOOLCHAINS:
        raise RalexError(f"unknown toolchain {agent!r}; use --agent with one of {', '.join(TOOLCHAINS)} or auto")
    if profile is not None and profile not in board.PROFILES:
        raise RalexError(f"unknown profile {profile!r}; use --profile {' or --profile '.join(board.PROFILES)}")
    profile = profile or board.profile_for(board.mem_total(board.this_machine()[3]))
    interactive = not yes and _stdin_is_terminal()
    if not openrouter_key and interactive:
        openrouter_key = typer.prompt("OpenRouter API key (https://openrouter.ai/keys)", hide_input=True)
    if not openrouter_key:
        raise RalexError("no OpenRouter key: pass --openrouter-key or set OPENROUTER_API_KEY")
    if not openrouter_key.startswith("sk-or-"):
        raise RalexError("that does not look like an OpenRouter key (they start with sk-or-); check "
                         "https://openrouter.ai/keys")
    if budget is None and interactive:
        budget = typer.prompt(f"Daily budget ({', '.join(f'{n}=${v:g}' for n, v in BUDGET_TIERS.items())} or "
                              "dollars)", default="standard")
    amount = _budget_amount(budget or "standard")
    timezone = timezone or (typer.prompt("Timezone", default=_local_timezone()) if interactive
                            else _local_timezone())
    try:
        zone(timezone)
    except BudgetError as exc:
        raise RalexError(str(exc)) from None
    workspace_value = compose_path("RALEX_WORKSPACE", str(workspace) if workspace else (
        typer.prompt("Workspace folder", default="./workspace") if interactive else "./workspace"))
    workspace = Path(workspace_value)
    values = {
        "OPENROUTER_API_KEY": openrouter_key,
        "LITELLM_MASTER_KEY": _secret("sk-"),
        "RALEX_AGENT_KEY": _secret("sk-"),
        "POSTGRES_PASSWORD": _secret(),
        "RALEX_EXPORTER_DB_PASSWORD": _secret(),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "RALEX_DAILY_BUDGET": f"{amount:g}",
        "RALEX_TIMEZONE": timezone,
        "RALEX_WORKSPACE": workspace_value,
        "COMPOSE_PROFILES": DASHBOARD_PROFILE if dashboard else "",
        **board.PROFILES[profile],
    }
    folder = workspace if workspace.is_absolute() else project.root / workspace
    uid, gid = _agent_ids(folder)
    values.update({"RALEX_UID": str(uid), "RALEX_GID": str(gid), **_git_identity()})
    toolchain = agent if agent != "auto" else detect_toolchain(folder)
    values.update(toolchain_env(toolchain))
    taken = _own_project_name(project)
    if taken:
        values["COMPOSE_PROJECT_NAME"] = taken
    template = project.example_path.read_text() if project.example_path.exists() else ""
    checked = _write_env_checked(project, render_env(template, values))
    if not folder.exists():
        folder.mkdir(parents=True)
        if os.getuid() == 0:
            os.chown(folder, uid, gid)
    console.print(f"[green]wrote[/green] {safe_line(project.env_path)} (budget {usd(amount)}/day, "
                  f"{safe_line(timezone)}, workspace {safe_line(workspace_value)}, {profile} memory profile, "
                  f"{toolchain} toolchain, agent offline{'' if dashboard else ', no dashboard'}"
                  + (f", Compose project {safe_line(taken)}" if taken else "")
                  + f"; {safe_line(checked)}); next: ralexctl up", highlight=False)


# How to fix a value init wrote, by variable (any other: correct it in .env.example).
INIT_FIXES = {
    "RALEX_WORKSPACE": "pass --workspace ./folder (relative to the project) or an absolute path",
    "RALEX_TIMEZONE": "pass --timezone with an IANA name such as Europe/Berlin",
    "RALEX_DAILY_BUDGET": "pass --budget standard (or a dollar amount)",
    "OPENROUTER_API_KEY": "pass --openrouter-key with the key from https://openrouter.ai/keys",
}


def _write_env_checked(project: Project, text: str) -> str:
    """Write .env (mode 0600, atomically) and have `docker compose config` read it as Compose will. If
    Compose rejects it, the previous .env (or none) is put back and the error names the variable."""
    written = read_env_text(text)
    previous = project.env_path.read_bytes() if project.env_path.exists() else None
    replace_file(project.env_path, text.encode())
    try:
        problem = stack.compose_config_error(project)
    except (RalexError, OSError, subprocess.TimeoutExpired):
        return "not checked: Docker Compose is not available here"
    if problem is None:
        return "docker compose config accepts it"
    if previous is None:
        project.env_path.unlink()
    else:
        replace_file(project.env_path, previous)
    raise RalexError(_compose_rejects(problem, written, project))


def _compose_rejects(problem: str, written: dict[str, str], project: Project) -> str:
    """One line: which variable Compose tripped on, where its value came from, and the fix."""
    kept = f"{project.env_path} was left as it was"
    culprit = _culprit(problem, written)
    if culprit is None:
        return f"docker compose rejects the new .env: {problem}; {kept}"
    name, shown = culprit
    if name in os.environ:
        return (f"docker compose rejects {shown} from your shell, which wins over .env ({problem}); "
                f"unset {name} or correct it; {kept}")
    fix = INIT_FIXES.get(name, f"correct {name} in {project.example_path.name}")
    return f"docker compose rejects {shown} ({problem}); {fix}; {kept}"


def _culprit(problem: str, dotenv: dict[str, str]) -> tuple[str, str] | None:
    """The variable a Compose error is about (named in it, or the one whose value it quotes) and how to
    show it: `NAME=value`, or only the name for a secret."""
    effective = {**dotenv, **{k: v for k, v in os.environ.items() if k in dotenv or k.startswith(("RALEX_",
                                                                                                 "COMPOSE_"))}}
    named = [n for n in effective if re.search(rf"\b{n}\b", problem)]
    quoted = [n for n, v in sorted(effective.items(), key=lambda item: -len(item[1]))
              if len(v) >= 3 and re.search(rf"(?<![\w./-]){re.escape(v)}(?![\w./-])", problem)]
    if not (named or quoted):
        return None
    name = (named or quoted)[0]
    return name, name if name in REQUIRED else f"{name}={effective[name]}"


def _own_project_name(project: Project) -> str | None:
    """A project name of this folder's own when its Compose name is already the stack of another folder
    (two folders under one name would share, and replace, each other's containers)."""
    try:
        if project.compose.name_from == "environment":
            return None
        found = stack.containers(project)
    except RalexError:
        return None
    if stack.owner(project, found) is None:
        return None
    return normalize_project_name(f"{project.compose_project}-{project.root.name}")


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _agent_ids(workspace: Path) -> tuple[int, int]:
    """The host user the agent's files should belong to: the workspace's owner if it exists, else
    whoever runs init (the user behind sudo, when root). The agent never runs as root: root -> 1000."""
    if workspace.exists():
        st = workspace.stat()
        uid, gid = st.st_uid, st.st_gid
    else:
        uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        uid, gid = int(os.environ.get("SUDO_UID") or 1000), int(os.environ.get("SUDO_GID") or 1000)
    return (uid, gid) if uid != 0 else (1000, 1000)


def _git_identity() -> dict[str, str]:
    """This machine's git identity for the agent's commits (RALEX_GIT_NAME / RALEX_GIT_EMAIL), each
    value only if git has one and .env can hold it; otherwise the .env.example default stays."""
    found: dict[str, str] = {}
    for name, key in (("RALEX_GIT_NAME", "user.name"), ("RALEX_GIT_EMAIL", "user.email")):
        try:
            done = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True, timeout=5,
                                  check=False)
        except (OSError, subprocess.SubprocessError):
            return found
        value = done.stdout.strip()
        if done.returncode != 0 or not value:
            continue
        try:
            env_value(name, value)
        except BadEnvValue:
            continue
        found[name] = value
    return found


def _budget_amount(value: str) -> float:
    try:
        return BUDGET_TIERS[value] if value in BUDGET_TIERS else parse_budget(value)
    except BudgetError as exc:
        raise RalexError(str(exc)) from None


# --- running ----------------------------------------------------------------------------------

def _urls(project: Project) -> dict[str, str]:
    """Where the user reaches the stack (the dashboard only when its profile is on)."""
    env = project.env()
    urls = {
        "proxy": f"http://127.0.0.1:{env.get('RALEX_PROXY_PORT') or '4000'}/v1",
        "prometheus": f"http://127.0.0.1:{env.get('RALEX_PROMETHEUS_PORT') or '9090'}",
    }
    if project.dashboard:
        urls = {"dashboard": f"http://127.0.0.1:{env.get('RALEX_GRAFANA_PORT') or '3000'}/d/ralex-budget", **urls}
    return urls


DASHBOARD_LOGIN: Final = "user admin, password: GRAFANA_ADMIN_PASSWORD in .env (ralexctl dashboard --password)"


@app.command()
def up(
    build: Annotated[bool, typer.Option("--build", help="Rebuild Ralex's images first.")] = False,
    services: Annotated[list[str] | None, typer.Argument(help="Only these services (default: all).")] = None,
    timeout: Annotated[int, typer.Option("--timeout", help="Seconds to wait for health.")] = 300,
) -> None:
    """Start the stack with Docker Compose and wait until it is healthy.

    Example: ralexctl up
    """
    project = find_project()
    missing = project.missing()
    if missing:
        raise RalexError(f".env is missing {', '.join(missing)}: run `ralexctl init` (or fill them in .env)")
    engine = stack.client()
    stack.ensure_own(project, stack.containers(project, engine))
    progress = stack.UpProgress(project.compose_project, services or stack.compose_services(project))
    command = stack.compose_command(project, "up", "-d", "--wait", "--wait-timeout", str(timeout),
                                    *(["--build"] if build else []), *(services or []))
    started = time.monotonic()
    returncode, output = _compose_up(project, command, engine, progress, started)
    if returncode != 0:
        raise RalexError(_compose_up_failure(project, returncode, output, progress))
    states = stack.states(project, engine)
    if console.is_terminal:
        console.print(render.up_summary(progress, states))
    else:
        for line in render.up_summary_lines(progress, states):
            console.print(safe_line(line), highlight=False)
    console.print(f"[green]Ralex is up[/green] in {render.seconds(time.monotonic() - started)} "
                  f"(Compose project {safe_line(project.compose_project)})")
    for name, url in _urls(project).items():
        login = f"  ({DASHBOARD_LOGIN})" if name == "dashboard" else ""
        console.print(f"  {name:<10} {safe_line(url)}{login}", highlight=False)
    try:
        console.print(render.budget_line(ProxyClient(project).budget()))
    except RalexError as exc:
        console.print(f"[yellow]budget unavailable:[/yellow] {safe_line(exc)}")


def _compose_up(project: Project, command: list[str], engine: Any, progress: stack.UpProgress,
                started: float) -> tuple[int, list[str]]:
    """Run `docker compose up`, following its progress: a live table in a terminal, else one plain
    line per change (`  12.3s litellm: building (step 3/8: RUN pip install ...)`)."""
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump(stream: IO[str]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    def report(change: str | None, at: float) -> None:
        if change and not console.is_terminal:
            console.print(f"{at:7.1f}s {safe_line(change)}", highlight=False)

    with subprocess.Popen(command, cwd=project.root, env=stack.compose_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        threading.Thread(target=pump, args=(proc.stdout,), daemon=True).start()
        live = (Live(render.progress_table(progress, 0), console=console, refresh_per_second=4, transient=True)
                if console.is_terminal else contextlib.nullcontext())
        with live:
            polled, finished = 0.0, False
            while not finished:
                try:
                    line = lines.get(timeout=0.25)
                except queue.Empty:
                    line = ""
                at = time.monotonic() - started
                if line is None:
                    finished = True
                elif line:
                    output.append(line.rstrip())
                    report(progress.feed(line, at), at)
                if at - polled >= 1 and not finished:
                    polled = at
                    try:
                        for change in progress.observe(stack.states(project, engine), at):
                            report(change, at)
                    except docker.errors.DockerException:
                        pass
                if isinstance(live, Live):
                    live.update(render.progress_table(progress, at))
        returncode = proc.wait()
    return returncode, output


# Words of a line that says what went wrong, in Compose's and BuildKit's output.
_FAILURE_WORDS = re.compile(r"error|fail|unhealthy|exited|denied|not found|no such|cannot|invalid|refused", re.I)


def _compose_up_failure(project: Project, returncode: int, output: list[str], progress: stack.UpProgress) -> str:
    """One line for a failed `docker compose up`: its last meaningful line (the last that names a failure,
    else the last with words), what is not ready, and where the whole story is."""
    lines = [line.strip() for line in output if any(c.isalnum() for c in line)]
    failures = [line for line in lines if _FAILURE_WORDS.search(line)]
    last = (failures or lines or [f"no output, exit code {returncode}"])[-1]
    stuck = [s for s in progress.services.values() if s.phase != "ready"]
    building = [s.service for s in stuck if s.phase == "building"]
    where = (f"for the whole build log run `docker compose build {' '.join(building)}` in {project.root}"
             if building else "see `ralexctl logs`")
    return (f"docker compose up failed ({returncode}): {last}"
            + (f"; not ready: {', '.join(s.line() for s in stuck)}" if stuck else "") + f"; {where}")


@app.command()
def down(
    volumes: Annotated[bool, typer.Option("--volumes", help="Also delete the ledger, metrics and sessions.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting data.")] = False,
) -> None:
    """Stop the stack (data is kept unless --volumes).

    Example: ralexctl down
    """
    project = find_project()
    stack.ensure_own(project, stack.containers(project))
    if volumes and not yes and not typer.confirm("Delete the ledger, metrics and agent sessions for good?"):
        raise typer.Exit(1)
    started = time.monotonic()
    result = subprocess.run(stack.compose_command(project, "--profile", DASHBOARD_PROFILE, "down",
                                                  *(["--volumes"] if volumes else [])),
                            cwd=project.root, env=stack.compose_env(), capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RalexError(f"docker compose down failed ({result.returncode}): {_last_line(output)}")
    removed = sum(1 for line in output.splitlines()
                  if line.strip().startswith("Container ") and line.rstrip().endswith("Removed"))
    kept = ("the ledger, metrics, agent sessions and caches are deleted" if volumes else
            "the ledger, metrics and agent sessions are kept (ralexctl down --volumes deletes them)")
    console.print(f"[green]Ralex is down[/green] in {render.seconds(time.monotonic() - started)}: {removed} "
                  f"container{'s' if removed != 1 else ''} removed; {kept}. Start again: ralexctl up", highlight=False)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Each service's state and health, and today's budget.

    Example: ralexctl status --json
    """
    project = find_project()
    compose = project.compose
    engine = stack.client()
    found = stack.containers(project, engine)
    states = stack.states(project, engine, found)
    other = stack.owner(project, found)
    budget: dict[str, object] | None = None
    problem = None
    if any(s.service == "litellm" and s.ok for s in states):
        try:
            budget = ProxyClient(project, timeout=3).budget()
        except RalexError as exc:
            problem = str(exc)
    firing = _firing_alerts(project, states)
    box = sandbox_summary(project)
    if as_json:
        sys.stdout.write(json.dumps({"project": {"name": compose.project_name, "name_from": compose.name_from,
                                                 "folder": str(project.root),
                                                 "stack_folder": str(other or project.root)},
                                     "services": [s.as_dict() for s in states], "budget": budget,
                                     "alerts_firing": firing, "sandbox": box,
                                     "urls": _urls(project), "problem": problem}, indent=2) + "\n")
        return
    console.print(render.services_table(states, f"Ralex services (Compose project {safe_line(compose.project_name)}, "
                                                f"name from {compose.name_from})"))
    if other is not None:
        console.print(f"[yellow]these containers are the stack in {safe_line(other)}[/yellow], not this folder's: "
                      f"give this folder its own COMPOSE_PROJECT_NAME in {safe_line(project.env_path)}",
                      highlight=False)
    if budget:
        console.print(render.budget_line(budget))
        if keys_line := keys_summary(budget):
            console.print(safe_line(keys_line), highlight=False)
    elif problem:
        console.print(f"[yellow]budget unavailable:[/yellow] {safe_line(problem)}")
    else:
        console.print("[yellow]the proxy is not running:[/yellow] ralexctl up")
    console.print(safe_line(sandbox_line(box)), highlight=False)
    if firing:
        from ralex_ctl.alerts import firing_lines

        for severity, text in firing_lines(firing):
            colour = {"critical": "red", "warning": "yellow"}.get(severity, "cyan")
            console.print(f"[{colour}]alert ({safe_line(severity)})[/{colour}] {safe_line(text)}", highlight=False)


def _firing_alerts(project: Project, states: list[stack.ServiceState]) -> list[dict[str, Any]] | None:
    """What Prometheus has firing now (None when it is not running or does not answer within 2 s)."""
    if not any(s.service == "prometheus" and s.ok for s in states):
        return None
    from ralex_ctl.alerts import firing_alerts

    try:
        return firing_alerts(_urls(project)["prometheus"])
    except RalexError:
        return None


SESSION_ID: Final = re.compile(r"ses_[A-Za-z0-9]{1,64}")


@app.command()
def attach(
    cont: Annotated[bool, typer.Option("--continue", "-c", help="Continue the last session.")] = False,
    session: Annotated[str | None, typer.Option("--session", "-s", help="Continue this session (ses_..., as "
                                                "OpenCode prints it on exit).")] = None,
) -> None:
    """Open the OpenCode TUI inside the sandboxed agent container (in /workspace).

    Leave with Ctrl-C or /exit: the agent server keeps running and your sessions are kept; come back to the
    last one with --continue, or to any with --session ID.
    Example: ralexctl attach --continue
    """
    if cont and session:
        raise RalexError("give --continue (the last session) or --session ID, not both")
    if session is not None and not SESSION_ID.fullmatch(session):
        raise RalexError(f"{safe_line(session)[:80]!r} is not an OpenCode session id (ses_ and letters or digits, "
                         "as OpenCode prints on exit); the last session: ralexctl attach --continue")
    project = find_project()
    container = stack.running(project, "opencode")
    if not sys.stdin.isatty():
        raise RalexError("attach needs a terminal (a TTY); run it from an interactive shell")
    args = ["docker", "exec", "-it", "-w", "/workspace", container.id, "opencode", "attach", "http://127.0.0.1:4096",
            *(["--continue"] if cont else []), *(["--session", session] if session else [])]
    code = subprocess.run(args, check=False).returncode
    # OpenCode's exit hint names its own command, which runs only in the container: this one runs here.
    console.print("continue later: ralexctl attach --continue (the last session) or ralexctl attach --session ID",
                  highlight=False, style="grey50")
    raise typer.Exit(code)


@app.command()
def logs(
    service: Annotated[str | None, typer.Argument(help="One service (default: all).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming.")] = False,
    tail: Annotated[int, typer.Option("--tail", help="Lines per service.")] = 100,
    raw: Annotated[bool, typer.Option("--raw", help="Compose's lines as they are (colour codes, LiteLLM's "
                                                    "per-request lines and repeats included).")] = False,
) -> None:
    """Show the stack's logs (Docker Compose), each line once and without colour codes.

    Example: ralexctl logs litellm -f
    """
    project = find_project()
    stack.ensure_own(project, stack.containers(project))
    command = stack.compose_command(project, "logs", "--no-color", "--tail", str(tail), *(["-f"] if follow else []),
                                    *([service] if service else []))
    if raw:
        raise typer.Exit(subprocess.run(command, cwd=project.root, check=False).returncode)
    view = LogView()
    with subprocess.Popen(command, cwd=project.root, env=stack.compose_env(), stdout=subprocess.PIPE,
                          text=True, errors="replace", bufsize=1) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                shown = view.line(line)
                if shown is not None:
                    sys.stdout.write(shown + "\n")
                    sys.stdout.flush()
        except KeyboardInterrupt:
            proc.terminate()
        code = proc.wait()
    raise typer.Exit(code if code > 0 else 0)


@app.command()
def dashboard(
    action: Annotated[str | None, typer.Argument(help="on or off: run the dashboard or leave it out (kept in .env "
                                                      "as COMPOSE_PROFILES).")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open it in a browser.")] = False,
    password: Annotated[bool, typer.Option("--password", help="Print the admin password (from .env).")] = False,
) -> None:
    """Print the Grafana budget dashboard's URL and login (or turn the dashboard on or off).

    Example: ralexctl dashboard --open
    """
    project = find_project()
    if action is not None:
        _dashboard_switch(project, action)
        return
    if not project.dashboard:
        console.print("the dashboard is off (COMPOSE_PROFILES in .env); turn it on: ralexctl dashboard on. "
                      "Today's spend without it: ralexctl status, ralexctl spend", highlight=False)
        return
    if password:
        sys.stdout.write(project.env().get("GRAFANA_ADMIN_PASSWORD", "") + "\n")
        return
    url = _urls(project)["dashboard"]
    console.print(safe_line(url), highlight=False)
    console.print(DASHBOARD_LOGIN, highlight=False)
    try:
        grafana = next((s for s in stack.states(project) if s.service == "grafana"), None)
    except RalexError as exc:  # no Docker: the URL and login are still right
        console.print(f"[yellow]cannot tell whether Grafana runs:[/yellow] {safe_line(exc)}", highlight=False)
        grafana = stack.ServiceState("grafana", "running", "-", "", "")
    if grafana is None or not grafana.ok:
        state = "not created" if grafana is None or grafana.state == "absent" else f"{grafana.state}/{grafana.health}"
        console.print(f"[yellow]Grafana is {state}[/yellow]: ralexctl up", highlight=False)
    if open_browser:
        webbrowser.open(url)


def _dashboard_switch(project: Project, action: str) -> None:
    """`dashboard on|off`: the profile in .env; off also stops and removes Grafana's container (its data volume
    stays, so turning it back on keeps its settings)."""
    if action not in ("on", "off"):
        raise RalexError(f"unknown action {action!r}; use: ralexctl dashboard on, or ralexctl dashboard off")
    text = project.env_path.read_text() if project.env_path.exists() else ""
    value = DASHBOARD_PROFILE if action == "on" else ""
    if "COMPOSE_PROFILES" in os.environ and os.environ["COMPOSE_PROFILES"] != value:
        raise RalexError("COMPOSE_PROFILES is set in your shell and wins over .env; unset it (or set it to "
                         f"{value!r}), then re-run: ralexctl dashboard {action}")
    updated = update_env(text, {"COMPOSE_PROFILES": value}, "# The Grafana budget dashboard (ralexctl dashboard)")
    if "COMPOSE_PROFILES" not in read_env_text(updated):  # off, and not in .env yet: write the empty value
        updated += "\n# The Grafana budget dashboard (ralexctl dashboard)\nCOMPOSE_PROFILES=\n"
    replace_file(project.env_path, updated.encode())
    if action == "on":
        console.print("[green]dashboard on[/green]; start it: ralexctl up", highlight=False)
        return
    removed = subprocess.run(stack.compose_command(project, "--profile", DASHBOARD_PROFILE, "rm", "--stop", "--force",
                                                   "grafana"), cwd=project.root, env=stack.compose_env(),
                             capture_output=True, text=True, check=False)
    if removed.returncode != 0:
        raise RalexError(f"could not stop Grafana ({_last_line(removed.stderr or removed.stdout)}); "
                         "see: ralexctl logs grafana")
    console.print("[green]dashboard off[/green]: Grafana is stopped and left out of `ralexctl up` (its data volume "
                  "is kept); today's spend: ralexctl status", highlight=False)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if any(c.isalnum() for c in line)]
    return safe_line(lines[-1] if lines else "no output")


# --- money ------------------------------------------------------------------------------------

budget_app = typer.Typer(help="Show or change today's budget (live, no restart).", invoke_without_command=True,
                         context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(budget_app, name="budget")


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
    _apply_budget(daily_limit=_budget_amount(amount), timezone=timezone)


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


@app.command()
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


app.add_typer(keys_app, name="keys")  # ralexctl keys ...: ralex_ctl/keys.py
app.command("connect")(connect_command)  # ralexctl connect claude-code|codex|aider: ralex_ctl/connect.py

# --- alerts -----------------------------------------------------------------------------------

app.add_typer(sandbox_app, name="sandbox")  # ralexctl sandbox ...: ralex_ctl/sandbox.py

alerts_app = typer.Typer(help="Where budget alerts are sent (Alertmanager): webhook, ntfy, Slack, Discord, email.",
                         invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(alerts_app, name="alerts")


def _alertmanager(project: Project) -> Any:
    from ralex_ctl import alerts

    try:
        container = stack.containers(project).get(alerts.SERVICE)
    except RalexError:  # no Docker engine: amtool cannot run either, and says so
        container = None
    return alerts.Alertmanager(project, container)


def _apply_alerts(project: Project, changes: dict[str, str], done: str) -> None:
    """Render alertmanager.yml from .env with ``changes``; amtool must accept it before .env or the
    config file is touched; then a running Alertmanager loads it."""
    from ralex_ctl import alerts

    if not project.env_path.exists():
        raise RalexError(f"{project.env_path} does not exist: run `ralexctl init` first")
    current = project.env_path.read_text()
    text = alerts.update_env(current, changes) if changes else current
    config = alerts.render(read_env_text(text))
    manager = _alertmanager(project)
    manager.check(config)
    if text != current:
        replace_file(project.env_path, text.encode())
    outcome = alerts.install(project, config, manager)
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
    from ralex_ctl import alerts

    project = find_project()
    env = project.dotenv()
    found = alerts.receivers(env)
    state = alerts.config_state(project, env)
    if as_json:
        sys.stdout.write(json.dumps({"receivers": [{"kind": r.kind, "target": r.shown(), "variable": r.variable}
                                                   for r in found], "config": state}, indent=2) + "\n")
        return
    if not found:
        console.print("no alert receiver: budget alerts stay in Prometheus and Grafana; add one, e.g. "
                      f"ralexctl alerts add ntfy {alerts.EXAMPLES['ntfy']}", highlight=False)
    for r in found:
        console.print(f"{r.kind:<8} {safe_line(r.shown())}  [grey50]({r.variable})[/grey50]", highlight=False)
    if state == "stale" or (found and state == "absent"):
        console.print(f"[yellow]{alerts.CONFIG} does not match .env:[/yellow] ralexctl alerts apply", highlight=False)


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
    from ralex_ctl import alerts

    kind = alerts.kind_of(kind)
    receiver = alerts.Receiver(kind, alerts.check_target(kind, target))
    changes = {receiver.variable: receiver.target}
    smtp = {alerts.SMTP_HOST: smtp_host, alerts.SMTP_FROM: smtp_from, alerts.SMTP_USER: smtp_user,
            alerts.SMTP_PASSWORD: smtp_password}
    changes.update({name: value for name, value in smtp.items() if value is not None})
    _apply_alerts(find_project(), changes, f"alerts go to {kind} {receiver.shown()}")


@alerts_app.command("remove")
def alerts_remove(kind: Annotated[str, typer.Argument(help="webhook, ntfy, slack, discord or email.")]) -> None:
    """Stop sending alerts to a receiver kind.

    Example: ralexctl alerts remove slack
    """
    from ralex_ctl import alerts

    kind = alerts.kind_of(kind)
    _apply_alerts(find_project(), {alerts.KINDS[kind]: ""}, f"no more alerts to {kind}")


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
    from ralex_ctl import alerts

    project = find_project()
    found = alerts.receivers(project.dotenv())
    if not found:
        raise RalexError(f"no alert receiver to test; add one, e.g. ralexctl alerts add ntfy {alerts.EXAMPLES['ntfy']}")
    _alertmanager(project).send_test()
    console.print(f"test alert sent to {', '.join(r.kind for r in found)} (arrives in about 5 s)", highlight=False)


# --- doctor -----------------------------------------------------------------------------------

def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _openrouter_check(env: dict[str, str], ledger_total: float | None) -> Check:
    key = env.get("OPENROUTER_API_KEY", "")
    base = env.get("OPENROUTER_API_BASE") or "https://openrouter.ai/api/v1"
    if not key:
        return Check("OpenRouter key", False, "not set", "run `ralexctl init` or set OPENROUTER_API_KEY in .env")
    import httpx  # only doctor talks to OpenRouter

    try:
        response = httpx.get(f"{base.rstrip('/')}/key", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    except httpx.HTTPError as exc:
        return Check("OpenRouter key", False, f"{base} unreachable ({type(exc).__name__})",
                     "check the host's internet connection", warn_only=True)
    if response.status_code == 401:
        return Check("OpenRouter key", False, "rejected by OpenRouter (401)",
                     "create a key at https://openrouter.ai/keys and put it in .env")
    if response.status_code >= 400:
        return Check("OpenRouter key", False, f"OpenRouter answered {response.status_code}", "try again later",
                     warn_only=True)
    data = response.json().get("data", {})
    usage = float(data.get("usage") or 0)
    limit = data.get("limit")
    detail = f"valid; key usage {usd(usage)}" + (f" of {usd(float(limit))} limit" if limit else "")
    if data.get("limit_remaining") is not None:
        detail += f", {usd(float(data['limit_remaining']))} credit left"
    if ledger_total is not None:
        detail += f"; Ralex ledger {usd(ledger_total)} (drift {usd(usage - ledger_total)})"
    return Check("OpenRouter key", True, detail)


def _workspace_check(root: Path, env: dict[str, str]) -> Check:
    """The agent runs as RALEX_UID:RALEX_GID: the workspace should belong to that user, or files one
    side creates are not writable by the other."""
    value = env.get("RALEX_WORKSPACE") or "./workspace"
    folder = Path(value) if Path(value).is_absolute() else root / value
    try:
        st = folder.stat()
    except OSError:
        return Check("workspace", False, f"{safe_line(value)} does not exist",
                     f"create it (mkdir {safe_line(value)}) or correct RALEX_WORKSPACE in .env")
    want = (env.get("RALEX_UID") or "1000", env.get("RALEX_GID") or "1000")
    have = (str(st.st_uid), str(st.st_gid))
    if have == want:
        return Check("workspace", True, f"{safe_line(value)}, owned by the agent's user {have[0]}:{have[1]}")
    return Check("workspace", False, f"{safe_line(value)} belongs to {have[0]}:{have[1]}, the agent runs as "
                 f"{want[0]}:{want[1]} (RALEX_UID:RALEX_GID): files one side creates the other cannot edit",
                 f"set RALEX_UID={have[0]} and RALEX_GID={have[1]} in .env and run `ralexctl up` (the agent's "
                 f"image is rebuilt for that user), or `sudo chown -R {want[0]}:{want[1]} {safe_line(value)}`")


def _alerts_check(project: Project) -> Check:
    from ralex_ctl import alerts

    env = project.dotenv()
    try:
        found = alerts.receivers(env)
    except RalexError as exc:
        return Check("alert receivers", False, str(exc), "correct it in .env, then `ralexctl alerts apply`")
    if not found:
        return Check("alert receivers", False, "none: budget alerts stay in Prometheus and Grafana, no notification "
                     "leaves the stack", f"ralexctl alerts add ntfy {alerts.EXAMPLES['ntfy']} (or webhook, slack, "
                     "discord, email)", warn_only=True)
    state = alerts.config_state(project, env)
    kinds = ", ".join(r.kind for r in found)
    return Check("alert receivers", state == "current", f"{kinds}; {alerts.CONFIG} "
                 + ("matches .env" if state == "current" else "does not match .env"), "ralexctl alerts apply")


@app.command()
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Check everything Ralex needs and print the fix for each failure.

    Example: ralexctl doctor
    """
    machine, bits, cpuinfo, meminfo = board.this_machine()
    checks: list[Check] = []
    try:
        engine = stack.client()
        info = engine.info()
    except RalexError as exc:
        engine, info = None, {}
        docker_problem: str | None = str(exc)
    else:
        docker_problem = None
    checks.append(board.arch(machine, bits, info.get("Architecture")))
    checks.append(board.cpu_features(machine, cpuinfo))
    total = board.mem_total(meminfo)
    checks.append(board.memory(total))  # .env's profile is checked below, once the project is found
    if docker_problem is None:
        checks.append(Check("Docker engine", True, f"{info.get('ServerVersion', '?')} ({info.get('OSType')}, "
                            f"{info.get('Architecture', '?')})"))
        checks.append(board.storage(info.get("Driver")))
    else:
        checks.append(Check("Docker engine", False, docker_problem, "start Docker (systemctl start docker)"))
    compose_v = stack.compose_version()
    checks.append(Check("Compose v2", compose_v is not None, compose_v or "missing",
                        "install the Docker Compose v2 plugin (docker-compose-plugin)"))
    try:
        project = find_project()
    except RalexError as exc:
        checks.append(Check("project", False, str(exc), "cd into your Ralex folder or set RALEX_HOME"))
        project = None
    ledger_total = None
    if project is not None:
        missing = project.missing()
        checks[2] = board.memory(total, project.env())
        checks.append(Check(".env", not missing, "complete" if not missing else f"missing {', '.join(missing)}",
                            "run `ralexctl init` (or fill the values in .env)"))
        checks.append(_workspace_check(project.root, project.env()))
        checks.append(network_check(project.root, project.env()))
        states: list[stack.ServiceState] = []
        try:
            compose = project.compose
            found = stack.containers(project, engine) if engine else {}
            other = stack.owner(project, found)
            states = stack.states(project, engine, found) if engine else []
            files = ", ".join(str(f.relative_to(project.root)) if f.is_relative_to(project.root) else str(f)
                              for f in compose.files)
            checks.append(Check("Compose project", other is None,
                                f"{compose.project_name} (name from {compose.name_from}; {files})" if other is None
                                else f"{compose.project_name} is the stack in {other}",
                                f"give this folder its own COMPOSE_PROJECT_NAME in {project.env_path}"))
        except RalexError as exc:
            checks.append(Check("Compose project", False, str(exc), "correct COMPOSE_PROJECT_NAME"))
        if compose_v is not None:
            problem = stack.compose_config_error(project)
            culprit = _culprit(problem, project.dotenv()) if problem else None
            checks.append(Check("compose config", problem is None,
                                f"{culprit[1]}: {problem}" if culprit else problem or "docker compose config accepts "
                                "the compose files and .env",
                                f"correct {culprit[0] if culprit else 'the variable it names'} in .env "
                                + ("or unset it in your shell " if culprit and culprit[0] in os.environ else "")
                                + "(see .env.example; a folder is ./name or an absolute path)"))
        running = {s.service for s in states if s.state == "running"}
        env = project.env()
        ports = (("RALEX_PROXY_PORT", 4000), *((("RALEX_GRAFANA_PORT", 3000),) if project.dashboard else ()),
                 ("RALEX_PROMETHEUS_PORT", 9090))
        for name, default in ports:
            port = int(env.get(name) or default)
            owner = {"RALEX_PROXY_PORT": "litellm", "RALEX_GRAFANA_PORT": "grafana",
                     "RALEX_PROMETHEUS_PORT": "prometheus"}[name]
            free = owner in running or _port_free(port)
            checks.append(Check(f"port {port}", free, f"used by Ralex's {owner}" if owner in running else
                                ("free" if free else "taken by another program"),
                                f"stop that program or set {name} in .env to a free port"))
        if states:
            bad = [f"{s.service} {s.state}/{s.health}" for s in states if not s.ok and s.state != "absent"]
            absent = [s.service for s in states if s.state == "absent"]
            checks.append(Check("stack health", not bad and not absent,
                                "all healthy" if not bad and not absent else
                                "; ".join(filter(None, [", ".join(bad), "not created: " + ", ".join(absent)
                                                        if absent else ""])),
                                "run `ralexctl up`, then `ralexctl logs <service>` for the failing one"))
        try:
            client = ProxyClient(project, timeout=5)
            budget = client.budget()
            checks.append(Check("proxy + master key", True, f"answering at {client.base}"))
            prices = budget.get("prices") or {}
            unknown = [a for a in ("cheap", "smart", "yolo") if a not in prices]
            checks.append(Check("prices", not unknown, ", ".join(
                f"{a}: {p['model']} ${p['prompt'] * 1e6:.2f}/${p['completion'] * 1e6:.2f} per M" for a, p in
                prices.items()) if not unknown else f"unknown for {', '.join(unknown)}",
                "check the model ids in config/ralex.yaml or add prices: overrides"))
            ledger_total = sum(r["spent"] for r in client.spend(366, "alias")["rows"])
        except RalexError as exc:
            checks.append(Check("proxy + master key", False, str(exc), "run `ralexctl up`"))
        checks.append(_alerts_check(project))
        checks.append(_openrouter_check(env, ledger_total))
        roots = [project.root] + ([Path(info["DockerRootDir"])] if info.get("DockerRootDir") else [])
        for root in roots:
            try:
                free_gb = shutil.disk_usage(root).free / 1e9
            except OSError:
                continue
            checks.append(Check(f"disk at {root}", free_gb >= 2, f"{free_gb:.1f} GB free",
                                "free some space: the ledger, metrics and images need a few GB",
                                warn_only=free_gb >= 0.5))
    failed = [c for c in checks if not c.ok and not c.warn_only]
    if as_json:
        sys.stdout.write(json.dumps([asdict(c) for c in checks], indent=2) + "\n")
    else:
        table = Table(title="ralexctl doctor", title_justify="left")
        for column in ("", "check", "result", "fix"):
            table.add_column(column)
        for c in checks:
            mark = "[green]ok[/green]" if c.ok else "[yellow]warn[/yellow]" if c.warn_only else "[red]FAIL[/red]"
            table.add_row(mark, safe_line(c.name), safe_line(c.detail), "" if c.ok else safe_line(c.fix))
        console.print(table)
    if failed:
        raise typer.Exit(1)


def fail(problem: object) -> NoReturn:
    """The error path: one line `error: <what happened and the fix>` on stderr, exit code 1."""
    err.print(f"[red]error:[/red] {safe_line(problem)}", highlight=False)
    raise SystemExit(1) from None


def main() -> None:
    try:
        app()
    except RalexError as exc:
        if STATE["verbose"]:
            raise
        fail(exc)
