"""The fake OpenRouter speaks OpenRouter's wire protocol and obeys its control API."""

from __future__ import annotations

import base64
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from tests.fake_openrouter import FakeState, create_app
from tests.fake_openrouter.media import image_size

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
    delivered = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    (generation,) = client.get("/_fake/generations").json()["generations"]
    assert generation["id"] == error["id"]
    assert generation["finish_reason"] == "error"
    assert generation["cancelled"] is False
    assert generation["tokens_completion"] == math.ceil(len(delivered) / 4) > 0
    billed = expected_cost(LITE, generation["tokens_prompt"], generation["tokens_completion"])
    assert generation["total_cost"] == pytest.approx(billed)
    assert client.get("/api/v1/key", headers=AUTH).json()["data"]["usage"] == pytest.approx(billed)
    assert client.get("/_fake/requests").json()["requests"][0]["billed_cost"] == pytest.approx(billed)


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


# --- generations: lookup, billing, delay ---------------------------------------------------------

GENERATION_FIELDS = {
    "id", "upstream_id", "total_cost", "cache_discount", "upstream_inference_cost", "created_at", "model",
    "app_id", "streamed", "cancelled", "provider_name", "latency", "moderation_latency", "generation_time",
    "finish_reason", "native_finish_reason", "tokens_prompt", "tokens_completion", "native_tokens_prompt",
    "native_tokens_completion", "native_tokens_completion_images", "native_tokens_reasoning",
    "native_tokens_cached", "num_media_prompt", "num_input_audio_prompt", "num_media_completion",
    "num_search_results", "num_fetches", "origin", "usage", "is_byok", "external_user", "api_type", "router",
    "http_referer", "user_agent", "provider_responses", "preset_id", "service_tier", "data_region",
    "web_search_engine",
}  # fmt: skip


def lookup(client: Any, generation_id: str) -> Any:
    return client.get("/api/v1/generation", params={"id": generation_id}, headers=AUTH)


def test_generation_lookup_has_openrouter_shape_and_the_billed_cost(client: TestClient) -> None:
    response = client.post(
        "/api/v1/chat/completions",
        json={"model": LITE, "messages": [{"role": "user", "content": "Hi"}], "user": "user-42"},
        headers={**AUTH, "HTTP-Referer": "https://ralex.test/", "User-Agent": "ralex-test"},
    )
    body = response.json()
    generation_id = response.headers["X-Generation-Id"]

    found = lookup(client, generation_id)

    assert generation_id == body["id"]
    assert found.status_code == 200
    data = found.json()["data"]
    assert set(data) == GENERATION_FIELDS
    assert data["id"] == generation_id
    assert data["total_cost"] == body["usage"]["cost"] > 0
    assert data["usage"] == data["total_cost"]
    assert data["model"] == LITE
    assert data["provider_name"] == "Google"
    assert (data["streamed"], data["cancelled"], data["is_byok"]) == (False, False, False)
    assert (data["finish_reason"], data["native_finish_reason"]) == ("stop", "STOP")
    assert data["tokens_prompt"] == data["native_tokens_prompt"] == body["usage"]["prompt_tokens"]
    assert data["tokens_completion"] == data["native_tokens_completion"] == body["usage"]["completion_tokens"]
    assert data["num_media_prompt"] == 0
    assert data["upstream_id"]
    assert data["external_user"] == "user-42"
    assert data["origin"] == data["http_referer"] == "https://ralex.test/"
    assert data["user_agent"] == "ralex-test"
    assert datetime.fromisoformat(data["created_at"]).tzinfo is not None
    assert data["latency"] >= 0
    assert data["generation_time"] >= 0


def test_generation_lookup_needs_a_key_an_id_and_a_known_generation(client: TestClient) -> None:
    generation_id = chat(client).json()["id"]

    no_key = client.get("/api/v1/generation", params={"id": generation_id})
    unknown = lookup(client, "gen-0-nope")
    no_id = client.get("/api/v1/generation", headers=AUTH)

    assert no_key.status_code == 401
    assert no_key.json() == {"error": {"code": 401, "message": "No auth credentials found"}}
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"code": 404, "message": "Generation not found"}}
    assert no_id.status_code == 400


