"""Budget toasts in the real OpenCode TUI: the Ralex plugin shipped in the agent image reads the proxy's
GET /ralex/status and shows threshold crossings, step-downs and refusals as toasts, which
`ralexctl attach` users see without doing anything. Driven in tmux, read off the screen."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, ralexctl_path
from tests.integration.conftest import wait_until

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is needed to drive a real terminal")]

TITLES = ("Ralex: request refused", "Ralex: budget alert", "Ralex: stepped down")
AGENT_KEY = "agent-stub-key"
REFUSAL = ("Daily budget $5.00 exhausted ($4.99 spent; $0.0004 left, this request needs up to $0.0011); resets "
           "at 00:00 Europe/Berlin (in 3h12m). Raise it with: ralexctl budget set 10")
# A stand-in for the proxy's agent routes, run inside the agent container on 127.0.0.1:4000 (where the
# relay normally listens): GET /ralex/status as the proxy serves it, and a chat route that refuses.
STUB = r"""
const http = require("node:http");
const events = [];
let next = 1;
const add = (kind, text, ago = 0) =>
  events.push({ id: next++, kind, at: new Date(Date.now() - ago).toISOString(), text });
add("threshold", "50 % of today's budget spent ($2.50 of $5.00); resets at 00:00 Europe/Berlin (in 3h40m)", 3600e3);
http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    const url = new URL(req.url, "http://127.0.0.1");
    const send = (code, data) => {
      res.writeHead(code, { "content-type": "application/json" });
      res.end(JSON.stringify(data));
    };
    if (url.pathname === "/ralex/status") {
      if (req.headers.authorization !== "Bearer " + process.env.RALEX_AGENT_KEY) return send(401, {});
      const since = url.searchParams.get("since");
      const list = since === null ? events.slice(-5) : events.filter((e) => e.id > Number(since));
      return send(200, { limit: 5, spent: 4.99, remaining: 0.01, fraction_used: 0.998, tier: "emergency",
        alert_level: 95, thresholds: [50, 80, 95, 100], resets_at: "2026-12-01T00:00:00+01:00",
        timezone: "Europe/Berlin", events: list, last_event_id: next - 1 });
    }
    if (url.pathname === "/v1/chat/completions") {
      add("step_down", "smart -> cheap: $1.20 left (budget tier economy)");
      add("threshold", "80 % of today's budget spent ($4.00 of $5.00); resets at 00:00 Europe/Berlin (in 3h12m)");
      add("refused", process.env.REFUSAL);
      return send(402, { error: { message: process.env.REFUSAL, type: "budget_exceeded", code: 402 } });
    }
    send(404, { error: { message: "not found" } });
  });
}).listen(4000, "127.0.0.1");
"""


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def squash(text: str) -> str:
    """Text without whitespace: a toast wraps its lines anywhere."""
    return "".join(text.split())


def _framed(line: str, left: int, right: int) -> bool:
    return len(line) > right and line[left] == "┃" and line[right] == "┃"


def toasts_on(screen: str) -> list[str]:
    """The text of each Ralex toast on the screen (title and body; the box found around its title)."""
    lines = screen.splitlines()
    found = []
    for row, line in enumerate(lines):
        for title in TITLES:
            col = line.find(title)
            if col < 0:
                continue
            left, right = line.rfind("┃", 0, col), line.find("┃", col + len(title))
            if left < 0 or right < 0:
                continue
            top = bottom = row
            while top > 0 and _framed(lines[top - 1], left, right):
                top -= 1
            while bottom + 1 < len(lines) and _framed(lines[bottom + 1], left, right):
                bottom += 1
            found.append(" ".join(" ".join(lines[r][left + 1:right] for r in range(top, bottom + 1)).split()))
    return found


class Tui:
    """One OpenCode TUI in a tmux session; remembers every toast it has seen on screen."""

    def __init__(self, session: str, command: str) -> None:
        self.session = session
        self.seen: list[str] = []
        tmux("kill-session", "-t", session)
        tmux("new-session", "-d", "-s", session, "-x", "150", "-y", "45", command)

    def screen(self) -> str:
        text = tmux("capture-pane", "-p", "-t", self.session)
        for toast in toasts_on(text):
            if toast not in self.seen:
                self.seen.append(toast)
        return text

    def ready(self) -> None:
        wait_until(lambda: "Ralex auto" in self.screen(), 120, interval=1,
                   what="the OpenCode TUI to draw with the Ralex model")

    def prompt(self, text: str) -> None:
        self.screen()
        tmux("send-keys", "-t", self.session, text, "")
        time.sleep(0.5)
        tmux("send-keys", "-t", self.session, "Enter")

    def toast_with(self, *texts: str, title: str = "Ralex", timeout: float = 90) -> str:
        """Wait until one toast (titled ``title``...) has shown every text in ``texts``. Events that
        one poll of the plugin finds share a toast, titled after the most severe."""
        def match() -> str | None:
            self.screen()
            return next((t for t in self.seen if t.startswith(title) and all(squash(x) in squash(t) for x in texts)),
                        None)
        try:
            return str(wait_until(match, timeout, interval=0.4, what=f"a toast {title!r}... with {texts}"))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ntoasts seen: {json.dumps(self.seen, indent=1)}\n"
                                 f"screen now:\n{self.screen()}") from None

    def close(self) -> None:
        tmux("kill-session", "-t", self.session)


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_toasts_from_a_stub_status_and_a_proxy_that_is_down_at_first(stack: Stack):
    """The shipped image, sandboxed as Compose runs it (no network, read-only root), with a stand-in
    for the proxy: OpenCode works while the status cannot be read (one log line), and once it can,
    a refused turn shows the step-down, the threshold and the 402 text as one toast."""
    image = stack.env["RALEX_OPENCODE_IMAGE"]
    name = f"ralex-toast-stub-{os.getpid()}"
    uid = stack.env.get("RALEX_UID", "1000")
    docker("rm", "-f", name)
    run = docker("run", "-d", "--name", name, "--network", "none", "--read-only", "--cap-drop", "ALL",
                 "--security-opt", "no-new-privileges:true",
                 "--tmpfs", "/tmp:size=256m,mode=1777,exec",
                 "--tmpfs", f"/home/ralex/.cache:size=256m,mode=0700,exec,uid={uid},gid={uid}",
                 "--tmpfs", f"/home/ralex/.local/state:size=64m,mode=0700,uid={uid},gid={uid}",
                 "--tmpfs", f"/home/ralex/.local/share/opencode:size=256m,mode=0700,uid={uid},gid={uid}",
                 "--tmpfs", f"/workspace:size=64m,uid={uid},gid={uid}",
                 "-e", "RALEX_AGENT_SOCKET=", "-e", f"RALEX_AGENT_KEY={AGENT_KEY}", "-e", f"REFUSAL={REFUSAL}",
                 "-it", image)
    assert run.returncode == 0, run.stderr
    tui = Tui(f"ralex-toast-stub-{os.getpid()}", f"docker exec -it -w /workspace {name} opencode attach "
                                                 "http://127.0.0.1:4096; sleep 30")

    def plugin_log() -> str:
        return docker("exec", name, "sh", "-c", "cat ~/.local/share/opencode/log/*.log").stdout

    try:
        wait_until(lambda: docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip() == "healthy",
                   90, interval=1, what="the agent container to be healthy")
        tui.ready()
        # Nothing answers on 127.0.0.1:4000: a turn retries its model call, the plugin polls and fails.
        tui.prompt("say hello to ralex")
        wait_until(lambda: "retrying" in tui.screen(), 60, interval=1, what="OpenCode to retry the model call")
        time.sleep(6)  # a few failed status polls while the session is busy
        log = plugin_log()
        assert log.count("ralex-budget: cannot read the budget status at http://127.0.0.1:4000/ralex/status") == 1, log
        # The proxy comes back (the stand-in starts); OpenCode's next retry is refused with a 402.
        started = docker("exec", "-d", name, "node", "-e", STUB)
        assert started.returncode == 0, started.stderr
        toast = tui.toast_with(REFUSAL, "smart -> cheap: $1.20 left (budget tier economy)",
                               "80 % of today's budget spent ($4.00 of $5.00)", title="Ralex: request refused",
                               timeout=120)
        assert "50 % of today" not in toast  # an event from before the plugin started is not news
        wait_until(lambda: "ralex-budget: budget status is back" in plugin_log(), 30, interval=1,
                   what="the plugin to log that the status is back")
        assert docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"
    finally:
        tui.close()
        docker("rm", "-f", name)


def admin(stack: Stack, method: str, path: str) -> Any:
    response = httpx.request(method, f"{stack.proxy}{path}", headers={"Authorization": f"Bearer {stack.master}"},
                             timeout=30)
    response.raise_for_status()
    return response.json()


def settled(stack: Stack) -> dict[str, Any]:
    """Today's budget once nothing is in flight and the spend has stopped moving for two seconds."""
    last: list[float] = []

    def calm() -> dict[str, Any] | None:
        view = admin(stack, "GET", "/ralex/budget")
        last.append(view["spent"])
        return view if view["in_flight"] == 0 and len(last) >= 5 and len(set(last[-5:])) == 1 else None
    return dict(wait_until(calm, 60, interval=0.5, what="the spend to settle"))


