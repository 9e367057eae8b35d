"""ralexctl against the real stack it brought up (see conftest: init + up are the fixture)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import httpx
import pytest

from ralex.budget import usd
from tests.e2e.conftest import SERVICES, Stack, ralexctl_path
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.e2e


def chat(stack: Stack, text: str, model: str = "auto") -> httpx.Response:
    return httpx.post(f"{stack.proxy}/v1/chat/completions", headers={"Authorization": f"Bearer {stack.master}"},
                      json={"model": model, "messages": [{"role": "user", "content": text}]}, timeout=60)


def test_up_brought_every_service_to_healthy(stack: Stack):
    result = stack.ralexctl("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    states = {s["service"]: s for s in status["services"]}
    for service in SERVICES:
        assert states[service]["ok"], states[service]
    assert "grafana" not in states  # init --no-dashboard: not expected, not missing
    assert "dashboard" not in status["urls"]
    assert status["budget"]["limit"] == 5.0
    assert status["budget"]["timezone"] == stack.process_env["TZ"]  # init took the local timezone


def test_status_renders_services_and_the_budget_bar(stack: Stack):
    result = stack.ralexctl("status")
    assert result.returncode == 0
    assert "litellm" in result.stdout
    assert "tier full (smart and cheap)" in result.stdout
    assert "resets at 00:00" in result.stdout


def test_budget_set_is_live_through_the_proxy(stack: Stack):
    assert stack.ralexctl("budget", "set", "0").returncode == 0
    refused = chat(stack, "add a docstring to utils.py")
    assert refused.status_code == 402
    assert "ralexctl budget set" in refused.json()["error"]["message"]
    tier = stack.ralexctl("budget", "tier", "standard")
    assert tier.returncode == 0
    assert "$5.00" in tier.stdout
    assert chat(stack, "add a docstring to utils.py").status_code == 200
    bad = stack.ralexctl("budget", "set", "lots")
    assert bad.returncode == 1
    assert "not a number" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_budget_cap_is_live_through_the_proxy(stack: Stack):
    step = "fix the typo in hello.py\n" + "x = 1\n" * 1_000  # ~2k tokens: $0.0002 of prompt on cheap
    try:
        assert stack.ralexctl("budget", "cap", "cheap", "0.0001").returncode == 0
        refused = chat(stack, step, model="cheap")
        assert refused.status_code == 402
        suggested = refused.json()["error"]["message"].rsplit("ralexctl budget cap cheap ", 1)[1].split()[0]
        raised = stack.ralexctl("budget", "cap", "cheap", suggested)
        assert raised.returncode == 0, raised.stderr
        assert f"cheap {usd(float(suggested))}" in raised.stdout
        assert chat(stack, step, model="cheap").status_code == 200
    finally:
        assert stack.ralexctl("budget", "cap", "cheap", "0.05").returncode == 0


def test_spend_reports_the_ledger(stack: Stack):
    chat(stack, "fix the typo in main.py")
    data = json.loads(wait_until(lambda: (r := stack.ralexctl("spend", "--days", "2", "--json")).returncode == 0
                                 and json.loads(r.stdout)["rows"] and r.stdout, 30, interval=1))
    assert data["by"] == "alias"
    assert sum(r["spent"] for r in data["rows"]) > 0
    table = stack.ralexctl("spend", "--by", "model")
    assert "google/gemini-2.5-flash-lite" in table.stdout
    assert "total" in table.stdout
    csv = stack.ralexctl("spend", "--csv")
    assert csv.stdout.splitlines()[0] == "day,alias,requests,refusals,spent_usd"


def test_doctor_passes_on_the_healthy_stack_without_the_dashboard(stack: Stack):
    result = stack.ralexctl("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    failed = {name: c for name, c in checks.items() if not c["ok"] and not c["warn_only"]}
    assert not failed, failed
    assert result.returncode == 0
    assert checks["stack health"]["detail"] == "all healthy"
    assert not any("3000" in name or name == f"port {stack.env['RALEX_GRAFANA_PORT']}" for name in checks)
    assert checks["OpenRouter key"]["warn_only"]  # openrouter.invalid: unreachable, only a warning


def test_a_second_up_keeps_every_running_container(stack: Stack):
    """`ralexctl up` on a running stack changes nothing: an open TUI in the agent is never cut."""
    services = ("opencode", "egress", "litellm", "postgres")
    before = {s: (c["Id"], c["State"]["StartedAt"]) for s in services if (c := stack.container(s))}
    again = stack.ralexctl("up", timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    after = {s: (c["Id"], c["State"]["StartedAt"]) for s in services if (c := stack.container(s))}
    assert after == before


def test_status_is_fast(stack: Stack):
    started = time.monotonic()
    assert stack.ralexctl("status").returncode == 0
    assert time.monotonic() - started < 30  # a generous bound; the figure itself is a benchmark


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is needed to drive a real terminal")
def test_attach_opens_the_tui_answers_and_detaches_cleanly(stack: Stack):
    session = f"ralex-attach-{stack.env['RALEX_PROXY_PORT']}"
    env_prefix = " ".join(f"{k}={v}" for k, v in stack.process_env.items()
                          if k in ("RALEX_HOME", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "PATH"))
    command = f"env {env_prefix} {ralexctl_path()} attach; echo RALEX-ATTACH-EXIT=$?; sleep 30"
    tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "48", command)
    try:
        wait_until(lambda: "Ralex auto" in tmux("capture-pane", "-p", "-t", session), 90, interval=1,
                   what="the OpenCode TUI to draw with the Ralex model")
        tmux("resize-window", "-t", session, "-x", "140", "-y", "40")
        tmux("send-keys", "-t", session, "say hello to ralex", "")
        tmux("send-keys", "-t", session, "Enter")
        wait_until(lambda: "OK: " in tmux("capture-pane", "-p", "-t", session), 90, interval=1,
                   what="the fake upstream's answer in the TUI")
        tmux("send-keys", "-t", session, "C-c")  # an empty prompt: Ctrl-C leaves the TUI
        wait_until(lambda: "RALEX-ATTACH-EXIT=" in tmux("capture-pane", "-p", "-t", session), 30, interval=1,
                   what="attach to return to the shell")
        assert "RALEX-ATTACH-EXIT=0" in tmux("capture-pane", "-p", "-t", session)
        sessions, _, code = stack.exec("opencode", "node", "-e",
                                       "fetch('http://127.0.0.1:4096/session').then(r=>r.json())"
                                       ".then(s=>console.log(s.length))")
        assert code == 0
        assert int(sessions.strip()) >= 1, "the session survives the detach"
        assert "continue later: ralexctl attach --continue" in tmux("capture-pane", "-p", "-t", session)
    finally:
        tmux("kill-session", "-t", session)

    # Back to the same session: --continue opens it with the previous turn on screen.
    command = f"env {env_prefix} {ralexctl_path()} attach --continue; echo RALEX-ATTACH-EXIT=$?; sleep 30"
    tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "48", command)
    try:
        wait_until(lambda: "say hello to ralex" in tmux("capture-pane", "-p", "-t", session), 90, interval=1,
                   what="the previous turn in the continued session")
        assert "OK: " in tmux("capture-pane", "-p", "-t", session)
        tmux("send-keys", "-t", session, "C-c")
        wait_until(lambda: "RALEX-ATTACH-EXIT=0" in tmux("capture-pane", "-p", "-t", session), 30, interval=1,
                   what="attach --continue to return to the shell")
    finally:
        tmux("kill-session", "-t", session)


def test_attach_says_how_to_start_the_stack_when_it_is_down(stack: Stack, monkeypatch: pytest.MonkeyPatch):
    env = {**stack.process_env, "COMPOSE_PROJECT_NAME": "ralex-not-running"}
    result = subprocess.run([ralexctl_path(), "attach"], cwd=stack.root, env=env, capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 1
    assert "run `ralexctl up`" in result.stderr