def test_streamed_generation_is_billed_with_the_usage_chunk_cost(client: TestClient) -> None:
    payload = {"model": LITE, "messages": [{"role": "user", "content": "Hello"}], "stream": True}
    with client.stream("POST", "/api/v1/chat/completions", json=payload, headers=AUTH) as response:
        generation_id = response.headers["X-Generation-Id"]
        events = sse_events(response.read().decode())
    usage = json.loads(events[-2].removeprefix("data: "))["usage"]

    data = lookup(client, generation_id).json()["data"]

    assert data["streamed"] is True
    assert data["cancelled"] is False
    assert data["total_cost"] == usage["cost"]
    assert data["tokens_completion"] == usage["completion_tokens"]


def test_generation_delay_hides_a_generation_for_some_lookups(client: TestClient) -> None:
    client.post("/_fake/settings", json={"generation_delay": {"lookups": 2}})
    generation_id = chat(client).json()["id"]

    statuses = [lookup(client, generation_id).status_code for _ in range(3)]

    assert statuses == [404, 404, 200]
    assert lookup(client, generation_id).status_code == 200


def test_generation_delay_hides_a_generation_for_some_seconds(client: TestClient) -> None:
    client.post("/_fake/settings", json={"generation_delay": {"seconds": 0.3}})
    generation_id = chat(client).json()["id"]

    early = lookup(client, generation_id)
    time.sleep(0.35)
    later = lookup(client, generation_id)

    assert early.status_code == 404
    assert early.json() == {"error": {"code": 404, "message": "Generation not found"}}
    assert later.status_code == 200
    assert client.get("/_fake/generations").json()["generations"][0]["id"] == generation_id


def test_settings_change_through_the_control_api_and_reset_restores_them(client: TestClient) -> None:
    defaults = client.get("/_fake/settings").json()
    changed = client.post("/_fake/settings", json={"cancel_billing": "partial"}).json()
    delayed = client.post("/_fake/settings", json={"generation_delay": {"lookups": 1, "seconds": 2}}).json()
    bad = client.post("/_fake/settings", json={"cancel_billing": "half"})
    client.post("/_fake/reset")

    assert defaults == {"cancel_billing": "full", "generation_delay": {"lookups": 0, "seconds": 0.0}}
    assert changed["cancel_billing"] == "partial"
    assert delayed == {"cancel_billing": "partial", "generation_delay": {"lookups": 1, "seconds": 2.0}}
    assert bad.status_code == 422
    assert client.get("/_fake/settings").json() == defaults


def test_reset_keeps_settings_given_to_the_state() -> None:
    with TestClient(create_app(FakeState(cancel_billing="partial"))) as client:
        client.post("/_fake/settings", json={"cancel_billing": "full"})
        client.post("/_fake/reset")
        assert client.get("/_fake/settings").json()["cancel_billing"] == "partial"


def test_requests_carry_their_generation_and_an_error_status_bills_nothing(client: TestClient) -> None:
    client.post("/_fake/faults", json={"faults": [{"kind": "status", "status": 502}]})
    failed = chat(client)
    served = chat(client)

    failed_record, served_record = client.get("/_fake/requests").json()["requests"]
    usage = client.get("/_fake/usage").json()

    assert failed.status_code == 502
    assert "X-Generation-Id" not in failed.headers
    assert (failed_record["generation_id"], failed_record["billed_cost"]) == (None, 0.0)
    assert served_record["generation_id"] == served.json()["id"] == served.headers["X-Generation-Id"]
    assert served_record["billed_cost"] == served.json()["usage"]["cost"]
    assert served_record["cancelled"] is False
    assert usage["cost"] == pytest.approx(served.json()["usage"]["cost"])
    assert usage["generations"] == 1
    assert usage["requests"] == 2
    client.post("/_fake/reset")
    assert client.get("/_fake/generations").json() == {"generations": []}
    assert lookup(client, served.json()["id"]).status_code == 404


# --- billing when the client goes away (a real server: the client really disconnects) ------------


@pytest.fixture
def live(state: FakeState) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the server to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


LONG = "a b c d e f g h i j k l m n o p q r s t u v w x y z"


