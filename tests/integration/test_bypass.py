"""The agent is the adversary: everything it can send with its key, checked against what the fake
upstream actually received and what the ledger recorded."""

from __future__ import annotations

import base64
import json
import struct
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from ralex.params import REFUSED
from tests.integration.conftest import Fake, Proxy, wait_until

pytestmark = pytest.mark.integration
AGENT_KEY = "sk-ralex-test-agent"
AGENT = {"Authorization": f"Bearer {AGENT_KEY}"}
HI = [{"role": "user", "content": "fix the typo in hello.py"}]

SAMPLES: dict[str, Any] = {
    "extra_body": {"model": "openai/o1-pro", "max_tokens": 100000},
    "extra_headers": {"X-Title": "x"}, "extra_query": {"a": "b"},
    "api_key": "sk-or-attacker", "api_base": "http://127.0.0.1:9/", "base_url": "http://127.0.0.1:9/",
    "api_version": "2024-01-01", "custom_llm_provider": "openai", "organization": "org-x",
    "user_config": {"model_list": []}, "model_list": [{"model_name": "x"}],
    "aws_access_key_id": "AKIA", "vertex_credentials": "{}",
    "models": ["openai/o1-pro", "anthropic/claude-opus-4"], "route": "fallback",
    "provider": {"order": ["OpenAI"]}, "transforms": ["middle-out"],
    "fallbacks": ["smart"], "context_window_fallbacks": [{"cheap": ["smart"]}], "mock_response": "free",
    "reasoning": {"max_tokens": 60000}, "reasoning_effort": "high", "thinking": {"type": "enabled",
                                                                                  "budget_tokens": 60000},
    "include_reasoning": True, "verbosity": "high",
    "plugins": [{"id": "web"}], "web_search_options": {"search_context_size": "high"},
    "prediction": {"type": "content", "content": "x" * 100}, "modalities": ["text", "audio"],
    "audio": {"voice": "alloy"}, "service_tier": "priority",
    "functions": [{"name": "f"}], "function_call": "auto",
}


def agent_post(proxy: Proxy, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None,
               path: str = "/v1/chat/completions") -> httpx.Response:
    hdrs = {**AGENT, "Content-Type": "application/json", **(headers or {})}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{proxy.url.rstrip('/')}{path}", content=content, headers=hdrs, timeout=60)


