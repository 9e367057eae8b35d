"""`ralexctl sandbox`: the agent's toolchain and what its box may reach.

- The toolchain is the agent image's base (``RALEX_AGENT_BASE_IMAGE``, plus ``RALEX_AGENT_PACKAGES``):
  a preset from :data:`TOOLCHAINS`, chosen at ``init --agent`` (default: what the workspace looks like)
  or later with ``ralexctl sandbox toolchain``; ``ralexctl up`` rebuilds the agent's image with it.
- The network is the egress service's (``services/egress``, policy in :mod:`ralex.egress`): the mode
  in .env (``RALEX_AGENT_NETWORK``; changing it recreates only the egress container, the agent keeps
  running) and the user's lists in ``sandbox/`` (read live by the proxy).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Final

import typer
from rich.console import Console

from ralex import egress
from ralex_ctl import stack
from ralex_ctl.board import Verdict
from ralex_ctl.errors import RalexError
from ralex_ctl.project import Project, find_project, read_env, replace_file, update_env
from ralex_ctl.textout import safe_line

# preset -> (RALEX_AGENT_BASE_IMAGE, RALEX_AGENT_PACKAGES, what it has). An empty image means the node
# image compose.yaml builds on anyway (RALEX_NODE_IMAGE).
TOOLCHAINS: Final[dict[str, tuple[str, str, str]]] = {
    "node": ("", "", "Node.js 22 and npm"),
    "python": ("python:3.12-slim-bookworm", "", "Python 3.12, pip and venv"),
    "go": ("golang:1.23-bookworm", "", "Go 1.23 (and gcc)"),
    "rust": ("rust:1-slim-bookworm", "", "Rust (cargo, rustc)"),
    "full": ("python:3.12-bookworm", "nodejs npm golang-go cargo",
             "Python 3.12, Node.js and npm, Go and Rust from Debian, gcc and make"),
}
# Files that say which toolchain a project uses, checked at the workspace's top level.
MARKERS: Final[dict[str, tuple[str, ...]]] = {
    "python": ("pyproject.toml", "requirements.txt", "setup.py", "setup.cfg", "Pipfile", "uv.lock", "poetry.lock"),
    "node": ("package.json", "package-lock.json", "yarn.lock", "pnpm-lock.yaml"),
    "go": ("go.mod",),
    "rust": ("Cargo.toml",),
}
SANDBOX_DIR: Final = "sandbox"

sandbox_app = typer.Typer(help="The agent's box: its toolchain and the hosts it may reach (live).\n\n"
                               "Example: ralexctl sandbox network packages",
                          invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160, emoji=False)


def detect_toolchain(workspace: Path) -> str:
    """The preset a workspace needs: the one toolchain its top-level files name, ``full`` when they name
    several, ``node`` (the default image) when none."""
    found = [name for name, files in MARKERS.items() if any((workspace / f).exists() for f in files)]
    if len(found) > 1:
        return "full"
    return found[0] if found else "node"


def toolchain_env(preset: str) -> dict[str, str]:
    if preset not in TOOLCHAINS:
        raise RalexError(f"unknown toolchain {preset!r}; choose one of {', '.join(TOOLCHAINS)} (or auto)")
    image, packages, _ = TOOLCHAINS[preset]
    return {"RALEX_AGENT_TOOLCHAIN": preset, "RALEX_AGENT_BASE_IMAGE": image, "RALEX_AGENT_PACKAGES": packages}


def host_addresses(proc: Path = Path("/proc/net")) -> list[str]:
    """This machine's own addresses that no blocked network already covers (a public IPv4 on a server,
    a global IPv6): the egress proxy refuses them too. Linux only; elsewhere none are added."""
    found: list[str] = []
    try:
        trie = (proc / "fib_trie").read_text()
    except OSError:
        trie = ""
    previous = ""
    for line in trie.splitlines():
        text = line.strip()
        if text.startswith("/32 host LOCAL") and previous:
            found.append(previous)
        parts = text.split()
        previous = parts[1] if len(parts) >= 2 and parts[0] in ("|--", "+--") and "/" not in parts[1] else ""
    try:
        for line in (proc / "if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.append(str(ipaddress.ip_address(":".join(raw[i:i + 4] for i in range(0, 32, 4)))))
    except (OSError, IndexError, ValueError):
        pass
    blocked = [ipaddress.ip_network(net) for net in egress.BLOCKED_NETS]
    own: list[str] = []
    for text in found:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not any(ip.version == net.version and ip in net for net in blocked) and text not in own:
            own.append(text)
    return own


# --- the user's lists -------------------------------------------------------------------------------

def _list_path(project: Project, name: str) -> Path:
    return project.root / SANDBOX_DIR / name


def read_list(project: Project, name: str) -> list[str]:
    path = _list_path(project, name)
    try:
        hosts, _ = egress.parse_list(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return []
    return hosts


def write_list(project: Project, name: str, hosts: list[str]) -> None:
    path = _list_path(project, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {egress.ALLOW_FILE: "# Hosts the agent may reach besides RALEX_AGENT_NETWORK's (ralexctl sandbox allow)",
              egress.DENY_FILE: "# Hosts the agent may never reach (ralexctl sandbox deny)"}[name]
    replace_file(path, ("\n".join([header, *hosts]) + "\n").encode(), mode=0o644)


def _hosts(values: list[str]) -> list[str]:
    try:
        return [egress.normalise_host(v) for v in values]
    except egress.HostError as exc:
        raise RalexError(str(exc)) from None


def _mode(project: Project) -> str:
    env = read_env(project.env_path) if project.env_path.exists() else {}
    return os.environ.get("RALEX_AGENT_NETWORK") or env.get("RALEX_AGENT_NETWORK") or egress.DEFAULT_MODE


def _apply_note(project: Project) -> str:
    if _mode(project) == "none":
        return ("; the network is none, so nothing leaves the box until `ralexctl sandbox network packages`")
    return "; the egress proxy reloads it within a second"


def network_check(root: Path, env: dict[str, str]) -> Verdict:
    """doctor's line: the mode is one the proxy knows, and every line of the user's lists is a host."""
    mode = os.environ.get("RALEX_AGENT_NETWORK") or env.get("RALEX_AGENT_NETWORK") or egress.DEFAULT_MODE
    if mode not in egress.NETWORK_MODES:
        return Verdict("agent network", False, f"RALEX_AGENT_NETWORK={safe_line(mode, 40)} is not a mode "
                       "(the egress proxy will not start)",
                       f"ralexctl sandbox network {' or '.join(egress.NETWORK_MODES)}")
    problems: list[str] = []
    hosts: dict[str, list[str]] = {}
    for name in (egress.ALLOW_FILE, egress.DENY_FILE):
        try:
            text = (root / SANDBOX_DIR / name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            problems.append(f"{SANDBOX_DIR}/{name}: {exc.strerror}")
            continue
        hosts[name], bad = egress.parse_list(text)
        problems += [f"{SANDBOX_DIR}/{name} {p}" for p in bad]
    if problems:
        return Verdict("agent network", False, safe_line("; ".join(problems)),
                       "correct or delete those lines (the proxy skips them); ralexctl sandbox allow/deny/reset HOST")
    lists = egress.effective(mode, hosts.get(egress.ALLOW_FILE, []), hosts.get(egress.DENY_FILE, []))
    if mode == "none":
        return Verdict("agent network", True, "none: nothing leaves the box (ralexctl sandbox network packages)")
    return Verdict("agent network", True, f"{mode}: {len(lists.allowed)} hosts allowed, {len(lists.denied)} denied "
                   "(ralexctl sandbox)")


def summary(project: Project) -> dict[str, object]:
    """What `ralexctl status` shows of the box: toolchain, network mode, hosts in force."""
    env = read_env(project.env_path) if project.env_path.exists() else {}
    mode = _mode(project)
    valid = mode if mode in egress.NETWORK_MODES else "none"
    lists = egress.effective(valid, read_list(project, egress.ALLOW_FILE), read_list(project, egress.DENY_FILE))
    return {"toolchain": env.get("RALEX_AGENT_TOOLCHAIN") or "node", "network": mode,
            "allowed_hosts": len(lists.allowed), "denied_hosts": len(lists.denied)}


def summary_line(box: dict[str, object]) -> str:
    network = ("offline (ralexctl sandbox network packages to install packages)" if box["network"] == "none" else
               f"network {box['network']}, {box['allowed_hosts']} hosts allowed")
    return f"agent box: {box['toolchain']} toolchain, {network}"


# --- commands -------------------------------------------------------------------------------------

@sandbox_app.callback()
def sandbox_show(ctx: typer.Context) -> None:
    """What the box has and may reach. Example: ralexctl sandbox"""
    if ctx.invoked_subcommand is not None:
        return
    project = find_project()
    env = read_env(project.env_path) if project.env_path.exists() else {}
    mode = _mode(project)
    preset = env.get("RALEX_AGENT_TOOLCHAIN") or "node"
    image = os.environ.get("RALEX_AGENT_BASE_IMAGE") or env.get("RALEX_AGENT_BASE_IMAGE") or "the node image"
    allowed, denied = read_list(project, egress.ALLOW_FILE), read_list(project, egress.DENY_FILE)
    lists = egress.effective(egress.check_mode(mode) if mode in egress.NETWORK_MODES else "none", allowed, denied)
    described = TOOLCHAINS.get(preset, ("", "", "your own image"))[2]
    console.print(f"toolchain  {safe_line(preset)}: {safe_line(described)} ({safe_line(image)})", highlight=False)
    if mode == "none":
        console.print("network    none: nothing leaves the box (ralexctl sandbox network packages: package indexes)",
                      highlight=False)
    else:
        console.print(f"network    {safe_line(mode)}: {len(lists.allowed)} hosts allowed", highlight=False)
        console.print(f"           {safe_line(', '.join(lists.allowed))}", highlight=False)
    console.print(f"allow.txt  {safe_line(', '.join(allowed) or '(empty)')}", highlight=False)
    console.print(f"deny.txt   {safe_line(', '.join(denied) or '(empty)')}", highlight=False)


@sandbox_app.command("network")
def sandbox_network(mode: Annotated[str, typer.Argument(help="none (nothing leaves the box) or packages "
                                                             "(the package indexes and your allow-list).")]) -> None:
    """Turn the box's network on or off (live: only the egress proxy restarts).

    Example: ralexctl sandbox network packages
    """
    try:
        egress.check_mode(mode)
    except egress.HostError as exc:
        raise RalexError(f"{exc}; e.g. ralexctl sandbox network packages") from None
    project = find_project()
    if not project.env_path.exists():
        raise RalexError(f"{project.env_path} does not exist: run `ralexctl init` first")
    text = project.env_path.read_text()
    replace_file(project.env_path, update_env(text, {"RALEX_AGENT_NETWORK": mode}, "# The agent's box (ralexctl "
                                                                                     "sandbox)").encode())
    applied = _restart_egress(project)
    what = ("nothing leaves the box" if mode == "none" else
            f"the package indexes ({len(egress.PACKAGES)} hosts) and sandbox/allow.txt")
    console.print(f"[green]network {mode}[/green]: {what}; {applied}", highlight=False)


def _restart_egress(project: Project) -> str:
    """Recreate the egress container if the stack is running (its environment changed)."""
    try:
        running = "egress" in stack.containers(project)
    except RalexError:
        running = False
    if not running:
        return "applies at the next `ralexctl up`"
    result = subprocess.run(stack.compose_command(project, "up", "-d", "--no-deps", "--wait", "egress"),
                            cwd=project.root, env=stack.compose_env(), capture_output=True, text=True, timeout=300,
                            check=False)
    if result.returncode != 0:
        raise RalexError(f"the egress proxy did not restart: {safe_line(result.stderr.strip()[-400:])}; "
                         "see `ralexctl logs egress`")
    return "in force now (the agent kept running)"


@sandbox_app.command("allow")
def sandbox_allow(hosts: Annotated[list[str], typer.Argument(help="Host names; .example.com means the domain "
                                                                  "and its subdomains.")]) -> None:
    """Let the agent reach more hosts (live).

    Example: ralexctl sandbox allow api.example.com
    """
    project = find_project()
    names = _hosts(hosts)
    allowed = read_list(project, egress.ALLOW_FILE)
    denied = read_list(project, egress.DENY_FILE)
    write_list(project, egress.ALLOW_FILE, allowed + [h for h in names if h not in allowed])
    unblocked = [h for h in denied if h in names]
    if unblocked:
        write_list(project, egress.DENY_FILE, [h for h in denied if h not in names])
    console.print(f"[green]allowed[/green] {safe_line(', '.join(names))}"
                  + (" (taken off the deny list)" if unblocked else "") + safe_line(_apply_note(project)),
                  highlight=False)


@sandbox_app.command("deny")
def sandbox_deny(hosts: Annotated[list[str], typer.Argument(help="Host names to refuse whatever else allows "
                                                                 "them.")]) -> None:
    """Refuse hosts, even ones a preset allows (live).

    Example: ralexctl sandbox deny github.com
    """
    project = find_project()
    names = _hosts(hosts)
    allowed = read_list(project, egress.ALLOW_FILE)
    denied = read_list(project, egress.DENY_FILE)
    write_list(project, egress.DENY_FILE, denied + [h for h in names if h not in denied])
    if any(h in allowed for h in names):
        write_list(project, egress.ALLOW_FILE, [h for h in allowed if h not in names])
    console.print(f"[green]denied[/green] {safe_line(', '.join(names))}; the egress proxy reloads it within a second",
                  highlight=False)


@sandbox_app.command("reset")
def sandbox_reset(hosts: Annotated[list[str], typer.Argument(help="Host names to take off both lists.")]) -> None:
    """Take hosts off allow.txt and deny.txt (the network mode decides again).

    Example: ralexctl sandbox reset github.com
    """
    project = find_project()
    names = _hosts(hosts)
    for name in (egress.ALLOW_FILE, egress.DENY_FILE):
        listed = read_list(project, name)
        if any(h in listed for h in names):
            write_list(project, name, [h for h in listed if h not in names])
    console.print(f"[green]reset[/green] {safe_line(', '.join(names))}: only the network mode decides now",
                  highlight=False)


@sandbox_app.command("log")
def sandbox_log(
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Keep printing new requests.")] = True,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many past lines to show.")] = 50,
) -> None:
    """What the agent asked the network for, allowed and refused (live).

    Example: ralexctl sandbox log
    """
    project = find_project()
    command = stack.compose_command(project, "logs", "--no-log-prefix", "--tail", str(max(lines, 0)),
                                    *(["--follow"] if follow else []), "egress")
    try:
        sys.exit(subprocess.run(command, cwd=project.root, env=stack.compose_env(), check=False).returncode)
    except KeyboardInterrupt:
        sys.exit(0)


@sandbox_app.command("toolchain")
def sandbox_toolchain(preset: Annotated[str, typer.Argument(help=f"{', '.join(TOOLCHAINS)}, or auto (from the "
                                                                 "workspace's files).")]) -> None:
    """Choose the agent's toolchain; `ralexctl up` rebuilds its image.

    Example: ralexctl sandbox toolchain python
    """
    project = find_project()
    if not project.env_path.exists():
        raise RalexError(f"{project.env_path} does not exist: run `ralexctl init` first")
    text = project.env_path.read_text()
    env = read_env(project.env_path)
    if preset == "auto":
        workspace = Path(env.get("RALEX_WORKSPACE", "./workspace"))
        preset = detect_toolchain(workspace if workspace.is_absolute() else project.root / workspace)
    changes = toolchain_env(preset)
    replace_file(project.env_path, update_env(text, changes, "# The agent's box (ralexctl sandbox)").encode())
    console.print(f"[green]toolchain {preset}[/green]: {TOOLCHAINS[preset][2]}; next: ralexctl up "
                  "(rebuilds the agent's image; its cache volume is kept)", highlight=False)
