"""Parse once, bounded; one table of content parts; closed by default. On the real proxy (LiteLLM,
Ralex's gate and hooks, Postgres, the fake OpenRouter): every shape that used to get a 5xx, reach the
upstream unchecked or read what it should not is now a 4xx naming the problem, and the fake upstream
never receives it (its own record of what arrived is checked, not only the status)."""

from __future__ import annotations

import base64
import json
import struct
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ralex.params import MAX_DEPTH
from tests.integration.conftest import MASTER_KEY, Fake, Pg, Proxy, free_port, start_proxy, wait_until

pytestmark = pytest.mark.integration
AGENT_KEY = "sk-ralex-test-agent"
ROUTES = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}


def png(width: int, height: int) -> str:
    """A data URL of a PNG claiming ``width`` x ``height`` (a valid header and a tiny payload)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def body_of(api: str, schema: Any = None) -> dict[str, Any]:
    """A small valid request of ``api``; with ``schema``, one tool taking it as its parameters."""
    text = "fix the typo in hello.py"
    if api == "messages":
        body: dict[str, Any] = {"model": "cheap", "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
        if schema is not None:
            body["tools"] = [{"name": "edit", "description": "edit", "input_schema": schema}]
    elif api == "responses":
        body = {"model": "cheap", "max_output_tokens": 64, "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]}
        if schema is not None:
            body["tools"] = [{"type": "function", "name": "edit", "parameters": schema}]
    else:
        body = {"model": "cheap", "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
        if schema is not None:
            body["tools"] = [{"type": "function", "function": {"name": "edit", "parameters": schema}}]
    return body


def raw_with(body: dict[str, Any], token: bytes) -> bytes:
    """The JSON of ``body`` with its "@" placeholder replaced by raw JSON text."""
    return json.dumps(body).encode().replace(b'"@"', token, 1)


def send(proxy: Proxy, path: str, raw: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{proxy.url}{path.lstrip('/')}", content=raw, timeout=60,
                      headers={"Content-Type": "application/json", **(headers or {"x-api-key": AGENT_KEY})})


def message(api: str, response: httpx.Response) -> str:
    """The error message of a 4xx, after checking it has its API's own error shape."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    payload = response.json()
    if api == "messages":
        assert payload["type"] == "error", payload
    return str(payload["error"]["message"])


# --- parse once, bounded --------------------------------------------------------------------------------

@pytest.mark.parametrize("api", ROUTES)
@pytest.mark.parametrize("levels", [1_100, 100_000])
def test_json_nested_too_deep_is_a_400_naming_the_limit_on_every_route(live: Proxy, upstream: Fake, api: str,
                                                                       levels: int):
    deep = b"[" * levels + b"]" * levels
    for path in (ROUTES[api], *(["/v1/messages/count_tokens"] if api == "messages" else [])):
        refused = send(live, path, raw_with({**body_of(api), "metadata": "@"}, deep))
        assert refused.status_code == 400
        assert f"more than {MAX_DEPTH} levels deep" in message(api, refused)
    admin = live.client.post("/ralex/route", content=raw_with({**body_of("chat"), "x": "@"}, deep),
                             headers={"Content-Type": "application/json"})
    assert admin.status_code == 400
    assert "levels deep" in admin.json()["detail"]
    assert upstream.requests() == []


@pytest.mark.parametrize("api", ROUTES)
def test_a_tool_schema_960_deep_is_a_400_and_the_deepest_allowed_one_is_served(live: Proxy, upstream: Fake,
                                                                               api: str):
    refused = send(live, ROUTES[api], raw_with(body_of(api, "@"), b'{"a":' * 960 + b"1" + b"}" * 960))
    assert refused.status_code == 400
    assert f"at most {MAX_DEPTH}" in message(api, refused)
    assert upstream.requests() == []
    probe = json.dumps(body_of(api, "@")).encode()
    before = probe[:probe.index(b'"@"')]
    levels = MAX_DEPTH - (before.count(b"[") + before.count(b"{") - before.count(b"]") - before.count(b"}"))
    schema: dict[str, Any] = {"type": "string"}
    wraps = (levels - 1) // 2  # each wrap is two levels (the object and its properties); the innermost one
    for _ in range(wraps):
        schema = {"type": "object", "properties": {"x": schema}}
    served = send(live, ROUTES[api], json.dumps(body_of(api, schema)).encode())
    assert served.status_code == 200, served.text[:500]
    [received] = upstream.requests()
    tool = received["body"]["tools"][0]["function"]["parameters"]
    for _ in range(wraps):
        tool = tool["properties"]["x"]
    assert tool["type"] == "string"  # the whole schema arrived upstream, nothing lost


