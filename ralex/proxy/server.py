"""The proxy's server: LiteLLM's app behind Ralex's gate, served by uvicorn on TCP and, for an agent
container with no network, on a Unix socket.

The gate is a small ASGI layer in front of LiteLLM that every request passes first:

- **routes**: an allow-list (chat completions, Anthropic messages, OpenAI responses, models, metrics,
  health, Ralex's admin routes), closed by default: only ``/health/liveliness`` (and ``/health/liveness``)
  answer without a key; ``/metrics`` and ``/health`` need the master key; every other route checks its
  key in LiteLLM or in :mod:`ralex.proxy.routes`. LiteLLM's pass-through routes (``/openrouter/...`` and
  the like) would reach the upstream with the proxy's key and no budget, so they answer 404, as do
  LiteLLM's other health routes (``/health/test_connection`` calls a model). On the Unix socket only the
  agent routes exist; on the metrics port (RALEX_METRICS_PORT, for Prometheus inside the stack's
  network) only ``/metrics``, with no key.
- **keys**: read one way (:func:`ralex.proxy.auth.presented_key`: ``Authorization: Bearer`` in any
  case, else ``x-api-key``); LiteLLM and Ralex's routes get that key only, as ``Authorization``.
- ``/health`` is answered here, without calling a model (LiteLLM's would bill upstream calls that no
  ledger row records).
- **model request bodies** (chat completions, Anthropic ``/v1/messages``, OpenAI ``/v1/responses``):
  parsed once, here (:func:`ralex.params.parse_body`: UTF-8, nested at most 64 deep, no NaN or
  Infinity), checked by the allow-list of their API and its table of content parts
  (:mod:`ralex.params`); LiteLLM is handed the checked body and never parses it again. Invalid
  bodies, wrong types, unknown models and refused parameters get a 400 naming the problem, in that
  API's error shape; bookkeeping parameters are dropped, and what a client sends by default that
  would raise the bill (thinking, reasoning effort, web search) is removed and named in
  ``x-ralex-dropped``. A body over 128 KB is read in a worker process (:class:`ralex.body.BodyReader`),
  admission's reading of it included, so a 32 MB body does not hold the event loop. Request headers
  are allow-listed too (LiteLLM reads retries, timeouts, tags and credentials from headers; the
  ``User-Agent`` becomes a bounded label), and the query string is dropped.
- **headers owed**: the ``x-ralex-*`` headers the hooks noted (:mod:`ralex.proxy.exchange`) are written
  here and only here, each value encoded for HTTP (:func:`ralex.sinks.header_value`), on every answer
  (LiteLLM's /v1/messages rebuilds its error headers).
- ``/v1/messages/count_tokens`` is answered here, from Ralex's own prompt bound (no upstream call).
- **responses**: LiteLLM's own ``x-litellm-*`` headers (upstream base URL, version) are removed.
- **lifespan**: starts the Ralex runtime once LiteLLM has started and loads LiteLLM's lazy routes that
  Ralex serves (:data:`WARM_ROUTES`) before the proxy opens, and stops it (drains the ledger, keeps the
  journal) before LiteLLM shuts down.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

from ralex.body import SHAPE_DOCS, WHAT, BodyReader, Checked
from ralex.params import (
    ALIASES,
    RequestError,
    check_anthropic_messages,
    check_anthropic_system,
    check_anthropic_tools,
    parse_body,
)
from ralex.proxy.auth import is_agent_route, matches, presented_key, revoked_message, with_key
from ralex.proxy.exchange import open_exchange
from ralex.proxy.runtime import NotReady, ProxyRuntime, runtime
from ralex.proxy.settings import ProxySettings
from ralex.request import chat_view, estimate_prompt_tokens
from ralex.sinks import header_fields

log = logging.getLogger("ralex.proxy")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTE_APIS: Final = {"/v1/chat/completions": "chat", "/chat/completions": "chat", "/v1/messages": "messages",
                     "/v1/responses": "responses"}
"""The model routes and the API (request shape) each speaks."""
CHAT_ROUTES: Final = frozenset(ROUTE_APIS)
COUNT_TOKENS: Final = "/v1/messages/count_tokens"
METRICS: Final = "/metrics"
HEALTH: Final = "/health"
WARM_ROUTES: Final = ("/v1/messages",)
"""Routes LiteLLM registers on their first request (its lazy features) that Ralex serves: loaded at start."""
PUBLIC_ROUTES: Final = frozenset({"/health/liveliness", "/health/liveness"})
"""The only routes answered without a key: is the proxy up (LiteLLM's liveness probe, no model call)."""
MASTER_ROUTES: Final = frozenset({METRICS, HEALTH})
"""Routes the gate itself keeps to LITELLM_MASTER_KEY (LiteLLM would serve /metrics to anyone)."""
OPEN_PREFIXES: Final = ("/ralex/",)
OPEN_ROUTES: Final = frozenset({*PUBLIC_ROUTES, *MASTER_ROUTES, "/v1/models", "/models", "/v1/model/info",
                                "/model/info", *ROUTE_APIS, COUNT_TOKENS})
"""What the gate serves on TCP (the rest after a key check in LiteLLM or Ralex's routes); everything else is 404."""
FORWARDED_HEADERS: Final = frozenset({b"host", b"authorization", b"content-type", b"accept", b"accept-encoding",
                                      b"user-agent", b"connection"})
HIDDEN_RESPONSE_HEADERS: Final = (b"x-litellm-", b"llm_provider-")
MISSING_KEY: Final = ("missing API key: send 'Authorization: Bearer <key>' (or 'x-api-key') with LITELLM_MASTER_KEY, "
                      "RALEX_AGENT_KEY from .env or a client key from `ralexctl keys add`")


_ANTHROPIC_KINDS: Final = {"not_found": "not_found_error", "authentication_error": "authentication_error",
                            "permission_denied": "permission_error"}


def _error_body(status: int, message: str, kind: str, api: str = "chat") -> bytes:
    if api == "messages":  # Anthropic's error shape
        return json.dumps({"type": "error", "error": {"type": _ANTHROPIC_KINDS.get(kind, kind),
                                                      "message": message}}).encode()
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": str(status)}}).encode()


async def _respond(send: Send, status: int, message: str, kind: str = "invalid_request_error",
                   api: str = "chat") -> None:
    body = _error_body(status, message, kind, api)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Gate:
    """ASGI layer in front of LiteLLM's app (see the module docstring)."""

    def __init__(self, app: ASGIApp, rt: ProxyRuntime, *, max_body_bytes: int = 32 << 20,
                 metrics_port: int | None = None) -> None:
        self.app = app
        self.runtime = rt
        self.max_body_bytes = max_body_bytes
        self.metrics_port = metrics_port
        self.reader = BodyReader()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":  # websockets (LiteLLM's realtime API) are not served
            await send({"type": "websocket.close", "code": 1008})
            return
        path = scope["path"].rstrip("/") or "/"
        server = scope.get("server")
        agent_socket = server is None or server[1] is None  # a Unix socket: (path, None) or no address
        if agent_socket and not is_agent_route(path):
            await _respond(send, 404, f"{path} is not served to the agent; it may call /v1/chat/completions, "
                                      "/v1/messages, /v1/responses, /v1/models and /ralex/status", "not_found")
            return
        if not agent_socket and server is not None and server[1] == self.metrics_port:
            if path != METRICS:
                await _respond(send, 404, f"{path} is not served on the metrics port; it serves /metrics only",
                               "not_found")
                return
            await self._metrics(scope, receive, send)
            return
        if path not in OPEN_ROUTES and not path.startswith(OPEN_PREFIXES):
            await _respond(send, 404, f"{path} is not served by Ralex; use /v1/chat/completions, /v1/messages "
                                      "or /v1/responses (and ralexctl for the rest)", "not_found")
            return
        key = presented_key(scope.get("headers") or [])
        if not key and path not in PUBLIC_ROUTES:  # closed by default: no key, no route but liveliness
            await _respond(send, 401, MISSING_KEY, "authentication_error",
                           "messages" if path in (COUNT_TOKENS, "/v1/messages") else "chat")
            return
        if path in MASTER_ROUTES:
            if await self._master_only(path, key, send):
                await (self._health(send) if path == HEALTH else self._metrics(scope, receive, send))
            return
        if path in CHAT_ROUTES and scope.get("method") == "POST":
            await self._chat(scope, receive, send, ROUTE_APIS[path])
            return
        if path == COUNT_TOKENS and scope.get("method") == "POST":
            await self._count_tokens(scope, receive, send)
            return
        await self.app({**scope, "headers": with_key(scope.get("headers") or [], key)}, receive, _hiding_headers(send))

    async def _master_only(self, path: str, key: str, send: Send) -> bool:
        """Whether ``key`` is the master key; if not, the 401 (no key, an unknown one) or 403 was sent."""
        if matches(key, os.environ.get("LITELLM_MASTER_KEY")):
            return True
        if key and (matches(key, os.environ.get("RALEX_AGENT_KEY")) or self.runtime.client_key(key) is not None):
            await _respond(send, 403, f"{path} needs LITELLM_MASTER_KEY; the agent key and client keys may only "
                                      "call the model routes", "permission_denied")
            return False
        where = " (Prometheus scrapes it inside the stack on RALEX_METRICS_PORT)" if path == METRICS else ""
        await _respond(send, 401, f"{path} needs LITELLM_MASTER_KEY from .env: send 'Authorization: Bearer <key>'"
                                  f"{where}", "authentication_error")
        return False

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """LiteLLM's Prometheus metrics (its app mounted at /metrics/: asked there, no redirect)."""
        inner = {**scope, "path": "/metrics/", "raw_path": b"/metrics/", "query_string": b"",
                 "headers": with_key(scope.get("headers") or [], "")}
        await self.app(inner, receive, _hiding_headers(send))

    async def _health(self, send: Send) -> None:
        """``/health`` without a model call: LiteLLM's calls every model, upstream calls no ledger row records."""
        try:
            await self.runtime.ready()
        except NotReady as exc:
            await _respond(send, 503, f"Ralex is not ready ({exc}); check that postgres is healthy",
                           "service_unavailable")
            return
        body = json.dumps({"status": "healthy", "ledger": "ready", "models": list(ALIASES),
                           "checked": "by Ralex, without calling a model (every upstream call is billed)"}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _body(self, scope: Scope, receive: Receive, send: Send, api: str
                    ) -> tuple[bytes, Checked, list[tuple[bytes, bytes]]] | None:
        """The request's body as sent, checked (a large one off the event loop: :class:`ralex.body.BodyReader`)
        and its headers with the key; or None once an error answer was sent."""
        key = presented_key(scope.get("headers") or [])
        if (refusal := await self._key_refusal(key)) is not None:  # before the body is even read
            await _respond(send, *refusal, "authentication_error", api)
            return None
        headers = with_key([(k.lower(), v) for k, v in scope.get("headers") or []], key)
        raw = await _read_body(receive, self.max_body_bytes)
        if raw is None:
            await _respond(send, 413, f"the request body is over {self.max_body_bytes >> 20} MB; send a shorter "
                                      "conversation (or raise RALEX_MAX_BODY_BYTES)", api=api)
            return None
        checked = await self.reader.read(raw, api)
        if isinstance(checked, str):
            await _respond(send, 400, checked, api=api)
            return None
        return raw, checked, headers

    async def _chat(self, scope: Scope, receive: Receive, send: Send, api: str = "chat") -> None:
        checked = await self._body(scope, receive, send, api)
        if checked is None:
            return
        raw, body, headers = checked
        clean, dropped = body.clean, body.dropped
        payload = raw if body.payload is None else body.payload  # None: forward the bytes as they came
        kept = [(k, v) for k, v in headers if k in FORWARDED_HEADERS and k != b"content-type"]
        kept += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        # LiteLLM reads the body checked here, never the bytes again (it caches a parsed body in its scope)
        inner = {**scope, "headers": kept, "query_string": b"", "parsed_body": (tuple(clean), clean)}
        owed = open_exchange(body.read)
        if dropped:
            owed["x-ralex-dropped"] = ",".join(dropped)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            return await receive()  # waits for the client's disconnect, as the server's own receive does

        await self.app(inner, replay, _hiding_headers(send, owed))

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Anthropic's token count, answered from Ralex's prompt bound: no hook, no upstream call."""
        api = "messages"
        if (refusal := await self._key_refusal(presented_key(scope.get("headers") or []))) is not None:
            await _respond(send, *refusal, "authentication_error", api)
            return
        raw = await _read_body(receive, self.max_body_bytes)
        try:
            if raw is None:
                raise RequestError(f"the request body is over {self.max_body_bytes >> 20} MB")
            counted = parse_body(raw, what=WHAT[api])
            if not isinstance(counted, dict):
                raise RequestError("the request body must be a JSON object")
            check_anthropic_messages(counted)
            for name, check in (("system", check_anthropic_system), ("tools", check_anthropic_tools)):
                if counted.get(name) is not None:
                    check(name, counted[name])
            view = chat_view(counted, api)
            tokens = estimate_prompt_tokens(view["messages"], view.get("tools"))
        except (RequestError, ValueError) as exc:
            await _respond(send, 400, f"cannot count this request: {exc}", api=api)
            return
        except Exception:  # a shape the checks did not foresee: still the client's input, never a 500
            log.exception("ralex: unexpected count_tokens shape")
            await _respond(send, 400, f"cannot count this request: it does not have the shape of {WHAT[api]}; "
                                      f"see {SHAPE_DOCS[api]}", api=api)
            return
        body = json.dumps({"input_tokens": tokens}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _key_refusal(self, key: str) -> tuple[int, str] | None:
        """Why ``key`` may not call a model route, as (status, message); None for the master key, the agent
        key or an active client key. Checked before a body is read: no key, no parsing."""
        if matches(key, os.environ.get("LITELLM_MASTER_KEY")) or matches(key, os.environ.get("RALEX_AGENT_KEY")):
            return None
        if not key:
            return 401, MISSING_KEY
        try:
            await self.runtime.ready()
        except NotReady as exc:
            return 503, f"Ralex cannot check client keys yet ({exc}); check that postgres is healthy"
        client = self.runtime.client_key(key)
        if client is None:
            return 401, ("invalid API key: use LITELLM_MASTER_KEY (or RALEX_AGENT_KEY for the agent) from .env, or a "
                         "client key from `ralexctl keys add`")
        return None if client.active else (401, revoked_message(client))

    async def _warm_routes(self) -> None:
        """Load LiteLLM's lazily registered routes that Ralex serves before the proxy opens: the first
        request to one imports its module (~1.3 s holding the event loop, every request waiting)."""
        async def nothing_sent() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def discard(message: Message) -> None:
            return None

        for path in WARM_ROUTES:
            scope: Scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                            "root_path": "", "headers": [], "client": ("127.0.0.1", 0), "server": None}
            try:
                await self.app(scope, nothing_sent, discard)
            except Exception:  # the route loads on its first real request instead
                log.exception("ralex: warming %s failed", path)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_and_stop() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                self.reader.close()
                try:
                    await self.runtime.stop()
                except Exception:
                    log.exception("ralex: stopping the runtime failed; the journal keeps what was not written")
            return message

        async def start_then_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    await self.runtime.start()
                except Exception as exc:  # Postgres away: the first request retries (and answers 503 meanwhile)
                    log.warning("ralex: not started yet (%s); retrying on the first request", exc)
                await self._warm_routes()
            await send(message)

        await self.app(scope, receive_and_stop, start_then_send)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _hiding_headers(send: Send, owed: dict[str, str] | None = None) -> Send:
    """The one writer of Ralex's response headers: LiteLLM's own are removed, and so is any
    ``x-ralex-*`` the app sent; the ``owed`` ones (plain text: the reason quotes the prompt) are written
    through :func:`ralex.sinks.header_fields`, so every value is one printable ASCII line."""
    async def filtered(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", [])
                       if not k.lower().startswith((*HIDDEN_RESPONSE_HEADERS, b"x-ralex-"))]
            message["headers"] = headers + header_fields(owed or {})
        await send(message)

    return filtered


# --- serving ---------------------------------------------------------------------------------------

def unix_listener(path: Path) -> socket.socket:
    """A Unix socket any local user may connect to (the agent runs as the host user's uid)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o666)
    sock.listen(2048)
    return sock


def tcp_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


LITELLM_LOGGERS: Final = ("LiteLLM", "LiteLLM Proxy", "LiteLLM Router")
_REFUSAL_TRACE: Final = re.compile(
    r"_handle_llm_api_exception\(\): Exception occured - litellm_call_id=[^ ]{0,64} - 4\d\d: ")


class _NoRefusalTraces(logging.Filter):
    """Drops LiteLLM's ERROR record for a request Ralex refused on purpose (a 4xx with its own text): Ralex
    logs the refusal itself, once. Matched on the record's first 200 characters, in linear time."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _REFUSAL_TRACE.search(record.getMessage()[:200])


_NO_REFUSAL_TRACES: Final = _NoRefusalTraces()


def quiet_litellm() -> None:
    """LiteLLM's loggers at LITELLM_LOG (WARNING in the image), each record once through the root handler
    (LiteLLM adds handlers of its own, which printed every line twice and raw ANSI colours), and no trace
    for a refusal."""
    level = getattr(logging, os.environ.get("LITELLM_LOG", "WARNING").upper(), logging.WARNING)
    for name in LITELLM_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers.clear()
        logger.propagate = True
        logger.addFilter(_NO_REFUSAL_TRACES)  # one instance: adding it again is a no-op


def serve(settings: ProxySettings, config_path: Path) -> None:
    """Run LiteLLM's proxy app behind the gate (what ``litellm --config ...`` would run, plus Ralex)."""
    import litellm
    import uvicorn
    from litellm.proxy.proxy_server import app, save_worker_config

    from ralex.proxy.routes import register

    save_worker_config(  # type: ignore[no-untyped-call]
        model=None, alias=None, api_base=None, api_version=litellm.AZURE_DEFAULT_API_VERSION,
                       debug=False, detailed_debug=False, temperature=None, max_tokens=None, request_timeout=None,
                       max_budget=None, drop_params=False, add_function_to_prompt=False, headers=None, save=False,
                       config=str(config_path), use_queue=False)
    register(app, runtime)
    quiet_litellm()
    gate = Gate(app, runtime, max_body_bytes=settings.max_body_bytes, metrics_port=settings.metrics_port)
    sockets = [tcp_listener(settings.host, settings.port)]
    if settings.metrics_port is not None:  # /metrics only, no key: for Prometheus inside the stack's network
        sockets.append(tcp_listener(settings.host, settings.metrics_port))
    if settings.agent_socket is not None:
        sockets.append(unix_listener(settings.agent_socket))
    level = os.environ.get("LITELLM_LOG", "INFO").lower()
    config = uvicorn.Config(gate, host=settings.host, port=settings.port, server_header=False,
                            log_level=level if level in ("debug", "info", "warning", "error") else "info",
                            timeout_graceful_shutdown=10, lifespan="on")
    uvicorn.Server(config).run(sockets=sockets)
