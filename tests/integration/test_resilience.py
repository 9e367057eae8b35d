"""Day boundaries, Postgres outages and start-up errors, with the real proxy and a real Postgres."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from ralex.budget import budget_day
from ralex.ledger.journal import Journal, replay
from ralex.ledger.store import LedgerRow, connect, migrate
from ralex.ledger.writer import LedgerWriter
from tests.integration.conftest import (
    ROOT,
    Fake,
    Pg,
    free_port,
    launcher,
    proxy_env,
    start_postgres,
    start_proxy,
    wait_until,
)

pytestmark = pytest.mark.integration
BERLIN = ZoneInfo("Europe/Berlin")


def test_budget_resets_at_local_midnight(pg: Pg, upstream: Fake, tmp_path: Path):
    """The proxy's clock starts 20 s before midnight in Berlin (whatever the hour is here): spend the
    day, get refused, then the same request is served once the Berlin date changes."""
    start = datetime.now(BERLIN).replace(hour=23, minute=59, second=40, microsecond=0)
    proxy = start_proxy(pg.new_database(), upstream, tmp_path, RALEX_CLOCK_START=start.isoformat(),
                        RALEX_DAILY_BUDGET="0.0002", RALEX_TIMEZONE="Europe/Berlin")
    try:
        first_day = proxy.budget()["day"]
        assert first_day == start.date().isoformat(), "the proxy took over 20 s from its clock's start to answer"
        prompt = "add a docstring " + "y" * 500
        refused = None
        for n in range(10):  # each its own first message: no earlier bill narrows its hold (ralex/prefix.py)
            response = proxy.chat(f"{n} {prompt}", model="cheap", max_tokens=100)
            if response.status_code == 402:
                refused = response
                break
        assert refused is not None, "the tiny budget was never exhausted"
        assert "resets at 00:00 Europe/Berlin (in 1m)" in refused.json()["error"]["message"]
        wait_until(lambda: proxy.budget()["day"] != first_day, 30, interval=0.2, what="the Berlin date to change")
        after = proxy.chat(prompt, model="cheap", max_tokens=100)
        assert after.status_code == 200, after.text
        new_day = proxy.row(after)["budget_day"]
        assert new_day == start.date() + timedelta(days=1)
        assert proxy.budget()["spent"] == pytest.approx(float(proxy.row(after)["cost_usd"]))
        with psycopg.connect(proxy.dsn) as conn:
            days = conn.execute("SELECT budget_day, requests, refusals FROM daily_totals ORDER BY 1").fetchall()
        assert [d[0] for d in days] == [start.date(), new_day]
        assert days[0][2] >= 1
        assert days[1][1] == 1
    finally:
        proxy.stop()


def test_postgres_restart_mid_traffic_loses_and_double_counts_nothing(upstream: Fake, tmp_path: Path):
    server = start_postgres(host_port=free_port())
    proxy = start_proxy(server.admin_dsn, upstream, tmp_path)
    served: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            response = proxy.chat("add a docstring to the Cache class", model="cheap")
            statuses.append(response.status_code)
            if response.status_code == 200:
                served.append(response.headers["x-ralex-request-id"])

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    try:
        for worker in workers:
            worker.start()
        wait_until(lambda: len(served) >= 20, 30, what="traffic before the restart")
        server.container.get_wrapped_container().restart(timeout=2)
        during = len(served)
        wait_until(lambda: len(served) >= during + 30, 60, what="traffic after the restart")
        stop.set()
        for worker in workers:
            worker.join(30)
        assert set(statuses) == {200}
        wait_until(lambda: proxy.budget()["ledger"]["pending"] == 0, 60, interval=0.2,
                   what="the ledger writer to catch up")
        with psycopg.connect(server.admin_dsn) as conn:
            ids = [str(r[0]) for r in conn.execute("SELECT request_id FROM ledger WHERE status = 'ok'")]
            requests, spent, summed = conn.execute(
                "SELECT sum(requests), sum(spent_usd), (SELECT sum(cost_usd) FROM ledger) FROM daily_totals"
            ).fetchone()
        assert sorted(ids) == sorted(served)
        assert requests == len(served)
        assert spent == summed
        assert proxy.budget()["ledger"]["write_failures"] >= 1, "the restart should have been noticed"
    finally:
        stop.set()
        proxy.stop()
        server.container.stop()


async def test_rows_queued_while_postgres_is_away_survive_in_the_journal(pg: Pg, tmp_path: Path):
    dsn = pg.new_database()
    with connect(dsn, autocommit=True) as conn:
        migrate(conn)
    path = tmp_path / "ledger-journal.jsonl"
    now = datetime.now(BERLIN)
    rows = [LedgerRow(ts=now, budget_day=budget_day(now, "Europe/Berlin"), alias_requested="auto", status="ok",
                      cost_usd=0.001) for _ in range(5)]
    away = LedgerWriter(f"postgresql://ralex:ralex@127.0.0.1:{free_port()}/ralex", journal=Journal(path),
                        max_backoff=0.1)
    away.start()
    for row in rows:
        away.submit(row)
    assert not await away.drain(timeout=0.5)
    await away.stop(timeout=0.1)
    pending = replay(path)
    assert sorted(r.request_id for r in pending) == sorted(r.request_id for r in rows)
    back = LedgerWriter(dsn)
    back.start()
    for row in [*pending, rows[0]]:  # a duplicate of a journaled row is not counted twice
        back.submit(row)
    assert await back.drain(timeout=10)
    await back.stop()
    with psycopg.connect(dsn) as conn:
        count, total = conn.execute("SELECT requests, spent_usd FROM daily_totals").fetchone()
    assert (count, float(total)) == (5, pytest.approx(0.005))


@pytest.mark.parametrize(("change", "message"), [
    ({"OPENROUTER_API_KEY": ""}, "OPENROUTER_API_KEY"),
    ({"LITELLM_MASTER_KEY": "changethis"}, "LITELLM_MASTER_KEY"),
    ({"RALEX_DATABASE_URL": "postgresql://ralex:ralex@127.0.0.1:9/ralex"},
     "cannot reach Postgres at 127.0.0.1:9/ralex"),
    ({"RALEX_CONFIG": "BROKEN_YAML"}, "line 14: invalid YAML"),
    ({"RALEX_CONFIG": "UNKNOWN_MODEL"}, "no price known for smart -> vendor/no-such-model"),
    ({"RALEX_DAILY_BUDGET": "-4"}, "RALEX_DAILY_BUDGET"),
    ({"RALEX_TIMEZONE": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
])
def test_start_up_errors_are_one_clear_line(pg: Pg, upstream: Fake, tmp_path: Path, change, message):
    config = (ROOT / "config" / "ralex.yaml").read_text()
    files = {
        "BROKEN_YAML": config.replace("  cheap:\n    model:", "  cheap:\n    model: [oops"),
        "UNKNOWN_MODEL": config.replace("anthropic/claude-sonnet-4.5", "vendor/no-such-model"),
    }
    if change.get("RALEX_CONFIG") in files:
        path = tmp_path / "ralex.yaml"
        path.write_text(files[change["RALEX_CONFIG"]])
        change = {"RALEX_CONFIG": str(path)}
    env = proxy_env(pg.new_database(), upstream, free_port(), tmp_path, RALEX_DB_WAIT_SECONDS="0", **change)
    started = time.monotonic()
    result = subprocess.run([launcher()], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ralex-proxy: ")
    assert message in last
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30
