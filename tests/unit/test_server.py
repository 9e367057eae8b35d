"""The gate in front of LiteLLM, driven as an ASGI app: which requests reach LiteLLM (a recording
stand-in here; the real one in tests/integration) and what every other one is answered, in its API's
error shape. Nothing refused ever reaches the app behind the gate."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of LiteLLM's price list

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from litellm.llms.anthropic.pass_through.adapters.transformation import LiteLLMAnthropicMessagesAdapter
from litellm.responses.litellm_completion_transformation.transformation import LiteLLMCompletionResponsesConfig

from ralex.config import ConfigError
from ralex.params import (
    MAX_DEPTH,
    RequestError,
    forwardable,
    forwardable_messages,
    forwardable_responses,
    parse_body,
)
from ralex.proxy.auth import presented_key
from ralex.proxy.runtime import NotReady
from ralex.proxy.server import Gate
from ralex.proxy.settings import load_settings
from ralex.request import chat_view, estimate_prompt_tokens
from tests.unit.test_params import BASES, mutate

MASTER, AGENT, CLIENT, REVOKED = "sk-master-test", "sk-agent-test", "sk-client-test", "sk-revoked-test"
TCP, METRICS_PORT, SOCKET = ("127.0.0.1", 4000), 9401, ("/run/ralex/agent/proxy.sock", None)


@dataclass
class Key:
    name: str
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class Runtime:
    """What the gate asks of the proxy's runtime: client keys, and whether it is ready."""

    def __init__(self, ready: bool = True) -> None:
        self.is_ready = ready

    def client_key(self, plain: str) -> Key | None:
        if plain == REVOKED:
            return Key("old-laptop", datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
        return Key("laptop") if plain == CLIENT else None

    async def ready(self) -> None:
        if not self.is_ready:
            raise NotReady("postgres is away")


@dataclass
class App:
    """LiteLLM's place: records each request it gets and answers 200."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        self.calls.append({**scope, "body": message.get("body", b"")})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-litellm-version", b"1")]})
        await send({"type": "http.response.body", "body": b"{}"})


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(gate: Gate, path: str, *, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None,
         server: tuple[str, int | None] = TCP) -> Answer:
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "server": server, "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(gate(scope, receive, send))
    start = sent[0]
    return Answer(start["status"], dict(start.get("headers", [])), b"".join(m.get("body", b"") for m in sent[1:]))


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    monkeypatch.setenv("LITELLM_MASTER_KEY", MASTER)
    monkeypatch.setenv("RALEX_AGENT_KEY", AGENT)
    return Gate(App(), Runtime(), metrics_port=METRICS_PORT)  # type: ignore[arg-type]


def calls(gate: Gate) -> list[dict[str, Any]]:
    app = gate.app
    assert isinstance(app, App)
    return app.calls


# --- keys: read one way ------------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "key"), [
    ([(b"authorization", b"Bearer k1")], "k1"),
    ([(b"Authorization", b"bearer k1")], "k1"),
    ([(b"authorization", b"BEARER   k1  ")], "k1"),
    ([(b"x-api-key", b" k2 ")], "k2"),
    ([(b"authorization", b"Bearer k1"), (b"x-api-key", b"k2")], "k1"),
    ([(b"authorization", b"Bearer k1"), (b"authorization", b"Bearer k3")], "k1"),
    ([(b"authorization", b"Basic k1")], ""),
    ([(b"authorization", b"k1")], ""),
    ([(b"authorization", b"Basic k1"), (b"x-api-key", b"k2")], ""),
    ([(b"authorization", b"  "), (b"x-api-key", b"k2")], "k2"),
    ([(b"api-key", b"k1"), (b"x-goog-api-key", b"k1"), (b"ocp-apim-subscription-key", b"k1")], ""),
    ([], ""),
])
def test_a_key_is_read_one_way(headers: list[tuple[bytes, bytes]], key: str):
    assert presented_key(headers) == key


# --- /metrics and /health: the master key, in any spelling ---------------------------------------------

SPELLINGS = [{"Authorization": f"Bearer {MASTER}"}, {"authorization": f"bearer {MASTER}"},
             {"Authorization": f"BEARER {MASTER}"}, {"x-api-key": MASTER}]
NOT_MASTER = [({}, 401), ({"Authorization": "Bearer sk-bogus"}, 401), ({"Authorization": f"Basic {MASTER}"}, 401),
              ({"Authorization": MASTER}, 401), ({"api-key": MASTER}, 401), ({"x-goog-api-key": MASTER}, 401),
              ({"Authorization": f"bearer {AGENT}"}, 403), ({"x-api-key": AGENT}, 403),
              ({"Authorization": f"Bearer {CLIENT}"}, 403), ({"x-api-key": CLIENT}, 403)]


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "/metrics//", "/health", "/health/"])
@pytest.mark.parametrize(("headers", "status"), NOT_MASTER)
def test_metrics_and_health_refuse_every_key_but_the_master_key(gate: Gate, path: str, headers: dict[str, str],
                                                                status: int):
    answer = call(gate, path, headers=headers)
    assert answer.status == status
    assert "LITELLM_MASTER_KEY" in answer.json()["error"]["message"]
    assert calls(gate) == []


@pytest.mark.parametrize("headers", SPELLINGS)
def test_the_master_key_reads_metrics_in_any_spelling_without_a_redirect(gate: Gate, headers: dict[str, str]):
    answer = call(gate, "/metrics", headers={**headers, "x-api-key": headers.get("x-api-key", "sk-bogus")})
    assert answer.status == 200
    assert b"x-litellm-version" not in answer.headers
    [seen] = calls(gate)
    assert seen["path"] == "/metrics/"  # LiteLLM's metrics app, asked where it is mounted
    assert not [k for k, _ in seen["headers"] if k in (b"authorization", b"x-api-key")]


@pytest.mark.parametrize("headers", SPELLINGS)
def test_health_answers_the_master_key_without_calling_anything(gate: Gate, headers: dict[str, str]):
    answer = call(gate, "/health", headers=headers)
    assert answer.status == 200
    assert answer.json()["status"] == "healthy"
    assert "without calling a model" in answer.json()["checked"]
    assert calls(gate) == []


def test_health_says_when_ralex_is_not_ready(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LITELLM_MASTER_KEY", MASTER)
    gate = Gate(App(), Runtime(ready=False))  # type: ignore[arg-type]
    answer = call(gate, "/health", headers={"Authorization": f"Bearer {MASTER}"})
    assert answer.status == 503
    assert "postgres is away" in answer.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/health/test_connection", "/health/services", "/health/readiness",
                                  "/health/history", "/health/latest", "/health/shared-status", "/health/license",
                                  "/METRICS", "/Metrics/", "/metrics/x", "/metricsx", "/openapi.json",
                                  "/openrouter/v1/chat/completions", "/key/generate", "/", "/v1/metrics"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {MASTER}"}])
def test_routes_not_served_are_404_with_any_key(gate: Gate, path: str, headers: dict[str, str]):
    assert call(gate, path, method="POST" if "test_connection" in path else "GET", headers=headers).status == 404
    assert calls(gate) == []


def test_liveliness_is_the_one_route_without_a_key(gate: Gate):
    assert call(gate, "/health/liveliness").status == 200
    assert call(gate, "/health/liveness").status == 200
    assert [c["path"] for c in calls(gate)] == ["/health/liveliness", "/health/liveness"]


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "/health", "/health/liveliness", "/ralex/budget",
                                  "/v1/model/info"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {MASTER}"}, {"x-api-key": AGENT}])
def test_the_agent_socket_serves_no_metrics_health_or_admin_route(gate: Gate, path: str, headers: dict[str, str]):
    assert call(gate, path, headers=headers, server=SOCKET).status == 404
    assert calls(gate) == []


def test_the_metrics_port_serves_metrics_only_and_without_a_key(gate: Gate):
    port = ("10.0.0.5", METRICS_PORT)
    assert call(gate, "/metrics", server=port).status == 200
    assert call(gate, "/metrics/", server=port).status == 200
    assert [c["path"] for c in calls(gate)] == ["/metrics/", "/metrics/"]
    for path in ("/health", "/health/liveliness", "/v1/models", "/ralex/status", "/v1/chat/completions"):
        assert call(gate, path, server=port, headers={"Authorization": f"Bearer {MASTER}"}).status == 404, path
    assert len(calls(gate)) == 2


def test_other_routes_get_the_one_key_the_gate_read_as_authorization(gate: Gate):
    call(gate, "/v1/models", headers={"x-api-key": CLIENT, "api-key": MASTER, "x-goog-api-key": MASTER,
                                      "x-litellm-api-key": MASTER, "Ocp-Apim-Subscription-Key": MASTER})
    call(gate, "/ralex/status", headers={"Authorization": f"bearer {AGENT}"})
    assert call(gate, "/ralex/budget", headers={"Authorization": f"Basic {MASTER}"}).status == 401  # no key at all
    credentials = [[(k, v) for k, v in c["headers"] if b"key" in k or k == b"authorization"] for c in calls(gate)]
    assert credentials == [[(b"authorization", f"Bearer {CLIENT}".encode())],
                           [(b"authorization", f"Bearer {AGENT}".encode())]]


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/models"), ("GET", "/models"), ("GET", "/v1/model/info"),
                                              ("GET", "/ralex/status"), ("GET", "/ralex/budget"),
                                              ("POST", "/ralex/keys"), ("POST", "/v1/chat/completions"),
                                              ("POST", "/v1/messages"), ("POST", "/v1/responses"),
                                              ("POST", "/v1/messages/count_tokens"), ("GET", "/health"),
                                              ("GET", "/metrics")])
@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Basic {MASTER}"}, {"Authorization": MASTER},
                                     {"api-key": MASTER}, {"x-goog-api-key": MASTER}, {"Authorization": "Bearer  "}])
@pytest.mark.parametrize("server", [TCP, SOCKET])
def test_without_a_key_nothing_but_liveliness_passes_the_gate(gate: Gate, method: str, path: str,
                                                               headers: dict[str, str], server: tuple[str, int | None]):
    answer = call(gate, path, method=method, headers=headers, server=server, body=b"{}")
    assert answer.status in (401, 404) if server == SOCKET else answer.status == 401
    assert calls(gate) == []


# --- model bodies: parsed once, bounded, refused in each API's own error shape -------------------------

ROUTES = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}


def body_of(api: str, inner: Any = "hi") -> dict[str, Any]:
    if api == "responses":
        return {"model": "auto", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
                "tools": [{"type": "function", "name": "f", "parameters": inner}] if inner != "hi" else []}
    if api == "messages":
        return {"model": "auto", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}],
                **({"tools": [{"name": "f", "input_schema": inner}]} if inner != "hi" else {})}
    return {"model": "auto", "messages": [{"role": "user", "content": "hi"}],
            **({"tools": [{"type": "function", "function": {"name": "f", "parameters": inner}}]}
               if inner != "hi" else {})}


def error_message(api: str, answer: Answer) -> str:
    """The message of an error answer, after checking it has its API's shape."""
    payload = answer.json()
    if api == "messages":
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"
    else:
        assert payload["error"]["type"] == "invalid_request_error"
        assert payload["error"]["code"] == "400"
    return str(payload["error"]["message"])


def schema(levels: int) -> dict[str, Any]:
    """A JSON schema nesting ``levels`` objects (properties/x/properties/x/...)."""
    inner: dict[str, Any] = {"type": "string"}
    for _ in range(levels // 2):
        inner = {"type": "object", "properties": {"x": inner}}
    return inner


def post(gate: Gate, api: str, raw: bytes) -> Answer:
    return call(gate, ROUTES[api], method="POST", body=raw, headers={"Authorization": f"Bearer {AGENT}"})


@pytest.mark.parametrize("api", ROUTES)
@pytest.mark.parametrize("levels", [120, 960, 1_100, 50_000])
def test_a_tool_schema_nested_too_deep_is_a_400_in_the_apis_shape(gate: Gate, api: str, levels: int):
    raw = json.dumps(body_of(api, "@")).encode().replace(b'"@"', b'{"a":' * levels + b"1" + b"}" * levels)
    answer = post(gate, api, raw)
    assert answer.status == 400
    assert f"more than {MAX_DEPTH} levels deep" in error_message(api, answer)
    assert calls(gate) == []


@pytest.mark.parametrize("api", ROUTES)
def test_a_deep_tool_schema_inside_the_limit_reaches_litellm_parsed(gate: Gate, api: str):
    body = body_of(api, schema(MAX_DEPTH - 10))
    answer = post(gate, api, json.dumps(body).encode())
    assert answer.status == 200
    [seen] = calls(gate)
    keys, parsed = seen["parsed_body"]
    assert parsed == {k: v for k, v in body.items() if v != []}
    assert keys == tuple(parsed)


@pytest.mark.parametrize("api", ROUTES)
@pytest.mark.parametrize(("field", "token"), [("temperature", b"NaN"), ("top_p", b"Infinity"),
                                              ("temperature", b"-Infinity"), ("top_p", b"1e999")])
def test_nan_and_infinity_are_a_400_before_litellm(gate: Gate, api: str, field: str, token: bytes):
    raw = json.dumps({**body_of(api), field: "@"}).encode().replace(b'"@"', token)
    answer = post(gate, api, raw)
    assert answer.status == 400
    assert token.decode() in error_message(api, answer)
    assert calls(gate) == []


@pytest.mark.parametrize("api", ROUTES)
def test_a_non_string_text_is_a_400_in_every_api(gate: Gate, api: str):
    body = body_of(api)
    if api == "responses":
        body["input"][0]["content"][0]["text"] = {"nested": ["not", "text"]}
    else:
        body["messages"][0]["content"] = [{"type": "text", "text": 42}]
    answer = post(gate, api, json.dumps(body).encode())
    assert answer.status == 400
    assert "must be a string" in error_message(api, answer)
    assert calls(gate) == []


def test_count_tokens_parses_the_same_bounded_way(gate: Gate):
    headers = {"x-api-key": AGENT}
    deep = json.dumps(body_of("messages", "@")).encode().replace(b'"@"', b"[" * 1_100 + b"]" * 1_100)
    for raw, words in ((deep, f"more than {MAX_DEPTH} levels deep"),
                       (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "x": NaN}', "NaN"),
                       (json.dumps(body_of("messages", schema(400))).encode(), "levels deep")):
        answer = call(gate, "/v1/messages/count_tokens", method="POST", body=raw, headers=headers)
        assert answer.status == 400
        assert words in error_message("messages", answer)
    fine = call(gate, "/v1/messages/count_tokens", method="POST", headers=headers,
                body=json.dumps(body_of("messages", schema(MAX_DEPTH - 10))).encode())
    assert fine.status == 200
    assert fine.json()["input_tokens"] > 0
    assert calls(gate) == []


def deepest_allowed(api: str) -> bytes:
    """A body of ``api`` nesting exactly :data:`MAX_DEPTH` deep, the deepest point in a tool schema."""
    probe = json.dumps(body_of(api, "@")).encode()
    before = probe[:probe.index(b'"@"')]  # no brackets inside its strings
    levels = MAX_DEPTH - (before.count(b"[") + before.count(b"{") - before.count(b"]") - before.count(b"}"))
    return probe.replace(b'"@"', b'{"a":' * levels + b"1" + b"}" * levels)


@pytest.mark.parametrize("api", ROUTES)
def test_what_walks_a_body_after_the_gate_takes_the_deepest_one_the_gate_lets_through(api: str):
    raw = deepest_allowed(api)
    body = parse_body(raw)
    with pytest.raises(ValueError, match="levels deep"):
        parse_body(raw.replace(b'{"a":1}', b'{"a":[1]}'))  # one level more
    if api == "messages":
        clean, _ = forwardable_messages(copy.deepcopy(body))
        LiteLLMAnthropicMessagesAdapter().translate_anthropic_to_openai(clean)
    elif api == "responses":
        clean, _ = forwardable_responses(copy.deepcopy(body))
        LiteLLMCompletionResponsesConfig.transform_responses_api_request_to_chat_completion_request(
            model="openrouter/x", input=clean["input"], responses_api_request={"tools": clean["tools"]},
            custom_llm_provider="openrouter")
    else:
        clean = forwardable(copy.deepcopy(body))
    view = chat_view(clean, api)
    assert estimate_prompt_tokens(view["messages"], view.get("tools")) > 0


def test_the_shipped_prometheus_scrapes_the_metrics_port_compose_opens_and_never_publishes():
    root = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((root / "compose.yaml").read_text())
    prometheus = yaml.safe_load((root / "prometheus" / "prometheus.yml").read_text())
    litellm = compose["services"]["litellm"]
    port = str(litellm["environment"]["RALEX_METRICS_PORT"])
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "litellm")
    assert job["static_configs"][0]["targets"] == [f"litellm:{port}"]
    assert job.get("metrics_path", "/metrics").rstrip("/") == "/metrics"
    assert [p.split(":")[-1] for p in litellm["ports"]] == ["4000"]  # the API port only, on 127.0.0.1
    assert port in [str(p) for p in litellm["expose"]]


@pytest.mark.parametrize(("value", "port"), [("", None), ("9401", 9401)])
def test_the_metrics_port_is_optional(monkeypatch: pytest.MonkeyPatch, value: str, port: int | None):
    for name, setting in (("OPENROUTER_API_KEY", "sk-or-test"), ("LITELLM_MASTER_KEY", MASTER),
                          ("RALEX_DATABASE_URL", "postgresql://x@127.0.0.1/ralex"), ("RALEX_METRICS_PORT", value)):
        monkeypatch.setenv(name, setting)
    assert load_settings().metrics_port == port


def test_the_metrics_port_cannot_be_the_api_port(monkeypatch: pytest.MonkeyPatch):
    for name, setting in (("OPENROUTER_API_KEY", "sk-or-test"), ("LITELLM_MASTER_KEY", MASTER),
                          ("RALEX_DATABASE_URL", "postgresql://x@127.0.0.1/ralex"), ("RALEX_PROXY_PORT", "4000"),
                          ("RALEX_METRICS_PORT", "4000")):
        monkeypatch.setenv(name, setting)
    with pytest.raises(ConfigError, match=r"^RALEX_METRICS_PORT must differ from RALEX_PROXY_PORT"):
        load_settings()


@pytest.mark.parametrize("api", [*ROUTES, "count_tokens"])
@pytest.mark.parametrize("raw", [b"{}", b"[" * 100_000, json.dumps(body_of("chat")).encode()])
def test_a_model_route_checks_the_key_before_it_reads_the_body(gate: Gate, api: str, raw: bytes):
    path = ROUTES.get(api, "/v1/messages/count_tokens")
    for headers, words in (({"Authorization": "Bearer sk-bogus"}, "invalid API key"),
                           ({"x-api-key": REVOKED}, "key old-laptop was revoked (2026-12-01 09:30 UTC)")):
        answer = call(gate, path, method="POST", body=raw, headers=headers)
        assert answer.status == 401
        assert words in answer.json()["error"]["message"]
    assert calls(gate) == []


def test_a_client_key_cannot_be_checked_while_ralex_is_not_ready(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LITELLM_MASTER_KEY", MASTER)
    gate = Gate(App(), Runtime(ready=False))  # type: ignore[arg-type]
    answer = call(gate, "/v1/chat/completions", method="POST", body=b"{}", headers={"x-api-key": CLIENT})
    assert answer.status == 503
    assert "cannot check client keys yet (postgres is away)" in answer.json()["error"]["message"]


@settings(max_examples=400, deadline=None)
@given(api=st.sampled_from(["messages", "responses"]), data=st.data())
def test_whatever_passes_the_gate_litellm_translates_without_an_error(api: str, data: st.DataObject):
    """A body the allow-list accepts never makes LiteLLM's translation to a chat completion fail (a 5xx)."""
    body = copy.deepcopy(BASES[api])
    body["tools"] = copy.deepcopy(TOOLS[api])
    mutate(data, body, api, ("type", "text", "parameters", "description", "x"))
    try:
        clean, _ = (forwardable_messages if api == "messages" else forwardable_responses)(body)
    except RequestError:
        return
    if api == "messages":
        LiteLLMAnthropicMessagesAdapter().translate_anthropic_to_openai(clean)
    else:
        LiteLLMCompletionResponsesConfig.transform_responses_api_request_to_chat_completion_request(
            model="openrouter/x", input=clean["input"], custom_llm_provider="openrouter",
            responses_api_request={k: v for k, v in clean.items() if k not in ("model", "input")})


TOOLS = {"messages": [{"name": "read", "description": "read a file",
                       "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
         "responses": [{"type": "function", "name": "read", "description": "read a file",
                        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}},
                       {"type": "namespace", "name": "agents", "tools": [
                           {"type": "function", "name": "spawn", "parameters": {"type": "object"}}]}]}


# --- a large body is read off the event loop, once ---------------------------------------------------

@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
def test_the_readers_reading_of_a_large_body_is_admissions_own(api: str):
    """The gate reads a body over OFF_LOOP_BYTES in a worker process and hands admission that reading:
    it must be exactly what admission would read from the forwarded body."""
    from ralex.body import OFF_LOOP_BYTES, BodyReader, Checked
    from ralex.request import ChatRequest

    text = "fix the typo in a.py \u00e9\ufdfa " * (OFF_LOOP_BYTES // 20)
    body: dict[str, Any] = {"model": "auto", "stream": True}
    if api == "responses":
        body["input"] = text
    else:
        body["messages"] = [{"role": "user", "content": text}]
    raw = json.dumps(body).encode()
    assert len(raw) > OFF_LOOP_BYTES
    reader = BodyReader(workers=1)
    try:
        checked = asyncio.run(reader.read(raw, api))
    finally:
        reader.close()
    assert isinstance(checked, Checked)
    assert checked.read == ChatRequest.from_body(checked.clean, api)
    assert (checked.dropped, checked.payload) == ([], None)  # forwarded as it came


def test_a_large_body_with_a_problem_gets_its_400_from_the_worker():
    from ralex.body import OFF_LOOP_BYTES, BodyReader

    raw = b'{"model": "auto", "messages": [' + b"[" * 70 + b"]" * 70 + b"]" + b" " * OFF_LOOP_BYTES + b"}"
    reader = BodyReader(workers=1)
    try:
        message = asyncio.run(reader.read(raw, "chat"))
    finally:
        reader.close()
    assert isinstance(message, str)
    assert "levels deep" in message


def test_a_body_with_an_escaped_lone_surrogate_is_refused_by_name():
    from ralex.body import LONE_SURROGATE, read_body

    raw = b'{"model": "auto", "messages": [{"role": "user", "content": "a\\ud800"}]}'
    assert read_body(raw, "chat", False) == LONE_SURROGATE


# --- LiteLLM's lazy routes that Ralex serves load before the proxy opens -------------------------------

def test_every_served_route_litellm_loads_lazily_is_warmed_at_start():
    """The first request to a lazily registered LiteLLM route imports its module holding the event loop
    (~1.3 s for /v1/messages): each one Ralex serves is in WARM_ROUTES, whatever LiteLLM's version."""
    from litellm.proxy._lazy_features import LAZY_FEATURES

    from ralex.proxy.server import COUNT_TOKENS, OPEN_ROUTES, WARM_ROUTES

    for route in sorted(OPEN_ROUTES | {COUNT_TOKENS}):
        for feature in LAZY_FEATURES:
            if feature.matches(route):
                assert any(feature.matches(warm) for warm in WARM_ROUTES), (route, feature.name)


def test_the_gate_warms_those_routes_before_it_reports_startup():
    from ralex.proxy.server import WARM_ROUTES

    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            return
        seen.append(scope["path"])
        assert (await receive())["type"] == "http.request"

    class Runtime:
        async def start(self) -> None:
            return None

    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        assert seen == list(WARM_ROUTES)  # warmed before uvicorn hears the startup is complete

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    asyncio.run(Gate(app, Runtime())(  # type: ignore[arg-type]
        {"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete"]


def test_the_body_worker_imports_neither_litellm_nor_the_launcher():
    """A spawned worker imports the program's main module (the ``ralex-proxy`` script: ralex.proxy.start)
    and ralex.body: neither may pull in LiteLLM, pydantic or the launcher (the worker stays ~30 MB)."""
    import subprocess
    import sys

    code = ("import sys, ralex.proxy.start, ralex.body; "
            "print(sorted(m for m in ('litellm', 'pydantic', 'ralex.proxy.launch', 'psycopg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
