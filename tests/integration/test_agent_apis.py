"""What Claude Code and Codex speak, through the same budget: Anthropic ``/v1/messages`` and OpenAI
``/v1/responses`` on the real LiteLLM proxy with Ralex's gate and hooks, real Postgres, the fake OpenRouter.

LiteLLM translates both APIs to an OpenRouter chat completion (``/v1/responses`` through its chat
bridge), so the fake upstream records what OpenRouter would receive: the routed model and Ralex's cap.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Fake, Proxy, wait_until

pytestmark = pytest.mark.integration

CHEAP_MODEL = "google/gemini-2.5-flash-lite"
EDIT = '[[tool:edit {"path": "hello.py"}]]'
ANTHROPIC_TOOLS = [{"name": "edit", "description": "edit a file", "input_schema": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]
RESPONSES_TOOLS = [{"type": "function", "name": "edit", "description": "edit a file", "strict": False,
                    "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                                   "required": ["path"]}}]
CLAUDE_CODE_DEFAULTS: dict[str, Any] = {  # what Claude Code 2.1 sends besides model, messages and tools
    "max_tokens": 32000, "metadata": {"user_id": '{"session_id": "s-1"}'},
    "thinking": {"type": "adaptive", "display": "omitted"}, "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "system": [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}],
}
CODEX_DEFAULTS: dict[str, Any] = {  # what Codex 0.171 sends besides model, input and tools
    "tool_choice": "auto", "parallel_tool_calls": True, "reasoning": {"effort": "high", "summary": "auto"},
    "store": False, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "p-1",
    "client_metadata": {"session_id": "s-1"},
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def add_key(proxy: Proxy, name: str, budget: float | None = None) -> str:
    response = proxy.client.post("/ralex/keys", json={"name": name, "budget": budget})
    assert response.status_code == 200, response.text
    return str(response.json()["key"])


def post(proxy: Proxy, path: str, body: dict[str, Any], key: str | None = None, *,
         header: str = "authorization") -> httpx.Response:
    headers = {}
    if key is not None:
        headers = {"x-api-key": key} if header == "x-api-key" else {"Authorization": f"Bearer {key}"}
    else:
        headers = dict(proxy.client.headers)
    return httpx.post(f"{proxy.url}{path.lstrip('/')}", json=body, headers=headers, timeout=60)


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    events = []
    for line in response.text.splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            events.append(json.loads(line[5:]))
    return events


def assert_settled(proxy: Proxy, response: httpx.Response, sent: dict[str, Any], key_name: str, alias: str) -> None:
    """The ledger row says who, which alias, and OpenRouter's own cost of what the upstream generated."""
    row = proxy.row(response)
    assert row["key_name"] == key_name
    assert row["alias_routed"] == alias
    assert row["status"] == "ok", row
    assert row["cost_source"] == "upstream", row
    assert row["generation_id"] == sent["generation_id"]
    assert float(row["cost_usd"]) == pytest.approx(sent["billed_cost"])
    assert float(row["cost_usd"]) > 0


# --- Anthropic Messages (Claude Code) ----------------------------------------------------------------

def messages_turn(messages: list[dict[str, Any]], stream: bool = False) -> dict[str, Any]:
    return {"model": "auto", "messages": messages, "tools": ANTHROPIC_TOOLS, "stream": stream,
            **CLAUDE_CODE_DEFAULTS}


