"""The agent container is a sandbox: no network interface but loopback, a read-only root, and two
ways out: the relay on 127.0.0.1:4000 to the proxy's agent socket (model routes only), and the one on
127.0.0.1:3128 to the egress proxy (tests/e2e/test_egress.py).

Isolation is proven without sending a packet off this machine: canary listeners on the host (on
0.0.0.0 and on each bridge gateway of the project's networks) must record no connection from the
agent, while a bridged container of the same stack does reach them.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import AGENT_UID, Stack

pytestmark = pytest.mark.e2e

# One JSON line: [host, port, "connected" | error code] per target, connecting in parallel.
CONNECT = """
const net = require("node:net");
Promise.all(JSON.parse(process.argv[1]).map(([host, port]) => new Promise((done) => {
  const s = net.connect({ host, port, timeout: 5000 });
  s.on("connect", () => { s.destroy(); done([host, port, "connected"]); });
  s.on("timeout", () => { s.destroy(); done([host, port, "timeout"]); });
  s.on("error", (e) => done([host, port, e.code || e.message]));
}))).then((r) => console.log(JSON.stringify(r)));
"""

# GET with the agent's key: {"status", "body"} or {"error"}.
FETCH = """
fetch(process.argv[1], { headers: { authorization: `Bearer ${process.env.RALEX_AGENT_KEY}` },
                         signal: AbortSignal.timeout(10000) })
  .then(async (r) => console.log(JSON.stringify({ status: r.status, body: (await r.text()).slice(0, 4000) })))
  .catch((e) => console.log(JSON.stringify({ error: e.cause?.code || e.name })));
"""

# A raw HTTP request to 127.0.0.1:<port>: {"closed": whether the relay closed it within 5 s, "bytes": answer size}.
RAW = """
const s = require("node:net").connect({ host: "127.0.0.1", port: Number(process.argv[1]) });
let bytes = 0;
const report = (closed) => { console.log(JSON.stringify({ closed, bytes })); process.exit(0); };
s.on("connect", () => s.write("GET /v1/models HTTP/1.1\\r\\nHost: relay\\r\\n\\r\\n"));
s.on("data", (d) => { bytes += d.length; });
s.on("error", () => {});
s.on("close", () => report(true));
setTimeout(() => report(false), 5000);
"""

# Create (then remove) a file at each path: {path: "ok" | error code}.
WRITE = """
const fs = require("node:fs");
const out = {};
for (const p of JSON.parse(process.argv[1])) {
  try { fs.writeFileSync(p, "x"); fs.unlinkSync(p); out[p] = "ok"; } catch (e) { out[p] = e.code || e.message; }
}
console.log(JSON.stringify(out));
"""


class Canary:
    """A TCP listener on the host that records every connection it accepts."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.host, self.port = host, int(self.sock.getsockname()[1])
        self.peers: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.peers.append(peer[0])
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def node(stack: Stack, script: str, *args: str) -> Any:
    out, err, code = stack.exec("opencode", "node", "--no-warnings", "-e", script, *args)
    assert code == 0, err
    return json.loads(out)


def gateways(stack: Stack) -> list[str]:
    found = [c["Gateway"] for n in stack.networks() for c in (n.get("IPAM", {}).get("Config") or [])
             if c.get("Gateway") and ":" not in c["Gateway"]]
    assert found, "the project's bridge networks have gateways on the host"
    return found


@pytest.fixture(scope="module")
def canaries(stack: Stack) -> Iterator[dict[str, Canary]]:
    """"any" listens on 0.0.0.0; one more per project network gateway, bound to that address."""
    listeners = {"any": Canary("0.0.0.0"), **{gw: Canary(gw) for gw in gateways(stack)}}
    try:
        yield listeners
    finally:
        for canary in listeners.values():
            canary.close()


