"""The budget exporter against a real Postgres ledger, through the read-only role."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ralex.budget import alert_level, budget_day
from ralex.config import BudgetDefaults
from ralex.exporter import LedgerCollector
from ralex.ledger.store import LedgerRow, connect, ensure_reader_role, insert_rows, migrate, seed_settings
from tests.integration.conftest import Pg, free_port, start_postgres

pytestmark = pytest.mark.integration


def scrape(collector: LedgerCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def ledger(dsn: str, limit: float = 5.0) -> str:
    with connect(dsn, autocommit=True) as conn:
        migrate(conn)
        seed_settings(conn, BudgetDefaults(daily_limit=limit, timezone="Europe/Berlin"))
        ensure_reader_role(conn, "ralex_reader", "reader-pass")
    return dsn.replace("ralex:ralex@", "ralex_reader:reader-pass@")


NOW = datetime.now(UTC)
"""The moment the rows are written at and the exporter reads at: the same budget day at any hour."""


def collector_at_now(dsn: str, timeout: float = 5.0, now: datetime = NOW) -> LedgerCollector:
    return LedgerCollector(dsn, timeout=timeout, clock=lambda: now)


def rows(*costs: float, alias: str = "cheap", kind: str = "task-cheap", status: str = "ok",
         now: datetime = NOW) -> list[LedgerRow]:
    return [LedgerRow(ts=now - timedelta(minutes=5), budget_day=budget_day(now, "Europe/Berlin"),
                      alias_requested="auto", status=status, alias_routed=alias, upstream_model=f"m/{alias}",
                      route_kind=kind, cost_usd=c) for c in costs]


def test_metrics_follow_the_ledger(pg: Pg):
    dsn = pg.new_database()
    reader = ledger(dsn)
    with psycopg.connect(dsn) as conn:
        insert_rows(conn, rows(0.5, 0.25) + rows(1.25, alias="smart", kind="task-smart")
                    + rows(0.0, alias="", kind="refused", status="refused"))
    m = scrape(collector_at_now(reader))
    assert m[("ralex_exporter_up", ())] == 1
    assert m[("ralex_budget_spent_today_usd", ())] == pytest.approx(2.0)
    assert m[("ralex_budget_remaining_usd", ())] == pytest.approx(3.0)
    assert m[("ralex_budget_fraction_used", ())] == pytest.approx(0.4)
    assert m[("ralex_budget_suggested_limit_usd", ())] == 10  # the 402's rule: the next tier above $5
    assert m[("ralex_budget_alert_level", ())] == 0
    assert m[("ralex_budget_tier", (("tier", "full"),))] == 1
    assert m[("ralex_spend_today_usd", (("alias", "smart"), ("model", "m/smart")))] == pytest.approx(1.25)
    assert m[("ralex_requests_today", (("alias", "cheap"), ("model", "m/cheap"), ("status", "ok")))] == 2
    assert m[("ralex_routing_decisions_today", (("kind", "refused"),))] == 1
    assert m[("ralex_refusals_today", ())] == 1
    assert m[("ralex_burn_rate_usd_per_hour", ())] == pytest.approx(2.0)
    assert m[("ralex_projected_spend_today_usd", ())] >= 2.0


def test_today_is_the_budget_timezones_day_and_a_23_hour_day_resets_in_real_time(pg: Pg):
    """At 00:30 in Berlin on the night the clocks spring forward, today is that date (not UTC's, still
    the day before) and its midnight is 22.5 hours away, not 23.5."""
    dsn = pg.new_database()
    reader = ledger(dsn)
    now = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)  # 00:30 CET on 29 March 2026
    with psycopg.connect(dsn) as conn:
        insert_rows(conn, rows(0.5, now=now) + rows(0.25, now=now - timedelta(minutes=35)))  # 23:50 the day before
    m = scrape(collector_at_now(reader, now=now))
    assert m[("ralex_budget_spent_today_usd", ())] == pytest.approx(0.5)
    assert m[("ralex_budget_seconds_to_reset", ())] == 22.5 * 3600
    assert m[("ralex_burn_rate_usd_per_hour", ())] == pytest.approx(0.75)  # the last hour spans midnight


def test_reader_role_cannot_write(pg: Pg):
    reader = ledger(pg.new_database())
    with psycopg.connect(reader) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE budget_settings SET daily_limit_usd = 1000")


@pytest.mark.parametrize(("fraction", "level"), [(0.1, 0), (0.5, 50), (0.81, 80), (0.95, 95), (1.2, 100)])
def test_alert_levels(fraction, level):
    assert alert_level(fraction) == level


def test_postgres_down_reports_up_0_and_recovers_without_restart():
    server = start_postgres(host_port=free_port())
    try:
        exporter = collector_at_now(ledger(server.admin_dsn), timeout=2)
        assert scrape(exporter)[("ralex_exporter_up", ())] == 1
        server.container.get_wrapped_container().stop(timeout=2)
        down = scrape(exporter)
        assert down[("ralex_exporter_up", ())] == 0
        assert down[("ralex_exporter_scrape_errors_total", ())] >= 1
        assert ("ralex_budget_spent_today_usd", ()) not in down
        server.container.get_wrapped_container().start()
        from tests.integration.conftest import wait_until

        wait_until(lambda: scrape(exporter)[("ralex_exporter_up", ())] == 1, 30, interval=0.5,
                   what="the exporter to read the ledger again")
    finally:
        server.container.stop()


def test_spend_per_key_and_sub_budgets_are_published_for_the_keys_of_the_day(pg: Pg):
    dsn = pg.new_database()
    reader = ledger(dsn)
    with psycopg.connect(dsn) as conn:
        for name, budget, revoked in (("laptop", 2.0, False), ("ci", None, False), ("old", 1.0, True),
                                      ("gone", 1.0, True)):
            conn.execute("INSERT INTO client_keys (name, key_hash, daily_budget_usd, revoked_at) VALUES"
                         " (%s, %s, %s, CASE WHEN %s THEN now() END)", (name, f"{len(name):064x}", budget, revoked))
        laptop = rows(0.5, 0.25)
        old = rows(0.125)
        for row in laptop:
            row.key_name = "laptop"
        old[0].key_name = "old"  # revoked today: its spend stays on today's chart
        insert_rows(conn, laptop + old + rows(1.0) + rows(0.0, alias="", kind="refused", status="refused"))
        conn.commit()
    m = scrape(collector_at_now(reader))
    spend = {dict(labels)["key"]: v for (name, labels), v in m.items() if name == "ralex_key_spend_today_usd"}
    assert spend == {"laptop": pytest.approx(0.75), "old": pytest.approx(0.125), "agent": pytest.approx(1.0),
                     "ci": 0.0}  # "gone" was revoked and spent nothing today: no series
    budgets = {dict(labels)["key"]: v for (name, labels), v in m.items() if name == "ralex_key_budget_usd"}
    assert budgets == {"laptop": 2.0}  # revoked keys' sub-budgets no longer apply
    assert m[("ralex_budget_spent_today_usd", ())] == pytest.approx(1.875)
