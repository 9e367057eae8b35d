"""Budget alerts out of the stack: real traffic through the proxy, the real exporter, Prometheus and
Alertmanager, and a receiver container standing in for a webhook, ntfy, Slack, Discord and an SMTP
server (tests/compose.fake.yaml). Each threshold reaches each receiver once per budget day.

The tests run in file order on the session's stack and leave its budget as they found it (limit,
timezone, thresholds). The last one measures the time from a crossing to its webhook and writes
bench/results/alerts.json (with RALEX_RESULTS_DIR=bench/results).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from email import message_from_string
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from ralex.budget import usd
from ralex_ctl.alerts import update_env
from tests import results
from tests.e2e.conftest import Stack
from tests.integration.conftest import ROOT, wait_until
from tests.zones import on_another_date

pytestmark = pytest.mark.e2e

RECEIVER = "http://alert-receiver:8080"
TARGETS = {  # kind -> (target, where the receiver files it)
    "webhook": (f"{RECEIVER}/webhook", "/webhook"),
    "ntfy": (f"{RECEIVER}/ralex-alerts", "/ralex-alerts"),
    "slack": (f"{RECEIVER}/slack/T0/B0/hook", "/slack/T0/B0/hook"),
    "discord": (f"{RECEIVER}/api/webhooks/1/discord", "/api/webhooks/1/discord"),
    "email": ("me@example.com", "smtp:me@example.com"),
}
KIND_OF_PATH = {path: kind for kind, (_, path) in TARGETS.items()}
DEFAULT_THRESHOLDS = ["50", "80", "95", "100"]
SCRAPE_S, EVALUATION_S = 5.0, 5.0  # prometheus/prometheus.yml (budget-exporter job, evaluation_interval)


# --- the receiver and the budget ---------------------------------------------------------------

def receiver_call(stack: Stack, method: str, path: str) -> Any:
    script = ("import sys, urllib.request as u; r = u.Request('http://127.0.0.1:8080' + sys.argv[2], "
              "method=sys.argv[1]); print(u.urlopen(r).read().decode())")
    out, err, code = stack.exec("alert-receiver", "python3", "-c", script, method, path)
    assert code == 0, err
    return json.loads(out)


THRESHOLD_TEXT = re.compile(r"(\d+) % of today's Ralex budget reached|(Today's Ralex budget ran out)")


def delivery(raw: dict[str, Any]) -> dict[str, Any]:
    """One notification as the receiver got it: kind, threshold, budget day (webhook and ntfy carry it),
    alert name, arrival time and the user-facing text."""
    path = raw["path"].split("?", 1)[0]
    kind = KIND_OF_PATH.get(path, path)
    day, name = None, None
    if kind == "email":
        message = message_from_string(raw["body"])
        title = str(make_header(decode_header(message["Subject"])))
        text = next(p.get_payload(decode=True).decode() for p in message.walk()
                    if p.get_content_type() == "text/plain")
    else:
        body = json.loads(raw["body"])
        if kind == "slack":
            title, text = body["attachments"][0]["title"], body["attachments"][0]["text"]
        elif kind == "discord":
            title, text = body["embeds"][0]["title"], body["embeds"][0]["description"]
        else:
            title, text = body["commonAnnotations"]["summary"], body["commonAnnotations"]["description"]
            day, name = body["commonLabels"].get("budget_day"), body["commonLabels"]["alertname"]
            assert len(body["alerts"]) == 1
            assert body["status"] == "firing"
    found = THRESHOLD_TEXT.search(title)
    threshold = (found.group(1) or "100") if found else None
    return {"kind": kind, "threshold": threshold, "day": day, "alertname": name, "at": raw["at"], "title": title,
            "text": text, "query": raw["path"].partition("?")[2]}


def deliveries(stack: Stack) -> list[dict[str, Any]]:
    return [delivery(raw) for raw in receiver_call(stack, "GET", "/_received")]


def counts(found: list[dict[str, Any]]) -> Counter[tuple[str, str | None]]:
    return Counter((d["kind"], d["threshold"]) for d in found)


def budget(stack: Stack) -> dict[str, Any]:
    response = httpx.get(f"{stack.proxy}/ralex/budget", headers={"Authorization": f"Bearer {stack.master}"},
                         timeout=10)
    response.raise_for_status()
    return dict(response.json())


def day_of(data: dict[str, Any]) -> str:
    """The budget day a /ralex/budget answer is on: its "now" in the budget's timezone."""
    return datetime.fromisoformat(data["now"]).astimezone(ZoneInfo(data["timezone"])).date().isoformat()