def anthropic_answer(response: httpx.Response, stream: bool) -> list[dict[str, Any]]:
    """The assistant's content blocks, from the JSON answer or rebuilt from its SSE events."""
    if not stream:
        return list(response.json()["content"])
    events = sse_events(response)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start", kinds
    assert kinds[-1] == "message_stop", kinds
    blocks: list[dict[str, Any]] = []
    partial = ""
    for event in events:
        if event["type"] == "content_block_start":
            blocks.append(dict(event["content_block"]))
            partial = ""
        elif event["type"] == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                blocks[-1]["text"] = blocks[-1].get("text", "") + delta["text"]
            elif delta["type"] == "input_json_delta":
                partial += delta["partial_json"]
        elif event["type"] == "content_block_stop" and blocks[-1]["type"] == "tool_use":
            blocks[-1]["input"] = json.loads(partial) if partial else {}
    return blocks


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_claude_code_turn_with_a_tool_round_trip_is_routed_capped_and_settled(live: Proxy, upstream: Fake,
                                                                               stream: bool):
    name = unique("laptop-claude")
    key = add_key(live, name, 2)
    history: list[dict[str, Any]] = [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>context</system-reminder>"},
        {"type": "text", "text": f"fix the typo in hello.py {EDIT}", "cache_control": {"type": "ephemeral"}}]}]
    first = post(live, "/v1/messages", messages_turn(history, stream), key, header="x-api-key")
    assert first.status_code == 200, first.text
    assert first.headers["x-ralex-route"] == "cheap"
    assert first.headers["x-ralex-key"] == name
    assert first.headers["x-ralex-dropped"] == "thinking,output_config,context_management"
    blocks = anthropic_answer(first, stream)
    tool_use = next(b for b in blocks if b["type"] == "tool_use")
    assert tool_use["name"] == "edit"
    assert tool_use["input"] == {"path": "hello.py"}

    history += [{"role": "assistant", "content": blocks},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"],
                                              "content": "edited hello.py"}]}]
    second = post(live, "/v1/messages", messages_turn(history, stream), key)
    assert second.status_code == 200, second.text
    assert second.headers["x-ralex-route"] == "cheap"  # the turn's tool step keeps its model
    assert second.headers["x-ralex-reason"].startswith("same turn")
    assert any(b.get("text") == "Done." for b in anthropic_answer(second, stream))

    sent = upstream.requests()
    assert len(sent) == 2
    for response, received in zip((first, second), sent, strict=True):
        assert received["path"] == "/api/v1/chat/completions"
        assert received["model"] == CHEAP_MODEL
        assert received["max_tokens"] == int(response.headers["x-ralex-max-tokens"]) <= 32000
        assert received["stream"] is stream
        for bill_raiser in ("reasoning_effort", "thinking", "reasoning", "n", "max_completion_tokens"):
            assert received["body"].get(bill_raiser) in (None, 1), (bill_raiser, received["body"])
        assert_settled(live, response, received, name, "cheap")
    assert sent[1]["body"]["messages"][-1]["role"] == "tool"


# --- OpenAI Responses (Codex) ------------------------------------------------------------------------

def responses_turn(items: list[dict[str, Any]], stream: bool = False) -> dict[str, Any]:
    return {"model": "auto", "input": items, "stream": stream,
            "tools": [*RESPONSES_TOOLS, {"type": "web_search", "external_web_access": False}], **CODEX_DEFAULTS}


def responses_output(response: httpx.Response, stream: bool) -> list[dict[str, Any]]:
    if not stream:
        return list(response.json()["output"])
    events = sse_events(response)
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "response.completed", kinds
    return list(events[-1]["response"]["output"])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_codex_turn_with_a_tool_round_trip_is_routed_capped_and_settled(live: Proxy, upstream: Fake,
                                                                         stream: bool):
    name = unique("laptop-codex")
    key = add_key(live, name, 2)
    items: list[dict[str, Any]] = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                         "text": f"fix the typo in hello.py {EDIT}"}]}]
    first = post(live, "/v1/responses", responses_turn(items, stream), key)
    assert first.status_code == 200, first.text
    assert first.headers["x-ralex-route"] == "cheap"
    assert first.headers["x-ralex-key"] == name
    assert first.headers["x-ralex-dropped"] == "reasoning,tools.web_search"
    call = next(i for i in responses_output(first, stream) if i["type"] == "function_call")
    assert call["name"] == "edit"
    assert json.loads(call["arguments"]) == {"path": "hello.py"}

    items += [{"type": "function_call", "call_id": call["call_id"], "name": "edit", "arguments": call["arguments"]},
              {"type": "function_call_output", "call_id": call["call_id"], "output": "edited hello.py"}]
    second = post(live, "/v1/responses", responses_turn(items, stream), key)
    assert second.status_code == 200, second.text
    assert second.headers["x-ralex-route"] == "cheap"
    assert second.headers["x-ralex-reason"].startswith("same turn")
    texts = [c.get("text") for i in responses_output(second, stream) if i["type"] == "message"
             for c in i["content"]]
    assert "Done." in texts

    sent = upstream.requests()
    assert len(sent) == 2
    for response, received in zip((first, second), sent, strict=True):
        assert received["path"] == "/api/v1/chat/completions"  # the bridge: never OpenRouter's /responses
        assert received["model"] == CHEAP_MODEL
        assert received["max_tokens"] == int(response.headers["x-ralex-max-tokens"])
        assert received["stream"] is stream
        for bill_raiser in ("reasoning_effort", "reasoning", "web_search_options", "n", "max_completion_tokens"):
            assert received["body"].get(bill_raiser) in (None, 1), (bill_raiser, received["body"])
        assert [t["function"]["name"] for t in received["body"]["tools"]] == ["edit"]
        assert_settled(live, response, received, name, "cheap")


