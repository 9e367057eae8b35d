"""The arm64 stack on an emulated Raspberry Pi 4 (Cortex-A72, ARMv8.0: no LSE atomics) and Pi 5
(Cortex-A76), as `ralexctl init` sets it up: the money path (a routed request, a 402 with the
reset time and the fix, the ledger row, the exporter's metric in Prometheus) and one real OpenCode
turn that edits a file; an npm project installed through the egress proxy and tested in the agent's box.
Timings here are emulation on x86, not a Pi: they are recorded, never asserted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.arm64.conftest import CPUS, HWCAP, OPENCODE_ARM64_VERSION, SERVICES, SMOKE, Results
from tests.e2e.conftest import AGENT_UID, TYPO, Stack
from tests.e2e.test_egress import PACKAGE_JSON, PACKAGE_LOCK, TEST_JS
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.arm64
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1000, "MB": 1000**2, "GB": 1000**3}


def hwcap(stack: Stack, service: str) -> int:
    out, err, code = stack.exec(service, "sh", "-c", "LD_SHOW_AUXV=1 /bin/true")
    assert code == 0, err
    found = re.search(r"^AT_HWCAP:\s+(\S+)", out, re.M)
    assert found, out
    return int(found.group(1), 16)


GUEST_TOP = 0x7F00_0000_0000  # qemu-user maps an aarch64 guest below this; its own code and data live above


def memory_by_service(stack: Stack) -> dict[str, dict[str, int]]:
    """Each service's memory, in bytes: ``cgroup`` as Docker counts it (what mem_limit caps, emulator
    included) and the proportional set size of its processes split into ``arm64`` (the aarch64
    program's own mappings: what the same program uses on a Pi) and ``emulator`` (qemu's translated
    code cache, its heap and its binary: cost of emulation only)."""
    out = stack.docker("stats", "--no-stream", "--format", "{{json .}}")
    used: dict[str, dict[str, int]] = {}
    for line in out.splitlines():
        row = json.loads(line)
        if not row["Name"].startswith(stack.project + "-"):
            continue
        service = row["Name"][len(stack.project) + 1:].rsplit("-", 1)[0]
        number, unit = re.match(r"([\d.]+)\s*([A-Za-z]+)", row["MemUsage"]).groups()  # type: ignore[union-attr]
        guest = emulator = 0
        for pid in stack.docker("top", row["ID"], "-eo", "pid").split()[1:]:
            try:
                smaps = Path(f"/proc/{pid}/smaps").read_text()
            except OSError:  # exited meanwhile
                continue
            start, label = 0, ""
            for entry in smaps.splitlines():
                head = re.match(r"^([0-9a-f]+)-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", entry)
                if head:
                    start, label = int(head.group(1), 16), head.group(2)
                elif entry.startswith("Pss:"):
                    kib = int(entry.split()[1]) * 1024
                    if start < GUEST_TOP and label != "[heap]":  # [heap] is qemu's brk; the guest's is emulated
                        guest += kib
                    else:
                        emulator += kib
        used[service] = {"cgroup": int(float(number) * UNITS[unit]), "arm64": guest, "emulator": emulator}
    return used


@pytest.fixture(scope="module", params=CPUS)
def pi(arm_stack: Stack, results: Results, request: pytest.FixtureRequest) -> tuple[Stack, str]:
    """The stack (re)started with every container on the emulated CPU ``request.param``."""
    stack, cpu = arm_stack, str(request.param)
    stack.process_env["QEMU_CPU"] = cpu
    started = time.monotonic()
    up = stack.ralexctl("up", *SERVICES, "--timeout", "1500", timeout=1800)
    results.put("cpus", cpu, "up_seconds", value=round(time.monotonic() - started))
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    for service in SERVICES:
        out, _, _ = stack.exec(service, "uname", "-m")
        assert out.strip() == "aarch64", f"{service}: {out}"
    for service in ("litellm", "postgres", *(["opencode"] if "opencode" in SERVICES else [])):
        assert hwcap(stack, service) == HWCAP[cpu], f"{service} does not run on an emulated {cpu}"
    return stack, cpu


def test_money_path(pi: tuple[Stack, str], results: Results):
    """A routed request, its ledger row, the exporter's metric in Prometheus, then a 402 with the reset
    time and the fix once the day cannot pay."""
    stack, cpu = pi
    headers = {"Authorization": f"Bearer {stack.master}"}
    assert stack.ralexctl("budget", "set", "5").returncode == 0
    stack.fake_call("POST", "/_fake/reset", {})
    rows_before = int(stack.sql("SELECT count(*) FROM ledger WHERE status = 'ok'"))
    response = httpx.post(f"{stack.proxy}/v1/chat/completions", headers=headers, timeout=300, json={
        "model": "auto", "messages": [{"role": "user", "content": "fix the typo in a.py"}]})
    assert response.status_code == 200, response.text
    assert response.headers["x-ralex-route"].startswith("cheap")
    wait_until(lambda: int(stack.sql("SELECT count(*) FROM ledger WHERE status = 'ok'")) == rows_before + 1, 60,
               interval=1, what="the ledger row")
    spent = stack.spent_today()
    assert spent > 0
    wait_until(lambda: (v := stack.value("ralex_budget_spent_today_usd")) is not None
               and v == pytest.approx(spent, rel=1e-6), 180, interval=2, what="the exporter's metric in Prometheus")
    assert stack.ralexctl("budget", "set", f"{spent:.6f}").returncode == 0  # nothing left today
    refused = httpx.post(f"{stack.proxy}/v1/chat/completions", headers=headers, timeout=120, json={
        "model": "auto", "messages": [{"role": "user", "content": "fix the typo in a.py"}]})
    assert refused.status_code == 402, refused.text
    assert "resets at 00:00" in refused.text, refused.text
    assert "ralexctl budget set" in refused.text, refused.text
    assert stack.ralexctl("budget", "set", "5").returncode == 0
    results.put("cpus", cpu, "money_path", value="works")


@pytest.mark.skipif(SMOKE, reason="RALEX_ARM64_SCOPE=smoke: images and the money path only")
def test_an_opencode_turn_edits_a_file_and_memory_after_it(pi: tuple[Stack, str], results: Results):
    """One real OpenCode turn (read, edit, answer) through the proxy; then each service's memory."""
    stack, cpu = pi
    out, err, code = stack.exec("opencode", "opencode", "--version")
    assert (code, out.strip()) == (0, OPENCODE_ARM64_VERSION), err
    (stack.workspace / "hello.py").write_text(TYPO)
    stack.fake_call("POST", "/_fake/reset", {})
    stack.fake_call("POST", "/_fake/script", {"replies": [
        {"tool_calls": [{"name": "read", "arguments": {"filePath": "/workspace/hello.py"}}], "requires_tools": True},
        {"tool_calls": [{"name": "edit", "arguments": {"filePath": "/workspace/hello.py", "oldString": "wrold",
                                                       "newString": "world"}}], "requires_tools": True},
        {"content": "Fixed the typo in hello.py.", "requires_tools": True},
    ]})
    started = time.monotonic()
    try:  # emulated and sharing two cores with the whole stack: minutes, not the seconds a board takes
        turn = subprocess.run(["docker", "compose", "exec", "-T", "opencode", "opencode", "run", "--print-logs",
                               "--model", "ralex/auto", "fix the typo in hello.py"], cwd=stack.root,
                              env=stack.process_env, capture_output=True, text=True, timeout=1200, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"no answer in 20 min; OpenCode's log:\n{(exc.stderr or b'')[-4000:]!r}") from None
    results.put("cpus", cpu, "opencode_turn_seconds", value=round(time.monotonic() - started))
    assert turn.returncode == 0, f"{turn.stdout[-2000:]}\n{turn.stderr[-4000:]}"
    assert (stack.workspace / "hello.py").read_text() == 'print("hello world")\n'
    assert len(stack.fake_call("GET", "/_fake/requests")["requests"]) >= 4
    results.put("cpus", cpu, "opencode_turn", value="works")

    # memory after the session: what a board would hold, and what emulation adds
    results.put("cpus", cpu, "memory_bytes", value=memory_by_service(stack))
    for service in SERVICES:
        container = stack.container(service)
        state: dict[str, Any] = container["State"]
        assert not state["OOMKilled"], f"{service} was killed at its memory limit"
        assert container["RestartCount"] == 0, f"{service} restarted"


