"""Three proxy replicas on Docker Swarm: overshoot under a burst, and the bill after a replica is killed.

Method
------
deploy/swarm.yaml on a real single-node Swarm (``docker swarm init`` when this engine is in none; left
again afterwards), with tests/swarm/swarm.test.yaml: the fake OpenRouter as a service, the proxy in
dnsrr mode (its tasks' addresses behind ``tasks.litellm``), Grafana at 0 replicas. The Swarm plumbing and
both experiments are tests/swarm/stack.py, the same code tests/swarm/test_swarm.py asserts on:

1. **burst**: five client keys with sub-budgets of $0.006-$0.015 (together more than the day's), the
   day's limit set to spent + $0.05, the fake slowed (0.3 s per chunk), then 200 non-streaming
   requests at once (cheap, a ~3 KB prompt, max_tokens 1500) from a container on the backend network,
   spread round robin over the replicas and the keys. Once nothing is in flight or held, Postgres is
   read: the day's ledger sum against its limit and each key's against its sub-budget.
2. **kill**: $2 left, the fake at 0.2 s per chunk, 12 concurrent streams spread over the replicas for
   9 s; after 3 s the container of one task is killed (SIGKILL). Measured: the time until its row leaves
   ``proxy_replica`` (a survivor took its advisory lock, replayed its journal from the shared spool
   volume and charged its holds), Swarm restarting it under its name, and, once all is settled, what
   the fake billed against the ledger's rows of the run. Rows charged at their hold (the request was
   killed before the upstream's answer began, so no generation id is known) are counted apart: they
   are the only allowed difference, always in the ledger's favour of the bill (ledger >= billed).

Run from the repo root, with the sandbox images (``set -a; . /tmp/rx/sandbox.env; set +a``)::

    uv run --frozen python -m bench.replicas_bench [--no-build] [--requests 200] [--remaining 0.05]

Results: tables on stdout and ``bench/results/replicas.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench.stack import environment, table, write_results
from tests.swarm.stack import KEY_BUDGETS, PROMPT, Swarm, burst, images, kill

REPLICAS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--remaining", type=float, default=0.05)
    parser.add_argument("--stream-seconds", type=float, default=9)
    parser.add_argument("--kill-after", type=float, default=3)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--no-build", action="store_true", help="use the images already built")
    args = parser.parse_args()

    started = time.monotonic()
    swarm = Swarm.up(f"ralex-bench-{os.getpid()}", images(), REPLICAS, build=not args.no_build)
    deploy_seconds = time.monotonic() - started
    try:
        crowd = burst(swarm, requests=args.requests, remaining=args.remaining)
        killed = kill(swarm, seconds=args.stream_seconds, kill_after=args.kill_after,
                      concurrency=args.concurrency)
    finally:
        swarm.down()

    print(table(["replica", "served", "refused", "other"],
                [[n, r["served"], r["refused"], r["other"]] for n, r in crowd["per_replica"].items()],
                f"burst: {args.requests} requests at once, ${args.remaining} left in the day"))
    print()
    print(table(["key", "sub-budget", "spent", "served", "refused"],
                [[n, f"${k['budget_usd']}", f"${k['spent_usd']:.6f}", k["served"], k["refused"]]
                 for n, k in crowd["per_key"].items()]))
    print(f"day: limit ${crowd['limit_usd']}, spent ${crowd['day_spent_usd']:.6f}; overshoot "
          f"${crowd['overshoot_usd']} (raw max of spent - limit over the day and every key: "
          f"${crowd['overshoot_raw_usd']:.6f}); refusals naming the day {crowd['refusals_day']}, a key "
          f"{crowd['refusals_key']}")
    print()
    print(table(["replica", "streams 200", "failed"],
                [[n, c.get("200", 0), sum(v for k, v in c.items() if k != "200")]
                 for n, c in killed["streams"].items()],
                f"kill: {killed['killed']} killed {args.kill_after}s into {args.stream_seconds}s of streams"))
    print(f"recovered by a survivor {killed['recovery_seconds']}s after the kill; billed "
          f"${killed['billed_usd']:.7f}, ledger ${killed['ledger_usd']:.7f} (billed - ledger "
          f"${killed['billed_minus_ledger_usd']:.7f}); {killed['hold_charged_rows']} rows charged at their hold")

    results: dict[str, Any] = {
        "environment": environment(),
        "settings": {"replicas": REPLICAS, "requests": args.requests, "remaining": args.remaining,
                     "key_budgets": list(KEY_BUDGETS), "prompt_bytes": len(PROMPT), "max_tokens": 1500,
                     "burst_chunk_delay": 0.3, "stream_seconds": args.stream_seconds,
                     "kill_after": args.kill_after, "stream_concurrency": args.concurrency,
                     "stack": "deploy/swarm.yaml + tests/swarm/swarm.test.yaml, single-node swarm, dnsrr"},
        "target": "overshoot 0 (day and every key); ledger >= billed and ledger - billed < $0.01 after a kill",
        "replicas": REPLICAS,
        "deploy_seconds": round(deploy_seconds, 1),
        "overshoot_usd": crowd["overshoot_usd"],
        "overshoot_raw_usd": crowd["overshoot_raw_usd"],
        "billed_minus_ledger_usd": killed["billed_minus_ledger_usd"],
        "hold_charged_rows": killed["hold_charged_rows"],
        "recovery_seconds": killed["recovery_seconds"],
        "burst": crowd,
        "kill": killed,
    }
    print(f"\nwrote {write_results('replicas', results)}")


if __name__ == "__main__":
    main()