def cancel_stream_after(base_url: str, data_chunks: int) -> str:
    """Stream a long reply, hang up after ``data_chunks`` chunks; the generation id."""
    payload = {"model": LITE, "messages": [{"role": "user", "content": LONG}], "stream": True}
    with httpx.Client(base_url=base_url, timeout=5) as http, http.stream(
        "POST", "/api/v1/chat/completions", json=payload, headers=AUTH
    ) as response:
        generation_id = response.headers["X-Generation-Id"]
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: {")
            if seen == data_chunks:
                break
    return generation_id


def full_reply_usage(base_url: str, content: str = LONG) -> dict[str, Any]:
    payload = {"model": LITE, "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{base_url}/api/v1/chat/completions", json=payload, headers=AUTH).json()["usage"]


def test_cancelled_stream_bills_the_whole_generation_by_default(live: str, state: FakeState) -> None:
    httpx.post(f"{live}/_fake/faults", json={"faults": [{"kind": "slow", "chunk_delay": 0.1}]})

    generation_id = cancel_stream_after(live, 3)
    generation = wait_for(lambda: state.generations.get(generation_id), "the cancelled generation").data
    full = full_reply_usage(live)

    assert generation["cancelled"] is True
    assert generation["streamed"] is True
    assert generation["tokens_completion"] == full["completion_tokens"]
    assert generation["total_cost"] == full["cost"]
    record = state.requests[0]
    assert (record["generation_id"], record["billed_cost"], record["cancelled"]) == (
        generation_id, full["cost"], True
    )
    data = httpx.get(f"{live}/api/v1/generation", params={"id": generation_id}, headers=AUTH).json()["data"]
    assert data["total_cost"] == full["cost"]


def test_cancelled_stream_bills_only_what_was_sent_with_partial_billing(live: str, state: FakeState) -> None:
    httpx.post(f"{live}/_fake/settings", json={"cancel_billing": "partial"})
    httpx.post(f"{live}/_fake/faults", json={"faults": [{"kind": "slow", "chunk_delay": 0.1}]})

    generation_id = cancel_stream_after(live, 3)
    generation = wait_for(lambda: state.generations.get(generation_id), "the cancelled generation").data
    full = full_reply_usage(live)

    assert generation["cancelled"] is True
    assert generation["finish_reason"] is None
    assert generation["tokens_prompt"] == full["prompt_tokens"]
    assert 0 < generation["tokens_completion"] < full["completion_tokens"]
    assert generation["total_cost"] == pytest.approx(
        expected_cost(LITE, generation["tokens_prompt"], generation["tokens_completion"])
    )
    usage = httpx.get(f"{live}/_fake/usage").json()
    assert usage["cost"] == pytest.approx(generation["total_cost"] + full["cost"])


@pytest.mark.parametrize("stream", [False, True])
def test_timed_out_request_is_billed_when_the_provider_finishes(live: str, state: FakeState, stream: bool) -> None:
    httpx.post(f"{live}/_fake/faults", json={"faults": [{"kind": "timeout", "seconds": 0.4}]})
    payload = {"model": LITE, "messages": [{"role": "user", "content": "slow one"}], "stream": stream}

    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{live}/api/v1/chat/completions", json=payload, headers=AUTH, timeout=0.1)
    assert state.generations == {}
    generation = wait_for(lambda: list(state.generations.values()), "the timed-out generation")[0].data
    full = full_reply_usage(live, "slow one")

    assert generation["total_cost"] == full["cost"]
    assert generation["tokens_completion"] == full["completion_tokens"]
    assert generation["streamed"] is stream
    assert generation["cancelled"] is stream
    wait_for(lambda: state.requests[0]["status"] == 499, "the request record")
    assert state.requests[0]["billed_cost"] == full["cost"]
    assert httpx.get(f"{live}/_fake/usage").json()["cost"] == pytest.approx(2 * full["cost"])


# --- non-text content parts -------------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header + b"\0\0\0\0" + b"\0" * 32


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\xf7\0\0" + b"\0" * 16


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\0" * 65
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\0\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + dqt + sof + b"\xff\xd9"


def webp(kind: str, width: int, height: int) -> bytes:
    if kind == "VP8X":
        chunk = b"\x10\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif kind == "VP8 ":
        chunk = b"\0\0\0\x9d\x01\x2a" + struct.pack("<HH", width, height)
    else:
        chunk = b"\x2f" + ((width - 1) | ((height - 1) << 14)).to_bytes(4, "little")
    body = b"WEBP" + kind.encode() + struct.pack("<I", len(chunk)) + chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (png(1024, 768), (1024, 768)),
        (gif(10, 20), (10, 20)),
        (jpeg(800, 600), (800, 600)),
        (webp("VP8X", 1920, 1080), (1920, 1080)),
        (webp("VP8 ", 640, 480), (640, 480)),
        (webp("VP8L", 300, 200), (300, 200)),
        (b"not an image", None),
    ],
)
def test_image_size_is_read_from_png_jpeg_gif_and_webp_headers(data: bytes, size: Any) -> None:
    assert image_size(data) == size


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def prompt_with(client: TestClient, *parts: dict[str, Any]) -> dict[str, Any]:
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, *parts]}]
    response = client.post("/api/v1/chat/completions", json={"model": LITE, "messages": messages}, headers=AUTH)
    assert response.status_code == 200
    return response.json()


