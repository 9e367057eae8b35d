"""The money path end to end: real LiteLLM proxy + Ralex hooks, real Postgres, fake OpenRouter."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal

import httpx
import psycopg
import pytest

from ralex.budget import CAP_PRESETS, resets_in
from tests.integration.conftest import BUDGET_TZ, MASTER_KEY, Fake, Proxy, wait_until

pytestmark = pytest.mark.integration

TOOLS = [{"type": "function", "function": {"name": "edit", "description": "edit a file", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


def upstream_models(fake: Fake) -> list[str]:
    return [r["model"] for r in fake.requests()]


# --- routing -----------------------------------------------------------------------------------

def test_auto_routes_by_task(live: Proxy, upstream: Fake):
    cheap = live.chat("fix the typo in the error message of load_user")
    smart = live.chat("review the payment service architecture for race conditions")
    assert cheap.status_code == smart.status_code == 200
    assert cheap.headers["x-ralex-route"] == "cheap"
    assert smart.headers["x-ralex-route"] == "smart"
    assert "task looks smart" in smart.headers["x-ralex-reason"]
    assert upstream_models(upstream) == ["google/gemini-2.5-flash-lite", "anthropic/claude-sonnet-4.5"]
    assert live.row(smart)["alias_routed"] == "smart"


def test_tool_steps_of_a_turn_keep_its_model_and_titles_go_cheap(live: Proxy, upstream: Fake):
    turn = [{"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": "analyze why the ETL job gets slower every week"}]
    first = live.chat(model="auto", messages=turn, tools=TOOLS)
    step = [*turn,
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "edit", "arguments": '{"path": "a.py"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "fix the typo; simple small format"}]
    second = live.chat(model="auto", messages=step, tools=TOOLS)
    title = live.chat(model="auto", messages=[
        {"role": "system", "content": "You are a title generator. You output ONLY a thread title."},
        {"role": "user", "content": "analyze why the ETL job gets slower every week"}])
    next_turn = live.chat(model="auto", messages=[*step, {"role": "assistant", "content": "Found it."},
                                                  {"role": "user", "content": "now fix the typo in etl.py"}])
    assert first.headers["x-ralex-route"] == "smart"
    assert second.headers["x-ralex-route"] == "smart"
    assert second.headers["x-ralex-reason"].startswith("same turn")
    assert title.headers["x-ralex-route"] == "cheap"
    assert title.headers["x-ralex-reason"].startswith("title/summary call")
    assert next_turn.headers["x-ralex-route"] == "cheap"


def test_a_turn_started_on_smart_steps_down_when_the_budget_drops(live: Proxy, upstream: Fake):
    turn = [{"role": "user", "content": "design an API for bulk imports that can resume after failures"}]
    assert live.chat(messages=turn).headers["x-ralex-route"] == "smart"
    live.set_remaining(1.0)
    step = live.chat(messages=[*turn, {"role": "assistant", "content": "step"}, {"role": "tool",
                                                                                 "tool_call_id": "x",
                                                                                 "content": "ok"}])
    assert step.headers["x-ralex-route"] == "cheap"
    assert "smart needs more than $2.00 left" in step.headers["x-ralex-reason"]


@pytest.mark.parametrize(("remaining", "asked", "routed", "tier"), [
    (4.0, "smart", "smart", "full"),
    (4.0, "yolo", "yolo", "full"),
    (1.2, "smart", "cheap", "economy"),
    (1.2, "yolo", "yolo", "economy"),
    (0.3, "smart", "cheap", "emergency"),
])
def test_overrides_are_honoured_within_the_tier_ceiling(live: Proxy, upstream: Fake, remaining, asked, routed,
                                                        tier):
    live.set_remaining(remaining)
    response = live.chat("design a plugin system", model=asked, max_tokens=1000)
    assert response.status_code == 200, response.text
    assert (response.headers["x-ralex-route"], response.headers["x-ralex-tier"]) == (routed, tier)


def test_emergency_mode_sends_cheap_with_200_tokens(live: Proxy, upstream: Fake):
    live.set_remaining(0.3)
    response = live.chat("explain the architecture of this repository", max_tokens=4000)
    assert response.status_code == 200
    assert response.headers["x-ralex-route"] == "cheap"
    assert upstream.requests()[-1]["max_tokens"] == 200
    assert "emergency mode" in response.headers["x-ralex-reason"]


# --- refusal -----------------------------------------------------------------------------------

def test_over_budget_is_refused_with_402_reset_time_and_how_to_raise(live: Proxy, upstream: Fake):
    live.set_remaining(0.0)
    before = datetime.fromisoformat(live.budget()["now"])
    response = live.chat("fix the typo")
    after = datetime.fromisoformat(live.budget()["now"])
    assert response.status_code == 402
    message = response.json()["error"]["message"]
    found = re.match(r"Daily budget \$[\d.]+ exhausted \(\$[\d.]+ spent; .*\); resets at 00:00 "
                     + re.escape(BUDGET_TZ) + r" \(in (\d+h\d\dm|\d+m)\)\. Raise it with: ralexctl budget set \d+",
                     message)
    assert found, message
    # the wait the proxy's own clock gave at the refusal, between just before and just after it
    assert found.group(1) in {resets_in(before, BUDGET_TZ), resets_in(after, BUDGET_TZ)}, message
    assert response.headers["x-ralex-route"] == "refused"
    assert upstream.requests() == []
    refused = wait_until(lambda: live.ledger("status = 'refused' AND reason LIKE %s", ("%" + message[:40] + "%",)))
    assert float(refused[-1]["cost_usd"]) == 0


def test_fifty_concurrent_requests_cannot_overshoot(each_book: Proxy, upstream: Fake):
    """$0.01 left, 50 requests at once (each slowed upstream so all are in flight together), with the
    book in memory and shared through Postgres."""
    live = each_book
    live.set_remaining(0.01)
    limit = live.budget()["limit"]
    upstream.faults({"kind": "slow", "chunk_delay": 0.3, "times": None})
    prompt = "add a docstring to the Cache class " + "x" * 3_000  # ~$0.0009 worst case each (1 token per byte)

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(lambda _: live.chat(prompt, model="cheap", max_tokens=1500), range(50)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 402}, statuses
    served = [live.row(r) for r in responses if r.status_code == 200]
    wait_until(lambda: live.budget()["in_flight"] == 0, 30, what="all holds settled")
    worst = max(float(row["reserved_usd"]) for row in served)
    spent = live.budget()["spent"]
    assert spent - limit <= worst, f"spent {spent} is over the limit {limit} by more than one request ({worst})"
    assert len(upstream.requests()) == len(served)


# --- settling ----------------------------------------------------------------------------------

def test_ledger_holds_openrouters_real_cost_for_plain_and_streamed_replies(live: Proxy, upstream: Fake):
    plain = live.chat("add a docstring to the Cache class", model="cheap")
    with live.client.stream("POST", "/v1/chat/completions", json={
        "model": "smart", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "design a retry policy"}],
    }) as streamed:
        chunks = [line for line in streamed.iter_lines() if line.startswith("data: ")]
        stream_headers = streamed.headers
    assert chunks[-1] == "data: [DONE]"
    usage = [json.loads(c[6:])["usage"] for c in chunks[:-1] if json.loads(c[6:]).get("usage")][-1]
    fake_costs = [r for r in upstream.state.requests]
    assert len(fake_costs) == 2
    plain_row = live.row(plain)
    stream_row = live.ledger("request_id = %s", (stream_headers["x-ralex-request-id"],)) or \
        wait_until(lambda: live.ledger("request_id = %s", (stream_headers["x-ralex-request-id"],)))
    assert Decimal(str(plain.json()["usage"]["cost"])) == plain_row["cost_usd"].normalize()
    assert stream_row[0]["stream"] is True
    assert float(stream_row[0]["cost_usd"]) == pytest.approx(usage["cost"], rel=1e-6)
    assert plain_row["cost_source"] == stream_row[0]["cost_source"] == "upstream"
    assert float(plain_row["cost_usd"]) < float(plain_row["reserved_usd"])
    with psycopg.connect(live.dsn) as conn:
        total, summed = conn.execute(
            "SELECT t.spent_usd, (SELECT sum(cost_usd) FROM ledger l WHERE l.budget_day = t.budget_day)"
            " FROM daily_totals t WHERE t.budget_day = %s", (plain_row["budget_day"],)).fetchone()
    assert total == summed


def test_failed_cheap_call_falls_back_to_smart_and_is_not_charged(live: Proxy, upstream: Fake):
    upstream.faults({"kind": "status", "status": 503, "model": "google/gemini-2.5-flash-lite"})
    response = live.chat("add a docstring", model="cheap", max_tokens=300)
    assert response.status_code == 200, response.text
    calls = upstream.requests()
    assert [(c["model"], c["status"]) for c in calls] == [("google/gemini-2.5-flash-lite", 503),
                                                          ("anthropic/claude-sonnet-4.5", 200)]
    row = live.row(response)
    assert (row["alias_routed"], row["fallback"], row["status"]) == ("smart", True, "ok")
    assert float(row["cost_usd"]) == pytest.approx(response.json()["usage"]["cost"])
    assert len(live.ledger("request_id = %s", (row["request_id"],))) == 1


def test_timeout_falls_back_too(live: Proxy, upstream: Fake):
    upstream.faults({"kind": "timeout", "seconds": 30, "model": "google/gemini-2.5-flash-lite"})
    response = live.chat("add a docstring", model="cheap", max_tokens=300)
    assert response.status_code == 200, response.text
    assert live.row(response)["alias_routed"] == "smart"


def test_no_fallback_when_the_budget_cannot_carry_smart(live: Proxy, upstream: Fake):
    live.set_remaining(1.0)
    spent = live.budget()["spent"]
    upstream.faults({"kind": "status", "status": 503, "model": "google/gemini-2.5-flash-lite"})
    response = live.chat("add a docstring", model="cheap", max_tokens=300)
    assert response.status_code >= 500
    assert upstream_models(upstream) == ["google/gemini-2.5-flash-lite"]
    wait_until(lambda: live.budget()["in_flight"] == 0)
    assert live.budget()["spent"] == pytest.approx(spent)
    errors = wait_until(lambda: live.ledger("status = 'error' AND ts > now() - interval '1 minute'"))
    assert float(errors[-1]["cost_usd"]) == 0


# --- live settings -----------------------------------------------------------------------------

def test_budget_change_applies_on_the_next_request_without_restart(live: Proxy, upstream: Fake):
    assert live.chat("design a plugin system").headers["x-ralex-route"] == "smart"
    live.set_remaining(1.0)
    assert live.chat("design a plugin system, part two").headers["x-ralex-route"] == "cheap"
    live.set_remaining(0.0)
    assert live.chat("design a plugin system, part three").status_code == 402
    live.set_remaining(4.0)
    assert live.chat("design a plugin system, part four").headers["x-ralex-route"] == "smart"


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "status", "text"), [
    (b"{not json", 400, "not valid JSON"),
    (b'{"model": "auto"}', 400, "no 'messages'"),
    (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}', 400,
     "use one of: auto, cheap, smart, yolo"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}', 400,
     "positive whole number"),
])
def test_bad_requests_get_a_clear_error_and_reach_nobody(live: Proxy, upstream: Fake, body, status, text):
    response = live.client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert text in response.json()["error"]["message"]
    assert upstream.requests() == []


def test_wrong_key_says_which_key_to_use(live: Proxy, upstream: Fake):
    response = httpx.post(f"{live.url}v1/chat/completions", headers={"Authorization": "Bearer nope"},
                          json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 401
    assert "LITELLM_MASTER_KEY" in response.json()["error"]["message"]


def test_agent_key_may_chat_but_not_administer(live: Proxy, upstream: Fake):
    agent = {"Authorization": "Bearer sk-ralex-test-agent"}
    base = live.url
    ok = httpx.post(f"{base}v1/chat/completions", headers=agent,
                    json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200
    assert httpx.get(f"{base}ralex/budget", headers=agent).status_code == 401
    assert httpx.get(f"{base}key/list", headers=agent).status_code == 404  # not served by Ralex at all
    # LiteLLM's OpenRouter pass-through would forward with the proxy's key and no budget
    bypass = httpx.post(f"{base}openrouter/v1/chat/completions", headers=agent,
                        json={"model": "openai/o1-pro", "messages": [{"role": "user", "content": "hi"}]})
    assert bypass.status_code == 404
    assert len(upstream.requests()) == 1
    assert "o1-pro" not in upstream.requests()[0]["model"]


def test_huge_prompt_is_refused_before_it_costs_anything(live: Proxy, upstream: Fake):
    response = live.chat("summarise this: " + "lorem ipsum " * 200_000, model="cheap")
    assert response.status_code == 402
    assert "per-request cap" in response.json()["error"]["message"]
    assert upstream.requests() == []


def test_budget_endpoint_needs_the_master_key(live: Proxy):
    assert httpx.get(f"{live.url}ralex/budget").status_code == 401
    assert live.client.get("/ralex/budget").json()["timezone"] == BUDGET_TZ
    assert MASTER_KEY not in live.logs()


def test_a_per_request_cap_is_raised_live_as_the_refusal_says(live: Proxy, upstream: Fake):
    live.set_caps(**CAP_PRESETS["strict"])  # caps sized for chat prompts refuse an agent's step
    agent_step = "fix the typo in hello.py\n" + "def f(x):\n    return x\n" * 1_500  # ~12k tokens, like an agent
    refused = live.chat(agent_step, model="cheap")
    assert refused.status_code == 402
    message = refused.json()["error"]["message"]
    assert "per-request cap" in message
    suggested = message.rsplit("ralexctl budget cap cheap ", 1)[1].split()[0]

    bad = live.client.put("/ralex/budget", json={"caps": {"cheap": "-1"}})
    assert bad.status_code == 400
    assert "positive dollar amount" in bad.text
    try:
        changed = live.client.put("/ralex/budget", json={"caps": {"cheap": suggested}, "by": "test"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["prices"]["cheap"]["max_cost_per_request"] == float(suggested)
        served = live.chat(agent_step, model="cheap")  # the very next request, no restart
        assert served.status_code == 200, served.text
        assert served.headers["x-ralex-route"] == "cheap"
        assert len(upstream.requests()) == 1
    finally:
        live.set_caps(**CAP_PRESETS["agent"])


def test_a_growing_smart_session_stays_smart_held_by_the_bill_and_no_row_exceeds_its_hold(live: Proxy,
                                                                                          upstream: Fake):
    """Twelve agent steps on smart, each adding a tool call and a 12 KB result to a 60 KB system prompt.
    Counted by bytes, the late steps need more than smart's shipped $0.60 cap and would step down to
    cheap; held by what the upstream billed for the step before (ralex/prefix.py), every step stays on
    smart, and no row costs more than its hold."""
    from ralex.request import ChatRequest

    live.set_remaining(50)
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "You are a coding agent working in a Python repository. " * 1100},
        {"role": "user", "content": "review the payment service architecture for race conditions"}]
    routes, rows = [], []
    for n in range(12):
        response = live.chat(model="smart", messages=messages, tools=TOOLS, max_tokens=4096)
        assert response.status_code == 200, response.text
        routes.append(response.headers["x-ralex-route"])
        rows.append(live.row(response))
        call = {"id": f"c{n}", "type": "function",
                "function": {"name": "edit", "arguments": json.dumps({"path": f"m{n}.py"})}}
        result = f"# module {n}\n" + "def f(x):\n    return x\n" * 500
        messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": f"c{n}", "content": result}]
    by_bytes = ChatRequest.from_body({"model": "smart", "messages": messages[:-2], "tools": TOOLS}).prompt_tokens
    assert by_bytes * 3e-6 + 4096 * 15e-6 > CAP_PRESETS["agent"]["smart"]  # the byte bound alone would step down
    assert routes == ["smart"] * 12
    for row in rows:
        assert row["cost_usd"] <= row["reserved_usd"], row