def png(width: int, height: int, padding: int = 0) -> str:
    """A data URL of a PNG with the given size (valid header; ``padding`` extra bytes of payload)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"tEXt", b"c\x00" + b"a" * padding)
           + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def charged(proxy: Proxy) -> float:
    return sum(float(r["cost_usd"]) for r in proxy.ledger())


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_every_refused_parameter_is_named_and_reaches_nobody(live: Proxy, upstream: Fake, name: str, stream: bool):
    before = charged(live)
    response = agent_post(live, {"model": "cheap", "messages": HI, "stream": stream, name: SAMPLES[name]})
    assert response.status_code == 400, response.text
    assert f"'{name}'" in response.json()["error"]["message"]
    assert upstream.requests() == []
    assert charged(live) == pytest.approx(before)


def test_the_extra_body_model_override_at_the_emergency_tier_is_refused(live: Proxy, upstream: Fake):
    live.set_remaining(0.02)
    for stream in (False, True):
        response = agent_post(live, {"model": "cheap", "messages": HI, "stream": stream,
                                     "extra_body": {"model": "openai/o1-pro", "max_tokens": 100000}})
        assert response.status_code == 400
    served = agent_post(live, {"model": "cheap", "messages": HI, "max_tokens": 100000})
    assert served.status_code == 200
    assert [(r["model"], r["max_tokens"]) for r in upstream.requests()] == [("google/gemini-2.5-flash-lite", 200)]
    assert served.headers["x-ralex-max-tokens"] == "200"


@pytest.mark.parametrize(("field", "value", "named"), [
    ("n", 5, "'n' must be 1"),
    ("messages", [{"role": "user", "content": 5}], "messages[0].content"),
    ("tools", True, "'tools'"),
    ("stream", "yes", "'stream'"),
    ("max_tokens", "lots", "'max_tokens'"),
    ("messages", [{"role": "user", "content": [{"type": "file", "file": {"file_data": "x"}}]}], "'file' part"),
    ("messages", [{"role": "user", "content": [{"type": "image_url",
                                                "image_url": {"url": "http://127.0.0.1:9/cat.png"}}]}], "data: URL"),
    ("messages", [{"role": "wizard", "content": "hi"}], "messages[0].role"),
    ("temperature", "hot", "'temperature'"),
    ("frobnicate", 1, "unknown parameter 'frobnicate'"),
])
def test_wrong_types_are_a_400_naming_the_field_never_a_fallback(live: Proxy, upstream: Fake, field: str,
                                                                  value: Any, named: str):
    body = {"model": "cheap", "messages": HI, field: value}
    response = agent_post(live, body)
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]["message"]
    assert upstream.requests() == []


@pytest.mark.parametrize(("content", "headers", "status", "text"), [
    (b'{"model": "cheap", "messages": [{"role": "user", "content": "caf\xe9"}]}', None, 400, "UTF-8"),
    (b'[{"model": "cheap"}]', None, 400, "JSON object"),
    (b'{"model": "cheap", "messages": ', None, 400, "not valid JSON"),
    (b'{"model": "cheap", "messages": [{"role": "user", "content": "hi"}]}', {"Authorization": ""}, 401,
     "missing API key"),
])
def test_malformed_requests_get_a_clear_4xx(live: Proxy, upstream: Fake, content: bytes,
                                           headers: dict[str, str] | None, status: int, text: str):
    response = agent_post(live, content, headers)
    assert response.status_code == status, response.text
    assert text in response.json()["error"]["message"]
    assert upstream.requests() == []


def test_headers_and_query_strings_cannot_steer_the_upstream_call(live: Proxy, upstream: Fake):
    upstream.faults({"kind": "status", "status": 503, "times": None, "model": "google/gemini-2.5-flash-lite"})
    response = agent_post(live, {"model": "cheap", "messages": HI}, headers={
        "x-litellm-num-retries": "50", "x-litellm-timeout": "900", "x-litellm-disable-fallbacks": "false",
        "OpenAI-Organization": "org-attacker", "x-litellm-tags": "free", "x-api-key": "sk-or-attacker",
    }, path="/v1/chat/completions?api-version=2024-01-01")
    assert response.status_code == 200, response.text
    received = upstream.requests()
    assert [r["model"] for r in received] == ["google/gemini-2.5-flash-lite", "anthropic/claude-sonnet-4.5"]
    for r in received:
        assert "openai-organization" not in {k.lower() for k in r["headers"]}
        assert r["headers"].get("authorization", r["headers"].get("Authorization")) == "[redacted]"
    assert response.headers["x-ralex-route"] == "smart"  # says what served it, not what was planned
    assert response.headers["x-ralex-fallback-from"] == "cheap"


def test_images_are_held_at_their_pixel_bound_so_the_bill_never_exceeds_the_hold(live: Proxy, upstream: Fake):
    image = png(600, 600, padding=700_000)  # about 1 MB on the wire, billed by its pixels
    response = agent_post(live, {"model": "smart", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is in this picture?"}, {"type": "image_url", "image_url": {"url": image}}]}]})
    assert response.status_code == 200, response.text
    assert response.headers["x-ralex-route"] == "smart"
    row = live.row(response)
    billed = upstream.requests()[0]["billed_cost"]
    assert billed > 480 * 3e-6  # the 600x600 image alone is 480 tokens on smart
    assert float(row["reserved_usd"]) >= billed
    assert float(row["cost_usd"]) == pytest.approx(billed)
    # an image that does not fit smart's per-request cap steps down instead of overspending
    live.set_caps(smart=0.02)
    big = agent_post(live, {"model": "smart", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png(2000, 2000)}}]}]})
    assert big.headers["x-ralex-route"] == "cheap"
    assert float(live.row(big)["reserved_usd"]) >= upstream.requests()[1]["billed_cost"]


def test_mixed_content_at_a_low_budget_never_overshoots(live: Proxy, upstream: Fake):
    live.set_remaining(0.05)
    limit = live.budget()["limit"]
    upstream.faults({"kind": "slow", "chunk_delay": 0.2, "times": None})
    image = png(800, 600, padding=200_000)
    bodies: list[dict[str, Any]] = []
    for i in range(50):
        kind = i % 5
        content: Any = f"describe change {i} " + "z" * 500
        if kind == 0:
            content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": image}}]
        body: dict[str, Any] = {"model": "smart" if i % 2 else "cheap", "messages": [{"role": "user",
                                                                                       "content": content}]}
        if kind == 1:
            body["n"] = 3
        if kind == 2:
            body["reasoning"] = {"max_tokens": 20000}
        bodies.append(body)
    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(lambda b: agent_post(live, b), bodies))
    assert {r.status_code for r in responses} <= {200, 400, 402}
    assert all(r.status_code == 400 for r, b in zip(responses, bodies, strict=True) if "n" in b or "reasoning" in b)
    wait_until(lambda: live.budget()["in_flight"] == 0, 30, what="all holds settled")
    assert live.budget()["spent"] <= limit + 1e-9  # overshoot $0
    billed = sum(r["billed_cost"] for r in upstream.requests())
    served = [live.row(r) for r in responses if r.status_code == 200]
    assert sum(float(r["cost_usd"]) for r in served) == pytest.approx(billed)


def test_metrics_and_api_docs_are_closed_to_the_agent(live: Proxy):
    base = live.url.rstrip("/")
    assert httpx.get(f"{base}/metrics", headers=AGENT).status_code == 403
    assert httpx.get(f"{base}/openapi.json", headers=AGENT).status_code == 404
    assert httpx.get(f"{base}/openapi.json").status_code == 404
    assert httpx.get(f"{base}/docs").status_code == 404


def test_responses_do_not_reveal_the_upstream_or_litellm(live: Proxy, upstream: Fake):
    response = agent_post(live, {"model": "cheap", "messages": HI})
    assert response.status_code == 200
    assert not [h for h in response.headers if h.lower().startswith(("x-litellm", "llm_provider"))]
    assert upstream.api_base not in response.text


def test_unknown_model_names_never_become_metric_labels(live: Proxy, upstream: Fake):
    names = [f"bogus-{uuid.uuid4().hex}" for _ in range(30)]
    for name in names:
        response = agent_post(live, {"model": name, "messages": HI})
        assert response.status_code == 400
        assert "unknown model" in response.json()["error"]["message"]
    metrics = httpx.get(f"{live.url.rstrip('/')}/metrics/", headers={"Authorization": "Bearer sk-ralex-test-master"})
    assert metrics.status_code == 200
    assert not [n for n in names if n in metrics.text]
    assert upstream.requests() == []


def test_the_agent_socket_serves_the_model_routes_and_nothing_else(live: Proxy, upstream: Fake):
    transport = httpx.HTTPTransport(uds=str(live.runtime / "agent.sock"))
    with httpx.Client(transport=transport, base_url="http://agent", headers=AGENT, timeout=30) as agent:
        assert agent.get("/v1/models").status_code == 200
        served = agent.post("/v1/chat/completions", json={"model": "cheap", "messages": HI})
        assert served.status_code == 200
        for path in ("/metrics", "/openapi.json", "/health/liveliness", "/ralex/budget", "/key/generate",
                     "/openrouter/v1/chat/completions"):
            assert agent.get(path).status_code == 404, path
        master = {"Authorization": "Bearer sk-ralex-test-master"}
        assert agent.get("/ralex/budget", headers=master).status_code == 404  # not even with the master key
    assert len(upstream.requests()) == 1


def test_the_agent_may_read_its_budget_status_and_nothing_more(live: Proxy, upstream: Fake):
    base = live.url.rstrip("/")
    assert agent_post(live, {"model": "cheap", "messages": HI}).status_code == 200
    live.set_limit(round(live.budget()["spent"] + 0.000_001, 6))  # all but spent: 50, 80 and 95 % crossed
    refused = agent_post(live, {"model": "smart", "messages": HI})
    assert refused.status_code == 402  # ... and the day cannot pay for more: 100 %
    status = httpx.get(f"{base}/ralex/status", headers=AGENT, params={"since": 0}).json()
    assert set(status) == {"limit", "spent", "remaining", "fraction_used", "tier", "alert_level", "thresholds",
                           "resets_at", "timezone", "summary", "events", "last_event_id"}
    assert status["thresholds"] == [50, 80, 95, 100]
    assert status["alert_level"] == 100
    refusals = [e["text"] for e in status["events"] if e["kind"] == "refused"]
    assert refusals[-1] == refused.json()["error"]["message"]
    texts = [e["text"] for e in status["events"] if e["kind"] == "threshold"]
    assert texts[0].startswith("50 % of today's budget spent"), texts
    # the rest up to 100 % crossed by the refusal, below them in spend: one line saying the next request
    # does not fit (never "80 % spent" at 76 %)
    assert texts[-1].startswith(("100 %", "Today's budget cannot pay the next request")), texts
    assert len(texts) == len(set(texts))  # each once
    newer = httpx.get(f"{base}/ralex/status", headers=AGENT, params={"since": status["last_event_id"]}).json()
    assert newer["events"] == []
    assert httpx.get(f"{base}/ralex/status").status_code == 401
    assert httpx.get(f"{base}/ralex/budget", headers=AGENT).status_code == 401
    transport = httpx.HTTPTransport(uds=str(live.runtime / "agent.sock"))
    with httpx.Client(transport=transport, base_url="http://agent", headers=AGENT) as agent:
        assert agent.get("/ralex/status").json()["tier"] == status["tier"]
