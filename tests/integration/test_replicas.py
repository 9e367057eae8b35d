"""A team on one budget: three real proxies (``ralex-proxy``, RALEX_RESERVATIONS=shared) on one Postgres,
the fake OpenRouter behind them. Concurrent requests spread over every replica never take the day, or a
key, past its limit; a replica killed mid-traffic leaves nothing unbilled and nothing charged twice once
another replica has swept what it left."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.conftest import Fake, Pg, Proxy, start_proxy, wait_until
from tests.integration.test_keys import add_key, key_chat, unique

REPLICAS = 3
PROMPT = "add a docstring to the Cache class " + "x" * 3_000  # ~$0.0009 worst case on cheap at 1500 tokens


def shared_env(name: str) -> dict[str, str]:
    return {"RALEX_RESERVATIONS": "shared", "RALEX_REPLICA_ID": name}


@pytest.fixture(scope="module")
def team(pg: Pg, fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Proxy]]:
    """Three replicas on one ledger, sharing one runtime folder (as replicas on one node share a volume)."""
    dsn = pg.new_database()
    runtime = tmp_path_factory.mktemp("team")
    replicas = [start_proxy(dsn, fake, runtime, **shared_env(f"proxy-{i}")) for i in range(REPLICAS)]
    yield replicas
    for replica in replicas:
        replica.stop()


def settled(replicas: list[Proxy]) -> None:
    def quiet() -> bool:
        views = [r.budget() for r in replicas if r.process.poll() is None]
        return all(v["in_flight"] == 0 and v["ledger"]["pending"] == 0 for v in views)

    wait_until(quiet, 60, what="every replica settled and written")
    wait_until(lambda: not scalar(replicas[0].dsn, "SELECT count(*) FROM reservation"), 30,
               what="no reservation left in Postgres")


def scalar(dsn: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def day_figures(proxy: Proxy) -> dict[str, Decimal]:
    day = proxy.budget()["day"]
    with psycopg.connect(proxy.dsn) as conn:
        ledger = conn.execute("SELECT coalesce(sum(cost_usd), 0) FROM ledger WHERE budget_day = %s", (day,)).fetchone()
        scope = conn.execute("SELECT spent_usd, held_usd FROM budget_scope WHERE budget_day = %s AND scope = ''",
                             (day,)).fetchone()
        totals = conn.execute("SELECT spent_usd FROM daily_totals WHERE budget_day = %s", (day,)).fetchone()
    zero = Decimal(0)
    scope = scope or (zero, zero)
    return {"ledger": ledger[0] if ledger else zero, "scope_spent": scope[0], "scope_held": scope[1],
            "totals": totals[0] if totals else zero}


def test_every_replica_names_itself_and_shares_the_day(team: list[Proxy], upstream: Fake):
    views = [r.budget() for r in team]
    assert [v["replica"] for v in views] == [f"proxy-{i}" for i in range(REPLICAS)]
    assert {v["reservations"] for v in views} == {"shared"}
    response = team[0].chat("fix the typo in hello.py", model="cheap")
    assert response.status_code == 200, response.text
    cost = float(team[0].row(response)["cost_usd"])
    spent_before = views[1]["spent"]
    wait_until(lambda: abs(team[1].budget()["spent"] - (spent_before + cost)) < 1e-9, 5,
               what="another replica to see the spend")
    # each replica counts what it settled, under its own name, for Prometheus to sum by replica
    metrics = [r.client.get("/metrics").text for r in team]
    assert f'ralex_replica_spend_usd_total{{key="operator",replica="proxy-0"}} {cost}' in metrics[0]
    assert 'ralex_replica_spend_usd_total{key="agent",replica="proxy-1"} 0.0' in metrics[1]
    assert 'replica="proxy-0"' not in metrics[1]


def test_sixty_concurrent_requests_over_three_replicas_never_pass_the_day(team: list[Proxy], upstream: Fake):
    """$0.01 left and 60 requests at once, 20 on each replica, each held at ~$0.0009 while slowed upstream:
    alone, each replica would admit ~11 (its book starts from the same spend); together at most ~11."""
    team[0].set_remaining(0.01)
    for replica in team[1:]:
        wait_until(lambda r=replica: abs(r.budget()["limit"] - team[0].budget()["limit"]) < 1e-9, 10,
                   what="every replica to apply the limit")
    limit = team[0].budget()["limit"]
    upstream.faults({"kind": "slow", "chunk_delay": 0.3, "times": None})
    targets = [team[i % REPLICAS] for i in range(60)]
    with ThreadPoolExecutor(60) as pool:
        responses = list(pool.map(lambda r: r.chat(PROMPT, model="cheap", max_tokens=1500), targets))
    assert {r.status_code for r in responses} == {200, 402}, [r.text for r in responses if r.status_code != 200][:3]
    settled(team)
    figures = day_figures(team[0])
    assert figures["ledger"] <= Decimal(str(limit)), f"the day's spend {figures['ledger']} passed its limit {limit}"
    assert figures["scope_spent"] == figures["ledger"] == figures["totals"]
    assert figures["scope_held"] == 0
    billed = sum(Decimal(str(r["billed_cost"])) for r in upstream.requests())
    served = [r for r in responses if r.status_code == 200]
    assert len(upstream.requests()) == len(served)
    rows = [team[0].row(r) for r in served]
    assert sum(r["cost_usd"] for r in rows) == billed
    refused = [r for r in responses if r.status_code == 402]
    assert all("Daily budget" in r.json()["error"]["message"] and "ralexctl budget set" in r.json()["error"]["message"]
               for r in refused)


def test_keys_sub_budgets_hold_across_replicas(team: list[Proxy], upstream: Fake):
    budgets = {unique("team-a"): 0.001, unique("team-b"): 0.0015, unique("team-c"): 0.002}
    keys = {name: add_key(team[0], name, budget) for name, budget in budgets.items()}
    for replica in team[1:]:  # keys reach the other replicas through NOTIFY
        wait_until(lambda r=replica: all(k["name"] in keys for k in r.client.get("/ralex/keys").json()["keys"]
                                         if k["name"].startswith("team-")) and
                   len([k for k in r.client.get("/ralex/keys").json()["keys"] if k["name"] in keys]) == 3, 10,
                   what="keys on every replica")
    team[0].set_remaining(1.0)
    upstream.faults({"kind": "slow", "chunk_delay": 0.3, "times": None})
    plan = [(team[i % REPLICAS], list(keys)[i % 3]) for i in range(45)]
    with ThreadPoolExecutor(45) as pool:
        responses = list(pool.map(lambda p: (p[1], key_chat(p[0], keys[p[1]], PROMPT, max_tokens=1500)), plan))
    assert {r.status_code for _, r in responses} <= {200, 402}
    settled(team)
    for name, budget in budgets.items():
        spent = scalar(team[0].dsn, "SELECT coalesce(sum(cost_usd), 0) FROM ledger WHERE key_name = %s", (name,))
        assert spent <= Decimal(str(budget)), f"key {name} spent {spent} of its {budget}"
        refusals = [r for n, r in responses if n == name and r.status_code == 402]
        assert refusals
        assert all(r.json()["error"]["message"].startswith(f"Key {name}: daily sub-budget")
                                for r in refusals)


def test_a_replica_killed_mid_traffic_leaves_the_ledger_equal_to_the_bill(team: list[Proxy], upstream: Fake,
                                                                          tmp_path: Path):
    """Streams in flight on every replica; one replica is SIGKILLed. Another replica finds it gone (its
    lock is free), replays its journal and charges its holds; the ledger then equals what the upstream
    billed, to the micro-dollar, and no hold is left."""
    team[0].set_remaining(2.0)
    upstream.faults({"kind": "slow", "chunk_delay": 0.2, "times": None})
    settled(team)
    before = day_figures(team[0])
    started = scalar(team[0].dsn, "SELECT now()")
    victim = team[2]
    stop = threading.Event()
    counter = itertools.count()

    def stream(proxy: Proxy) -> int:
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{proxy.port}", timeout=30,
                              headers=proxy.client.headers) as client, client.stream(
                    "POST", "/v1/chat/completions", json={
                        "model": "cheap", "stream": True, "max_tokens": 300,
                        "messages": [{"role": "user", "content": f"write a test {next(counter)}"}]}) as response:
                for _ in response.iter_lines():
                    pass
                return response.status_code
        except httpx.HTTPError:
            return 0

    def traffic(proxy: Proxy) -> list[int]:
        codes = []
        while not stop.is_set():
            codes.append(stream(proxy))
        return codes

    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(traffic, team[i % REPLICAS]) for i in range(12)]
        time.sleep(3)
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(5)
        time.sleep(2)
        stop.set()
        codes = [c for f in futures for c in f.result()]
    assert codes.count(200) > 10, codes
    survivors = team[:2]
    wait_until(lambda: scalar(team[0].dsn, "SELECT count(*) FROM proxy_replica WHERE id = 'proxy-2'") == 0, 30,
               what="a survivor to recover the killed replica")
    settled(survivors)
    billed = sum(Decimal(str(r["billed_cost"])) for r in upstream.requests())
    generations = [r["generation_id"] for r in upstream.requests()]
    spent = day_figures(team[0])["ledger"] - before["ledger"]
    with psycopg.connect(team[0].dsn) as conn:
        missing = conn.execute("SELECT count(*) FROM unnest(%s::text[]) AS g WHERE NOT EXISTS "
                               "(SELECT 1 FROM ledger WHERE generation_id = g)", (generations,)).fetchone()[0]
        unknown = conn.execute("SELECT count(*), coalesce(sum(cost_usd), 0) FROM ledger WHERE budget_day = %s"
                               " AND status = 'interrupted' AND generation_id IS NULL AND recorded_at > %s",
                               (team[0].budget()["day"], started)).fetchone()
    # every generation billed has its row, but those killed before the upstream's answer began (no id
    # known yet): each is one of the rows charged at its hold, the upper bound of what it was billed
    assert missing <= unknown[0], (missing, unknown)
    assert billed <= spent <= billed + unknown[1], (spent, billed, unknown)
    assert spent - billed < Decimal("0.01"), (spent, billed, unknown)
    figures = day_figures(team[0])
    assert figures["scope_spent"] == figures["ledger"] == figures["totals"]
    assert figures["scope_held"] == 0
    assert not list((team[0].runtime.parent).glob("**/ledger-journal.proxy-2.jsonl"))
    # the killed replica comes back under its name and serves again
    team[2] = start_proxy(team[0].dsn, upstream, tmp_path, **shared_env("proxy-2"))
    assert team[2].chat("fix the typo", model="cheap").status_code == 200


def test_a_row_charged_at_its_hold_gives_way_to_the_real_row_and_never_the_reverse(pg: Pg):
    """The sweeper charged a request at its hold ('interrupted'); its real row turns up later (a journal
    replayed): the real cost replaces the hold in the ledger, the day's totals, breakdown and scopes. A
    replay of the hold afterwards, or of the real row, changes nothing."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from ralex.ledger.rows import LedgerRow
    from ralex.ledger.store import insert_rows, migrate

    dsn = pg.new_database()
    day = datetime.now(UTC).date()
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute("SELECT ralex_scope_open(%s, 'ana')", (day,))
        base = LedgerRow(ts=datetime.now(UTC), budget_day=day, alias_requested="cheap", status="interrupted",
                         alias_routed="cheap", upstream_model="m", cost_usd=0.05, cost_source="hold", key_name="ana")
        real = replace(base, status="ok", cost_usd=0.0012, cost_source="upstream")

        def figures() -> tuple[Any, ...]:
            row = conn.execute(
                "SELECT (SELECT cost_usd FROM ledger), (SELECT spent_usd FROM daily_totals WHERE budget_day = %(d)s),"
                " (SELECT requests FROM daily_totals WHERE budget_day = %(d)s),"
                " (SELECT sum(spent_usd) FROM daily_breakdown WHERE budget_day = %(d)s),"
                " (SELECT sum(requests) FROM daily_breakdown WHERE budget_day = %(d)s),"
                " (SELECT spent_usd FROM budget_scope WHERE budget_day = %(d)s AND scope = ''),"
                " (SELECT spent_usd FROM budget_scope WHERE budget_day = %(d)s AND scope = 'ana')",
                {"d": day}).fetchone()
            assert row is not None
            return tuple(row)

        insert_rows(conn, [base])
        assert figures() == (Decimal("0.05"), Decimal("0.05"), 1, Decimal("0.05"), 1, Decimal("0.05"), Decimal("0.05"))
        insert_rows(conn, [real])
        after = (Decimal("0.0012"), Decimal("0.0012"), 1, Decimal("0.0012"), 1, Decimal("0.0012"), Decimal("0.0012"))
        assert figures() == after
        insert_rows(conn, [base])
        insert_rows(conn, [real])
        assert figures() == after
        assert conn.execute("SELECT status FROM ledger").fetchone() == ("ok",)