def test_the_agent_has_no_network_interface_but_loopback(stack: Stack):
    assert stack.container("opencode")["HostConfig"]["NetworkMode"] == "none"
    out, err, code = stack.exec("opencode", "sh", "-c", "ls /sys/class/net; echo ---; cat /proc/net/route; "
                                "echo ---; cat /proc/net/ipv6_route 2>/dev/null || true")
    assert code == 0, err
    interfaces, routes, routes6 = (part.strip().splitlines() for part in out.split("---"))
    assert interfaces == ["lo"]
    assert routes[1:] == [], f"IPv4 routes in the agent: {routes}"  # the header line only
    assert all(line.split()[-1] == "lo" for line in routes6), f"IPv6 routes off loopback: {routes6}"


def test_nothing_on_the_host_or_in_the_stack_is_reachable_from_the_agent(stack: Stack,
                                                                          canaries: dict[str, Canary]):
    any_port = canaries["any"].port
    targets: list[tuple[str, int]] = []
    for gw in gateways(stack):
        targets += [(gw, any_port), (gw, canaries[gw].port)]
    default_bridge = json.loads(stack.docker("network", "inspect", "bridge"))[0]["IPAM"]["Config"]
    targets += [(c["Gateway"], any_port) for c in default_bridge if c.get("Gateway") and ":" not in c["Gateway"]]
    ports = {"fake-openrouter": 8080, "postgres": 5432, "litellm": 4000}
    for service, port in ports.items():
        for net in stack.container(service)["NetworkSettings"]["Networks"].values():
            targets.append((net["IPAddress"], port))
    by_ip = {(h, p) for h, p in targets}
    by_name = [(name, port) for name, port in ports.items()] + [("host.docker.internal", any_port)]
    own_loopback = [("127.0.0.1", any_port)]  # the agent's own loopback, not the host's

    results = node(stack, CONNECT, json.dumps(sorted(by_ip) + by_name + own_loopback))
    outcome = {(h, p): r for h, p, r in results}
    assert {outcome[t] for t in by_ip} == {"ENETUNREACH"}, outcome
    assert {outcome[t] for t in by_name} <= {"EAI_AGAIN", "ENOTFOUND"}, outcome
    assert outcome[own_loopback[0]] == "ECONNREFUSED", outcome
    assert {name: c.peers for name, c in canaries.items()} == {name: [] for name in canaries}

    # The same canaries do answer a bridged container of this stack: the agent's isolation is its own.
    control = ("import socket, sys\nfor h, p in zip(sys.argv[1::2], sys.argv[2::2]):\n"
               "    socket.create_connection((h, int(p)), timeout=5).close()")
    args = [str(x) for gw in gateways(stack) for x in (gw, any_port, gw, canaries[gw].port)]
    _, err, code = stack.exec("litellm", "python3", "-c", control, *args)
    assert code == 0, err
    assert len(canaries["any"].peers) == len(gateways(stack))
    assert all(len(canaries[gw].peers) == 1 for gw in gateways(stack))


def test_the_proxy_answers_the_agent_through_the_relay_on_the_model_routes_only(stack: Stack):
    env, _, _ = stack.exec("opencode", "printenv", "RALEX_PROXY_URL")
    assert env.strip() == "http://127.0.0.1:4000/v1"
    models = node(stack, FETCH, "http://127.0.0.1:4000/v1/models")
    assert models["status"] == 200, models
    ids = {m["id"] for m in json.loads(models["body"])["data"]}
    assert {"auto", "cheap", "smart", "yolo"} <= ids
    assert node(stack, FETCH, "http://127.0.0.1:4000/models")["status"] == 200
    for path in ("/metrics", "/openapi.json", "/docs", "/health/liveliness", "/ralex/budget", "/key/generate"):
        answer = node(stack, FETCH, f"http://127.0.0.1:4000{path}")
        assert answer["status"] == 404, (path, answer)


