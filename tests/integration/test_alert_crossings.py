"""Alert thresholds crossed by real traffic are recorded once per budget day in the ledger, where the
exporter publishes them for Prometheus and Alertmanager."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.integration.conftest import Fake, Pg, Proxy, start_proxy, wait_until

pytestmark = pytest.mark.integration
AGENT = {"Authorization": "Bearer sk-ralex-test-agent"}


@pytest.fixture
def fresh(pg: Pg, upstream: Fake, tmp_path: Path) -> Iterator[Proxy]:
    """A proxy on its own ledger, with a $0.002 day: a few requests cross every threshold."""
    proxy = start_proxy(pg.new_database(), upstream, tmp_path, RALEX_DAILY_BUDGET="0.002")
    yield proxy
    proxy.stop()


def crossings(proxy: Proxy) -> list[int]:
    with psycopg.connect(proxy.dsn) as conn:
        return [r[0] for r in conn.execute("SELECT threshold FROM alert_crossings ORDER BY crossed_at, threshold")]


def spend_until(proxy: Proxy, fraction: float) -> None:
    """Send requests until the day is this far spent, or the budget refuses them (402: exhausted)."""
    for _ in range(200):
        if proxy.budget()["fraction_used"] >= fraction:
            return
        if proxy.chat("design a retry policy for the queue " + "z" * 300, model="smart",
                      max_tokens=60).status_code == 402:
            return
    raise AssertionError(f"never reached {fraction:.0%}")


def test_each_threshold_is_recorded_once_a_day_even_when_a_raised_budget_is_crossed_again(fresh: Proxy):
    spend_until(fresh, 0.85)
    found = wait_until(lambda: (c := crossings(fresh)) and 80 in c and c, 10, what="the 50 and 80 % crossings")
    assert found == [50, 80]
    fresh.set_limit(round(fresh.budget()["spent"] * 2, 6))  # raised: 50 % used, under 80 % again
    spend_until(fresh, 0.85)  # ... and crossed again the same day
    spend_until(fresh, 1.0)
    wait_until(lambda: 100 in crossings(fresh), 10, what="the 95 and 100 % crossings")
    assert crossings(fresh) == [50, 80, 95, 100]  # 80 once, never twice the same day
    status = httpx.get(f"{fresh.url}ralex/status", headers=AGENT, params={"since": 0}).json()
    assert status["alert_level"] == 100
    texts = [e["text"] for e in status["events"] if e["kind"] == "threshold"]
    reached = [t.split(" %")[0] for t in texts if not t.startswith("Today's budget cannot pay the next request")]
    assert reached == ["50", "80", "95", "100"][:len(reached)]  # each once, in order, as the spend reached it
    if len(reached) < 4:  # the rest crossed by a refusal: one line saying so, not a spend that did not happen
        assert len(texts) == len(reached) + 1
        assert texts[-1].startswith("Today's budget cannot pay the next request (it needs up to $"), texts


def test_alert_thresholds_are_live_settings(live: Proxy):
    changed = live.client.put("/ralex/budget", json={"alert_thresholds": [40, 90]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["alert_thresholds"] == [40, 90]
    bad = live.client.put("/ralex/budget", json={"alert_thresholds": [150]})
    assert bad.status_code == 400
    assert "between 1 and 100" in bad.text
    live.client.put("/ralex/budget", json={"alert_thresholds": [50, 80, 95, 100]}).raise_for_status()
