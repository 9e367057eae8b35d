"""Alert thresholds in the budget engine: each crossed once per budget day, whatever the budget
does afterwards, and the events the agent's toasts read (thresholds, step-downs, refusals)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from ralex.budget import BudgetError, parse_thresholds
from ralex.engine import Crossing, Rejected
from tests.unit.test_engine import body, roomy, setup


def spend(s, cost: float) -> None:
    flight = s.engine.admit(body())
    s.engine.settle(flight.key, cost, cost_source="upstream")


def test_each_threshold_is_crossed_once_a_day_even_when_a_raised_budget_falls_back_below_it():
    s = setup(limit=1.0)
    crossings: list[Crossing] = []
    s.engine.on_crossing = crossings.append
    for _ in range(4):
        spend(s, 0.21)  # 21 %, 42 %, 63 %, 84 %
    assert [c.threshold for c in crossings] == [50, 80]
    s.engine.apply_settings(replace(s.engine.settings, daily_limit=2.0))  # 42 % of the new budget
    spend(s, 0.8)  # 82 % again
    assert [c.threshold for c in crossings] == [50, 80]  # 80 is not announced twice the same day
    spend(s, 0.3)  # 97 %
    assert [c.threshold for c in crossings] == [50, 80, 95]
    texts = [e.text for e in s.engine.events_since(0) if e.kind == "threshold"]
    assert texts[1].startswith("80 % of today's budget spent ($0.84 of $1.00)")


def test_a_new_day_starts_clean():
    s = setup(limit=1.0)
    crossings: list[Crossing] = []
    s.engine.on_crossing = crossings.append
    spend(s, 0.6)
    s.clock.now += timedelta(days=1)
    spend(s, 0.6)
    assert [(c.day.isoformat(), c.threshold) for c in crossings] == [
        (crossings[0].day.isoformat(), 50), ((crossings[0].day + timedelta(days=1)).isoformat(), 50)]


def test_crossings_already_recorded_today_are_not_announced_again_after_a_restart():
    s = setup(limit=1.0, spent=0.6)
    s.engine.crossed = {50}
    crossings: list[Crossing] = []
    s.engine.on_crossing = crossings.append
    spend(s, 0.25)
    assert [c.threshold for c in crossings] == [80]


def test_live_thresholds_are_used():
    s = setup(limit=1.0)
    s.engine.apply_settings(replace(s.engine.settings, alert_thresholds=(10, 30)))
    crossings: list[Crossing] = []
    s.engine.on_crossing = crossings.append
    spend(s, 0.35)
    assert [c.threshold for c in crossings] == [10, 30]


def test_step_downs_and_refusals_are_events_for_the_agent():
    s = setup(limit=5.0, spent=3.5)  # $1.50 left: economy tier, smart is stepped down
    s.engine.admit(body("smart", "design the plugin system"))
    step = s.engine.events_since(0)[-1]
    assert step.kind == "step_down"
    assert step.text.startswith("smart -> cheap: $1.50 left")
    last = step.id
    with pytest.raises(Rejected):
        s.engine.admit(body("cheap", "x" * 10, max_tokens=100) | {"messages": [
            {"role": "user", "content": "y" * 20_000_000}]})
    after = s.engine.events_since(last)
    refusal = [e for e in after if e.kind == "refused"]
    assert len(refusal) == 1
    assert "ralexctl budget" in refusal[0].text
    assert s.engine.events_since(after[-1].id) == []


@pytest.mark.parametrize(("values", "message"), [
    (["50", "lots"], "not a whole percentage"),
    ([0], "between 1 and 100"),
    ([101], "between 1 and 100"),
    ([], "between 1 and 8"),
    ("50 80", "a list of percentages"),
])
def test_bad_thresholds_name_the_fix(values, message):
    with pytest.raises(BudgetError, match=message):
        parse_thresholds(values)
    assert parse_thresholds(["95", "50%", 80, 80]) == (50, 80, 95)


def test_a_refusal_at_68_percent_says_the_next_request_does_not_fit_not_that_the_day_is_spent():
    """The budget of the issue: $0.01, $0.0068 spent, a request needing $0.0039 is refused. 50 % was
    reached; 80, 95 and 100 % are crossed by the refusal (so the alerts fire) and the agent hears one
    line saying what happened, not three claiming spend that did not happen."""
    s = roomy()
    s.engine.apply_settings(replace(s.engine.settings, daily_limit=0.01))
    spend(s, 0.0068)
    with pytest.raises(Rejected) as refused:
        s.engine.admit({"model": "cheap", "messages": [{"role": "user", "content": "x" * 40000}], "max_tokens": 100})
    assert "exhausted" in refused.value.message
    texts = [e.text for e in s.engine.events_since(0) if e.kind == "threshold"]
    assert texts[0].startswith("50 % of today's budget spent ($0.0068 of $0.01)")
    assert len(texts) == 2
    assert texts[1].startswith("Today's budget cannot pay the next request (it needs up to $0.0")
    assert "$0.0032 left; $0.0068 of $0.01 spent, 68%)" in texts[1]
    assert not any(t.startswith(("80 %", "95 %", "100 %")) for t in texts)
    assert s.engine.crossed == {50, 80, 95, 100}