def test_the_relay_survives_a_missing_proxy_and_logs_one_line_per_failure(stack: Stack):
    """The image's entrypoint, run a second time in the agent container with its relay pointed at a
    socket that does not exist: each connection is closed at once, one line is logged per failure, and
    the relay keeps listening."""
    script = ("RALEX_AGENT_SOCKET=/tmp/no-proxy.sock RALEX_RELAY_PORT=4001 RALEX_EGRESS_SOCKET= "
              "ralex-opencode-entrypoint sleep 4 2>/tmp/relay.err & sleep 1; "
              "for i in 1 2; do node -e \"$RAW\" 4001; done; "
              "grep -qs TCP-LISTEN:4001 /proc/[0-9]*/cmdline && echo alive; sleep 0.5; "
              "grep ralex-relay /tmp/relay.err; "
              "rm -f /tmp/relay.err")
    out, err, code = stack.exec("opencode", "env", f"RAW={RAW}", "sh", "-c", script)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert [json.loads(line) for line in lines[:2]] == [{"closed": True, "bytes": 0}] * 2, out  # no hang
    assert lines[2] == "alive", out
    assert lines[3:] == ["ralex-relay: proxy socket /tmp/no-proxy.sock: No such file or directory"] * 2, out


def test_the_root_filesystem_is_read_only_outside_the_writable_mounts(stack: Stack):
    writable = ["/workspace/.ralex-probe", "/tmp/ralex-probe", "/home/ralex/.cache/ralex-probe",
                "/home/ralex/.local/state/ralex-probe", "/home/ralex/.local/share/opencode/ralex-probe"]
    read_only = ["/ralex-probe", "/etc/ralex-probe", "/usr/local/bin/ralex-probe", "/var/tmp/ralex-probe",
                 "/home/ralex/ralex-probe", "/home/ralex/.config/opencode/ralex-probe",
                 "/home/ralex/.npm/ralex-probe", "/etc/ralex/opencode/ralex-probe",
                 "/etc/ralex/agent-os/ralex-probe", "/run/ralex/agent/ralex-probe"]
    assert stack.container("opencode")["HostConfig"]["ReadonlyRootfs"] is True
    result = node(stack, WRITE, json.dumps(writable + read_only))
    assert result == {**{p: "ok" for p in writable}, **{p: "EROFS" for p in read_only}}


def test_the_agent_is_non_root_without_docker_socket_or_upstream_key(stack: Stack):
    uid, _, _ = stack.exec("opencode", "id", "-u")
    assert uid.strip() == str(AGENT_UID)
    _, _, code = stack.exec("opencode", "test", "-e", "/var/run/docker.sock")
    assert code != 0
    env, _, _ = stack.exec("opencode", "env")
    assert "OPENROUTER_API_KEY" not in env
    assert stack.master not in env


def test_the_agent_commits_as_the_configured_identity_and_knows_its_box(stack: Stack):
    """git commit works in the box (an identity is set: the host's, copied by init, else Ralex's);
    the agent's instructions say what its network is and how to ask for a host; webfetch goes through
    the same egress proxy as everything else (tests/e2e/test_egress.py)."""
    script = ("set -e; d=$(mktemp -d); cd \"$d\"; git init -q; echo x > a.txt; git add a.txt; "
              "git commit -qm 'add a'; git log -1 --format='%an <%ae>|%cn <%ce>'")
    out, err, code = stack.exec("opencode", "sh", "-c", script)
    assert code == 0, err
    identity = f"{stack.env['RALEX_GIT_NAME']} <{stack.env['RALEX_GIT_EMAIL']}>"  # as init wrote it
    assert out.strip() == f"{identity}|{identity}"
    standard, _, code = stack.exec("opencode", "cat", "/etc/ralex/agent-os/standards/sandbox.md")
    assert code == 0
    words = " ".join(standard.split())
    assert "By default the box is offline" in words
    assert "ralexctl sandbox allow HOST" in words
    config = json.loads(stack.exec("opencode", "sh", "-c", "cat \"$OPENCODE_CONFIG\"")[0])
    assert config["permission"]["webfetch"] == "allow"
    proxy, _, _ = stack.exec("opencode", "printenv", "HTTPS_PROXY")
    assert proxy.strip() == "http://127.0.0.1:3128"
    assert any(glob.endswith("standards/*.md") for glob in config["instructions"])