def test_the_agent_image_runs_under_plain_docker_run_on_a_pi4_cpu(arm_stack: Stack):
    """Without Compose's init the entrypoint is PID 1 and starts tini (no subreaper flag, which
    qemu-user lacks): the image runs as `docker run` users start it."""
    out = arm_stack.docker("run", "--rm", "--platform", "linux/arm64", "-e", "QEMU_CPU=cortex-a72",
                           arm_stack.env["RALEX_OPENCODE_IMAGE"], "sh", "-c",
                           "ps -o pid=,comm= -p 1 2>/dev/null || cat /proc/1/comm; opencode --version")
    assert "tini" in out, out
    assert out.strip().endswith(OPENCODE_ARM64_VERSION), out


def test_an_npm_project_installs_through_the_allow_list_and_passes_in_the_arm64_agent(arm_stack: Stack,
                                                                                      results: Results):
    """The node toolchain on arm64, as a user opens the box: `ralexctl sandbox network packages`, then
    `npm ci && npm test` in the agent's own sandbox (Compose's settings: no network, read-only root),
    the dependency fetched from npm through the arm64 egress proxy's allow-list."""
    stack = arm_stack
    opened = stack.ralexctl("sandbox", "network", "packages")
    assert opened.returncode == 0, opened.stdout + opened.stderr
    project = stack.workspace / "node-demo"
    project.mkdir(exist_ok=True)
    (project / "package.json").write_text(json.dumps(PACKAGE_JSON, indent=2) + "\n")
    (project / "package-lock.json").write_text(json.dumps(PACKAGE_LOCK, indent=2) + "\n")
    (project / "test.js").write_text(TEST_JS)
    for path in (project, *project.iterdir()):
        os.chown(path, AGENT_UID, AGENT_UID)
    started = time.monotonic()
    try:
        ready = subprocess.run(["docker", "compose", "up", "-d", "--wait", "--wait-timeout", "600", "egress"],
                               cwd=stack.root, env=stack.process_env, capture_output=True, text=True, timeout=900,
                               check=False)
        assert ready.returncode == 0, ready.stdout[-2000:] + ready.stderr[-2000:]
        run = subprocess.run(["docker", "compose", "run", "--rm", "-T", "-e", "QEMU_CPU=cortex-a72", "opencode", "sh",
                              "-c", "uname -m && cd /workspace/node-demo && npm ci --no-audit --no-fund && npm test"],
                             cwd=stack.root, env=stack.process_env, capture_output=True, text=True, timeout=1500,
                             check=False)
    finally:
        closed = stack.ralexctl("sandbox", "network", "none")
        assert closed.returncode == 0, closed.stdout + closed.stderr
    results.put("npm_ci_and_test_seconds", value=round(time.monotonic() - started))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "aarch64" in run.stdout.split()  # (Compose may print its build steps first)
    assert "ok 1 - left-pad pads" in run.stdout
    arch = stack.docker("image", "inspect", "-f", "{{.Architecture}}", stack.env["RALEX_EGRESS_IMAGE"]).strip()
    assert arch == "arm64"
