"""A joined folder against a real team proxy: `ralexctl init --join` checks the real proxy and writes .env, and
compose.join.yaml's relay and networkless agent carry a request from inside the agent container to it with
the developer's client key (the ledger row is that key's).

The proxy is the shared `live` one (ralex-proxy on 127.0.0.1, real Postgres, the fake OpenRouter). It
listens on the host's loopback, which a bridge network cannot reach, so a test override puts the relay
on the host's network; the agent keeps network_mode none, as in the real file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ralex_ctl.project import read_env
from tests.integration.conftest import ROOT, Proxy, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.compose]

COPY = ["compose.yaml", "compose.join.yaml", ".env.example", ".dockerignore", "services", "agent-os", "sandbox"]
OVERRIDE = """\
services:
  relay:
    network_mode: host
    networks: !reset []
"""


def ralexctl(folder: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    found = shutil.which("ralexctl", path=str(Path(sys.executable).parent))
    assert found, "ralexctl is not installed in this environment; run `uv sync`"
    return subprocess.run([found, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    for name in COPY:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        elif source.exists():
            shutil.copy(source, tmp_path / name)
    (tmp_path / "compose.test.yaml").write_text(OVERRIDE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RALEX_", "COMPOSE_", "LITELLM_"))}
    env.update({k: v for k, v in os.environ.items() if k.startswith("RALEX_") and k.endswith("_IMAGE")})
    env.update({"RALEX_OPENCODE_IMAGE": "ralex.invalid/opencode:test",  # the e2e suite's tag: a cached build
                "COMPOSE_PROJECT_NAME": f"ralex-join-{uuid.uuid4().hex[:6]}"})
    env.pop("RALEX_AGENT_BASE_IMAGE", None)
    yield tmp_path, env
    subprocess.run(["docker", "compose", "down", "--volumes", "--timeout", "2"], cwd=tmp_path, env=env,
                   capture_output=True, timeout=120, check=False)


def test_a_request_from_the_joined_agent_reaches_the_team_proxy_with_the_developers_key(
        live: Proxy, folder: tuple[Path, dict[str, str]]):
    root, env = folder
    name = f"dev-{uuid.uuid4().hex[:6]}"
    created = live.client.post("/ralex/keys", json={"name": name, "budget": 2})
    created.raise_for_status()
    key = created.json()["key"]
    url = f"http://127.0.0.1:{live.port}"

    refused = ralexctl(root, "init", "--join", url, "--key", "sk-ralex-" + "x" * 43, "-y", env=env)
    assert refused.returncode == 1
    assert "the server refuses the key" in refused.stderr
    assert not (root / ".env").exists()

    done = ralexctl(root, "init", "--join", url, "--key", key, "-y", env=env)
    assert done.returncode == 0, done.stderr
    assert f"the server answers and takes the key (key {name}, $0.00 spent today of $2.00" in done.stdout
    assert read_env(root / ".env")["RALEX_JOIN_KEY"] == key

    compose_env = {**env, "COMPOSE_FILE": "compose.join.yaml:compose.test.yaml"}
    up = subprocess.run(["docker", "compose", "up", "-d", "--wait", "--wait-timeout", "120", "relay"], cwd=root,
                        env=compose_env, capture_output=True, text=True, timeout=600, check=False)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    agent = subprocess.run(["docker", "compose", "up", "-d", "--no-deps", "opencode"], cwd=root, env=compose_env,
                           capture_output=True, text=True, timeout=600, check=False)
    assert agent.returncode == 0, agent.stderr[-2000:]

    def ask() -> str:
        out = subprocess.run(
            ["docker", "compose", "exec", "-T", "opencode", "sh", "-c",
             'curl -fsS --noproxy "*" -m 20 -H "Authorization: Bearer $RALEX_AGENT_KEY" '
             '-H "content-type: application/json" '
             '-d \'{"model": "cheap", "messages": [{"role": "user", "content": "fix the typo in hello.py"}]}\' '
             "http://127.0.0.1:4000/v1/chat/completions"],
            cwd=root, env=compose_env, capture_output=True, text=True, timeout=60, check=False)
        return out.stdout if out.returncode == 0 else ""

    answer = wait_until(ask, 60, interval=1, what="a chat completion from inside the joined agent")
    assert '"choices"' in answer
    rows = wait_until(lambda: live.ledger("key_name = %s", (name,)), 15, what=f"a ledger row for key {name}")
    assert len(rows) == 1

    inspect = subprocess.run(["docker", "compose", "ps", "-q", "opencode"], cwd=root, env=compose_env,
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    mode = subprocess.run(["docker", "inspect", "-f", "{{.HostConfig.NetworkMode}}", inspect],
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    assert mode == "none"  # the agent reached the team proxy with no network of its own
