"""The agent's egress, as the README tells a user to open it: `ralexctl sandbox network packages`, then
real installs from the registries this machine reaches, through Squid's allow-list.

Nothing here can leave the machine by mistake: the names refused are under ``.invalid``/``.test`` or the
stack's own services; lan.test and hostaddr.test are answered by the test resolver (tests/dns_canary.py)
with the canary's own private address and this machine's address, where TCP canaries count connections.
The resolver logs every name the proxy asks for: a refused name must never be asked.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import AGENT_UID, Stack
from tests.e2e.test_sandbox import Canary
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.e2e

PACKAGE_JSON = {"name": "demo", "version": "1.0.0", "private": True, "scripts": {"test": "node test.js"},
                "dependencies": {"left-pad": "1.3.0"}}
PACKAGE_LOCK = {
    "name": "demo", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
    "packages": {
        "": {"name": "demo", "version": "1.0.0", "dependencies": {"left-pad": "1.3.0"}},
        "node_modules/left-pad": {
            "version": "1.3.0", "license": "WTFPL",
            "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQGinBN9yTQT3bFlCBy/"
                         "aVx2HrNcqQGsdot8ghrjyrvMCoEA=="},
    },
}
TEST_JS = ('const pad = require("left-pad");\n'
           'if (pad("7", 3, "0") !== "007") { console.error("left-pad is wrong"); process.exit(1); }\n'
           'console.log("ok 1 - left-pad pads");\n')


def agent(stack: Stack, script: str) -> tuple[str, str, int]:
    return stack.exec("opencode", "sh", "-c", script)


def canary_log(stack: Stack, path: str) -> list[str]:
    out, err, code = stack.exec("dns-canary", "cat", path)
    assert code == 0, err
    return out.split()


def egress_log(stack: Stack, since: float) -> list[list[str]]:
    """Access lines the egress proxy printed since ``since`` (epoch): [time, verdict, method, host:port, ...]."""
    out = stack.docker("logs", "--since", str(int(since)), stack.container("egress")["Id"])
    return [line.split() for line in out.splitlines() if line[:2].isdigit() and line[2] == ":"]


@pytest.fixture(scope="module")
def host_canary(stack: Stack) -> Iterator[Canary]:
    """A TCP listener on this machine's own address (what hostaddr.test points at), on port 443."""
    canary = Canary(stack.process_env["RALEX_TEST_HOST_ADDRESS"], 443)
    try:
        yield canary
    finally:
        canary.close()


@pytest.fixture(scope="module")
def packages(stack: Stack) -> Iterator[Stack]:
    """The stack after `ralexctl sandbox network packages`; back to none afterwards."""
    opened = stack.ralexctl("sandbox", "network", "packages")
    assert opened.returncode == 0, opened.stdout + opened.stderr
    assert "in force now (the agent kept running)" in opened.stdout, opened.stdout
    try:
        yield stack
    finally:
        closed = stack.ralexctl("sandbox", "network", "none")
        assert closed.returncode == 0, closed.stdout + closed.stderr


def test_offline_by_default_every_request_gets_the_fix_and_no_proxy_runs(stack: Stack):
    assert stack.env.get("RALEX_AGENT_NETWORK", "none") == "none"
    out, _, code = agent(stack, "curl -sS -m 20 http://pypi.org/simple/")
    assert code == 0
    assert "the sandbox is offline (RALEX_AGENT_NETWORK=none)" in out
    assert "ralexctl sandbox network packages" in out
    _, err, code = agent(stack, "curl -sS -m 20 https://registry.npmjs.org/left-pad")
    assert code != 0
    assert "403" in err, err
    processes, _, _ = stack.exec("egress", "sh", "-c", "cat /proc/[0-9]*/comm")
    assert not {"squid", "socat"} & set(processes.split())
    assert canary_log(stack, "/tmp/dns-queries.log") == [], "offline: no name is ever looked up"
    standard, _, _ = stack.exec("opencode", "cat", "/etc/ralex/agent-os/standards/sandbox.md")
    assert "ralexctl sandbox allow" in standard


def test_npm_ci_and_npm_test_work_through_the_allow_list(packages: Stack):
    stack = packages
    project = stack.workspace / "node-demo"
    project.mkdir()
    (project / "package.json").write_text(json.dumps(PACKAGE_JSON, indent=2) + "\n")
    (project / "package-lock.json").write_text(json.dumps(PACKAGE_LOCK, indent=2) + "\n")
    (project / "test.js").write_text(TEST_JS)
    for path in (project, *project.iterdir()):
        os.chown(path, AGENT_UID, AGENT_UID)
    since = time.time() - 1
    out, err, code = agent(stack, "cd /workspace/node-demo && npm ci --no-audit --no-fund && npm test")
    assert code == 0, out + err
    assert "ok 1 - left-pad pads" in out
    assert (project / "node_modules" / "left-pad" / "package.json").exists()
    hosts = {line[3].rsplit(":", 1)[0] for line in egress_log(stack, since)}
    assert hosts == {"registry.npmjs.org"}, hosts


