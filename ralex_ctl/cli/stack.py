"""`ralexctl init, up, down, status, attach, logs, dashboard`: set up and run the stack."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import secrets
import subprocess
import sys
import threading
import time
import webbrowser
from pathlib import Path
from typing import IO, Annotated, Any, Final

import docker.errors
import typer
from rich.live import Live

from ralex.budget import BUDGET_TIERS, BudgetError, usd, zone
from ralex_ctl import board, render
from ralex_ctl import join as join_mod
from ralex_ctl import stack as compose_stack
from ralex_ctl.cli.budget import budget_amount
from ralex_ctl.cli.output import console
from ralex_ctl.errors import RalexError
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
from ralex_ctl.sandbox import TOOLCHAINS, detect_toolchain, toolchain_env
from ralex_ctl.sandbox import summary as sandbox_summary
from ralex_ctl.sandbox import summary_line as sandbox_line
from ralex_ctl.textout import safe_line

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
    join: Annotated[str | None, typer.Option("--join", metavar="URL", help="Join a team server: run only the "
                                             "sandboxed agent here, against the Ralex proxy at URL "
                                             "(docs/team.md).")] = None,
    key: Annotated[str | None, typer.Option("--key", envvar="RALEX_JOIN_KEY", metavar="KEY",
                                            help="With --join: your client key (sk-ralex-...), made on the server "
                                                 "with ralexctl keys add NAME --budget 2.")] = None,
    ca: Annotated[Path | None, typer.Option("--ca", metavar="FILE", help="With --join: the CA certificate (PEM) "
                                            "the server's TLS certificate chains to, instead of the system's.")
                  ] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="With --join: ask the server whether it "
                                        "answers and takes the key before writing .env.")] = True,
) -> None:
    """Create .env from .env.example with generated secrets (or, with --join, for a team server's agent).

    Example: ralexctl init --openrouter-key sk-or-v1-... --budget power --timezone Europe/Berlin -y
    Example: ralexctl init --join https://ralex.example.com --key sk-ralex-...
    """
    project = find_project()
    if project.env_path.exists() and not force:
        raise RalexError(f"{project.env_path} already exists; keep it, or run `ralexctl init --force` to replace it")
    if join is None and (ca is not None or not check):
        raise RalexError("--ca and --no-check go with --join URL (joining a team server)")
    if join is not None:
        if budget is not None or timezone is not None:
            raise RalexError("a joined folder has no budget of its own: the team server's operator sets your key's "
                             "(on the server: ralexctl keys budget NAME 3); leave out --budget and --timezone")
        _init_join(project, join, key, ca, check, workspace, profile, agent, yes)
        return
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
    amount = budget_amount(budget or "standard")
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
    _make_workspace(folder, uid, gid)
    console.print(f"[green]wrote[/green] {safe_line(project.env_path)} (budget {usd(amount)}/day, "
                  f"{safe_line(timezone)}, workspace {safe_line(workspace_value)}, {profile} memory profile, "
                  f"{toolchain} toolchain, agent offline{'' if dashboard else ', no dashboard'}"
                  + (f", Compose project {safe_line(taken)}" if taken else "")
                  + f"; {safe_line(checked)}); next: ralexctl up", highlight=False)


def _make_workspace(folder: Path, uid: int, gid: int) -> None:
    """The agent's workspace, owned by the agent's user when ralexctl runs as root."""
    if not folder.exists():
        folder.mkdir(parents=True)
        if os.getuid() == 0:
            os.chown(folder, uid, gid)


def _init_join(project: Project, url: str, key: str | None, ca: Path | None, check: bool, workspace: Path | None,
               profile: str | None, agent: str, yes: bool) -> None:
    """`init --join`: a .env (mode 0600) for the agent alone, against the team proxy at ``url`` with the
    developer's client key; the server is asked first unless ``check`` is off."""
    target = join_mod.parse_url(url)
    if not key and not yes and _stdin_is_terminal():
        key = typer.prompt("Your client key from the team server (sk-ralex-...)", hide_input=True)
    key = join_mod.check_key(key or "")
    ca_path = join_mod.check_ca(ca) if ca is not None else None
    if target.tls is False and ca_path is not None:
        raise RalexError(f"--ca is for an https:// server; {safe_line(target.url)} is plain http")
    if agent != "auto" and agent not in TOOLCHAINS:
        raise RalexError(f"unknown toolchain {agent!r}; use --agent with one of {', '.join(TOOLCHAINS)} or auto")
    if profile is not None and profile not in board.PROFILES:
        raise RalexError(f"unknown profile {profile!r}; use --profile {' or --profile '.join(board.PROFILES)}")
    join_mod.require_compose_file(project.root)
    said = "not checked (--no-check)"
    if check:
        answer = join_mod.check_server(target, key, str(ca_path) if ca_path else None)
        if answer.problem is not None:
            raise RalexError(f"{answer.problem}; nothing was written (to write .env anyway: ralexctl init --join "
                             f"URL --key KEY --no-check)")
        said = f"the server answers and takes the key ({join_mod.key_budget_text(answer.status)})"
    profile = profile or board.profile_for(board.mem_total(board.this_machine()[3]))
    workspace_value = compose_path("RALEX_WORKSPACE", str(workspace) if workspace else "./workspace")
    folder = Path(workspace_value) if Path(workspace_value).is_absolute() else project.root / workspace_value
    uid, gid = _agent_ids(folder)
    toolchain = agent if agent != "auto" else detect_toolchain(folder)
    memory = {k: v for k, v in board.PROFILES[profile].items() if k in ("RALEX_MEM_AGENT", "RALEX_MEM_EGRESS")}
    values = {**join_mod.join_env(target, key, ca_path), "RALEX_WORKSPACE": workspace_value,
              "RALEX_UID": str(uid), "RALEX_GID": str(gid), **_git_identity(), **toolchain_env(toolchain),
              "RALEX_AGENT_NETWORK": "none", **memory}
    text = join_mod.ENV_HEADER + "".join(f"{name}={env_value(name, value)}\n" for name, value in values.items())
    checked = _write_env_checked(project, text)
    taken = _own_project_name(project)
    if taken:
        replace_file(project.env_path, update_env(project.env_path.read_text(), {"COMPOSE_PROJECT_NAME": taken},
                                                  "# This folder's own Compose project").encode())
    _make_workspace(folder, uid, gid)
    console.print(f"[green]wrote[/green] {safe_line(project.env_path)} (joined {safe_line(target.url)}: "
                  f"{safe_line(said)}; workspace {safe_line(workspace_value)}, {toolchain} toolchain, agent offline"
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
        problem = compose_stack.compose_config_error(project)
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
    culprit = env_culprit(problem, written)
    if culprit is None:
        return f"docker compose rejects the new .env: {problem}; {kept}"
    name, shown = culprit
    if name in os.environ:
        return (f"docker compose rejects {shown} from your shell, which wins over .env ({problem}); "
                f"unset {name} or correct it; {kept}")
    fix = INIT_FIXES.get(name, f"correct {name} in {project.example_path.name}")
    return f"docker compose rejects {shown} ({problem}); {fix}; {kept}"


def env_culprit(problem: str, dotenv: dict[str, str]) -> tuple[str, str] | None:
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
        found = compose_stack.containers(project)
    except RalexError:
        return None
    if compose_stack.owner(project, found) is None:
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


# --- running ----------------------------------------------------------------------------------

def _urls(project: Project) -> dict[str, str]:
    """Where the user reaches the stack (the dashboard only when its profile is on)."""
    env = project.env()
    if project.joined:
        return {"team proxy": f"{env.get('RALEX_JOIN_URL', '').rstrip('/')}/v1"}
    urls = {
        "proxy": f"http://127.0.0.1:{env.get('RALEX_PROXY_PORT') or '4000'}/v1",
        "prometheus": f"http://127.0.0.1:{env.get('RALEX_PROMETHEUS_PORT') or '9090'}",
    }
    if project.dashboard:
        urls = {"dashboard": f"http://127.0.0.1:{env.get('RALEX_GRAFANA_PORT') or '3000'}/d/ralex-budget", **urls}
    return urls


DASHBOARD_LOGIN: Final = "user admin, password: GRAFANA_ADMIN_PASSWORD in .env (ralexctl dashboard --password)"


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
        how = "ralexctl init --join URL --key KEY --force" if project.joined else "ralexctl init"
        raise RalexError(f".env is missing {', '.join(missing)}: run `{how}` (or fill them in .env)")
    if project.joined:
        join_mod.target_of(project.env())  # the URL and what the relay uses agree
    engine = compose_stack.client()
    compose_stack.ensure_own(project, compose_stack.containers(project, engine))
    progress = compose_stack.UpProgress(project.compose_project, services or compose_stack.compose_services(project))
    command = compose_stack.compose_command(project, "up", "-d", "--wait", "--wait-timeout", str(timeout),
                                            *(["--build"] if build else []), *(services or []))
    started = time.monotonic()
    returncode, output = _compose_up(project, command, engine, progress, started)
    if returncode != 0:
        raise RalexError(_compose_up_failure(project, returncode, output, progress))
    states = compose_stack.states(project, engine)
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
    if project.joined:
        console.print(_team_line(project), highlight=False)
        return
    try:
        console.print(render.budget_line(ProxyClient(project).budget()))
    except RalexError as exc:
        console.print(f"[yellow]budget unavailable:[/yellow] {safe_line(exc)}")


def _team_check(project: Project) -> join_mod.ServerCheck:
    env = project.env()
    try:
        target = join_mod.target_of(env)
    except RalexError as exc:
        return join_mod.ServerCheck(env.get("RALEX_JOIN_URL", ""), str(exc))
    return join_mod.check_server(target, env.get("RALEX_JOIN_KEY", ""), env.get("RALEX_JOIN_CA") or None,
                                 timeout=4)


def _team_line(project: Project, answer: join_mod.ServerCheck | None = None) -> str:
    """One line: the team server and this key's day there, or why it cannot be asked."""
    answer = answer or _team_check(project)
    if answer.problem is not None:
        return f"[yellow]team server unavailable:[/yellow] {safe_line(answer.problem)}"
    return f"team server {safe_line(answer.url)}: {safe_line(join_mod.key_budget_text(answer.status))}"


def _compose_up(project: Project, command: list[str], engine: Any, progress: compose_stack.UpProgress,
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

    with subprocess.Popen(command, cwd=project.root, env=compose_stack.compose_env(), stdout=subprocess.PIPE,
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
                        for change in progress.observe(compose_stack.states(project, engine), at):
                            report(change, at)
                    except docker.errors.DockerException:
                        pass
                if isinstance(live, Live):
                    live.update(render.progress_table(progress, at))
        returncode = proc.wait()
    return returncode, output


# Words of a line that says what went wrong, in Compose's and BuildKit's output.
_FAILURE_WORDS = re.compile(r"error|fail|unhealthy|exited|denied|not found|no such|cannot|invalid|refused", re.I)


def _compose_up_failure(project: Project, returncode: int, output: list[str],
                        progress: compose_stack.UpProgress) -> str:
    """One line for a failed `docker compose up`: its last meaningful line (the last that names a failure,
    else the last with words), what is not ready, and where the whole story is."""
    lines = [line.strip() for line in output if any(c.isalnum() for c in line)]
    failures = [line for line in lines if _FAILURE_WORDS.search(line)]
    last = (failures or lines or [f"no output, exit code {returncode}"])[-1]
    stuck = [s for s in progress.services.values() if s.phase != "ready"]
    building = [s.service for s in stuck if s.phase == "building"]
    pulling = [s.service for s in stuck if s.phase == "pulling"]
    if building:
        where = f"for the whole build log run `docker compose build {' '.join(building)}` in {project.root}"
    elif pulling:  # an image from a registry this machine cannot reach (offline, a mirror, a typo)
        where = (f"the image of {', '.join(pulling)} could not be pulled: check the network, or name an image this "
                 "machine has in .env (see Images in .env.example)"
                 + ("; or run without Grafana: ralexctl dashboard off" if "grafana" in pulling else ""))
    else:
        where = "see `ralexctl logs`"
    return (f"docker compose up failed ({returncode}): {last}"
            + (f"; not ready: {', '.join(s.line() for s in stuck)}" if stuck else "") + f"; {where}")


def down(
    volumes: Annotated[bool, typer.Option("--volumes", help="Also delete the ledger, metrics and sessions.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting data.")] = False,
) -> None:
    """Stop the stack (data is kept unless --volumes).

    Example: ralexctl down
    """
    project = find_project()
    compose_stack.ensure_own(project, compose_stack.containers(project))
    if volumes and not yes and not typer.confirm("Delete the ledger, metrics and agent sessions for good?"):
        raise typer.Exit(1)
    started = time.monotonic()
    result = subprocess.run(compose_stack.compose_command(project, "--profile", DASHBOARD_PROFILE, "down",
                                                          *(["--volumes"] if volumes else [])),
                            cwd=project.root, env=compose_stack.compose_env(), capture_output=True, text=True,
                            check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RalexError(f"docker compose down failed ({result.returncode}): {_last_line(output)}")
    removed = sum(1 for line in output.splitlines()
                  if line.strip().startswith("Container ") and line.rstrip().endswith("Removed"))
    kept = ("the ledger, metrics, agent sessions and caches are deleted" if volumes else
            "the ledger, metrics and agent sessions are kept (ralexctl down --volumes deletes them)")
    console.print(f"[green]Ralex is down[/green] in {render.seconds(time.monotonic() - started)}: {removed} "
                  f"container{'s' if removed != 1 else ''} removed; {kept}. Start again: ralexctl up", highlight=False)


def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Each service's state and health, and today's budget.

    Example: ralexctl status --json
    """
    project = find_project()
    compose = project.compose
    engine = compose_stack.client()
    found = compose_stack.containers(project, engine)
    states = compose_stack.states(project, engine, found)
    other = compose_stack.owner(project, found)
    budget: dict[str, object] | None = None
    problem = None
    if any(s.service == "litellm" and s.ok for s in states):
        try:
            budget = ProxyClient(project, timeout=3).budget()
        except RalexError as exc:
            problem = str(exc)
    team = _team_check(project) if project.joined else None
    if team is not None:
        budget, problem = team.status, team.problem
    firing = _firing_alerts(project, states)
    box = sandbox_summary(project)
    if as_json:
        sys.stdout.write(json.dumps({"project": {"name": compose.project_name, "name_from": compose.name_from,
                                                 "folder": str(project.root),
                                                 "stack_folder": str(other or project.root)},
                                     "services": [s.as_dict() for s in states], "budget": budget,
                                     "alerts_firing": firing, "sandbox": box,
                                     "urls": _urls(project), "problem": problem,
                                     "team": None if team is None else {"url": team.url, "key": team.key_name,
                                                                        "problem": team.problem}},
                                    indent=2) + "\n")
        return
    console.print(render.services_table(states, f"Ralex services (Compose project {safe_line(compose.project_name)}, "
                                                f"name from {compose.name_from})"))
    if other is not None:
        console.print(f"[yellow]these containers are the stack in {safe_line(other)}[/yellow], not this folder's: "
                      f"give this folder its own COMPOSE_PROJECT_NAME in {safe_line(project.env_path)}",
                      highlight=False)
    if team is not None:
        console.print(_team_line(project, team), highlight=False)
    elif budget:
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


def _firing_alerts(project: Project, states: list[compose_stack.ServiceState]) -> list[dict[str, Any]] | None:
    """What Prometheus has firing now (None when it is not running or does not answer within 2 s)."""
    if not any(s.service == "prometheus" and s.ok for s in states):
        return None
    from ralex_ctl.alerts import firing_alerts

    try:
        return firing_alerts(_urls(project)["prometheus"])
    except RalexError:
        return None


SESSION_ID: Final = re.compile(r"ses_[A-Za-z0-9]{1,64}")


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
    container = compose_stack.running(project, "opencode")
    if not sys.stdin.isatty():
        raise RalexError("attach needs a terminal (a TTY); run it from an interactive shell")
    args = ["docker", "exec", "-it", "-w", "/workspace", container.id, "opencode", "attach", "http://127.0.0.1:4096",
            *(["--continue"] if cont else []), *(["--session", session] if session else [])]
    code = subprocess.run(args, check=False).returncode
    # OpenCode's exit hint names its own command, which runs only in the container: this one runs here.
    console.print("continue later: ralexctl attach --continue (the last session) or ralexctl attach --session ID",
                  highlight=False, style="grey50")
    raise typer.Exit(code)


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
    compose_stack.ensure_own(project, compose_stack.containers(project))
    command = compose_stack.compose_command(project, "logs", "--no-color", "--tail", str(tail),
                                            *(["-f"] if follow else []), *([service] if service else []))
    if raw:
        raise typer.Exit(subprocess.run(command, cwd=project.root, check=False).returncode)
    view = LogView()
    with subprocess.Popen(command, cwd=project.root, env=compose_stack.compose_env(), stdout=subprocess.PIPE,
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
        grafana = next((s for s in compose_stack.states(project) if s.service == "grafana"), None)
    except RalexError as exc:  # no Docker: the URL and login are still right
        console.print(f"[yellow]cannot tell whether Grafana runs:[/yellow] {safe_line(exc)}", highlight=False)
        grafana = compose_stack.ServiceState("grafana", "running", "-", "", "")
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
    removed = subprocess.run(compose_stack.compose_command(project, "--profile", DASHBOARD_PROFILE, "rm", "--stop",
                                                           "--force", "grafana"),
                             cwd=project.root, env=compose_stack.compose_env(), capture_output=True, text=True,
                             check=False)
    if removed.returncode != 0:
        raise RalexError(f"could not stop Grafana ({_last_line(removed.stderr or removed.stdout)}); "
                         "see: ralexctl logs grafana")
    console.print("[green]dashboard off[/green]: Grafana is stopped and left out of `ralexctl up` (its data volume "
                  "is kept); today's spend: ralexctl status", highlight=False)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if any(c.isalnum() for c in line)]
    return safe_line(lines[-1] if lines else "no output")
