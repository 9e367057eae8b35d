"""The whole stack from the real compose.yaml: a real OpenCode turn in its sandbox, through the proxy,
into the ledger, out of the exporter into Prometheus, every dashboard query, and the budget alerts.

Grafana itself has no image offline; its dashboard is checked by evaluating every panel's query
against this Prometheus. The fake OpenRouter sits on the proxy's egress network in the upstream's place.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import AGENT_UID, Stack
from tests.integration.conftest import ROOT, wait_until

pytestmark = pytest.mark.e2e


def test_an_opencode_turn_fixes_the_file_through_the_proxy(stack: Stack):
    stack.fake_call("POST", "/_fake/reset", {})
    stack.fake_call("POST", "/_fake/script", {"replies": [
        {"tool_calls": [{"name": "read", "arguments": {"filePath": "/workspace/hello.py"}}], "requires_tools": True},
        {"tool_calls": [{"name": "edit", "arguments": {"filePath": "/workspace/hello.py", "oldString": "wrold",
                                                       "newString": "world"}}], "requires_tools": True},
        {"content": "Fixed the typo in hello.py.", "requires_tools": True},
    ]})
    out, err, code = stack.exec("opencode", "opencode", "run", "--model", "ralex/auto", "fix the typo in hello.py")
    assert code == 0, f"{out}\n{err}"
    hello = stack.workspace / "hello.py"
    assert hello.read_text() == 'print("hello world")\n'
    assert hello.stat().st_uid == AGENT_UID
    calls = stack.fake_call("GET", "/_fake/requests")["requests"]
    assert {c["model"] for c in calls} == {"google/gemini-2.5-flash-lite"}, "a typo fix is routed cheap"
    assert len(calls) >= 4  # title + read + edit + answer

    rows = wait_until(lambda: int(stack.sql("SELECT count(*) FROM ledger WHERE status = 'ok'")) >= len(calls)
                      and stack.sql("SELECT string_agg(DISTINCT alias_routed || ':' || route_kind, ',' ORDER BY "
                                    "alias_routed || ':' || route_kind) FROM ledger"), 30, what="ledger rows")
    assert "cheap:task-cheap" in rows
    assert "cheap:title" in rows or "cheap:turn" in rows
    spent = float(stack.sql("SELECT spent_usd FROM daily_totals"))
    assert spent > 0
    # ... and `ralexctl spend` shows it, as the README's first-contact path ends
    shown = stack.ralexctl("spend", "--days", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    assert sum(r["spent"] for r in json.loads(shown.stdout)["rows"]) == pytest.approx(spent, rel=1e-6)
    # Prometheus answers with its latest scrape (every few seconds): wait for one taken after the turn
    wait_until(lambda: (v := stack.value("ralex_budget_spent_today_usd")) is not None
               and v == pytest.approx(spent, rel=1e-6), 60, interval=1,
               what=f"Prometheus to scrape today's spend ${spent} from the exporter")


def test_every_dashboard_panel_query_returns_data(stack: Stack):
    dashboard = json.loads((ROOT / "grafana" / "dashboards" / "ralex-budget.json").read_text())
    assert dashboard["uid"] == "ralex-budget"
    # the alert panel has data once an alert fires: spend 60 % of the limit
    spent = float(stack.sql("SELECT spent_usd FROM daily_totals"))
    stack.sql(f"UPDATE budget_settings SET daily_limit_usd = {spent / 0.6:.8f}")
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    empty = []
    for expr in exprs:
        try:
            wait_until(lambda e=expr: stack.promql(e), 90, interval=2, what=expr)
        except AssertionError:
            empty.append(expr)
    assert not empty, f"panels without data: {empty}"


def test_budget_alerts_fire_as_the_ledger_crosses_50_80_95(stack: Stack):
    spent = float(stack.sql("SELECT spent_usd FROM daily_totals"))
    fired: list[str] = []
    for fraction, alert in ((0.55, "RalexBudget50"), (0.85, "RalexBudget80"), (0.97, "RalexBudget95")):
        stack.sql(f"UPDATE budget_settings SET daily_limit_usd = {spent / fraction:.8f}")
        wait_until(lambda a=alert: stack.promql(f'ALERTS{{alertname="{a}", alertstate="firing"}}'), 90,
                   interval=2, what=f"{alert} to fire")
        fired.append(alert)
        assert not stack.promql('ALERTS{alertname="RalexBudgetExhausted", alertstate="firing"}')
    assert fired == ["RalexBudget50", "RalexBudget80", "RalexBudget95"]
    stack.sql("UPDATE budget_settings SET daily_limit_usd = 5")