# --- refusals ----------------------------------------------------------------------------------------

def test_over_budget_is_a_402_in_each_apis_own_shape_with_ralex_headers(live: Proxy, upstream: Fake):
    live.set_remaining(0.00001)
    plain = {"model": "smart", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    messages = post(live, "/v1/messages", plain)
    responses = post(live, "/v1/responses", {"model": "smart", "input": "hi"})
    streamed = post(live, "/v1/messages", {**plain, "stream": True})
    for refused in (messages, responses, streamed):
        assert refused.status_code == 402, refused.text
        assert refused.headers["x-ralex-route"] == "refused"
        assert refused.headers["x-ralex-key"] == "operator"
        assert "x-ralex-budget-resets-at" in refused.headers
    assert messages.json()["type"] == "error"
    assert "ralexctl budget" in messages.json()["error"]["message"]
    assert "ralexctl budget" in responses.json()["error"]["message"]
    assert upstream.requests() == []


BASE = {"messages": {"model": "auto", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]},
        "responses": {"model": "auto", "input": "hi"}}


@pytest.mark.parametrize(("api", "field", "value"), [
    ("messages", "n", 3),
    ("messages", "max_completion_tokens", 99999),
    ("messages", "reasoning_effort", "high"),
    ("messages", "web_search_options", {}),
    ("messages", "plugins", [{"id": "web"}]),
    ("messages", "models", ["openai/o1-pro"]),
    ("messages", "provider", {"order": ["x"]}),
    ("messages", "service_tier", "priority"),
    ("messages", "mcp_servers", [{"url": "http://x"}]),
    ("messages", "extra_body", {"plugins": [{"id": "web"}]}),
    ("messages", "tools", [{"type": "web_search_20250305", "name": "web_search"}]),
    ("messages", "service_tier_x", 1),
    ("responses", "use_chat_completions_api", False),
    ("responses", "background", True),
    ("responses", "max_tool_calls", 50),
    ("responses", "service_tier", "priority"),
    ("responses", "previous_response_id", "resp_1"),
    ("responses", "extra_body", {"plugins": [{"id": "web"}]}),
    ("responses", "models", ["openai/o1-pro"]),
    ("responses", "plugins", [{"id": "web"}]),
    ("responses", "provider", {"order": ["x"]}),
    ("responses", "store", True),
    ("responses", "text", {"verbosity": "high"}),
    ("responses", "tools", [{"type": "code_interpreter"}]),
    ("responses", "reasoning_effort", "high"),
])
def test_each_field_that_would_raise_the_bill_is_refused_by_name(live: Proxy, upstream: Fake, api: str,
                                                                  field: str, value: Any):
    refused = post(live, f"/v1/{api}", {**BASE[api], field: value})
    assert refused.status_code == 400, refused.text
    message = refused.json()["error"]["message"]
    assert field.split(".")[0] in message or str(value[0].get("type") if isinstance(value, list) else "") in message
    if api == "messages":
        assert refused.json()["type"] == "error"
    assert upstream.requests() == []


@pytest.mark.parametrize("path", ["/responses", "/openai/v1/responses", "/v1/messages/batches",
                                  "/v1/responses/resp_1", "/anthropic/v1/messages", "/api/event_logging/batch"])
def test_other_routes_of_these_apis_are_not_served(live: Proxy, upstream: Fake, path: str):
    response = post(live, path, {"model": "auto", "input": "hi", "messages": [{"role": "user", "content": "hi"}],
                                 "max_tokens": 10})
    assert response.status_code == 404, response.text
    assert upstream.requests() == []


def test_count_tokens_is_answered_locally_from_the_prompt_bound(live: Proxy, upstream: Fake):
    name = unique("count")
    key = add_key(live, name)
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}], "tools": ANTHROPIC_TOOLS}
    counted = post(live, "/v1/messages/count_tokens", body, key, header="x-api-key")
    assert counted.status_code == 200, counted.text
    assert counted.json()["input_tokens"] >= len("hello there")
    assert post(live, "/v1/messages/count_tokens", body, "sk-ralex-wrong").status_code == 401
    assert upstream.requests() == []


