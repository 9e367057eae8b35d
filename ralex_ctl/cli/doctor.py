"""`ralexctl doctor`: check everything Ralex needs and name the fix for each failure."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ralex.budget import usd
from ralex_ctl import board, stack
from ralex_ctl.board import Verdict as Check
from ralex_ctl.cli.output import console
from ralex_ctl.cli.stack import env_culprit
from ralex_ctl.errors import RalexError
from ralex_ctl.project import Project, find_project
from ralex_ctl.proxy_api import ProxyClient
from ralex_ctl.sandbox import network_check
from ralex_ctl.textout import safe_line


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
            culprit = env_culprit(problem, project.dotenv()) if problem else None
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
