"""Exporter scrape time as the ledger grows: 1k rows vs 1M rows, same Postgres, same run.

Method: a real Postgres (testcontainers), the project's migrations, the read-only role. Rows are
spread over a year of budget days like a long-lived install (about 2.7k a day at 1M), inserted
through the real trigger that maintains the per-day aggregates. Each measurement is N full
scrapes (every query of `LedgerCollector.collect`) through the reader role.

    python -m bench.exporter_bench [--scrapes 200] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from ralex.config import BudgetDefaults
from ralex.exporter import LedgerCollector
from ralex.ledger.store import connect, ensure_reader_role, migrate, seed_settings
from tests.integration.conftest import start_postgres

RESULTS = Path(__file__).resolve().parent / "results"
FILL = """
INSERT INTO ledger (request_id, ts, budget_day, alias_requested, alias_routed, upstream_model, route_kind,
                    status, cost_usd, recorded_at)
SELECT gen_random_uuid(), ts, (ts AT TIME ZONE 'UTC')::date, 'auto',
       CASE WHEN i %% 3 = 0 THEN 'smart' ELSE 'cheap' END,
       CASE WHEN i %% 3 = 0 THEN 'anthropic/claude-sonnet-4.5' ELSE 'google/gemini-2.5-flash-lite' END,
       CASE WHEN i %% 3 = 0 THEN 'task-smart' ELSE 'task-cheap' END,
       CASE WHEN i %% 50 = 0 THEN 'refused' ELSE 'ok' END, (i %% 7) * 0.0001, ts
FROM (SELECT i, now() - (i * (interval '365 days' / %(total)s::int)) AS ts
      FROM generate_series(%(start)s::int, %(stop)s::int) AS i) AS s
"""


def timed_scrapes(collector: LedgerCollector, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        families = list(collector.collect())
        times.append((time.perf_counter() - started) * 1000)
        assert any(f.name == "ralex_exporter_up" and f.samples[0].value == 1 for f in families)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50_ms": statistics.median(ordered), "p95_ms": ordered[int(len(ordered) * 0.95) - 1],
            "max_ms": ordered[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    server = start_postgres()
    try:
        with connect(server.admin_dsn, autocommit=True) as conn:
            migrate(conn)
            seed_settings(conn, BudgetDefaults(daily_limit=5, timezone="UTC"))
            ensure_reader_role(conn, "ralex_reader", "bench")
            conn.execute(FILL, {"total": args.rows, "start": 1, "stop": 1000})
            conn.execute("ANALYZE")
        reader = server.admin_dsn.replace("ralex:ralex@", "ralex_reader:bench@")
        collector = LedgerCollector(reader)
        timed_scrapes(collector, 10)
        small = summary(timed_scrapes(collector, args.scrapes))
        started = time.perf_counter()
        with connect(server.admin_dsn, autocommit=True) as conn:
            step = 100_000
            for first in range(1001, args.rows + 1, step):
                conn.execute(FILL, {"total": args.rows, "start": first, "stop": min(args.rows, first + step - 1)})
            conn.execute("ANALYZE")
            count = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]  # type: ignore[index]
        fill_s = time.perf_counter() - started
        timed_scrapes(collector, 10)
        large = summary(timed_scrapes(collector, args.scrapes))
    finally:
        server.container.stop()
    results = {"rows_small": 1000, "rows_large": count, "fill_seconds": fill_s, "small": small, "large": large,
               "p95_ratio_large_vs_small": large["p95_ms"] / small["p95_ms"]}
    print(f"{'ledger rows':>12} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for rows_n, r in ((1000, small), (count, large)):
        print(f"{rows_n:>12,} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['max_ms']:>8.2f}")
    print(f"p95 at {count:,} rows / p95 at 1,000 rows = {results['p95_ratio_large_vs_small']:.2f}x "
          f"(target: p95 <= 50 ms); filling took {fill_s:.0f} s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "exporter.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