@pytest.mark.parametrize("api", ROUTES)
@pytest.mark.parametrize(("field", "token"), [("temperature", b"NaN"), ("top_p", b"Infinity"),
                                              ("temperature", b"-Infinity"), ("top_p", b"1e400")])
def test_nan_and_infinity_are_a_400_before_any_upstream_call(live: Proxy, upstream: Fake, api: str, field: str,
                                                              token: bytes):
    refused = send(live, ROUTES[api], raw_with({**body_of(api), field: "@"}, token))
    assert refused.status_code == 400
    assert token.decode() in message(api, refused)
    assert upstream.requests() == []
    assert live.budget()["in_flight"] == 0


# --- one table of content parts ---------------------------------------------------------------------------

def function_call_output(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"model": "cheap", "max_output_tokens": 64, "input": [
        {"type": "message", "role": "user", "content": "read the screenshot tool's output"},
        {"type": "function_call", "call_id": "c1", "name": "screenshot", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": list(parts)}]}


def tool_result(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"model": "cheap", "max_tokens": 64, "messages": [
        {"role": "user", "content": "take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": list(blocks)}]}]}


@pytest.mark.parametrize(("api", "body", "words"), [
    ("responses", function_call_output({"type": "input_image", "image_url": "http://169.254.169.254/latest/x.png"}),
     "an image must be sent inline as a data: URL"),
    ("responses", function_call_output({"type": "input_image", "image_url": png(60_000, 60_000)}),
     "the image is 60000x60000"),
    ("responses", function_call_output({"type": "input_image", "file_id": "file-abc"}), "names an uploaded file"),
    ("responses", function_call_output({"type": "input_file", "file_data": "data:application/pdf;base64,JVBE"}),
     "is a 'input_file' part"),
    ("responses", function_call_output({"type": "input_text", "text": {"not": "a string"}}), "must be a string"),
    ("responses", {**body_of("responses"), "input": [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": ["a", "list"]}]}]}, "input[0].content[0].text must be a string"),
    ("messages", tool_result({"type": "image", "source": {"type": "url", "url": "https://attacker.example/a.png"}}),
     "an image must be sent inline"),
    ("messages", tool_result({"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                           "data": png(60_000, 60_000).split(",")[1]}}),
     "the image is 60000x60000"),
    ("messages", tool_result({"type": "text", "text": 5}), "must be a string"),
    ("chat", {**body_of("chat"), "messages": [{"role": "tool", "tool_call_id": "c1", "content": [
        {"type": "image_url", "image_url": {"url": png(60_000, 60_000)}}]}]}, "the image is 60000x60000"),
])
def test_every_content_part_goes_through_its_apis_table(live: Proxy, upstream: Fake, api: str, body: dict[str, Any],
                                                        words: str):
    refused = send(live, ROUTES[api], json.dumps(body).encode())
    assert refused.status_code == 400
    assert words in message(api, refused)
    assert upstream.requests() == []
    assert live.budget()["in_flight"] == 0


def test_an_inline_image_in_a_function_call_output_passes_the_checks_and_is_paid_for(live: Proxy, upstream: Fake):
    image = png(300, 200)
    served = send(live, ROUTES["responses"], json.dumps(function_call_output(
        {"type": "input_text", "text": "the screenshot:"}, {"type": "input_image", "image_url": image})).encode())
    assert served.status_code == 200, served.text[:500]
    [received] = upstream.requests()
    tool = next(m for m in received["body"]["messages"] if m["role"] == "tool")
    assert {"type": "text", "text": "the screenshot:"} in tool["content"]
    # LiteLLM's chat bridge keeps a tool message's text parts only (so far): whatever image arrives is this one
    assert [p for p in tool["content"] if p.get("type") != "text"] in ([], [{"type": "image_url",
                                                                              "image_url": {"url": image}}])
    row = live.row(served)
    assert float(row["cost_usd"]) == pytest.approx(received["billed_cost"])
    assert float(row["reserved_usd"]) >= received["billed_cost"]


# --- closed by default --------------------------------------------------------------------------------------

def spellings(key: str) -> list[dict[str, str]]:
    return [{"Authorization": f"Bearer {key}"}, {"Authorization": f"bearer {key}"},
            {"Authorization": f"BEARER {key}"}, {"x-api-key": key}]


def add_key(proxy: Proxy, budget: float | None = None) -> tuple[str, str]:
    name = f"bounds-{uuid.uuid4().hex[:8]}"
    created = proxy.client.post("/ralex/keys", json={"name": name, "budget": budget})
    assert created.status_code == 200, created.text
    return name, str(created.json()["key"])


def test_metrics_needs_the_master_key_in_every_spelling_on_every_listener(live: Proxy, upstream: Fake):
    _, client = add_key(live)
    base = live.url.rstrip("/")
    refused = [({}, 401), ({"Authorization": "Bearer sk-bogus"}, 401), ({"Authorization": f"Basic {MASTER_KEY}"}, 401),
               ({"Authorization": MASTER_KEY}, 401), ({"api-key": MASTER_KEY}, 401),
               *[(h, 403) for h in spellings(AGENT_KEY) + spellings(client)],
               *[(h, 401) for h in spellings("sk-ralex-nobody")]]
    for path in ("/metrics", "/metrics/", "/metrics//"):
        for headers, status in refused:
            answer = httpx.get(f"{base}{path}", headers=headers, timeout=10)
            assert answer.status_code == status, (path, headers, answer.status_code)
            assert "hashed_api_key" not in answer.text
        for headers in spellings(MASTER_KEY):
            answer = httpx.get(f"{base}{path}", headers=headers, timeout=10)
            assert answer.status_code == 200, (path, headers)  # no redirect either
            assert "# TYPE" in answer.text
    for path in ("/METRICS", "/Metrics/", "/metrics/x"):
        assert httpx.get(f"{base}{path}", headers=spellings(MASTER_KEY)[0]).status_code == 404, path
    transport = httpx.HTTPTransport(uds=str(live.runtime / "agent.sock"))
    with httpx.Client(transport=transport, base_url="http://agent", timeout=10) as agent:
        for headers in [{}, *spellings(AGENT_KEY), *spellings(MASTER_KEY), *spellings(client)]:
            for path in ("/metrics", "/metrics/", "/health"):
                assert agent.get(path, headers=headers).status_code == 404, (path, headers)
    assert upstream.requests() == []


@pytest.fixture(scope="module")
def metrics_proxy(pg: Pg, fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, int]]:
    port = free_port()
    server = start_proxy(pg.new_database(), fake, tmp_path_factory.mktemp("metrics"), RALEX_METRICS_PORT=str(port))
    yield server, port
    server.stop()


def test_the_metrics_port_serves_metrics_without_a_key_and_nothing_else(metrics_proxy: tuple[Proxy, int],
                                                                        upstream: Fake):
    proxy, port = metrics_proxy
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)  # as Prometheus scrapes it
    assert scraped.status_code == 200
    assert "# TYPE" in scraped.text
    for path in ("/v1/models", "/health", "/health/liveliness", "/ralex/budget", "/ralex/status", "/openapi.json"):
        assert httpx.get(f"http://127.0.0.1:{port}{path}", headers=spellings(MASTER_KEY)[0]).status_code == 404
    assert httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers=spellings(MASTER_KEY)[0],
                      json=body_of("chat")).status_code == 404
    assert httpx.get(f"{proxy.url}metrics", timeout=10).status_code == 401  # the main port still wants the key
    assert upstream.requests() == []


NOT_PUBLIC = [("GET", "/v1/models"), ("GET", "/models"), ("GET", "/v1/model/info"), ("GET", "/model/info"),
              ("GET", "/ralex/budget"), ("GET", "/ralex/status"), ("GET", "/ralex/keys"), ("GET", "/ralex/spend"),
              ("PUT", "/ralex/budget"), ("POST", "/ralex/route"), ("POST", "/ralex/keys"), ("GET", "/health"),
              ("GET", "/metrics"), ("POST", "/v1/chat/completions"), ("POST", "/v1/messages"),
              ("POST", "/v1/responses"), ("POST", "/v1/messages/count_tokens"), ("POST", "/health/test_connection"),
              ("GET", "/health/services"), ("GET", "/health/readiness"), ("GET", "/key/list"), ("GET", "/user/info"),
              ("GET", "/global/spend"), ("GET", "/spend/logs"), ("GET", "/ui"), ("GET", "/v1/files")]


def test_nothing_but_liveliness_answers_without_a_real_key_in_any_spelling(live: Proxy, upstream: Fake):
    base = live.url.rstrip("/")
    bogus = [{}, *spellings("sk-bogus"), {"Authorization": "Basic sk-bogus"}, {"api-key": "sk-bogus"},
             {"x-goog-api-key": MASTER_KEY}, {"Authorization": f"Basic {MASTER_KEY}"}]
    for method, path in NOT_PUBLIC:
        for headers in bogus:
            answer = httpx.request(method, f"{base}{path}", headers=headers, json=body_of("chat"), timeout=30)
            assert answer.status_code in (401, 404), (method, path, headers, answer.status_code, answer.text[:200])
    assert httpx.get(f"{base}/health/liveliness").status_code == 200
    transport = httpx.HTTPTransport(uds=str(live.runtime / "agent.sock"))
    with httpx.Client(transport=transport, base_url="http://agent", timeout=30) as agent:
        for method, path in [*NOT_PUBLIC, ("GET", "/health/liveliness")]:
            for headers in bogus:
                answer = agent.request(method, path, headers=headers, json=body_of("chat"))
                assert answer.status_code in (401, 404), (method, path, headers, answer.status_code)
    assert upstream.requests() == []


def test_a_client_key_reads_its_own_budget_only(live: Proxy, upstream: Fake):
    name, key = add_key(live, budget=0.5)
    served = httpx.post(f"{live.url}v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                        json=body_of("chat"))
    assert served.status_code == 200
    wait_until(lambda: live.budget()["in_flight"] == 0, 30, what="the hold settled")
    for headers in spellings(key):
        own = httpx.get(f"{live.url}ralex/status", headers=headers, params={"since": 0}, timeout=10)
        assert own.status_code == 200, own.text
        view = own.json()
        assert set(view) == {"key", "daily_budget", "spent", "held", "remaining", "resets_at", "summary"}
        assert view["key"] == name
        assert view["summary"].startswith(f"Key {name}: ")
        assert "of $0.50 spent" in view["summary"]
        assert view["daily_budget"] == 0.5
        assert view["spent"] == pytest.approx(upstream.requests()[0]["billed_cost"], abs=1e-8)
        assert view["remaining"] == pytest.approx(0.5 - view["spent"], abs=1e-8)
    day = httpx.get(f"{live.url}ralex/status", headers={"x-api-key": AGENT_KEY}).json()
    assert {"limit", "spent", "events", "tier"} <= set(day)  # the agent's toasts still see the day


def test_health_with_the_master_key_calls_no_model_and_writes_no_row(live: Proxy, upstream: Fake):
    rows = len(live.ledger())
    for headers in spellings(MASTER_KEY):
        answer = httpx.get(f"{live.url}health", headers=headers, timeout=30)
        assert answer.status_code == 200
        assert answer.json()["status"] == "healthy"
    assert httpx.get(f"{live.url}health", timeout=10).status_code == 401
    assert httpx.get(f"{live.url}health", headers=spellings(AGENT_KEY)[1], timeout=10).status_code == 403
    assert upstream.requests() == []
    assert len(live.ledger()) == rows