def test_a_hold_past_its_expiry_is_given_back_and_its_late_row_still_counts(pg: Pg):
    """A hold whose release found Postgres away outlives its request: past its expiry any replica gives it
    back; a ledger row of that request arriving later counts its cost all the same."""
    import asyncio
    import uuid
    from datetime import UTC, datetime

    from ralex.ledger.rows import LedgerRow
    from ralex.ledger.shared import SharedLedger
    from ralex.ledger.store import insert_rows, migrate

    dsn = pg.new_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    day = datetime.now(UTC).date()
    key = str(uuid.uuid4())
    row = LedgerRow(ts=datetime.now(UTC), budget_day=day, alias_requested="cheap", status="interrupted",
                    request_id=uuid.UUID(key), cost_usd=0.002, cost_source="hold", key_name="agent")

    async def hold() -> tuple[bool, int, int]:
        ledger = SharedLedger(dsn, "proxy-x", None, hold_ttl=0.2)
        await ledger.start()
        try:
            verdict = await ledger.reserve(key, day, "agent", 0.002, 1.0, None, row)
            early = await ledger.release_expired()
            await asyncio.sleep(0.5)
            return verdict.admitted, early, await ledger.release_expired()
        finally:
            await ledger.close()

    assert asyncio.run(hold()) == (True, 0, 1)
    held = "SELECT spent_usd, held_usd FROM budget_scope WHERE budget_day = %s AND scope = ''"
    assert scalar(dsn, "SELECT count(*) FROM reservation") == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(held, (day,)).fetchone() == (Decimal(0), Decimal(0))
        insert_rows(conn, [replace_status(row)])
        assert conn.execute(held, (day,)).fetchone() == (Decimal("0.00120000"), Decimal(0))


def replace_status(row: Any) -> Any:
    from dataclasses import replace

    return replace(row, status="ok", cost_usd=0.0012, cost_source="upstream")


def test_ralex_proxy_migrate_prepares_the_ledger_once_and_exits(pg: Pg, fake: Fake, tmp_path: Path):
    """The one-shot job before replicas start (Swarm's migrate service, Kubernetes' Job): twice in a row is
    fine, an unknown argument is one line naming the two ways to run it."""
    import subprocess

    from tests.integration.conftest import free_port, launcher, proxy_env

    dsn = pg.new_database()
    env = proxy_env(dsn, fake, free_port(), tmp_path)
    for _ in range(2):
        done = subprocess.run([launcher(), "migrate"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "the ledger is up to date" in done.stdout
    assert scalar(dsn, "SELECT count(*) FROM ralex_schema_migrations") >= 8
    assert scalar(dsn, "SELECT daily_limit_usd FROM budget_settings") == Decimal("5")
    wrong = subprocess.run([launcher(), "migrat"], env=env, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2
    assert "ralex-proxy migrate" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
