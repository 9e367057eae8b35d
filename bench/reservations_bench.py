"""Latency of shared reservations (Postgres, every replica) beside the in-memory book (one proxy).

Method
------
One Postgres (testcontainers), the fake OpenRouter in its own process, and two ``ralex-proxy``
processes exactly as shipped, each on its own database: ``memory`` (the default book, one proxy) and
``shared`` (``RALEX_RESERVATIONS=shared``: every admission is one ``ralex_reserve`` call in Postgres,
every settle the ledger row's trigger). Daily budget $1000, so nothing is refused.

1. **End to end**: the same small ``cheap`` chat completion (non-streaming) sent ``--requests`` times to
   each proxy, alternating which goes first, one at a time (no queueing: the figure is the added work,
   not contention), after ``--warmup`` requests each. Client-side wall time per request.
2. **Under load**: ``--threads`` clients at once against each proxy in turn, ``--requests`` each.
3. **The admission call alone**: ``ReservationBook.try_reserve`` in memory vs ``SharedLedger.reserve``
   on the same Postgres (one pooled connection's round trip), ``--calls`` each, in this process.

Reported: p50/p90/p99 per mode, the p50 added by sharing (ms) and the ratio shared/memory. Target
(printed, not asserted): p50 + 1 ms or less end to end on this machine.

Run from the repo root, with the sandbox images (``set -a; . /tmp/rx/sandbox.env; set +a``)::

    .venv/bin/python -m bench.reservations_bench [--requests 300] [--threads 8]

Results: tables on stdout and ``bench/results/reservations.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.stack import elapsed_ms, environment, start_backends, summary, table, write_results
from ralex.budget import ReservationBook, budget_day
from ralex.ledger.rows import LedgerRow
from ralex.ledger.shared import SharedLedger
from tests.integration.conftest import MASTER_KEY, Proxy, start_proxy

BODY = {"model": "cheap", "max_tokens": 200,
        "messages": [{"role": "user", "content": "add a docstring to the Cache class"}]}


def one(client: httpx.Client) -> float:
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json=BODY)
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    return elapsed_ms(started)


def client_of(proxy: Proxy) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{proxy.port}", timeout=60,
                        headers={"Authorization": f"Bearer {MASTER_KEY}"})


def sequential(proxies: dict[str, Proxy], requests: int, warmup: int) -> dict[str, list[float]]:
    clients = {name: client_of(p) for name, p in proxies.items()}
    for client in clients.values():
        for _ in range(warmup):
            one(client)
    times: dict[str, list[float]] = {name: [] for name in proxies}
    names = list(proxies)
    for i in range(requests):
        for name in names if i % 2 == 0 else reversed(names):
            times[name].append(one(clients[name]))
    return times


def loaded(proxy: Proxy, threads: int, requests: int) -> tuple[list[float], float]:
    def worker(_: int) -> list[float]:
        with client_of(proxy) as client:
            return [one(client) for _ in range(requests)]

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        times = [t for chunk in pool.map(worker, range(threads)) for t in chunk]
    return times, threads * requests / (time.perf_counter() - started)


def admission_calls(dsn: str, calls: int) -> dict[str, list[float]]:
    """The admission step alone: the in-memory book's check-and-hold vs one ``ralex_reserve`` round trip."""
    day = budget_day(datetime.now(UTC), "UTC")
    book = ReservationBook(day)
    memory = []
    for _ in range(calls):
        key = str(uuid.uuid4())
        started = time.perf_counter()
        book.try_reserve(key, 0.0001, 1000.0, client="agent")
        memory.append(elapsed_ms(started))
        book.settle(key, 0.0001, "agent")

    async def shared_calls() -> list[float]:
        ledger = SharedLedger(dsn, "bench-calls", None, pool_size=1)
        await ledger.start()
        times = []
        try:
            for _ in range(calls):
                key = str(uuid.uuid4())
                record = LedgerRow(ts=datetime.now(UTC), budget_day=day, alias_requested="cheap", status="interrupted",
                                   request_id=uuid.UUID(key), cost_usd=0.0001, key_name="agent")
                started = time.perf_counter()
                await ledger.reserve(key, day, "agent", 0.0001, 1000.0, None, record)
                times.append(elapsed_ms(started))
                await ledger.release(key)
        finally:
            await ledger.close()
        return times

    return {"memory": memory, "shared": asyncio.run(shared_calls())}


def figures(times: dict[str, list[float]]) -> dict[str, Any]:
    stats = {name: {k: round(v, 3) for k, v in summary(values).items()} for name, values in times.items()}
    memory, shared = stats["memory"], stats["shared"]
    return {**stats, "p50_added_ms": round(shared["p50"] - memory["p50"], 3),
            "p50_ratio": round(shared["p50"] / memory["p50"], 3) if memory["p50"] else None,
            "p99_added_ms": round(shared["p99"] - memory["p99"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--loaded-requests", type=int, default=40, help="requests per thread under load")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="ralex-reservations-") as tmp:
        work = Path(tmp)
        pg, fake = start_backends(stack, work)
        proxies = {
            "memory": start_proxy(pg.new_database(), fake, work, RALEX_DAILY_BUDGET="1000"),
            "shared": start_proxy(pg.new_database(), fake, work, RALEX_DAILY_BUDGET="1000",
                                  RALEX_RESERVATIONS="shared", RALEX_REPLICA_ID="bench-1"),
        }
        for proxy in proxies.values():
            stack.callback(proxy.stop)
        sequential_times = sequential(proxies, args.requests, args.warmup)
        under_load: dict[str, list[float]] = {}
        throughput: dict[str, float] = {}
        for name, proxy in proxies.items():
            under_load[name], throughput[name] = loaded(proxy, args.threads, args.loaded_requests)
        calls = admission_calls(proxies["shared"].dsn, args.calls)

    results: dict[str, Any] = {
        "environment": environment(),
        "method": "two ralex-proxy processes (memory, shared), one Postgres, the fake OpenRouter; see the module doc",
        "end_to_end_sequential_ms": figures(sequential_times),
        "end_to_end_under_load_ms": {**figures(under_load), "threads": args.threads,
                                     "requests_per_second": {k: round(v, 1) for k, v in throughput.items()}},
        "admission_call_ms": figures(calls),
        "target": "p50 + 1 ms or less end to end",
    }
    for title, key in (("end to end, one at a time (ms)", "end_to_end_sequential_ms"),
                       (f"end to end, {args.threads} clients at once (ms)", "end_to_end_under_load_ms"),
                       ("the admission call alone (ms)", "admission_call_ms")):
        block = results[key]
        print(table(["book", "p50", "p90", "p99", "mean"],
                    [[name, block[name]["p50"], block[name]["p90"], block[name]["p99"], block[name]["mean"]]
                     for name in ("memory", "shared")], title=title))
        print(f"p50 added by sharing: {block['p50_added_ms']} ms (ratio {block['p50_ratio']})\n")
    print(f"results: {write_results('reservations', results)}")


if __name__ == "__main__":
    main()
