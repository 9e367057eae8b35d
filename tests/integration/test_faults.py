"""Every request the upstream may bill is recorded: proxy restarts and kills with Postgres up and
down, timeouts, client cancels and broken streams, compared with what the fake upstream billed."""

from __future__ import annotations

import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tests import results
from tests.integration.conftest import (
    Fake,
    Proxy,
    free_port,
    launcher,
    proxy_env,
    start_postgres,
    start_proxy,
    wait_until,
)

pytestmark = pytest.mark.integration


def ledger(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM ledger WHERE status <> 'refused'").fetchall()


def billed(upstream: Fake) -> tuple[int, float]:
    usage = upstream.client.get("/_fake/usage").json()
    return usage["generations"], float(usage["cost"])


def record(name: str, figures: dict[str, Any]) -> None:
    """Keep the measured figures for the README (faults.json, with RALEX_RESULTS_DIR set)."""
    results.record("faults.json", name, figures)


def restart(proxy: Proxy, upstream: Fake, tmp_path: Path, journal: Path, sig: int) -> Proxy:
    proxy.process.send_signal(sig)
    proxy.process.wait(20)
    return start_proxy(proxy.dsn, upstream, tmp_path, RALEX_JOURNAL=str(journal))


def test_rows_queued_while_postgres_is_away_survive_a_proxy_restart(upstream: Fake, tmp_path: Path):
    """Postgres stops, 20 requests are served, the proxy restarts (SIGTERM) while Postgres is still
    away, then Postgres returns: the ledger holds all 20, at the upstream's bill."""
    server = start_postgres(host_port=free_port())
    journal = tmp_path / "journal" / "ledger-journal.jsonl"
    proxy = start_proxy(server.admin_dsn, upstream, tmp_path, RALEX_JOURNAL=str(journal))
    try:
        server.container.get_wrapped_container().stop(timeout=2)
        responses = [proxy.chat(f"add a docstring to function {i}", model="cheap") for i in range(20)]
        assert {r.status_code for r in responses} == {200}
        # each row is queued by LiteLLM's success callback, which runs after the answer is sent
        wait_until(lambda: proxy.budget()["in_flight"] == 0, 10, what="the 20 requests to settle")
        assert proxy.budget()["ledger"]["pending"] == 20
        proxy.process.send_signal(signal.SIGTERM)
        proxy.process.wait(20)
        # The next proxy waits for Postgres (as compose restarts it); Postgres comes back meanwhile.
        log_path = tmp_path / "second.log"
        port = free_port()
        env = proxy_env(server.admin_dsn, upstream, port, tmp_path / "second", RALEX_JOURNAL=str(journal))
        (tmp_path / "second").mkdir()
        second = subprocess.Popen([launcher()], env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
        server.container.get_wrapped_container().start()
        again = Proxy(server.admin_dsn, port, second, tmp_path / "second", log_path)
        wait_until(lambda: httpx.get(f"{again.url}health/liveliness", timeout=2).status_code == 200, 90,
                   interval=0.5, what="the restarted proxy")
        rows = wait_until(lambda: len(ledger(server.admin_dsn)) >= 20 and ledger(server.admin_dsn), 30,
                          what="the journal replayed")
        generations, cost = billed(upstream)
        assert len(rows) == generations == 20
        assert sum(float(r["cost_usd"]) for r in rows) == pytest.approx(cost)
        assert again.budget()["spent"] == pytest.approx(cost)
        record("postgres_down_then_sigterm", {"upstream_billed": generations, "upstream_usd": cost,
                                              "ledger_rows": len(rows),
                                              "ledger_usd": sum(float(r["cost_usd"]) for r in rows)})
        again.stop()
    finally:
        proxy.stop()
        server.container.stop()


@pytest.mark.parametrize("postgres_up", [True, False], ids=["postgres-up", "postgres-down"])
def test_sigkill_under_load_loses_no_accounting(upstream: Fake, tmp_path: Path, postgres_up: bool):
    """SIGKILL with requests in flight: every forwarded request leaves a row (settled, or charged at
    its hold), and the ledger never holds less than the upstream billed."""
    server = start_postgres(host_port=free_port())
    journal = tmp_path / "journal" / "ledger-journal.jsonl"
    proxy = start_proxy(server.admin_dsn, upstream, tmp_path, RALEX_JOURNAL=str(journal))
    try:
        if not postgres_up:
            server.container.get_wrapped_container().stop(timeout=2)
        upstream.faults({"kind": "slow", "chunk_delay": 0.15, "times": None})
        done = threading.Event()

        def one(i: int) -> int:
            try:
                return proxy.chat(f"add a docstring to function {i} " + "x" * 200, model="cheap",
                                  stream=bool(i % 2)).status_code
            except httpx.HTTPError:
                return 0

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(one, i) for i in range(60)]
            wait_until(lambda: sum(f.done() for f in futures) >= 15, 60, what="some requests answered")
            proxy.process.send_signal(signal.SIGKILL)
            proxy.process.wait(10)
            done.set()
            statuses = [f.result() for f in futures]
        upstream.client.delete("/_fake/faults")
        if not postgres_up:
            server.container.get_wrapped_container().start()
        again = start_proxy(server.admin_dsn, upstream, tmp_path, RALEX_JOURNAL=str(journal))
        wait_until(lambda: billed(upstream)[0] >= len(upstream.requests()) - 1, 15, what="the upstream's last bills")
        rows = ledger(server.admin_dsn)
        generations, cost = billed(upstream)
        recorded = sum(float(r["cost_usd"]) for r in rows)
        received = len(upstream.requests())
        assert len(rows) >= received >= generations, (len(rows), received, generations)
        assert recorded >= cost - 1e-12, (recorded, cost)
        assert again.budget()["spent"] == pytest.approx(recorded)
        by_generation = {r["generation_id"] for r in rows if r["generation_id"]}
        interrupted = [r for r in rows if r["status"] == "interrupted"]
        # a stream that had started is charged OpenRouter's record of it; the rest their hold
        assert all(r["cost_source"] == ("generation" if r["generation_id"] else "hold") for r in interrupted)
        record(f"sigkill_{'postgres_up' if postgres_up else 'postgres_down'}", {
            "answered_before_kill": sum(1 for s in statuses if s == 200), "upstream_received": received,
            "upstream_billed": generations, "upstream_usd": cost, "ledger_rows": len(rows),
            "ledger_usd": recorded, "settled_rows_with_generation": len(by_generation),
            "interrupted_rows_at_hold": sum(1 for r in interrupted if r["cost_source"] == "hold"),
            "interrupted_rows_priced_by_generation": sum(1 for r in interrupted if r["cost_source"] == "generation")})
        again.stop()
    finally:
        proxy.stop()
        server.container.stop()


def test_a_timed_out_attempt_is_charged_and_the_fallback_settles_at_its_cost(live: Proxy, upstream: Fake):
    upstream.faults({"kind": "timeout", "seconds": 6, "times": 1, "model": "google/gemini-2.5-flash-lite"})
    response = live.chat("add a docstring to the Cache class", model="cheap", max_tokens=200)
    assert response.status_code == 200
    assert response.headers["x-ralex-route"] == "smart"
    wait_until(lambda: billed(upstream)[0] == 2, 15, what="the timed-out attempt to be billed upstream")
    row = live.row(response)
    _, cost = billed(upstream)
    assert float(row["cost_usd"]) >= cost
    assert float(row["cost_usd"]) <= float(row["reserved_usd"]) + 1e-12


def test_a_timeout_without_fallback_is_charged_at_its_hold_never_zero(live: Proxy, upstream: Fake):
    upstream.faults({"kind": "timeout", "seconds": 6, "times": 1})
    response = live.chat("design a retry policy for the queue", model="smart", max_tokens=100)
    assert response.status_code >= 400
    wait_until(lambda: billed(upstream)[0] == 1, 15, what="the generation to be billed upstream")
    rows = wait_until(lambda: live.ledger("status = 'error'"), 10, what="the error row")
    _, cost = billed(upstream)
    assert float(rows[-1]["cost_usd"]) >= cost > 0
    assert rows[-1]["cost_source"] == "hold"


def test_a_cancelled_stream_is_settled_at_openrouters_generation_cost(live: Proxy, upstream: Fake):
    upstream.faults({"kind": "slow", "chunk_delay": 0.3, "times": 1})
    upstream.script({"content": "word " * 60})
    with live.client.stream("POST", "/v1/chat/completions", json={
        "model": "smart", "stream": True, "max_tokens": 300,
        "messages": [{"role": "user", "content": "design a plugin system"}],
    }) as streamed:
        request_id = streamed.headers["x-ralex-request-id"]
        for n, _ in enumerate(streamed.iter_lines()):
            if n >= 3:
                break
    wait_until(lambda: billed(upstream)[0] == 1, 20, what="the upstream to bill the cancelled stream")
    row = wait_until(lambda: live.ledger("request_id = %s", (request_id,)), 40, what="the cancelled row")[0]
    _, cost = billed(upstream)
    assert row["status"] == "cancelled"
    assert row["cost_source"] == "generation"  # OpenRouter's record of what it generated
    assert float(row["cost_usd"]) == pytest.approx(cost)


def test_a_stream_broken_midway_is_charged_what_was_generated(live: Proxy, upstream: Fake):
    upstream.faults({"kind": "midstream_error", "after_chunks": 3, "times": 1})
    upstream.script({"content": "word " * 60})
    with live.client.stream("POST", "/v1/chat/completions", json={
        "model": "cheap", "stream": True, "messages": [{"role": "user", "content": "add a docstring"}],
    }) as streamed:
        request_id = streamed.headers["x-ralex-request-id"]
        list(streamed.iter_lines())
    row = wait_until(lambda: live.ledger("request_id = %s", (request_id,)), 40, what="the broken stream's row")[0]
    _, cost = billed(upstream)
    assert cost > 0
    assert row["status"] == "error"
    assert row["cost_source"] == "generation"
    assert float(row["cost_usd"]) == pytest.approx(cost)


CHEAP_MODEL = "google/gemini-2.5-flash-lite"
SMART_MODEL = "anthropic/claude-sonnet-4.5"
ATTEMPT_FAULTS = {
    "primary refused, fallback timed out": ({"kind": "status", "status": 503, "model": CHEAP_MODEL},
                                            {"kind": "timeout", "seconds": 6, "model": SMART_MODEL}),
    "both timed out": ({"kind": "timeout", "seconds": 6, "model": CHEAP_MODEL},
                       {"kind": "timeout", "seconds": 6, "model": SMART_MODEL}),
}


def api_body(api: str, text: str, stream: bool) -> tuple[str, dict[str, Any]]:
    if api == "messages":
        return "/v1/messages", {"model": "cheap", "max_tokens": 200, "stream": stream,
                                "messages": [{"role": "user", "content": text}]}
    if api == "responses":
        return "/v1/responses", {"model": "cheap", "max_output_tokens": 200, "stream": stream, "input": text}
    return "/v1/chat/completions", {"model": "cheap", "max_tokens": 200, "stream": stream,
                                    "messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
@pytest.mark.parametrize("scenario", list(ATTEMPT_FAULTS))
def test_every_attempt_the_upstream_may_bill_is_charged(live: Proxy, upstream: Fake, scenario: str, api: str,
                                                        stream: bool):
    """Primary and fallback are each their own billed attempt, whatever ends them: the ledger holds at
    least what the upstream billed, and at most the request's hold."""
    upstream.faults(*ATTEMPT_FAULTS[scenario])
    path, body = api_body(api, "add a docstring to the Cache class", stream)
    before = len(live.ledger("status <> 'refused'"))
    response = live.client.post(path, json=body)
    assert response.status_code >= 400, response.text[:300]
    wait_until(lambda: billed(upstream)[0] >= 1, 15, what="the timed-out attempt to be billed upstream")
    wait_until(lambda: live.budget()["in_flight"] == 0 and live.budget()["ledger"]["pending"] == 0, 30,
               what="the request settled and written")
    rows = live.ledger("status <> 'refused'")[before:]
    generations, cost = billed(upstream)
    charged = sum(float(r["cost_usd"]) for r in rows)
    reserved = sum(float(r["reserved_usd"]) for r in rows)
    record(f"attempts: {scenario}, {api}, {'stream' if stream else 'whole'}",
           {"upstream_generations": generations, "upstream_usd": cost, "ledger_usd": charged, "rows": len(rows)})
    assert charged >= cost > 0, (rows, cost)
    assert charged <= reserved + 1e-12


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
def test_attempts_the_upstream_refused_cost_nothing(live: Proxy, upstream: Fake, api: str):
    """Each attempt's own failure is read: primary and fallback both answered 503, nothing was generated,
    nothing is charged (the fallback's refusal is not mistaken for a timeout)."""
    upstream.faults({"kind": "status", "status": 503, "model": CHEAP_MODEL},
                    {"kind": "status", "status": 503, "model": SMART_MODEL})
    path, body = api_body(api, "add a docstring to the Cache class", False)
    response = live.client.post(path, json=body)
    assert response.status_code >= 400
    assert [r["model"] for r in upstream.requests()] == [CHEAP_MODEL, SMART_MODEL]
    row = wait_until(lambda: live.ledger("status = 'error'"), 10, what="the error row")[-1]
    assert billed(upstream) == (0, 0.0)
    assert (float(row["cost_usd"]), row["cost_source"]) == (0.0, None)
