"""The real coding agents through Ralex: Claude Code (``-p``) and Codex CLI (``exec``), installed from npm,
and Aider (``--message``), installed from PyPI, each completing a small task with a client key of its
own against the fake OpenRouter, set up with the settings ``ralexctl connect`` prints.

The clients are installed once into ``RALEX_CLIENTS_CACHE`` (default ``~/.cache/ralex/clients``) at the
pinned versions below (Aider in a venv of its own made with uv); the tests skip, saying why, only when
npm (or uv) is not installed. The fake upstream is scripted to answer the task with a call of the
agent's own file tool (Aider: a whole-file listing), so each agent really edits a file, then gets a
plain answer after the tool result.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ralex_ctl.cli import app
from tests.integration.conftest import MASTER_KEY, Fake, Proxy, wait_until

pytestmark = pytest.mark.integration

CLIENTS = {"claude": "@anthropic-ai/claude-code@2.1.332", "codex": "@openai/codex@0.171.0"}
"""The versions whose requests were recorded when these APIs were opened (see the allow-lists)."""
QUIET_CLAUDE = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1",
                "DISABLE_ERROR_REPORTING": "1"}
QUIET_CODEX = ("\n[analytics]\nenabled = false\n\n[feedback]\nenabled = false\n\n[otel]\nexporter = \"none\"\n"
               "\n[features]\nplugins = false\n")
"""Codex's offline tables: no analytics, feedback or telemetry, and no plugin sync (github.com, chatgpt.com)."""
AIDER = "aider-chat==0.86.2"
QUIET_AIDER = ("--no-check-update", "--no-analytics", "--analytics-disable", "--no-show-release-notes",
               "--no-gitignore", "--no-pretty", "--no-fancy-input", "--no-detect-urls", "--map-tokens", "0",
               "--edit-format", "whole")
"""Aider's offline flags: no update check (pypi.org), no analytics, no release notes, no repo map."""


@pytest.fixture(scope="session")
def clients() -> Path:
    """The npm ``.bin`` directory holding ``claude`` and ``codex`` (installed once, then reused)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the real Claude Code and Codex clients come from the npm registry")
    cache = Path(os.environ.get("RALEX_CLIENTS_CACHE", Path.home() / ".cache" / "ralex" / "clients"))
    bin_dir = cache / "node_modules" / ".bin"
    if not all((bin_dir / name).exists() for name in CLIENTS):
        cache.mkdir(parents=True, exist_ok=True)
        installed = subprocess.run([npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund",
                                    "--prefer-offline", *CLIENTS.values()], timeout=900, capture_output=True, text=True,
                                   check=False)
        if installed.returncode != 0:
            pytest.fail(f"npm install {' '.join(CLIENTS.values())} failed (npm needs the registry or its cache):\n"
                        f"{installed.stderr[-2000:]}")
    return bin_dir


@pytest.fixture(scope="session")
def aider() -> Path:
    """``aider`` from a venv of its own under the clients cache (made with uv once, then reused)."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed: the real Aider client is installed from PyPI with uv")
    cache = Path(os.environ.get("RALEX_CLIENTS_CACHE", Path.home() / ".cache" / "ralex" / "clients"))
    venv = cache / AIDER.replace("-chat==", "-")
    binary = venv / "bin" / "aider"
    if not binary.exists():
        cache.mkdir(parents=True, exist_ok=True)
        for step in ([uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
                     [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), AIDER]):
            installed = subprocess.run(step, timeout=900, capture_output=True, text=True, check=False)
            if installed.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)  # a half-made venv would be taken as installed next time
                pytest.fail(f"{' '.join(step[:3])} ... for {AIDER} failed (uv needs PyPI or its cache):\n"
                            f"{installed.stderr[-2000:]}")
    return binary


