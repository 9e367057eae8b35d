"""Real parts for integration tests: Postgres (testcontainers), the real LiteLLM proxy with Ralex's
hooks (started by `ralex-proxy`, exactly as in the image) and the fake OpenRouter."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # the reaper image cannot be pulled offline

import httpx
import psycopg
import pytest
import uvicorn

from ralex.budget import CAP_PRESETS
from ralex.ledger.store import update_settings
from tests.fake_openrouter import FakeState, create_app
from tests.zones import far_from_midnight

ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-ralex-test-master"
BUDGET_TZ = far_from_midnight()
"""The proxies' budget timezone: Europe/Berlin unless its midnight is less than 6 hours away, so no
budget day ends while the suite runs on the real clock (midnight itself: test_resilience.py with a
clock started just before it, and tests/unit/test_clock_edges.py)."""
POSTGRES_IMAGE = os.environ.get("RALEX_POSTGRES_IMAGE", "postgres:15.10-bookworm")


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    detail = f" ({last_error!r})" if last_error else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- Postgres ----------------------------------------------------------------------------------

@dataclass
class Pg:
    container: Any
    admin_dsn: str
    host_port: int

    def dsn(self, dbname: str) -> str:
        return self.admin_dsn.rsplit("/", 1)[0] + f"/{dbname}"

    def new_database(self) -> str:
        name = f"ralex_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)


def start_postgres(host_port: int | None = None) -> Pg:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(POSTGRES_IMAGE, username="ralex", password="ralex", dbname="ralex", driver=None)
    if host_port is not None:
        container.with_bind_ports(5432, host_port)
    container.start()
    port = int(container.get_exposed_port(5432))
    return Pg(container, f"postgresql://ralex:ralex@127.0.0.1:{port}/ralex", port)


@pytest.fixture(scope="session")
def pg() -> Iterator[Pg]:
    server = start_postgres()
    yield server
    server.container.stop()


# --- fake OpenRouter ---------------------------------------------------------------------------

@dataclass
class Fake:
    url: str
    state: FakeState
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=10)

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v1"

    def reset(self) -> None:
        self.client.post("/_fake/reset").raise_for_status()

    def faults(self, *faults: dict[str, Any]) -> None:
        self.client.post("/_fake/faults", json={"faults": list(faults)}).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        return self.client.get("/_fake/requests").json()["requests"]

    def script(self, *replies: dict[str, Any]) -> None:
        self.client.post("/_fake/script", json={"replies": list(replies)}).raise_for_status()


@pytest.fixture(scope="session")
def fake() -> Iterator[Fake]:
    state = FakeState()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, what="fake OpenRouter to start")
    yield Fake(f"http://127.0.0.1:{port}", state)
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def upstream(fake: Fake) -> Fake:
    fake.reset()
    return fake


# --- the proxy ---------------------------------------------------------------------------------

@dataclass
class Proxy:
    dsn: str
    port: int
    process: subprocess.Popen[bytes]
    runtime: Path
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60,
                                   headers={"Authorization": f"Bearer {MASTER_KEY}"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def chat(self, text: str = "fix the typo in hello.py", model: str = "auto", **body: Any) -> httpx.Response:
        messages = body.pop("messages", None) or [{"role": "user", "content": text}]
        return self.client.post("/v1/chat/completions", json={"model": model, "messages": messages, **body})

    def budget(self) -> dict[str, Any]:
        response = self.client.get("/ralex/budget")
        response.raise_for_status()
        return response.json()

    def set_remaining(self, remaining: float) -> None:
        """Set today's limit so that ``remaining`` dollars are left, and wait until the proxy has it."""
        spent = self.budget()["spent"]
        self.set_limit(round(spent + remaining, 6))

    def set_limit(self, limit: float, **settings: Any) -> None:
        with psycopg.connect(self.dsn) as conn:
            update_settings(conn, daily_limit=limit, by="test", **settings)
        wait_until(lambda: abs(self.budget()["limit"] - limit) < 1e-9, 10, what=f"proxy to apply limit {limit}")

    def set_caps(self, **caps: float) -> None:
        """Per-request caps, live (as `ralexctl budget cap` does)."""
        self.client.put("/ralex/budget", json={"caps": caps}).raise_for_status()

    def ledger(self, where: str = "true", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with psycopg.connect(self.dsn, row_factory=dict_row) as conn:
            return conn.execute(f"SELECT * FROM ledger WHERE {where} ORDER BY ts", params).fetchall()

    def row(self, response: httpx.Response, timeout: float = 10.0) -> dict[str, Any]:
        """The ledger row of a response, once the proxy has settled and written it."""
        request_id = response.headers["x-ralex-request-id"]
        rows = wait_until(lambda: self.ledger("request_id = %s", (request_id,)), timeout,
                          what=f"ledger row {request_id}")
        return rows[0]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def proxy_env(dsn: str, fake: Fake, port: int, runtime: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RALEX_", "OPENROUTER_", "LITELLM_"))}
    env.update({
        "OPENROUTER_API_KEY": "sk-or-test-key",
        "OPENROUTER_API_BASE": fake.api_base,
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "RALEX_AGENT_KEY": "sk-ralex-test-agent",
        "RALEX_DATABASE_URL": dsn,
        "RALEX_PROXY_PORT": str(port),
        "RALEX_PROXY_HOST": "127.0.0.1",
        "RALEX_RUNTIME_DIR": str(runtime),
        "RALEX_AGENT_SOCKET": str(runtime / "agent.sock"),
        "RALEX_UPSTREAM_TIMEOUT": "4",
        "RALEX_DAILY_BUDGET": "5",
        "RALEX_TIMEZONE": BUDGET_TZ,
        "RALEX_DB_WAIT_SECONDS": "20",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    env.update(extra)
    return env


def launcher() -> str:
    found = shutil.which("ralex-proxy", path=str(Path(sys.executable).parent))
    assert found, "ralex-proxy is not installed in this environment; run `uv sync`"
    return found


def start_proxy(dsn: str, fake: Fake, tmp: Path, **extra: str) -> Proxy:
    port = free_port()
    runtime = tmp / f"proxy-{port}"
    runtime.mkdir(parents=True)
    log_path = runtime / "proxy.log"
    process = subprocess.Popen([launcher()], env=proxy_env(dsn, fake, port, runtime, **extra),
                               stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    proxy = Proxy(dsn, port, process, runtime, log_path)

    def alive() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"proxy exited with {process.returncode}:\n{proxy.logs()}")
        return httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).status_code == 200

    wait_until(alive, 90, interval=0.25, what="the LiteLLM proxy to answer /health/liveliness")
    return proxy


@pytest.fixture(scope="session")
def proxy(pg: Pg, fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    server = start_proxy(pg.new_database(), fake, tmp_path_factory.mktemp("proxy"))
    yield server
    server.stop()


@pytest.fixture
def live(proxy: Proxy, upstream: Fake) -> Iterator[Proxy]:
    """The shared proxy with a clean upstream and a comfortable budget ($4 left: full tier).

    After the test, every answer the upstream delivered is checked against the ledger: the model
    and max_tokens it received are the ones recorded. (Attempts that timed out or were cut are
    charged inside their request's row; the fault tests compare those in dollars.)
    """
    proxy.set_caps(**CAP_PRESETS["agent"])  # the shipped caps, whatever an earlier test set
    proxy.set_remaining(4.0)
    yield proxy
    if proxy.process.poll() is None:
        assert_ledger_matches_upstream(proxy, upstream)


@pytest.fixture(scope="session")
def shared_proxy(pg: Pg, fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """A proxy whose reservations are shared through Postgres (as each of several replicas runs)."""
    server = start_proxy(pg.new_database(), fake, tmp_path_factory.mktemp("shared"),
                         RALEX_RESERVATIONS="shared", RALEX_REPLICA_ID="proxy-1")
    yield server
    server.stop()


@pytest.fixture(params=["memory", "shared"])
def each_book(request: pytest.FixtureRequest, upstream: Fake) -> Iterator[Proxy]:
    """:func:`live` once with each reservation book: this process's memory, and Postgres shared by replicas.
    The concurrency suite runs against both."""
    proxy: Proxy = request.getfixturevalue("proxy" if request.param == "memory" else "shared_proxy")
    proxy.set_caps(**CAP_PRESETS["agent"])
    proxy.set_remaining(4.0)
    yield proxy
    if proxy.process.poll() is None:
        assert_ledger_matches_upstream(proxy, upstream)


def assert_ledger_matches_upstream(proxy: Proxy, upstream: Fake) -> None:
    wait_until(lambda: proxy.budget()["in_flight"] == 0 and proxy.budget()["ledger"]["pending"] == 0, 60,
               what="every request settled and written")
    generated = [r for r in upstream.requests() if r.get("generation_id") and r["status"] == 200
                 and not r.get("cancelled")]
    rows = {row["generation_id"]: row for row in proxy.ledger("generation_id IS NOT NULL")}
    for sent in generated:
        row = rows.get(sent["generation_id"])
        assert row is not None, f"upstream generation {sent['generation_id']} has no ledger row"
        assert row["upstream_model"] == sent["model"], (row, sent["model"])
        assert row["max_tokens"] == sent["max_tokens"], (row["max_tokens"], sent["max_tokens"])
