"""The fake OpenRouter speaks OpenRouter's wire protocol and obeys its control API."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fake_openrouter import FakeState, create_app

AUTH = {"Authorization": "Bearer sk-or-v1-0123456789abcdef"}
LITE = "google/gemini-2.5-flash-lite"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def state() -> FakeState:
    return FakeState()


@pytest.fixture
def client(state: FakeState) -> Iterator[TestClient]:
    with TestClient(create_app(state)) as test_client:
        yield test_client


def chat(client: TestClient, text: str = "Hello there, how are you doing today?", **extra: Any) -> Any:
    body = {"model": LITE, "messages": [{"role": "user", "content": text}], **extra}
    return client.post("/api/v1/chat/completions", json=body, headers=AUTH)


def sse_events(raw: str) -> list[str]:
    """The raw SSE events (comments and ``data:`` lines) of a stream, in order."""
    return [event for event in raw.split("\n\n") if event]


def stream_chunks(client: TestClient, **body: Any) -> tuple[list[str], list[dict[str, Any]]]:
    payload = {"model": LITE, "messages": [{"role": "user", "content": "Hello"}], "stream": True, **body}
    with client.stream("POST", "/api/v1/chat/completions", json=payload, headers=AUTH) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    chunks = [json.loads(e.removeprefix("data: ")) for e in events if e.startswith("data: {")]
    return events, chunks


def expected_cost(model: str, prompt: int, completion: int) -> float:
    pricing = next(m["pricing"] for m in FakeState().catalog if m["id"] == model)
    return float(Decimal(pricing["prompt"]) * prompt + Decimal(pricing["completion"]) * completion)


def test_models_have_openrouter_shape_and_string_prices(client: TestClient) -> None:
    models = {m["id"]: m for m in client.get("/api/v1/models").json()["data"]}

    assert set(models) == {
        "google/gemini-2.5-flash-lite",
        "google/gemini-2.5-flash",
        "anthropic/claude-sonnet-4.5",
        "openai/gpt-4o-mini",
    }
    lite = models[LITE]
    assert lite["pricing"]["prompt"] == "0.0000001"
    assert lite["pricing"]["completion"] == "0.0000004"
    assert lite["pricing"]["request"] == "0"
    assert lite["pricing"]["image"] == "0"
    assert lite["context_length"] == 1048576
    assert models["anthropic/claude-sonnet-4.5"]["context_length"] == 1000000
    for model in models.values():
        assert {"id", "name", "created", "context_length", "architecture", "top_provider"} <= set(model)
        assert all(isinstance(price, str) for price in model["pricing"].values())


def test_catalog_can_be_overridden_through_state() -> None:
    state = FakeState(catalog=[{"id": "x/y", "pricing": {"prompt": "0.5", "completion": "1"}}])
    with TestClient(create_app(state)) as client:
        assert [m["id"] for m in client.get("/api/v1/models").json()["data"]] == ["x/y"]
        body = {"model": "x/y", "messages": [{"role": "user", "content": "abcd"}]}
        usage = client.post("/api/v1/chat/completions", json=body, headers=AUTH).json()["usage"]
    assert usage["cost"] == pytest.approx(usage["prompt_tokens"] * 0.5 + usage["completion_tokens"] * 1)


def test_key_reports_label_and_usage_served_so_far(client: TestClient) -> None:
    before = client.get("/api/v1/key", headers=AUTH).json()["data"]
    cost = chat(client).json()["usage"]["cost"]
    after = client.get("/api/v1/key", headers=AUTH).json()["data"]

    assert before["label"] == "sk-or-v1-012...def"
    assert before["usage"] == 0
    assert before["limit"] is None
    assert before["limit_remaining"] is None
    assert before["is_free_tier"] is False
    assert set(before["rate_limit"]) >= {"requests", "interval"}
    assert after["usage"] == pytest.approx(cost)
    assert after["usage_daily"] == pytest.approx(cost)


def test_key_needs_a_known_key(client: TestClient) -> None:
    missing = client.get("/api/v1/key")
    unknown = client.get("/api/v1/key", headers={"Authorization": "Bearer sk-ant-nope"})

    assert missing.status_code == 401
    assert missing.json() == {"error": {"code": 401, "message": "No auth credentials found"}}
    assert unknown.status_code == 401
    assert unknown.json()["error"]["message"] == "User not found."


def test_completion_usage_cost_is_tokens_times_catalog_prices(client: TestClient) -> None:
    text = "Hello there, how are you doing today?"
    response = chat(client, text)
    body = response.json()

    assert response.status_code == 200
    assert body["id"].startswith("gen-")
    assert body["object"] == "chat.completion"
    assert body["model"] == LITE
    assert body["provider"] == "Google"
    assert body["system_fingerprint"] is None
    choice = body["choices"][0]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["native_finish_reason"] == "STOP"
    reply = "OK: " + text[:40]
    assert choice["message"] == {"role": "assistant", "content": reply, "refusal": None, "reasoning": None}
    usage = body["usage"]
    assert usage["prompt_tokens"] == math.ceil(len(text) / 4) + 4
    assert usage["completion_tokens"] == math.ceil(len(reply) / 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["cost"] == pytest.approx(
        expected_cost(LITE, usage["prompt_tokens"], usage["completion_tokens"])
    )
    assert usage["is_byok"] is False
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}
    assert usage["cost_details"] == {"upstream_inference_cost": None}


def test_prompt_tokens_count_text_parts_and_tool_definitions(client: TestClient) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {}}],
        },
    ]
    body = {"model": LITE, "messages": messages, "tools": TOOLS}
    usage = client.post("/api/v1/chat/completions", json=body, headers=AUTH).json()["usage"]

    chars = len("You are terse.") + len("Look") + len(json.dumps(TOOLS, separators=(",", ":")))
    assert usage["prompt_tokens"] == math.ceil(chars / 4) + 4 * 2


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_truncates_reply_and_reports_length(client: TestClient, field: str) -> None:
    body = chat(client, "a long question that deserves a long answer", **{field: 3}).json()

    assert body["usage"]["completion_tokens"] <= 3
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "OK: a long question"[:12]


def test_stream_sends_comment_role_content_finish_usage_done(client: TestClient) -> None:
    events, chunks = stream_chunks(client)

    assert events[0] == ": OPENROUTER PROCESSING"
    assert events[-1] == "data: [DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == "OK: Hello"
    finish = chunks[-2]["choices"][0]
    assert finish["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == math.ceil(len("OK: Hello") / 4)
    assert usage["cost"] == pytest.approx(
        expected_cost(LITE, usage["prompt_tokens"], usage["completion_tokens"])
    )


def test_stream_content_comes_in_pieces_of_a_few_words(client: TestClient) -> None:
    text = "one two three four five six seven eight nine ten"
    _, chunks = stream_chunks(client, messages=[{"role": "user", "content": text}])

    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert len(pieces) > 2
    assert "".join(pieces) == "OK: " + text[:40]


def test_tool_call_from_marker(client: TestClient) -> None:
    text = 'Read it [[tool:read_file {"path": "README.md"}]]'
    body = chat(client, text, tools=TOOLS).json()

    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] in (None, "")
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["type"] == "function"
    assert call["function"]["name"] == "read_file"
    assert json.loads(call["function"]["arguments"]) == {"path": "README.md"}
    assert body["usage"]["completion_tokens"] == math.ceil(len(call["function"]["arguments"]) / 4)


def test_tool_call_from_marker_streams_name_then_argument_pieces(client: TestClient) -> None:
    text = 'Read it [[tool:read_file {"path": "docs/a/rather/long/path.md"}]]'
    _, chunks = stream_chunks(client, messages=[{"role": "user", "content": text}], tools=TOOLS)

    deltas = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert deltas[0]["index"] == 0
    assert deltas[0]["id"].startswith("call_")
    assert deltas[0]["type"] == "function"
    assert deltas[0]["function"]["name"] == "read_file"
    assert len(deltas) > 2
    arguments = "".join(d["function"]["arguments"] for d in deltas)
    assert json.loads(arguments) == {"path": "docs/a/rather/long/path.md"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert "usage" in chunks[-1]


def test_marker_is_ignored_without_tools_and_tool_result_gets_done(client: TestClient) -> None:
    plain = chat(client, "[[tool:read_file {}]]").json()["choices"][0]
    messages = [
        {"role": "user", "content": "[[tool:read_file {}]]"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "file contents"},
    ]  # fmt: skip
    body = {"model": LITE, "messages": messages, "tools": TOOLS}
    after_tool = client.post("/api/v1/chat/completions", json=body, headers=AUTH).json()["choices"][0]

    assert plain["finish_reason"] == "stop"
    assert "tool_calls" not in plain["message"]
    assert after_tool["message"]["content"] == "Done."
    assert after_tool["finish_reason"] == "stop"


def test_scripted_replies_are_consumed_in_order_and_by_model(client: TestClient) -> None:
    script = {
        "replies": [
            {"content": "for flash only", "model": "google/gemini-2.5-flash"},
            {"content": "first"},
            {"tool_calls": [{"name": "read_file", "arguments": {"path": "x"}}]},
        ]
    }
    assert client.post("/_fake/script", json=script).status_code == 200

    first = chat(client).json()["choices"][0]["message"]
    second = chat(client, tools=TOOLS).json()["choices"][0]["message"]
    third = chat(client).json()["choices"][0]["message"]
    flash = client.post(
        "/api/v1/chat/completions",
        json={"model": "google/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]},
        headers=AUTH,
    ).json()["choices"][0]["message"]

    assert first["content"] == "first"
    assert json.loads(second["tool_calls"][0]["function"]["arguments"]) == {"path": "x"}
    assert third["content"].startswith("OK: ")
    assert flash["content"] == "for flash only"


def test_status_fault_fires_once_then_clears(client: TestClient) -> None:
    fault = {"kind": "status", "status": 503, "times": 1}
    client.post("/_fake/faults", json={"faults": [fault]})

    failed = chat(client)
    recovered = chat(client)

    assert failed.status_code == 503
    assert failed.json() == {
        "error": {"code": 503, "message": "Provider returned error", "metadata": {"provider_name": "Google"}}
    }
    assert recovered.status_code == 200
    assert client.get("/_fake/faults").json() == {"faults": []}


def test_fault_restricted_to_a_model_spares_the_others(client: TestClient) -> None:
    fault = {"kind": "status", "status": 429, "times": 2, "model": "openai/gpt-4o-mini"}
    client.post("/_fake/faults", json={"faults": [fault]})

    assert chat(client).status_code == 200
    other = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    statuses = [
        client.post("/api/v1/chat/completions", json=other, headers=AUTH).status_code for _ in range(3)
    ]
    assert statuses == [429, 429, 200]


def test_midstream_error_streams_some_chunks_then_an_error_event(client: TestClient) -> None:
    client.post("/_fake/faults", json={"faults": [{"kind": "midstream_error", "after_chunks": 2}]})

    events, chunks = stream_chunks(client, messages=[{"role": "user", "content": "a b c d e f g h i j"}])

    assert events[0] == ": OPENROUTER PROCESSING"
    assert "data: [DONE]" not in events
    assert len(chunks) == 3
    error = chunks[-1]
    assert error["error"]["message"] == "Provider disconnected unexpectedly"
    assert error["choices"][0]["finish_reason"] == "error"
    assert client.get("/api/v1/key", headers=AUTH).json()["data"]["usage"] == 0


def test_slow_fault_spaces_out_stream_chunks(client: TestClient) -> None:
    client.post("/_fake/faults", json={"faults": [{"kind": "slow", "chunk_delay": 0.05}]})

    started = time.monotonic()
    _, chunks = stream_chunks(client)
    elapsed = time.monotonic() - started

    assert elapsed >= 0.05 * (len(chunks) - 2)


def test_timeout_fault_delays_the_answer(client: TestClient) -> None:
    client.post("/_fake/faults", json={"faults": [{"kind": "timeout", "seconds": 0.2}]})

    started = time.monotonic()
    response = chat(client)

    assert time.monotonic() - started >= 0.2
    assert response.status_code == 200
    assert chat(client).status_code == 200


def test_unknown_model_and_missing_fields_are_400(client: TestClient) -> None:
    unknown = client.post(
        "/api/v1/chat/completions",
        json={"model": "acme/nope", "messages": [{"role": "user", "content": "hi"}]},
        headers=AUTH,
    )
    no_messages = client.post("/api/v1/chat/completions", json={"model": LITE}, headers=AUTH)
    no_model = client.post(
        "/api/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, headers=AUTH
    )
    not_json = client.post("/api/v1/chat/completions", content=b"{nope", headers=AUTH)

    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == 400
    assert unknown.json()["error"]["message"] == "acme/nope is not a valid model ID"
    assert "metadata" in unknown.json()["error"]
    assert [r.status_code for r in (no_messages, no_model, not_json)] == [400, 400, 400]


def test_chat_without_auth_is_401(client: TestClient) -> None:
    body = {"model": LITE, "messages": [{"role": "user", "content": "hi"}]}

    missing = client.post("/api/v1/chat/completions", json=body)
    wrong = client.post("/api/v1/chat/completions", json=body, headers={"Authorization": "Bearer abc"})

    assert missing.status_code == 401
    assert missing.json()["error"] == {"code": 401, "message": "No auth credentials found"}
    assert wrong.status_code == 401


def test_requests_are_recorded_with_auth_redacted_and_reset_clears(client: TestClient) -> None:
    chat(client, max_tokens=7)
    client.post("/api/v1/chat/completions", json={"model": LITE, "messages": []})

    recorded = client.get("/_fake/requests").json()["requests"]

    assert [r["status"] for r in recorded] == [200, 401]
    assert recorded[0]["model"] == LITE
    assert recorded[0]["max_tokens"] == 7
    assert recorded[0]["authorized"] is True
    assert recorded[0]["body"]["max_tokens"] == 7
    assert "sk-or-" not in json.dumps(recorded)
    assert recorded[1]["authorized"] is False

    client.post("/_fake/reset")
    assert client.get("/_fake/requests").json() == {"requests": []}
    assert client.get("/api/v1/key", headers=AUTH).json()["data"]["usage"] == 0
