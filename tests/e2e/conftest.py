"""The whole stack as a user brings it up: a copy of the project, `ralexctl init`, `ralexctl up`.

The fake OpenRouter joins through `tests/compose.fake.yaml` (COMPOSE_FILE). The project is made with
`ralexctl init --no-dashboard` and started with a plain `ralexctl up`: no image of Grafana exists offline
(its dashboard is checked against Prometheus instead), and leaving it out is what the profile is for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ralex_ctl.project import read_env
from ralex_ctl.sandbox import host_addresses
from tests.integration.conftest import ROOT, free_port
from tests.zones import far_from_midnight

SERVICES = ["postgres", "litellm", "budget-exporter", "prometheus", "egress", "opencode", "fake-openrouter"]
AGENT_UID = 1000
TYPO = 'print("hello wrold")\n'
COPY = ["compose.yaml", ".env.example", "pyproject.toml", "README.md", "uv.lock", "ralex", "ralex_ctl", "services",
        "config", "prometheus", "alertmanager", "grafana", "agent-os", "sandbox", "tests/__init__.py",
        "tests/fake_openrouter", "tests/compose.fake.yaml", "tests/dns_canary.py"]


def ralexctl_path() -> str:
    found = shutil.which("ralexctl", path=str(Path(sys.executable).parent))
    assert found, "ralexctl is not installed in this environment; run `uv sync`"
    return found


@dataclass
class Stack:
    root: Path
    workspace: Path
    env: dict[str, str]
    up_seconds: float
    process_env: dict[str, str] = field(default_factory=dict)

    @property
    def master(self) -> str:
        return self.env["LITELLM_MASTER_KEY"]

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.env['RALEX_PROXY_PORT']}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.env['RALEX_PROMETHEUS_PORT']}"

    def ralexctl(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ralexctl_path(), *args], cwd=self.root, env=self.process_env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def exec(self, service: str, *command: str) -> tuple[str, str, int]:
        """`docker compose exec` that reports a non-zero exit instead of raising."""
        result = subprocess.run(["docker", "compose", "exec", "-T", service, *command], cwd=self.root,
                                env=self.process_env, capture_output=True, text=True, timeout=300, check=False)
        return result.stdout, result.stderr, result.returncode

    def docker(self, *args: str) -> str:
        result = subprocess.run(["docker", *args], env=self.process_env, capture_output=True, text=True,
                                timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def container(self, service: str) -> dict[str, Any]:
        """`docker inspect` of the service's (single) container."""
        found = self.docker("ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
                            "--filter", f"label=com.docker.compose.service={service}").split()
        assert len(found) == 1, f"{service}: containers {found}"
        return dict(json.loads(self.docker("inspect", found[0]))[0])

    def networks(self) -> list[dict[str, Any]]:
        """`docker network inspect` of every network of this compose project."""
        ids = self.docker("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}")
        return list(json.loads(self.docker("network", "inspect", *ids.split()))) if ids.split() else []

    @property
    def project(self) -> str:
        return self.process_env["COMPOSE_PROJECT_NAME"]

    def sql(self, query: str) -> str:
        out, err, code = self.exec("postgres", "psql", "-U", "ralex", "-d", "ralex", "-tAc", query)
        assert code == 0, err
        return out.strip()

    def spent_today(self) -> float:
        """The ledger's total for the proxy's budget day (not the latest day in the ledger: a test may
        move the budget to another timezone's date and back)."""
        day = httpx.get(f"{self.proxy}/ralex/budget", headers={"Authorization": f"Bearer {self.master}"},
                        timeout=30).json()["day"]
        return float(self.sql(f"SELECT coalesce((SELECT spent_usd FROM daily_totals WHERE budget_day = '{day}'), 0)"))

    def promql(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        response.raise_for_status()
        return list(response.json()["data"]["result"])

    def value(self, expr: str) -> float | None:
        result = self.promql(expr)
        return float(result[0]["value"][1]) if result else None

    def fake_call(self, method: str, path: str, body: Any = None) -> Any:
        """The fake's control API, from inside its container (it publishes no port)."""
        script = ("import sys, urllib.request as u; m, p, b = sys.argv[1:4]; "
                  "r = u.Request('http://127.0.0.1:8080' + p, method=m, data=b.encode() if b else None, "
                  "headers={'Content-Type': 'application/json'}); print(u.urlopen(r).read().decode())")
        out, err, code = self.exec("fake-openrouter", "python3", "-c", script, method, path,
                                   json.dumps(body) if body is not None else "")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("ralex-project")
    for name in COPY:
        source = ROOT / name
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    # The README's first-contact path: the workspace is the default ./workspace (owned by the user the
    # agent runs as), `ralexctl init` accepts every default, and .env is never edited by hand. What
    # only this machine needs (stand-in images, free ports) comes from the environment, which Compose
    # and ralexctl read before .env. The local timezone init takes (TZ) is Europe/Berlin unless its
    # midnight is under 6 hours away: no budget day ends while the stack is tested on the real clock.
    workspace = root / "workspace"
    workspace.mkdir()
    (workspace / "hello.py").write_text(TYPO)
    for path in (workspace, workspace / "hello.py"):
        os.chown(path, AGENT_UID, AGENT_UID)
    machine = {
        "RALEX_PROXY_PORT": str(free_port()), "RALEX_PROMETHEUS_PORT": str(free_port()),
        "RALEX_GRAFANA_PORT": str(free_port()),
        "RALEX_LITELLM_IMAGE": "ralex.invalid/litellm:test",
        "RALEX_EXPORTER_IMAGE": "ralex.invalid/budget-exporter:test",
        "RALEX_OPENCODE_IMAGE": "ralex.invalid/opencode:test",
        "RALEX_EGRESS_IMAGE": "ralex.invalid/egress:test",
        "RALEX_TEST_HOST_ADDRESS": (host_addresses() or ["172.17.0.1"])[0],  # tests/compose.fake.yaml's hostaddr.test
        # ralexctl doctor asks OpenRouter about the key from this machine: a name that resolves nowhere
        # (the proxy itself talks to the fake, tests/compose.fake.yaml).
        "OPENROUTER_API_BASE": "http://openrouter.invalid/api/v1",
        **{k: v for k, v in os.environ.items() if k.startswith("RALEX_") and k.endswith("_IMAGE")
           and k not in ("RALEX_LITELLM_IMAGE", "RALEX_EXPORTER_IMAGE", "RALEX_OPENCODE_IMAGE", "RALEX_EGRESS_IMAGE",
                         "RALEX_AGENT_BASE_IMAGE")},
    }
    process_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "LITELLM_"))}
    process_env.update({"RALEX_HOME": str(root), "COMPOSE_FILE": "compose.yaml:tests/compose.fake.yaml",
                        "COMPOSE_PROJECT_NAME": f"ralex-e2e-{os.getpid()}", "TZ": far_from_midnight(), **machine})
    stack = Stack(root, workspace, {}, 0.0, process_env)
    init = stack.ralexctl("init", "--openrouter-key", "sk-or-e2e-key", "--no-dashboard", "-y")
    assert init.returncode == 0, init.stderr
    stack.env = {**read_env(root / ".env"), **machine}
    assert stack.env["RALEX_WORKSPACE"] == "./workspace"
    assert stack.env["RALEX_UID"] == str(AGENT_UID)
    build = subprocess.run(["docker", "compose", "build", *[s for s in SERVICES if s not in ("postgres",
                                                                                          "prometheus")]],
                           cwd=root, env=process_env, capture_output=True, text=True, timeout=1800, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    started = time.monotonic()
    up = stack.ralexctl("up", timeout=900)
    stack.up_seconds = time.monotonic() - started
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield stack
    finally:
        logs = subprocess.run(["docker", "compose", "logs", "--tail", "80"], cwd=root, env=process_env,
                              capture_output=True, text=True, check=False)
        (tmp_path_factory.getbasetemp() / "stack.log").write_text(logs.stdout + logs.stderr)
        stack.ralexctl("down", "--volumes", "-y", timeout=300)
