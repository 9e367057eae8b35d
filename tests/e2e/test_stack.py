"""The whole stack from the real compose.yaml: a real OpenCode turn in its sandbox, through the proxy,
into the ledger, out of the exporter into Prometheus, every dashboard query, and the budget alerts.

Grafana itself has no image offline; its dashboard is checked by evaluating every panel's query
against this Prometheus. The fake OpenRouter sits on the proxy's egress network in the upstream's place.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
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
    # OpenCode may still be settling its title request: read the day once it holds still for 2 s
    spent = wait_until(lambda: (first := stack.spent_today()) > 0 and not time.sleep(2)
                       and stack.spent_today() == first and first, 60, what="today's spend to settle")
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
    spent = stack.spent_today()
    stack.sql(f"UPDATE budget_settings SET daily_limit_usd = {spent / 0.6:.8f}")
    # the agent network's panel has data once the agent asked for something (offline: refused, counted)
    stack.exec("opencode", "curl", "-s", "-m", "10", "http://pypi.org/simple/")
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    empty = []
    for expr in exprs:
        try:
            wait_until(lambda e=expr: stack.promql(e), 90, interval=2, what=expr)
        except AssertionError:
            empty.append(expr)
    assert not empty, f"panels without data: {empty}"


def test_budget_alerts_fire_as_the_ledger_crosses_50_80_95(stack: Stack):
    """One RalexBudgetThreshold alert per live threshold, with its severity, as the day's spend crosses
    it. A threshold crossed earlier today stays crossed (it notifies once a day), so when other tests
    have crossed 50/80/95 already, fresh thresholds take their place."""
    headers = {"Authorization": f"Bearer {stack.master}"}

    def put(**changes: object) -> dict[str, Any]:
        response = httpx.put(f"{stack.proxy}/ralex/budget", headers=headers, json=changes, timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    budget = put(alert_thresholds=[50, 80, 95, 100])
    day = datetime.fromisoformat(budget["now"]).astimezone(ZoneInfo(budget["timezone"])).date().isoformat()
    crossed = {int(t) for t in stack.sql(f"SELECT threshold FROM alert_crossings WHERE budget_day = '{day}'").split()}
    levels = (50, 80, 95) if not crossed & {50, 80, 95} else (56, 86, 97)
    put(alert_thresholds=[*levels, 100])
    if budget["spent"] <= 0:  # something to cross with
        assert httpx.post(f"{stack.proxy}/v1/chat/completions", headers=headers, timeout=60, json={
            "model": "cheap", "messages": [{"role": "user", "content": "fix the typo in a.py"}]}).status_code == 200
    spent = wait_until(lambda: (b := httpx.get(f"{stack.proxy}/ralex/budget", headers=headers).json())["spent"] > 0
                       and b["reserved"] == 0 and b["spent"], 10, what="the request to settle")
    fired: list[str] = []
    for fraction, level in zip((0.55 + (levels[0] - 50) / 100, 0.87, 0.98), levels, strict=True):
        assert stack.ralexctl("budget", "set", f"{spent / fraction:.6f}").returncode == 0
        selector = f'alertname="RalexBudgetThreshold", alertstate="firing", budget_day="{day}"'
        firing = wait_until(lambda s=selector, t=level: stack.promql(f'ALERTS{{{s}, threshold="{t}"}}'), 90,
                            interval=2, what=f"the {level} % alert to fire")
        fired.append(firing[0]["metric"]["severity"])
        higher = [t for t in levels if t > level]
        assert not [r for r in stack.promql(f"ALERTS{{{selector}}}") if int(r["metric"]["threshold"]) in higher]
    assert fired == ["info", "warning", "warning"]
    assert stack.value("ralex_budget_alert_level") >= levels[-1]
    put(alert_thresholds=[50, 80, 95, 100], daily_limit=5)