def test_refused_names_are_never_looked_up_and_refused_addresses_never_reached(packages: Stack,
                                                                              host_canary: Canary):
    stack = packages
    allowed = stack.ralexctl("sandbox", "allow", "lan.test", "hostaddr.test")
    assert allowed.returncode == 0, allowed.stderr
    time.sleep(2)  # the proxy re-reads the lists every second
    probes = {
        "https://exfil.invalid/": None,
        "http://exfil.invalid/x": "not on the sandbox's allow-list",
        "http://postgres:5432/": "not on the sandbox's allow-list",
        "http://litellm:4000/ralex/budget": "not on the sandbox's allow-list",
        "http://fake-openrouter:8080/api/v1/key": "not on the sandbox's allow-list",
        "http://prometheus:9090/": "not on the sandbox's allow-list",
        f"http://{stack.process_env['RALEX_TEST_HOST_ADDRESS']}/": "reaches hosts by name only",
        "http://lan.test/": "private, loopback or link-local",
        "https://lan.test/": None,
        "https://hostaddr.test/": None,
        "http://hostaddr.test/": "private, loopback or link-local",
        "https://pypi.org:8443/": None,
    }
    for url, words in probes.items():
        out, err, code = agent(stack, f"curl -sS -m 20 '{url}'")
        if words is None:  # HTTPS: the client shows the proxy's status only
            assert code != 0, (url, out, err)
            assert "403" in err, (url, out, err)
        else:
            assert words in out, (url, out, err)
    asked = canary_log(stack, "/tmp/dns-queries.log")
    for name in ("exfil.invalid", "postgres", "litellm", "fake-openrouter", "prometheus"):
        assert name not in asked, f"{name} was looked up: {asked}"
    assert {"lan.test", "hostaddr.test"} <= set(asked)
    assert canary_log(stack, "/tmp/tcp-connections.log") == [], "a refused address was connected to"
    assert host_canary.peers == []
    reset = stack.ralexctl("sandbox", "reset", "lan.test", "hostaddr.test")
    assert reset.returncode == 0, reset.stderr


def test_deny_wins_live_and_the_log_and_metrics_show_each_host(packages: Stack):
    stack = packages
    denied = stack.ralexctl("sandbox", "deny", "registry.npmjs.org")
    assert denied.returncode == 0, denied.stderr
    try:
        def refused() -> str | None:
            out, _, _ = agent(stack, "curl -sS -m 20 http://registry.npmjs.org/left-pad")
            return out if "deny list" in out else None

        out = wait_until(refused, 15, interval=1, what="the deny list in force")
        assert "registry.npmjs.org is on the sandbox's deny list" in out
    finally:
        reset = stack.ralexctl("sandbox", "reset", "registry.npmjs.org")
        assert reset.returncode == 0, reset.stderr
    shown = stack.ralexctl("sandbox", "log", "--no-follow", "-n", "200")
    assert shown.returncode == 0, shown.stderr
    assert "allowed    CONNECT registry.npmjs.org:443 200" in shown.stdout
    assert "denied     GET registry.npmjs.org:80 403" in shown.stdout
    def scraped() -> set[tuple[str, str]] | None:
        found = {(s["metric"]["host"], s["metric"]["verdict"]) for s in stack.promql("ralex_egress_requests_total")}
        return found if ("registry.npmjs.org", "denied") in found else None

    series = wait_until(scraped, 30, interval=1, what="the egress counts in Prometheus")
    assert ("registry.npmjs.org", "allowed") in series
    assert ("registry.npmjs.org", "denied") in series
    assert ("other", "not_listed") in series  # exfil.invalid and the stack's names: one bounded label
    assert all(host == "other" or "." in host for host, _ in series)


def test_opencodes_webfetch_goes_through_the_same_allow_list_and_the_agent_reads_why(packages: Stack):
    """A scripted OpenCode turn: webfetch of a host that is not listed is refused by the proxy (OpenCode
    hands the model the status, not the page), and the standard in the same request says what it means
    and which command to give the user."""
    stack = packages
    stack.fake_call("POST", "/_fake/reset")
    stack.fake_call("POST", "/_fake/script", {"replies": [
        {"tool_calls": [{"name": "webfetch", "arguments": {"url": "https://exfil.invalid/notes", "format": "text"}}],
         "requires_tools": True},
        {"content": "The sandbox refused exfil.invalid.", "requires_tools": True},
    ]})
    out, err, code = stack.exec("opencode", "opencode", "run", "--model", "ralex/cheap",
                                "read https://exfil.invalid/notes")
    assert code == 0, out + err
    bodies = [c["body"] for c in stack.fake_call("GET", "/_fake/requests")["requests"]]
    results = [m["content"] for b in bodies for m in b.get("messages") or [] if m.get("role") == "tool"]
    assert any("403" in r and "exfil.invalid" in r for r in results), results  # OpenCode shows the status only
    system = json.dumps([m for b in bodies for m in b.get("messages") or [] if m.get("role") == "system"])
    assert "ralexctl sandbox allow HOST" in system  # ... and the agent's standard says what a 403 means
