"""deploy/swarm.yaml on a real single-node Docker Swarm: three proxy tasks on one Postgres, the fake
OpenRouter as a service, every request sent from a container on the stack's backend network to the
tasks behind ``tasks.litellm``. What tests/integration/test_replicas.py proves for three processes,
proved for three Swarm tasks: 200 requests at once never take the day or a key past its limit, every
replica serves, and a task killed mid-traffic leaves the ledger equal to the bill once the survivors
have swept what it left and Swarm has started it again under its name."""

from __future__ import annotations

from typing import Any

import pytest

from tests.swarm.conftest import REPLICAS
from tests.swarm.stack import Swarm, burst, kill, wait_until

pytestmark = pytest.mark.swarm


@pytest.fixture(scope="module")
def crowd(swarm: Swarm) -> dict[str, Any]:
    return burst(swarm, requests=200, remaining=0.05)


@pytest.fixture(scope="module")
def killed(swarm: Swarm, crowd: dict[str, Any]) -> dict[str, Any]:
    return kill(swarm)


def test_every_task_is_a_named_replica_on_the_shared_book(swarm: Swarm):
    views = [swarm.budget(url) for url in swarm.proxy_urls()]
    assert sorted(v["replica"] for v in views) == [f"proxy-{i}" for i in range(1, REPLICAS + 1)]
    assert {v["reservations"] for v in views} == {"shared"}
    assert any(state.startswith("Complete") for state in swarm.task_states("migrate"))


def test_two_hundred_requests_never_pass_the_day_or_any_key(crowd: dict[str, Any]):
    assert set(crowd["statuses"]) == {"200", "402"}, crowd["statuses"]
    assert crowd["overshoot_raw_usd"] <= 0, crowd
    assert all(k["spent_usd"] <= k["budget_usd"] for k in crowd["per_key"].values()), crowd["per_key"]
    assert crowd["ledger_usd"] == pytest.approx(crowd["billed_usd"], abs=1e-9)


def test_every_replica_serves_and_refuses_alike(crowd: dict[str, Any]):
    assert len(crowd["per_replica"]) == REPLICAS
    assert all(r["served"] > 0 and r["other"] == 0 for r in crowd["per_replica"].values()), crowd["per_replica"]


def test_refusals_name_the_budget_that_ran_out_and_the_fix(crowd: dict[str, Any]):
    assert crowd["refusals_day"] + crowd["refusals_key"] == int(crowd["statuses"]["402"])
    assert crowd["refusals_without_fix"] == []


def test_prometheus_scrapes_every_replica(swarm: Swarm, crowd: dict[str, Any]):
    up = wait_until(lambda: len(found := [t for t in swarm.prometheus_targets("litellm") if t["health"] == "up"])
                    == REPLICAS and found, 60, "Prometheus to scrape every replica", 2.0)
    assert len({t["labels"]["instance"] for t in up}) == REPLICAS
    assert [t["health"] for t in swarm.prometheus_targets("budget-exporter")] == ["up"]


def test_a_task_killed_mid_traffic_is_recovered_and_the_ledger_equals_the_bill(killed: dict[str, Any]):
    assert all(codes.get("200", 0) > 0 for codes in killed["streams"].values()), killed["streams"]
    assert killed["replica_rows_left"] == 0
    # rows charged at their hold (killed before the upstream's answer began, no generation id known)
    # are the only difference between the ledger and the bill
    assert killed["generations_without_row"] <= killed["hold_charged_rows"], killed
    assert 0 <= killed["ledger_minus_billed_usd"] <= killed["hold_charged_usd"] + 1e-9, killed
    assert killed["ledger_minus_billed_usd"] < 0.01, killed


def test_swarm_restarts_the_killed_task_under_its_name(killed: dict[str, Any]):
    assert killed["restarted_serves"] == 200