def ralexctl_ok(stack: Stack, *args: str) -> str:
    result = stack.ralexctl(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_turn_crossing_80_percent_a_step_down_and_a_refusal_show_as_toasts(stack: Stack):
    """The real stack: a turn that crosses 80 % of the day's budget (and is stepped down from smart to
    cheap by the emergency tier) shows both as toasts; a turn the budget cannot pay shows the 402 text."""
    # The agent key may read the status through the relay, and it holds nothing but the budget picture.
    out, err, code = stack.exec("opencode", "node", "-e",
                                "fetch('http://127.0.0.1:4000/ralex/status',{headers:{authorization:"
                                "'Bearer '+process.env.RALEX_AGENT_KEY}}).then(async r=>console.log(r.status,"
                                "await r.text()))")
    assert code == 0, err
    status_code, body = out.strip().split(" ", 1)
    assert status_code == "200", out
    assert set(json.loads(body)) == {"limit", "spent", "remaining", "fraction_used", "tier", "alert_level",
                                     "thresholds", "resets_at", "timezone", "summary", "events", "last_event_id"}

    ralexctl_ok(stack, "budget", "set", "5")
    view = settled(stack)
    # Each threshold is announced once per budget day: if an earlier test already crossed 80 % today,
    # watch a threshold this day has not reached yet.
    threshold = next(t for t in [80, *range(81, 95)] if t not in view["alerts_crossed_today"])
    thresholds = view["alert_thresholds"]
    if threshold not in thresholds:
        ralexctl_ok(stack, "budget", "alerts", str(threshold))
    env_prefix = " ".join(f"{k}={v}" for k, v in stack.process_env.items()
                          if k in ("RALEX_HOME", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "PATH"))
    tui = Tui(f"ralex-toast-{stack.env['RALEX_PROXY_PORT']}",
              f"env {env_prefix} {ralexctl_path()} attach; sleep 30")
    try:
        tui.ready()
        # What one turn of this TUI costs (system prompt, tools, the title request) at the fake's prices,
        # in emergency mode (under $0.50 left: everything on cheap), as the crossing turn will be.
        fraction = threshold / 100
        ralexctl_ok(stack, "budget", "set", f"{view['spent'] + 0.45:.6f}")
        view = settled(stack)
        assert view["tier"] == "emergency", view
        assert view["fraction_used"] < fraction, view
        before = view["spent"]
        tui.prompt("say hello to ralex")
        wait_until(lambda: "OK: " in tui.screen(), 90, interval=1, what="the fake upstream's answer in the TUI")
        spent = settled(stack)["spent"]
        turn = spent - before
        assert turn > 0, "the turn was not charged"
        # The turn spent money: when it ends, the TUI shows today's budget as the ledger has it, in the words
        # `ralexctl status` uses (the countdown to the reset aside, which moves).
        summary = admin(stack, "GET", "/ralex/status")["summary"]
        assert summary.split(" (in ")[0] == admin(stack, "GET", "/ralex/budget")["summary"].split(" (in ")[0]
        tui.toast_with(summary.split(" (in ")[0])
        # Spend directly (the master key, smart) until a budget exists that the next turn crosses while
        # its hold (every prompt byte a token, far above the fake's bill) still fits what is left.
        filler = "Summarise the following log lines.\n" + "log line: all systems nominal\n" * 1400
        while (spent + 0.4 * turn) / fraction - spent < 10 * turn:
            ralexctl_ok(stack, "budget", "set", "5")  # smart is in reach again
            reply = httpx.post(f"{stack.proxy}/v1/chat/completions", timeout=60,
                               headers={"Authorization": f"Bearer {stack.master}"},
                               json={"model": "smart", "messages": [{"role": "user", "content": filler}]})
            assert reply.status_code == 200, reply.text
            spent = settled(stack)["spent"]
        limit = round((spent + 0.4 * turn) / fraction, 6)
        ralexctl_ok(stack, "budget", "set", f"{limit:.6f}")
        view = settled(stack)
        assert view["fraction_used"] < fraction, view
        assert threshold not in view["alerts_crossed_today"], view
        last_event = admin(stack, "GET", "/ralex/status")["last_event_id"]

        tui.prompt("review the auth module for race conditions")
        wait_until(lambda: "OK: review the auth" in tui.screen(), 90, interval=1,
                   what="the stepped-down turn's answer in the TUI")
        events = admin(stack, "GET", f"/ralex/status?since={last_event}")["events"]
        crossing = [e for e in events if e["kind"] == "threshold" and e["text"].startswith(f"{threshold} % ")]
        step_down = [e for e in events if e["kind"] == "step_down" and e["text"].startswith("smart -> cheap")]
        assert crossing, events
        assert step_down, events
        assert crossing[0]["text"].startswith(f"{threshold} % of today's budget spent")
        tui.toast_with(step_down[0]["text"])
        tui.toast_with(crossing[0]["text"], title="Ralex: budget alert")

        # No budget left: the next turn is refused, and the 402 text is a toast.
        ralexctl_ok(stack, "budget", "set", f"{settled(stack)['spent']:.6f}")
        last_event = admin(stack, "GET", "/ralex/status")["last_event_id"]
        tui.prompt("say hello once more")
        refused = wait_until(lambda: [e for e in admin(stack, "GET", f"/ralex/status?since={last_event}")["events"]
                                      if e["kind"] == "refused"], 90, interval=1, what="the refusal event")
        assert "exhausted" in refused[0]["text"]
        assert "ralexctl budget set" in refused[0]["text"]
        tui.toast_with(refused[0]["text"], title="Ralex: request refused")
    finally:
        tui.close()
        stack.ralexctl("budget", "set", "5")
        if threshold not in thresholds:
            stack.ralexctl("budget", "alerts", *map(str, thresholds))
