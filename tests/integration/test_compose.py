"""The real compose.yaml with the real images: postgres + our LiteLLM image, fake upstream overlaid."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import BUDGET_TZ, ROOT, free_port, wait_until

pytestmark = pytest.mark.compose


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, str, str]]:
    from testcontainers.compose import DockerCompose

    master = f"sk-{secrets.token_hex(16)}"
    port = free_port()
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    images = {k: v for k, v in os.environ.items() if k.startswith("RALEX_") and k.endswith("_IMAGE")}
    env_file.write_text("\n".join(f"{k}={v}" for k, v in {
        **images,
        "OPENROUTER_API_KEY": "sk-or-test-key",
        "LITELLM_MASTER_KEY": master,
        "RALEX_AGENT_KEY": f"sk-{secrets.token_hex(16)}",
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "RALEX_EXPORTER_DB_PASSWORD": secrets.token_hex(12),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(12),
        "RALEX_PROXY_PORT": str(port),
        "RALEX_TIMEZONE": BUDGET_TZ,
        "RALEX_LITELLM_IMAGE": "ralex.invalid/litellm:test",
    }.items()) + "\n")
    os.environ["COMPOSE_PROJECT_NAME"] = f"ralex-test-{uuid.uuid4().hex[:6]}"
    compose = DockerCompose(str(ROOT), compose_file_name=["compose.yaml", "tests/compose.fake.yaml"],
                            env_file=str(env_file), build=True, wait=True,
                            services=["postgres", "litellm", "fake-openrouter"])
    try:
        compose.start()
        yield compose, f"http://127.0.0.1:{port}", master
    finally:
        compose.stop(down=True)
        os.environ.pop("COMPOSE_PROJECT_NAME", None)


def test_compose_stack_routes_and_records_cost(stack):
    compose, url, master = stack
    headers = {"Authorization": f"Bearer {master}"}
    response = httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=60, json={
        "model": "auto", "messages": [{"role": "user", "content": "fix the typo in hello.py"}]})
    assert response.status_code == 200, response.text
    assert response.headers["x-ralex-route"] == "cheap"
    budget = wait_until(lambda: (b := httpx.get(f"{url}/ralex/budget", headers=headers).json())["spent"] > 0 and b)
    assert budget["timezone"] == BUDGET_TZ
    rows, _, _ = compose.exec_in_container(
        ["psql", "-U", "ralex", "-d", "ralex", "-tAc", "SELECT alias_routed, cost_usd > 0 FROM ledger"], "postgres")
    assert rows.strip() == "cheap|t"


def test_a_large_body_is_read_by_the_images_worker_process(stack):
    """A body over 128 KB is read in a spawned worker process inside the shipped image (non-root, its
    limits): it is answered, and the worker runs beside the proxy."""
    compose, url, master = stack
    from ralex.body import OFF_LOOP_BYTES

    tool_output = "def handler(event):\n    return event\n" * (OFF_LOOP_BYTES // 30)
    response = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {master}"}, timeout=60,
                          json={"model": "cheap", "max_tokens": 50, "messages": [
                              {"role": "user", "content": "summarise this file"},
                              {"role": "user", "content": tool_output}]})
    assert len(response.request.content) > OFF_LOOP_BYTES
    assert response.status_code == 200, response.text
    processes, _, _ = compose.exec_in_container(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"],
                                                "litellm")
    assert "multiprocessing" in processes


def test_proxy_runs_as_non_root_with_the_hooks_installed(stack):
    compose, _, _ = stack
    uid, _, _ = compose.exec_in_container(["id", "-u"], "litellm")
    assert uid.strip() != "0"
    listing, _, _ = compose.exec_in_container(["ls", "-ld", "/var/lib/ralex/spool"], "litellm")
    assert "ralex" in listing


def test_compose_file_pins_images_and_binds_localhost_only():
    text = (ROOT / "compose.yaml").read_text()
    assert "${RALEX_POSTGRES_IMAGE:-postgres:" in text
    assert '"127.0.0.1:' in text
    assert Path(ROOT / ".env.example").read_text().count("REQUIRED") >= 3


def test_metrics_are_served_inside_the_stack_only_and_need_the_master_key_on_the_host(stack):
    """Prometheus scrapes litellm:9401 on the stack's network with no key; the published port wants the
    master key for /metrics, and the metrics port is not published at all."""
    compose, url, master = stack
    fetch = ("import sys, urllib.request\n"
             "with urllib.request.urlopen(sys.argv[1], timeout=10) as r: print(r.status, b'# TYPE' in r.read())")
    inside, _, code = compose.exec_in_container(["python3", "-c", fetch, "http://litellm:9401/metrics"],
                                                "fake-openrouter")  # another container, as Prometheus is
    assert code == 0
    assert inside.split() == ["200", "True"]
    assert httpx.get(f"{url}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{url}/metrics", headers={"x-api-key": master}, timeout=10).status_code == 200
    published = {(p.TargetPort, p.PublishedPort) for p in compose.get_container("litellm").Publishers or []}
    assert not [p for p in published if p[0] == 9401 and p[1]], published
