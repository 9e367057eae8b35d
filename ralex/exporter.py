"""Budget exporter: Prometheus metrics read from the ledger through a read-only role.

Each scrape runs a few small queries (settings, today's totals, today's breakdown, the last hour's
spend, recent write lag, the active client keys); all are served by per-day aggregates, indexes or
the operator's handful of keys, so scrape time stays flat as the ledger grows. Per-key series exist
for ``agent``, ``operator`` and client keys that spent today, and every active client key: a
revoked key drops out after its last day of spend. A failed scrape is counted and logged, and reported as
``ralex_exporter_up 0``; the next scrape reconnects. "Today" is the budget day of the exporter's clock
in the configured timezone (:func:`ralex.budget.day_window`, as the proxy decides it): it ends at the
next local midnight, and ``ralex_budget_seconds_to_reset`` counts real seconds until then (23 or 25
hours from midnight on the nights the clocks change).

Exposition (abridged)::

    ralex_budget_daily_limit_usd 5.0
    ralex_budget_spent_today_usd 1.234
    ralex_budget_remaining_usd 3.766
    ralex_budget_fraction_used 0.2468
    ralex_budget_tier{tier="full"} 1.0
    ralex_budget_alert_level 80.0
    ralex_budget_threshold_crossed{budget_day="2026-11-30",threshold="50"} 1.0
    ralex_budget_threshold_crossed{budget_day="2026-11-30",threshold="80"} 1.0
    ralex_budget_crossing_spent_usd{threshold="80"} 4.01
    ralex_budget_crossing_limit_usd{threshold="80"} 5.0
    ralex_spend_today_usd{alias="smart",model="anthropic/claude-sonnet-4.5"} 1.1
    ralex_requests_today{alias="cheap",model="google/gemini-2.5-flash-lite",status="ok"} 42.0
    ralex_routing_decisions_today{kind="task-smart"} 7.0
    ralex_key_spend_today_usd{key="agent"} 0.9
    ralex_key_spend_today_usd{key="laptop-claude"} 0.33
    ralex_key_budget_usd{key="laptop-claude"} 2.0
    ralex_refusals_today 2.0
    ralex_burn_rate_usd_per_hour 0.31
    ralex_projected_spend_today_usd 2.9
    ralex_exporter_up 1.0
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ralex.budget import BudgetError, day_window, suggest_raise
from ralex.config import ConfigError, read_secret_files
from ralex.ledger.store import (
    ACTIVE_KEYS,
    BREAKDOWN,
    CROSSING_FIGURES_ON_DAY,
    DAY_TOTALS,
    LAST_HOUR_SPEND,
    SELECT_SETTINGS,
    WRITE_LAG,
    settings_from_row,
)

log = logging.getLogger("ralex.exporter")
TIERS: Final = ("full", "economy", "emergency")


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


class LedgerCollector(Collector):
    """Builds every budget metric fresh per scrape from the ledger."""

    def __init__(self, dsn: str, timeout: float = 5.0, clock: Callable[[], datetime] | None = None) -> None:
        """``clock``: the current moment (default: this machine's clock), which decides "today"."""
        self._dsn = dsn
        self._timeout = timeout
        self._clock = clock or (lambda: datetime.now(UTC))
        self._conn: psycopg.Connection[Any] | None = None
        self.scrape_errors = 0

    def describe(self) -> Iterator[Metric]:
        """Registration needs the names only: do not touch Postgres here."""
        return iter(())

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=int(self._timeout),
                                         options=f"-c statement_timeout={int(self._timeout * 1000)}")
        return self._conn

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            metrics = list(self._collect())
            up = 1.0
        except (psycopg.Error, OSError, BudgetError) as exc:
            self.scrape_errors += 1
            log.warning("ledger scrape failed (%s)", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            metrics, up = [], 0.0
        yield from metrics
        yield _gauge("ralex_exporter_up", "1 if the last scrape read the ledger, else 0.", up)
        errors = CounterMetricFamily("ralex_exporter_scrape_errors", "Scrapes that could not read the ledger.")
        errors.add_metric([], self.scrape_errors)
        yield errors
        yield _gauge("ralex_exporter_scrape_duration_seconds", "Time the last scrape took.",
                     time.perf_counter() - started)

    def _collect(self) -> Iterator[Metric]:
        conn = self._connection()
        row = conn.execute(SELECT_SETTINGS).fetchone()
        if row is None:
            raise psycopg.OperationalError("budget settings are missing (has the proxy started once?)")
        settings = settings_from_row(row)
        tz, limit = settings.timezone, settings.daily_limit
        now = self._clock()
        window = day_window(now, tz)
        today, to_reset = window.day, window.seconds_left(now)
        totals = conn.execute(DAY_TOTALS, (today,)).fetchone() or (0, 0, 0, 0, 0)
        spent = float(totals[0])
        requests, refusals, errors, fallbacks = (float(n) for n in totals[1:])
        remaining = limit - spent
        fraction = spent / limit if limit > 0 else 1.0
        tier = settings.thresholds.tier(remaining)
        burn = float(conn.execute(LAST_HOUR_SPEND, (now,)).fetchone()[0])  # type: ignore[index]
        lag, since_write = conn.execute(WRITE_LAG).fetchone()  # type: ignore[misc]

        yield _gauge("ralex_budget_daily_limit_usd", "Today's budget in USD.", limit)
        yield _gauge("ralex_budget_suggested_limit_usd", "The budget the fix suggests (ralexctl budget set N): "
                     "the next tier above today's, as the 402 refusal says.", float(suggest_raise(limit)))
        yield _gauge("ralex_budget_spent_today_usd", "Spent today (real cost reported upstream), USD.", spent)
        yield _gauge("ralex_budget_remaining_usd", "Budget left today, USD.", remaining)
        yield _gauge("ralex_budget_fraction_used", "Spent today / daily limit.", fraction)
        figures = {int(r[0]): (float(r[1]), float(r[2])) for r in conn.execute(CROSSING_FIGURES_ON_DAY, (today,))}
        crossed = sorted(figures)
        yield _gauge("ralex_budget_alert_level", "Highest alert threshold crossed today (percent; 0: none).",
                     float(crossed[-1]) if crossed else 0.0)
        crossings = GaugeMetricFamily(
            "ralex_budget_threshold_crossed",
            "1 for each alert threshold today's spend has crossed (recorded once per budget day).",
            labels=["threshold", "budget_day"])
        for threshold in crossed:
            crossings.add_metric([str(threshold), today.isoformat()], 1.0)
        yield crossings
        # What was spent of which budget when each threshold was crossed: an alert says both "then" and "now",
        # so a budget raised since does not turn "50 % spent ($2.50 of $5.00)" into "$2.50 of $10.00".
        at_spent = GaugeMetricFamily("ralex_budget_crossing_spent_usd",
                                     "Spent today when the alert threshold was crossed, USD.", labels=["threshold"])
        at_limit = GaugeMetricFamily("ralex_budget_crossing_limit_usd",
                                     "Today's budget when the alert threshold was crossed, USD.", labels=["threshold"])
        for threshold, (spent_then, limit_then) in figures.items():
            at_spent.add_metric([str(threshold)], spent_then)
            at_limit.add_metric([str(threshold)], limit_then)
        yield at_spent
        yield at_limit
        yield _gauge("ralex_budget_seconds_to_reset", f"Seconds until local midnight ({tz}).", to_reset)
        tiers = GaugeMetricFamily("ralex_budget_tier", "Current budget tier (1 for the active one).",
                                  labels=["tier"])
        for name in TIERS:
            tiers.add_metric([name], 1.0 if name == tier else 0.0)
        yield tiers
        yield _gauge("ralex_requests_served_today", "Requests answered today.", float(requests))
        yield _gauge("ralex_refusals_today", "Requests refused today (HTTP 402).", float(refusals))
        yield _gauge("ralex_upstream_errors_today", "Requests that failed upstream today (not charged).",
                     float(errors))
        yield _gauge("ralex_fallbacks_today", "Requests served by a fallback alias today.", float(fallbacks))
        yield _gauge("ralex_burn_rate_usd_per_hour", "Spend over the last hour, USD/h.", burn)
        yield _gauge("ralex_projected_spend_today_usd",
                     "Spent today plus the last hour's burn rate until midnight, USD.",
                     spent + burn * to_reset / 3600)
        yield _gauge("ralex_ledger_write_lag_seconds",
                     "Largest delay between a request finishing and its ledger row landing (last 5 min).",
                     float(lag or 0))
        yield _gauge("ralex_ledger_seconds_since_last_write", "Seconds since the last ledger row landed.",
                     float(since_write) if since_write is not None else -1.0)
        yield from self._breakdown(conn, today)

    @staticmethod
    def _breakdown(conn: psycopg.Connection[Any], today: Any) -> Iterator[Metric]:
        spend: dict[tuple[str, str], float] = defaultdict(float)
        counts: dict[tuple[str, str, str], float] = defaultdict(float)
        kinds: dict[str, float] = defaultdict(float)
        active = {str(name): budget for name, budget in conn.execute(ACTIVE_KEYS)}
        by_key: dict[str, float] = dict.fromkeys(active, 0.0)
        for alias, model, kind, status, _fallback, n, cost, key in conn.execute(BREAKDOWN, (today,)):
            if status != "refused":
                spend[(alias, model)] += float(cost)
                counts[(alias, model, status)] += n
            by_key[key] = by_key.get(key, 0.0) + float(cost)
            kinds[kind or "unknown"] += n
        key_spend = GaugeMetricFamily("ralex_key_spend_today_usd",
                                      "Spent today by key (a client key's name, agent or operator), USD.",
                                      labels=["key"])
        for name, value in sorted(by_key.items()):
            key_spend.add_metric([name], value)
        yield key_spend
        key_budgets = GaugeMetricFamily("ralex_key_budget_usd", "Daily sub-budget of each active client key "
                                        "that has one, USD.", labels=["key"])
        for name, budget in sorted(active.items()):
            if budget is not None:
                key_budgets.add_metric([name], float(budget))
        yield key_budgets
        by_model = GaugeMetricFamily("ralex_spend_today_usd", "Spent today by alias and upstream model, USD.",
                                     labels=["alias", "model"])
        for key, value in sorted(spend.items()):
            by_model.add_metric(list(key), value)
        yield by_model
        requests = GaugeMetricFamily("ralex_requests_today", "Requests today by alias, model and outcome.",
                                     labels=["alias", "model", "status"])
        for key3, value in sorted(counts.items()):
            requests.add_metric(list(key3), value)
        yield requests
        decisions = GaugeMetricFamily("ralex_routing_decisions_today",
                                      "Routing decisions today by kind (task-cheap, task-smart, user, title, "
                                      "turn, downgraded, emergency, refused, cap-refused).", labels=["kind"])
        for kind, value in sorted(kinds.items()):
            decisions.add_metric([kind], value)
        yield decisions


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        read_secret_files(("RALEX_EXPORTER_DATABASE_URL",))
    except ConfigError as exc:
        raise SystemExit(f"ralex-exporter: {exc}") from None
    dsn = os.environ.get("RALEX_EXPORTER_DATABASE_URL")
    if not dsn:
        raise SystemExit("ralex-exporter: RALEX_EXPORTER_DATABASE_URL is not set (the read-only ledger DSN)")
    port = int(os.environ.get("RALEX_EXPORTER_PORT", "9464"))
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR

    for default in (GC_COLLECTOR, PLATFORM_COLLECTOR):
        REGISTRY.unregister(default)
    REGISTRY.register(LedgerCollector(dsn))
    start_http_server(port)
    log.info("ralex budget exporter on :%d", port)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