def put_budget(stack: Stack, **changes: Any) -> dict[str, Any]:
    response = httpx.put(f"{stack.proxy}/ralex/budget", headers={"Authorization": f"Bearer {stack.master}"},
                         json={**changes, "by": "e2e"}, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def chat(stack: Stack, prompt: str = "fix the typo in a.py") -> int:
    response = httpx.post(f"{stack.proxy}/v1/chat/completions", headers={"Authorization": f"Bearer {stack.master}"},
                          json={"model": "cheap", "messages": [{"role": "user", "content": prompt}]}, timeout=60)
    assert response.status_code in (200, 402), response.text
    return response.status_code


def crossings(stack: Stack, day: str) -> dict[int, float]:
    """threshold -> when the proxy recorded its crossing (epoch seconds), for one budget day."""
    rows = stack.sql(f"SELECT threshold, extract(epoch FROM crossed_at) FROM alert_crossings "
                     f"WHERE budget_day = '{day}'")
    return {int(t): float(at) for t, at in (line.split("|") for line in rows.splitlines() if line)}


def spend_past(stack: Stack, fraction: float, pause: tuple[float, float] = (0.0, 0.0), limit: int = 400,
               prompt: str = "fix the typo in a.py") -> int:
    """Requests until today's spend passes ``fraction`` of the limit, or one is refused (402)."""
    for sent in range(1, limit + 1):
        if chat(stack, prompt) == 402:
            return sent
        data = wait_until(lambda: (b := budget(stack))["reserved"] == 0 and b, 10, what="the request to settle")
        if data["spent"] >= fraction * data["limit"]:
            return sent
        time.sleep(random.uniform(*pause))
    raise AssertionError(f"{limit} requests did not spend {fraction:.0%} of the budget")


def fresh_budget(stack: Stack, step: float, start: float, prompt: str = "fix the typo in a.py") -> float:
    """A daily limit at which today's spend is ``start`` of it (or less) and one request about ``step``."""
    before = budget(stack)["spent"]
    assert chat(stack, prompt) == 200
    after = wait_until(lambda: (b := budget(stack))["reserved"] == 0 and b, 10, what="settle")["spent"]
    cost = after - before
    assert cost > 0
    return round(max(cost / step, after / start), 6)


def webhook_thresholds(found: list[dict[str, Any]]) -> set[str | None]:
    return {d["threshold"] for d in found if d["kind"] == "webhook"}


def stop_repeats_within(found: list[dict[str, Any]]) -> None:
    repeated = {key: n for key, n in counts(found).items() if n > 1}
    assert not repeated, f"notified more than once: {repeated}"


# --- the stack with Alertmanager and every receiver kind ---------------------------------------

@pytest.fixture(scope="module")
def alerting(stack: Stack) -> Iterator[Stack]:
    if not (stack.root / "alertmanager").exists():  # the shared project copy may predate Alertmanager
        shutil.copytree(ROOT / "alertmanager", stack.root / "alertmanager")
    up = stack.ralexctl("up", "alertmanager", "alert-receiver", timeout=300)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    env = stack.root / ".env"
    env.write_text(update_env(env.read_text(), {"RALEX_SMTP_REQUIRE_TLS": "false"}))  # the receiver has no TLS
    for kind, (target, _) in TARGETS.items():
        extra = ["--smtp-host", "alert-receiver:2525", "--smtp-from", "ralex@example.com"] if kind == "email" else []
        added = stack.ralexctl("alerts", "add", kind, target, *extra, timeout=120)
        assert added.returncode == 0, added.stderr
    before = budget(stack)
    stack.fake_call("POST", "/_fake/reset", {})
    receiver_call(stack, "DELETE", "/_received")
    try:
        yield stack
    finally:
        put_budget(stack, daily_limit=before["limit"], timezone=before["timezone"],
                   alert_thresholds=[int(t) for t in DEFAULT_THRESHOLDS])


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    return {"latencies": []}


def test_receivers_are_rendered_for_alertmanager_only(alerting: Stack):
    listed = json.loads(alerting.ralexctl("alerts", "list", "--json").stdout)
    assert [r["kind"] for r in listed["receivers"]] == list(TARGETS)
    assert listed["config"] == "current"
    config = alerting.root / "alertmanager" / "alertmanager.yml"
    assert config.stat().st_mode & 0o777 == 0o640
    assert int(alerting.env.get("RALEX_GID") or 1000) == config.stat().st_gid
    loaded = yaml.safe_load(config.read_text())
    assert loaded["route"]["group_by"] == ["alertname", "threshold", "budget_day"]
    # the secrets are nowhere but in Alertmanager's container
    for service in ("opencode", "litellm", "budget-exporter", "prometheus"):
        mounts = [m["Source"] for m in alerting.container(service)["Mounts"]]
        assert not any(source.endswith("/alertmanager") for source in mounts), service
        environment = " ".join(alerting.container(service)["Config"]["Env"])
        assert "alert-receiver" not in environment, service
    doctor = json.loads(alerting.ralexctl("doctor", "--json").stdout)
    check = next(c for c in doctor if c["name"] == "alert receivers")
    assert check["ok"], check


def test_each_threshold_reaches_every_receiver_once(alerting: Stack, figures: dict[str, Any]):
    stack = alerting
    put_budget(stack, alert_thresholds=[int(t) for t in DEFAULT_THRESHOLDS])
    limit = fresh_budget(stack, step=0.06, start=0.3)
    data = put_budget(stack, daily_limit=limit)
    day = day_of(data)
    already = crossings(stack, day)
    assert not set(already) & {50, 80, 95, 100}, f"today's thresholds were crossed before this test: {already}"

    spend_past(stack, 1.01)  # until a request is refused: the day is spent
    crossed = crossings(stack, day)
    assert {50, 80, 95, 100} <= set(crossed)
    expected = {(kind, t) for kind in TARGETS for t in DEFAULT_THRESHOLDS}
    found = wait_until(lambda: expected <= set(counts(d := deliveries(stack))) and d, 90, interval=2,
                       what="every threshold at every receiver")
    stop_repeats_within(found)

    by_threshold = {d["threshold"]: d for d in found if d["kind"] == "webhook"}
    assert {d["day"] for d in by_threshold.values()} == {day}
    assert {d["alertname"] for d in by_threshold.values()} == {"RalexBudgetThreshold"}
    eighty = by_threshold["80"]["text"]
    assert re.match(r"80 % of today's budget was spent \(at \$0\.\d+ of \$0\.\d+\); now \$0\.\d+ of \$0\.\d+ "
                    r"spent \(\d+(\.\d+)?%\); .+; resets at midnight \(in .+\); raise it: ralexctl budget set \d+$",
                    eighty), eighty
    assert by_threshold["100"]["title"] == "Today's Ralex budget ran out"
    assert by_threshold["100"]["text"].startswith("A request did not fit in what was left of today's budget (at $")
    ntfy = next(d for d in found if d["kind"] == "ntfy")
    assert "tpl=1" in ntfy["query"]
    severities = {r["metric"]["threshold"]: r["metric"]["severity"] for r in stack.promql(
        f'ALERTS{{alertname="RalexBudgetThreshold", alertstate="firing", budget_day="{day}"}}')}
    assert {t: severities[t] for t in DEFAULT_THRESHOLDS} == {"50": "info", "80": "warning", "95": "warning",
                                                              "100": "critical"}
    for threshold in DEFAULT_THRESHOLDS:
        figures["latencies"].append(by_threshold[threshold]["at"] - crossed[int(threshold)])

    status = stack.ralexctl("status", "--json")
    firing = json.loads(status.stdout)["alerts_firing"]
    assert {a["threshold"] for a in firing if a["budget_day"] == day} >= set(DEFAULT_THRESHOLDS)
    shown = stack.ralexctl("status")
    assert "A request did not fit in what was left of today's budget (at $" in shown.stdout

    # One story everywhere: the next request's 402, the agent's toast event, the webhook that was sent,
    # `ralexctl status` and its summary name the same amounts; after a raise, the firing alert keeps the
    # crossing's figures and tells now's.
    agent = {"Authorization": f"Bearer {stack.env['RALEX_AGENT_KEY']}"}
    refusal = httpx.post(f"{stack.proxy}/v1/chat/completions", headers=agent, timeout=60,
                         json={"model": "auto", "messages": [{"role": "user", "content": "fix the typo in a.py"}]})
    assert refusal.status_code == 402, refusal.text
    message = refusal.json()["error"]["message"]
    now = budget(stack)
    spent_text, limit_text = usd(now["spent"]), usd(now["limit"])
    assert message.startswith(f"Daily budget {limit_text} exhausted ({spent_text} spent"), message
    events = httpx.get(f"{stack.proxy}/ralex/status", headers=agent, timeout=10).json()
    assert any(e["kind"] == "refused" and message.startswith(e["text"][:200]) for e in events["events"]), events
    assert events["summary"].startswith(f"{spent_text} of {limit_text} spent"), events["summary"]
    sent = by_threshold["100"]["text"]
    assert f"of {limit_text}); now {spent_text} of {limit_text} spent" in sent, sent
    then = sent.split("(at ", 1)[1].split(")", 1)[0]
    put_budget(stack, daily_limit=5)

    def retold() -> str | None:
        firing = json.loads(stack.ralexctl("status", "--json").stdout)["alerts_firing"] or []
        hundred = next((a for a in firing if a["threshold"] == "100" and a["budget_day"] == day), None)
        text = hundred["description"] if hundred else ""
        return text if f"(at {then}); now {spent_text} of $5.00 spent" in text else None
    wait_until(retold, 60, interval=2, what="the firing alert to tell the raise")
    status = json.loads(stack.ralexctl("status", "--json").stdout)
    assert status["budget"]["summary"].startswith(f"{spent_text} of $5.00 spent"), status["budget"]["summary"]


def test_a_raised_budget_an_exporter_restart_and_time_repeat_nothing(alerting: Stack):
    stack = alerting
    sent = len(receiver_call(stack, "GET", "/_received"))
    spent = budget(stack)["spent"]
    put_budget(stack, daily_limit=round(spent / 0.6, 6))  # back under 80 %: the day goes on
    spend_past(stack, 0.85)  # ... and 80 % is crossed a second time
    subprocess.run(["docker", "compose", "restart", "budget-exporter"], cwd=stack.root, env=stack.process_env,
                   check=True, capture_output=True, timeout=120)
    group_interval = 30.0  # alertmanager routing (ralex_ctl/alerts.py ROUTE)
    quiet_for = SCRAPE_S + EVALUATION_S + 5 + 2 * group_interval + 10
    time.sleep(quiet_for)  # asserting that nothing arrives: wait out two group intervals and the pipeline
    found = deliveries(stack)
    assert len(found) == sent, f"new notifications: {found[sent:]}"
    stop_repeats_within(found)
    firing = stack.promql('ALERTS{alertname="RalexBudgetThreshold", alertstate="firing"}')
    assert {r["metric"]["threshold"] for r in firing} >= set(DEFAULT_THRESHOLDS), "the alerts stay firing all day"


def test_latency_from_crossing_to_webhook(alerting: Stack, figures: dict[str, Any]):
    """More crossings for the figure: fresh thresholds (a threshold notifies once a day, so each round
    uses values not crossed today), crossed by real traffic with random pauses against the 5 s scrape
    and evaluation cycles."""
    stack = alerting
    rounds = [[53, 58, 63, 68, 73, 78, 83, 88], [54, 59, 64, 69, 74, 79, 84, 89]]
    prompt = "review this module for typos: " + "lorem ipsum dolor sit amet " * 120  # a pricier request
    for thresholds in rounds:
        day = day_of(budget(stack))
        assert not set(crossings(stack, day)) & set(thresholds)
        put_budget(stack, daily_limit=5)  # room for the measuring request
        limit = fresh_budget(stack, step=0.02, start=0.5, prompt=prompt)
        put_budget(stack, daily_limit=limit)
        put_budget(stack, alert_thresholds=thresholds)
        spend_past(stack, max(thresholds) / 100 + 0.01, pause=(0.2, 1.8), prompt=prompt)
        crossed = crossings(stack, day)
        assert set(thresholds) <= set(crossed)
        wanted = {str(t) for t in thresholds}
        found = wait_until(lambda w=wanted: w <= webhook_thresholds(f := deliveries(stack)) and f, 90, interval=2,
                           what=f"webhooks for {sorted(wanted)}")
        stop_repeats_within(found)
        arrivals = {d["threshold"]: d["at"] for d in found if d["kind"] == "webhook"}
        figures["latencies"] += [arrivals[str(t)] - crossed[t] for t in thresholds]
    put_budget(stack, alert_thresholds=[int(t) for t in DEFAULT_THRESHOLDS])

    latencies = sorted(figures["latencies"])
    quantiles = statistics.quantiles(latencies, n=20, method="inclusive")
    result = {
        "what": "seconds from a threshold crossing (the proxy settling the request that crossed it) to the "
                "webhook's arrival at the receiver: exporter scrape + rule evaluation + Alertmanager group_wait",
        "crossings": len(latencies),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(quantiles[18], 2),
        "min_s": round(latencies[0], 2),
        "max_s": round(latencies[-1], 2),
        "exporter_scrape_interval_s": SCRAPE_S,
        "rule_evaluation_interval_s": EVALUATION_S,
        "alertmanager_group_wait_s": 5.0,
        "expected_range_s": [5.0, SCRAPE_S + EVALUATION_S + 5.0],
        "latencies_s": [round(v, 3) for v in latencies],
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    results.record("alerts.json", None, result)
    print(f"\ncrossing -> webhook over {len(latencies)} crossings: p50 {result['p50_s']} s, p95 {result['p95_s']} s "
          f"(min {result['min_s']}, max {result['max_s']}; scrape {SCRAPE_S:g} s + evaluation {EVALUATION_S:g} s "
          "+ group_wait 5 s)")
    assert len(latencies) >= 20


def test_a_new_budget_day_notifies_each_threshold_once_again(alerting: Stack):
    """A new budget day, reached by moving the budget's timezone to one where it is another date (still
    yesterday or already tomorrow, whatever the hour: tests/zones.py): it starts clean (nothing spent,
    nothing crossed), its crossings notify again, once each, under the new day, and the previous day's
    alerts resolve without a message."""
    stack = alerting
    before = budget(stack)
    today = day_of(before)
    elsewhere = on_another_date(date.fromisoformat(today), datetime.fromisoformat(before["now"]))
    sent = len(receiver_call(stack, "GET", "/_received"))
    moved = put_budget(stack, timezone=elsewhere, daily_limit=5)
    new_day = day_of(moved)
    assert new_day != today, (elsewhere, moved["now"])
    assert moved["spent"] == 0
    assert not moved["alerts_crossed_today"]
    assert not crossings(stack, new_day)
    wait_until(lambda: not stack.promql(f'ALERTS{{alertname="RalexBudgetThreshold", budget_day="{today}"}}'), 60,
               interval=2, what="the previous day's alerts to resolve")
    assert stack.value("ralex_budget_alert_level") == 0

    assert chat(stack) == 200  # the new day's first spend ...
    spent = wait_until(lambda: (b := budget(stack))["reserved"] == 0 and b["spent"], 10, what="settle")
    put_budget(stack, daily_limit=round(spent / 0.85, 6))  # ... is 85 % of its budget: 50 and 80 cross
    assert wait_until(lambda: set(crossings(stack, new_day)) == {50, 80}, 10, what="50 and 80 only, on the new day")
    expected = {(kind, t) for kind in TARGETS for t in ("50", "80")}
    wait_until(lambda: expected <= set(counts(deliveries(stack)[sent:])), 90, interval=2,
               what="the new day's notifications")
    new = deliveries(stack)[sent:]
    assert {d["day"] for d in new if d["kind"] == "webhook"} == {new_day}
    assert {d["threshold"] for d in new} == {"50", "80"}, "only the new day's crossings, and nothing resolved"
    stop_repeats_within(new)
    put_budget(stack, timezone=before["timezone"], daily_limit=before["limit"])


def expected(threshold: str, day: str = "2026-11-30") -> dict[str, Any]:
    """The alert for one crossing, as the rule renders it: crossed at the figures of its day (100 % on a $0.012
    budget), the budget raised to $10.00 since (now 40 %, tier economy)."""
    severity = {"50": "info", "80": "warning", "100": "critical"}[threshold]
    then = {"50": "$2.50 of $5.00", "80": "$4.00 of $5.00", "100": "$0.0068 of $0.012"}[threshold]
    now = "now $4.00 of $10.00 spent (40%); smart is off, cheap and yolo only"
    tail = "resets at midnight (in 3h 12m 0s); raise it: ralexctl budget set 20"
    if threshold == "100":
        summary = "Today's Ralex budget ran out"
        description = f"A request did not fit in what was left of today's budget (at {then}); {now}; {tail}"
    else:
        summary = f"{threshold} % of today's Ralex budget reached"
        description = f"{threshold} % of today's budget was spent (at {then}); {now}; {tail}"
    return {"exp_labels": {"threshold": threshold, "budget_day": day, "severity": severity, "job": "budget-exporter",
                           "instance": "budget-exporter:9464"},
            "exp_annotations": {"summary": summary, "description": description}}


def promtool(tests: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    image = os.environ.get("RALEX_PROMETHEUS_IMAGE") or "prom/prometheus:v2.55.1"
    return subprocess.run(["docker", "run", "--rm", "-v", f"{ROOT / 'prometheus' / 'rules'}:/rules:ro",
                           "-v", f"{tmp_path}:/t:ro", "--user", "0", "--entrypoint", "promtool", image,
                           "test", "rules", "/t/test.yml"], capture_output=True, text=True, timeout=120, check=False)


def test_the_alert_writes_dollars_as_every_other_place_does(tmp_path: Path):
    """The rule's dollar amounts are ralex.budget.usd's, digit for digit: the webhook says what the 402 text,
    the toasts and ralexctl say."""
    exporter = 'job="budget-exporter",instance="budget-exporter:9464"'
    amounts = [0.0, 0.0000042, 0.000012, 0.00034, 0.0068, 0.01, 0.012, 0.25, 0.123, 0.5, 0.999, 1.0, 2.5, 12.34, 20.0]
    series = [{"series": f"ralex_budget_{name}{{{exporter}}}", "values": f"{value}x5"}
              for name, value in (("spent_today_usd", 0.0068), ("daily_limit_usd", 0.012),
                                  ("fraction_used", 0.5667), ("suggested_limit_usd", 2),
                                  ("seconds_to_reset", 60))]
    series.append({"series": f'ralex_budget_tier{{tier="full",{exporter}}}', "values": "1x5"})
    alerts = []
    for threshold, amount in enumerate(amounts, start=1):
        labels = f'threshold="{threshold}",budget_day="2026-11-30",{exporter}'
        series += [{"series": f"ralex_budget_threshold_crossed{{{labels}}}", "values": "1x5"},
                   {"series": f'ralex_budget_crossing_spent_usd{{threshold="{threshold}",{exporter}}}',
                    "values": f"{amount}x5"},
                   {"series": f'ralex_budget_crossing_limit_usd{{threshold="{threshold}",{exporter}}}',
                    "values": "0.012x5"}]
        alerts.append({"exp_labels": {"threshold": str(threshold), "budget_day": "2026-11-30", "severity": "info",
                                      "job": "budget-exporter", "instance": "budget-exporter:9464"},
                       "exp_annotations": {
                           "summary": f"{threshold} % of today's Ralex budget reached",
                           "description": f"{threshold} % of today's budget was spent (at {usd(amount)} of $0.012); "
                                          "now $0.0068 of $0.012 spent (56.67%); cheap and smart models still run; "
                                          "resets at midnight (in 1m 0s); raise it: ralexctl budget set 2"}})
    tests = {"rule_files": ["/rules/ralex.yml"], "evaluation_interval": "5s", "tests": [{
        "interval": "5s", "input_series": series,
        "alert_rule_test": [{"eval_time": "10s", "alertname": "RalexBudgetThreshold", "exp_alerts": alerts}]}]}
    result = promtool(tests, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_severity_outage_and_midnight(tmp_path: Path):
    """promtool unit test of the rule: severity by threshold, the user's text, an exporter outage keeps
    the alert firing (no resolve, so no second notification), and midnight resolves it."""
    exporter = 'job="budget-exporter",instance="budget-exporter:9464"'
    tests = {"rule_files": ["/rules/ralex.yml"], "evaluation_interval": "5s", "tests": [{
        "interval": "5s",
        "input_series": [
            # day 1: 80 % crossed at 0 s; the exporter fails from 100 s to 150 s (no series: stale);
            # midnight at 200 s: the day's crossings vanish, day 2's 50 % appears at 250 s
            {"series": f'ralex_budget_threshold_crossed{{threshold="80",budget_day="2026-11-30",{exporter}}}',
             "values": "1x20 stale _x9 1x9 stale"},
            {"series": f'ralex_budget_threshold_crossed{{threshold="100",budget_day="2026-11-30",{exporter}}}',
             "values": "1x20 stale _x9 1x9 stale"},
            {"series": f'ralex_budget_threshold_crossed{{threshold="50",budget_day="2026-12-01",{exporter}}}',
             "values": "_x50 1x10"},
            {"series": f"ralex_exporter_up{{{exporter}}}", "values": "1x20 0x10 1x30"},
            *({"series": f'ralex_budget_crossing_{what}_usd{{threshold="{t}",{exporter}}}', "values": f"{v}x60"}
              for t, spent, limit in (("50", 2.5, 5), ("80", 4, 5), ("100", 0.0068, 0.012))
              for what, v in (("spent", spent), ("limit", limit))),
            {"series": f"ralex_budget_spent_today_usd{{{exporter}}}", "values": "4x60"},
            {"series": f"ralex_budget_daily_limit_usd{{{exporter}}}", "values": "10x60"},
            {"series": f"ralex_budget_fraction_used{{{exporter}}}", "values": "0.4x60"},
            {"series": f"ralex_budget_suggested_limit_usd{{{exporter}}}", "values": "20x60"},
            {"series": f"ralex_budget_seconds_to_reset{{{exporter}}}", "values": "11520x60"},
            {"series": f'ralex_budget_tier{{tier="economy",{exporter}}}', "values": "1x60"},
        ],
        "alert_rule_test": [
            *({"eval_time": at, "alertname": "RalexBudgetThreshold", "exp_alerts": [expected("80"), expected("100")]}
              for at in ("50s", "110s", "130s", "150s", "200s")),  # before, during and after the outage
            {"eval_time": "230s", "alertname": "RalexBudgetThreshold", "exp_alerts": []},  # midnight
            {"eval_time": "270s", "alertname": "RalexBudgetThreshold", "exp_alerts": [expected("50", "2026-12-01")]},
        ],
    }]}
    result = promtool(tests, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