@pytest.fixture
def tripwire() -> Iterator[list[str]]:
    """A local HTTP(S) proxy that takes every request a client would send off this machine, and answers none.

    Set as the client's ``HTTP(S)_PROXY``/``ALL_PROXY`` with ``NO_PROXY`` for 127.0.0.1 only: any attempt
    to reach the internet lands here (recorded: the first line of what was sent) instead of leaving.
    """
    seen: list[str] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    seen.append(conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace"))
                except OSError:
                    seen.append("(connection, nothing sent)")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    seen.append(f"http://127.0.0.1:{server.getsockname()[1]}")  # seen[0]: the proxy URL itself
    yield seen
    stop.set()
    thread.join(5)
    server.close()


def offline_env(tripwire: list[str]) -> dict[str, str]:
    """Environment that sends everything but 127.0.0.1 into ``tripwire``."""
    trap = tripwire[0]
    return {name: trap for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                                     "all_proxy")} | {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


@dataclass(frozen=True)
class Connected:
    """What the real ``ralexctl connect TOOL`` did: the key's name, the variables it exports, its ``# then:`` line."""

    name: str
    env: dict[str, str]
    then: str
    stdout: str


def connect(live: Proxy, tool: str, tmp_path: Path, home: Path, *options: str) -> Connected:
    """Run the real ``ralexctl connect TOOL`` (in this process) against the live proxy.

    Its project folder is ``tmp_path/ralex`` (the master key and port come from the environment), ``home`` is the
    ``$HOME`` where ``--write`` puts the tool's settings."""
    project = tmp_path / "ralex"
    project.mkdir(exist_ok=True)
    (project / "compose.yaml").write_text("name: ralex\n")
    env = {"RALEX_HOME": str(project), "LITELLM_MASTER_KEY": MASTER_KEY, "RALEX_PROXY_PORT": str(live.port),
           "HOME": str(home), "CODEX_HOME": None, "CLAUDE_CONFIG_DIR": None}
    name = f"laptop-{tool}-{uuid.uuid4().hex[:6]}"
    result = CliRunner().invoke(app, ["connect", tool, "--name", name, "--budget", "1", *options], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    lines = result.stdout.splitlines()
    exported = dict(shlex.split(line)[1].split("=", 1) for line in lines if line.startswith("export "))
    [then] = [line.removeprefix("# then: ") for line in lines if line.startswith("# then: ")]
    return Connected(name, exported, then, result.stdout)


def printed_file(stdout: str, path: str) -> str:
    """The text ``connect`` prints under ``# in PATH:`` (up to the next comment line)."""
    lines = stdout.splitlines()
    start = lines.index(f"# in {path}:") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("# "))
    return "\n".join(lines[start:end]).strip("\n") + "\n"


def command(then: str, binary: Path) -> list[str]:
    """The printed command, run with the installed ``binary`` in place of the tool's name."""
    argv = shlex.split(then)
    assert argv[0] == binary.name
    return [str(binary), *argv[1:]]


MODEL_WARNINGS = ("doesn't recognize the model", "assumes a context window", "Model metadata for",
                  "not a recognized model", "fallback metadata", "Unknown context window")
"""How the clients say they do not know the model they are given (Claude Code, Codex, Aider)."""
CODEX_UNKNOWN_MODEL = ("warning: Model metadata for `auto` not found. Defaulting to fallback metadata; this can "
                       "degrade performance and cause issues.")
"""Codex 0.171 takes metadata only from its own catalog (by slug prefix) or a model_catalog_json whose entries must
carry their own system prompt; settings such as model_context_window apply on top of the fallback but do not
clear the warning. Kept visible here so a change in Codex (or in what connect writes) shows."""


def model_warnings(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.strip() for line in (done.stdout + done.stderr).splitlines()
            if any(text in line for text in MODEL_WARNINGS)]


def git_repo(work: Path, home: Path) -> dict[str, str]:
    """``work`` as a git repository holding ``hello.py`` with a typo, committed; the variables git needs."""
    git = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_NOSYSTEM": "1"}
    work.mkdir()
    (work / "hello.py").write_text('print("helo")\n')
    for step in (["init", "-q"], ["add", "hello.py"], ["commit", "-q", "-m", "typo"]):
        assert run(["git", *step], work, {"HOME": str(home), **git}).returncode == 0
    return git


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "dumb", "LANG": "C.UTF-8"}
    return subprocess.run(command, cwd=cwd, env={**base, **env}, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=240, check=False)


def settled_rows(proxy: Proxy, name: str, count: int) -> list[dict[str, Any]]:
    return wait_until(lambda: (rows := proxy.ledger("key_name = %s AND status = 'ok'", (name,)))
                      and len(rows) >= count and rows, 30, what=f"{count} settled rows of key {name}")


def assert_billed_as_upstream(rows: list[dict[str, Any]], upstream: Fake) -> None:
    billed = {r["generation_id"]: r for r in upstream.requests() if r.get("generation_id")}
    for row in rows:
        sent = billed[row["generation_id"]]
        assert float(row["cost_usd"]) == pytest.approx(sent["billed_cost"])
        assert row["upstream_model"] == sent["model"]
        assert row["max_tokens"] == sent["max_tokens"]


FIXED = 'print("hello")\n'


def test_claude_code_fixes_the_typo_with_the_command_connect_prints(live: Proxy, upstream: Fake, clients: Path,
                                                                      tripwire: list[str], tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    git_repo(work := tmp_path / "work", home)
    connected = connect(live, "claude-code", tmp_path, home)
    upstream.script({"tool_calls": [{"name": "Read", "arguments": {"file_path": f"{work}/hello.py"}}],
                     "requires_tools": True},
                    {"tool_calls": [{"name": "Edit", "arguments": {"file_path": f"{work}/hello.py",
                                                                   "old_string": "helo", "new_string": "hello"}}],
                     "requires_tools": True})
    done = run(command(connected.then, clients / "claude"), work,
               {"HOME": str(home), **connected.env, **QUIET_CLAUDE, **offline_env(tripwire)})
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:], live.logs())
    assert (work / "hello.py").read_text() == FIXED
    assert model_warnings(done) == []
    rows = settled_rows(live, connected.name, 3)
    assert_billed_as_upstream(rows, upstream)
    sent = [r for r in upstream.requests() if r.get("generation_id")]
    assert all("reasoning_effort" not in r["body"] for r in sent)  # Claude Code's thinking did not raise the bill
    assert tripwire[1:] == []  # nothing tried to leave this machine