TEXT_ONLY = math.ceil(len("What is this?") / 4) + 4


@pytest.mark.parametrize(
    ("url", "image_tokens"),
    [
        (data_url("image/png", png(1024, 768)), math.ceil(1024 * 768 / 750)),
        (data_url("image/jpeg", jpeg(800, 600)), 640),
        (data_url("image/webp", webp("VP8X", 1920, 1080)), math.ceil(1920 * 1080 / 750)),
        (data_url("image/gif", gif(16, 16)), 85),
        ("https://example.com/cat.png", 1600),
        ("data:image/png;base64,bm90IGFuIGltYWdl", 1600),
    ],
    ids=["png", "jpeg", "webp", "tiny-gif-minimum", "remote", "unreadable"],
)
def test_image_parts_count_prompt_tokens_by_pixel_size(client: TestClient, url: str, image_tokens: int) -> None:
    body = prompt_with(client, image_part(url))

    usage = body["usage"]
    assert usage["prompt_tokens"] == TEXT_ONLY + image_tokens
    assert usage["cost"] == pytest.approx(expected_cost(LITE, usage["prompt_tokens"], usage["completion_tokens"]))
    data = lookup(client, body["id"]).json()["data"]
    assert data["tokens_prompt"] == usage["prompt_tokens"]
    assert data["num_media_prompt"] == 1


def test_file_and_audio_parts_count_base64_length_over_four(client: TestClient) -> None:
    pdf = base64.b64encode(b"%PDF-1.4 " + b"x" * 991).decode()
    wav = base64.b64encode(b"RIFF" + b"\0" * 596).decode()
    file_part = {"type": "file", "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{pdf}"}}
    audio_part = {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}

    body = prompt_with(client, file_part, audio_part)

    assert body["usage"]["prompt_tokens"] == TEXT_ONLY + math.ceil(len(pdf) / 4) + math.ceil(len(wav) / 4)
    data = lookup(client, body["id"]).json()["data"]
    assert (data["num_media_prompt"], data["num_input_audio_prompt"]) == (2, 1)


def test_image_price_per_input_image_is_added_to_the_cost() -> None:
    model = {"id": "x/vision", "pricing": {"prompt": "0.000001", "completion": "0.000002", "image": "0.01"}}
    with TestClient(create_app(FakeState(catalog=[model]))) as client:
        messages = [{"role": "user", "content": [image_part("https://example.com/a.png")]}]
        usage = client.post(
            "/api/v1/chat/completions", json={"model": "x/vision", "messages": messages}, headers=AUTH
        ).json()["usage"]
    assert usage["prompt_tokens"] == 1600 + 4
    assert usage["cost"] == pytest.approx(usage["prompt_tokens"] * 1e-6 + usage["completion_tokens"] * 2e-6 + 0.01)


def test_the_whole_received_body_and_headers_are_recorded(client: TestClient) -> None:
    parts = [{"type": "text", "text": "see"}, image_part(data_url("image/png", png(8, 8)))]
    messages = [{"role": "user", "content": parts}]
    sent = {"model": LITE, "messages": messages, "max_tokens": 50, "stream": False, "transforms": []}
    client.post("/api/v1/chat/completions", json=sent, headers={**AUTH, "X-Title": "Ralex"})

    (record,) = client.get("/_fake/requests").json()["requests"]

    assert record["body"] == sent
    assert record["headers"]["x-title"] == "Ralex"
    assert record["headers"]["authorization"] == "[redacted]"