def test_the_bridge_setting_stays_in_the_proxy(live: Proxy, upstream: Fake):
    """Every deployment bridges /v1/responses to chat completions; chat requests reach OpenRouter as before."""
    served = live.chat("fix the typo in hello.py", model="cheap")
    assert served.status_code == 200, served.text
    body = upstream.requests()[0]["body"]
    assert "use_chat_completions_api" not in body
    assert set(body) <= {"model", "messages", "max_tokens", "n", "usage", "stream", "stream_options"}, body


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/messages", {"model": "smart", "max_tokens": 300, "stream": True,
                      "messages": [{"role": "user", "content": "design a plugin system"}]}),
    ("/v1/responses", {"model": "smart", "max_output_tokens": 300, "stream": True,
                       "input": "design a plugin system"}),
], ids=["messages", "responses"])
def test_a_stream_the_client_leaves_is_charged_what_openrouter_billed(live: Proxy, upstream: Fake,
                                                                              path: str, body: dict[str, Any]):
    upstream.faults({"kind": "slow", "chunk_delay": 0.3, "times": 1})
    upstream.script({"content": "word " * 60})
    with live.client.stream("POST", path, json=body) as streamed:
        assert streamed.status_code == 200
        request_id = streamed.headers["x-ralex-request-id"]
        for n, _ in enumerate(streamed.iter_lines()):
            if n >= 4:
                break
    billed = wait_until(lambda: [r["billed_cost"] for r in upstream.requests() if r["billed_cost"]], 20,
                        what="the upstream to bill the cancelled stream")
    row = wait_until(lambda: live.ledger("request_id = %s", (request_id,)), 40, what="the cancelled row")[0]
    assert row["status"] == "cancelled"
    assert row["cost_source"] == "generation"  # OpenRouter's record of what it generated, not the hold
    assert float(row["cost_usd"]) == pytest.approx(billed[0])


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/messages", {"model": "cheap", "max_tokens": 10**6, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/responses", {"model": "cheap", "max_output_tokens": 10**6, "input": "hi"}),
    ("/v1/responses", {"model": "cheap", "input": "hi"}),
], ids=["messages-huge", "responses-huge", "responses-none"])
def test_the_output_cap_upstream_is_ralexs_in_each_api(live: Proxy, upstream: Fake, path: str,
                                                       body: dict[str, Any]):
    served = post(live, path, body)
    assert served.status_code == 200, served.text
    cap = int(served.headers["x-ralex-max-tokens"])
    assert cap < 10**6
    [received] = upstream.requests()
    assert received["max_tokens"] == cap
    assert live.row(served)["max_tokens"] == cap


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/messages", {"model": "cheap", "max_tokens": 300, "messages": [{"role": "user", "content": "add a doc"}]}),
    ("/v1/messages", {"model": "cheap", "max_tokens": 300, "stream": True,
                      "messages": [{"role": "user", "content": "add a doc"}]}),
    ("/v1/responses", {"model": "cheap", "max_output_tokens": 300, "input": "add a docstring"}),
    ("/v1/responses", {"model": "cheap", "max_output_tokens": 300, "stream": True, "input": "add a docstring"}),
], ids=["messages", "messages-stream", "responses", "responses-stream"])
def test_a_failed_call_falls_back_capped_and_is_charged_once(live: Proxy, upstream: Fake, path: str,
                                                             body: dict[str, Any]):
    upstream.faults({"kind": "status", "status": 503, "model": CHEAP_MODEL})
    served = post(live, path, body)
    assert served.status_code == 200, served.text
    calls = upstream.requests()
    assert [(c["model"], c["status"]) for c in calls] == [(CHEAP_MODEL, 503), ("anthropic/claude-sonnet-4.5", 200)]
    assert calls[1]["max_tokens"] is not None
    assert calls[1]["max_tokens"] <= 300
    row = live.row(served)
    assert (row["alias_routed"], row["fallback"], row["status"]) == ("smart", True, "ok")
    assert row["max_tokens"] == calls[1]["max_tokens"]
    assert float(row["cost_usd"]) == pytest.approx(calls[1]["billed_cost"])