CODEX_OFFLINE = "check_for_update_on_startup = false\n"
"""Codex's settings that keep it on this machine (with QUIET_CODEX), before any table."""


@pytest.mark.parametrize("write", [False, True], ids=["printed", "written"])
def test_codex_fixes_the_typo_with_the_command_connect_prints(live: Proxy, upstream: Fake, clients: Path,
                                                              tripwire: list[str], tmp_path: Path, write: bool):
    home = tmp_path / "home"
    home.mkdir()
    git_repo(work := tmp_path / "work", home)
    codex_home = home / ".codex"
    codex_home.mkdir()
    if write:  # connect --write merges its part into the settings already there
        (codex_home / "config.toml").write_text(CODEX_OFFLINE + QUIET_CODEX)
        connected = connect(live, "codex", tmp_path, home, "--write")
        config = tomllib.loads((codex_home / "config.toml").read_text())
        assert config["model_providers"]["ralex"]["experimental_bearer_token"] not in connected.stdout
    else:
        connected = connect(live, "codex", tmp_path, home)
        printed = printed_file(connected.stdout, "~/.codex/config.toml")
        (codex_home / "config.toml").write_text(CODEX_OFFLINE + printed + "request_max_retries = 0\n"
                                                "stream_max_retries = 0\n" + QUIET_CODEX)
    assert "# outside a git repository add --skip-git-repo-check" in connected.stdout
    upstream.script({"tool_calls": [{"name": "exec_command", "arguments": {"cmd": "sed -i s/helo/hello/ hello.py"}}],
                     "requires_tools": True})
    done = run(command(connected.then, clients / "codex"), work,
               {"HOME": str(home), **connected.env, **offline_env(tripwire)})
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:], live.logs())
    assert (work / "hello.py").read_text() == FIXED
    assert model_warnings(done) == [CODEX_UNKNOWN_MODEL]
    rows = settled_rows(live, connected.name, 2)
    assert_billed_as_upstream(rows, upstream)
    sent = [r for r in upstream.requests() if r.get("generation_id")]
    assert all("web_search_options" not in r["body"] and "reasoning_effort" not in r["body"] for r in sent)
    assert tripwire[1:] == []


def test_aider_fixes_the_typo_with_the_command_connect_prints(live: Proxy, upstream: Fake, aider: Path,
                                                              tripwire: list[str], tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    git = git_repo(work := tmp_path / "work", home)
    # Aider fetches litellm's price list from GitHub unless a fresh non-empty copy is cached: one that knows
    # none of Ralex's models, so what Aider knows of them comes from what connect --write gave it
    models = home / ".aider" / "caches" / "model_prices_and_context_window.json"
    models.parent.mkdir(parents=True)
    models.write_text(json.dumps({"gpt-4o": {"max_input_tokens": 128000, "litellm_provider": "openai",
                                             "mode": "chat"}}))
    upstream.script({"content": 'hello.py\n```python\nprint("hello")\n```\n'})
    connected = connect(live, "aider", tmp_path, home, "--write")
    assert connected.then == "aider"
    assert (home / ".aider.model.metadata.json").exists()
    task = "fix the typo in hello.py"
    quiet = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "AIDER_CHECK_UPDATE": "false", "AIDER_ANALYTICS": "false"}
    done = run([*command(connected.then, aider), *QUIET_AIDER, "--yes-always", "--message", task, "hello.py"], work,
               {"HOME": str(home), **git, **connected.env, **offline_env(tripwire), **quiet})
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:], live.logs())
    assert model_warnings(done) == [], done.stdout[-2000:]
    assert (work / "hello.py").read_text() == FIXED
    log = run(["git", "log", "--format=%s", "--", "hello.py"], work, {"HOME": str(home), **git}).stdout.splitlines()
    assert len(log) == 2  # Aider committed its edit on top of ours, with a message from the weak model
    assert log[1] == "typo"
    rows = settled_rows(live, connected.name, 2)
    assert [(r["alias_requested"], r["alias_routed"]) for r in rows] == [("auto", "cheap"), ("cheap", "cheap")]
    assert_billed_as_upstream(rows, upstream)
    sent = [r for r in upstream.requests() if r.get("generation_id")]
    assert len(sent) == len(rows) == 2
    assert all(r["max_tokens"] and "reasoning_effort" not in r["body"] for r in sent)  # Aider sent no cap: Ralex's
    assert tripwire[1:] == []  # nothing tried to leave this machine
