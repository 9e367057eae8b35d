"""The real coding agents through Ralex: Claude Code (``-p``) and Codex CLI (``exec``), installed from npm,
each completing a small task with a client key of its own against the fake OpenRouter, set up with
the settings ``ralexctl connect`` prints.

The clients are installed once into ``RALEX_CLIENTS_CACHE`` (default ``~/.cache/ralex/clients``) at the
pinned versions below; the tests skip, saying why, only when npm is not installed. The fake upstream
is scripted to answer the task with a call of the agent's own file tool, so each agent really edits a
file, then gets a plain answer after the tool result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from ralex_ctl.connect import connection
from tests.integration.conftest import Fake, Proxy, wait_until

pytestmark = pytest.mark.integration

CLIENTS = {"claude": "@anthropic-ai/claude-code@2.1.332", "codex": "@openai/codex@0.171.0"}
"""The versions whose requests were recorded when these APIs were opened (see the allow-lists)."""
QUIET_CLAUDE = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1",
                "DISABLE_ERROR_REPORTING": "1"}
QUIET_CODEX = ("\n[analytics]\nenabled = false\n\n[feedback]\nenabled = false\n\n[otel]\nexporter = \"none\"\n")


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


def add_key(proxy: Proxy, name: str) -> str:
    response = proxy.client.post("/ralex/keys", json={"name": name, "budget": 1})
    assert response.status_code == 200, response.text
    return str(response.json()["key"])


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


def test_claude_code_completes_a_task_through_ralex_with_its_own_key(live: Proxy, upstream: Fake, clients: Path,
                                                                      tmp_path: Path):
    name = f"laptop-claude-{uuid.uuid4().hex[:6]}"
    key = add_key(live, name)
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    upstream.script({"tool_calls": [{"name": "Write", "arguments": {"file_path": f"{work}/hello.txt",
                                                                    "content": "hi"}}], "requires_tools": True})
    task = "create hello.txt with the text hi"
    done = run([str(clients / "claude"), "-p", task, "--permission-mode", "acceptEdits", "--output-format", "json"],
               work, {"HOME": str(home), **connection("claude-code", live.url, key).env, **QUIET_CLAUDE})
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:], live.logs())
    assert (work / "hello.txt").read_text().strip() == "hi"
    rows = settled_rows(live, name, 2)
    assert {r["alias_routed"] for r in rows} == {"cheap"}
    assert_billed_as_upstream(rows, upstream)
    sent = [r for r in upstream.requests() if r.get("generation_id")]
    assert all("reasoning_effort" not in r["body"] for r in sent)  # Claude Code's thinking did not raise the bill


def test_codex_completes_a_task_through_ralex_with_its_own_key(live: Proxy, upstream: Fake, clients: Path,
                                                                tmp_path: Path):
    name = f"laptop-codex-{uuid.uuid4().hex[:6]}"
    key = add_key(live, name)
    work, home = tmp_path / "work", tmp_path / "codex-home"
    work.mkdir()
    home.mkdir()
    connect = connection("codex", live.url, key)  # what `ralexctl connect codex` prints
    (home / "config.toml").write_text("check_for_update_on_startup = false\n" + connect.files["~/.codex/config.toml"]
                                      + "request_max_retries = 0\nstream_max_retries = 0\n" + QUIET_CODEX)
    upstream.script({"tool_calls": [{"name": "exec_command", "arguments": {"cmd": "echo hi > hello.txt"}}],
                     "requires_tools": True})
    task = "create hello.txt containing hi"
    done = run([str(clients / "codex"), "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
                task], work, {"HOME": str(home), "CODEX_HOME": str(home), **connect.env})
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:], live.logs())
    assert (work / "hello.txt").read_text().strip() == "hi"
    rows = settled_rows(live, name, 2)
    assert {r["alias_routed"] for r in rows} == {"cheap"}
    assert_billed_as_upstream(rows, upstream)
    sent = [r for r in upstream.requests() if r.get("generation_id")]
    assert all("web_search_options" not in r["body"] and "reasoning_effort" not in r["body"] for r in sent)
