"""Ralex inside the LiteLLM proxy: a thin adapter from LiteLLM's callbacks to the budget engine.

Wired in the generated LiteLLM config as ``litellm_settings.callbacks: [ralex.proxy.hooks.handler]``;
the state lives in :data:`ralex.proxy.runtime.runtime`.

- ``async_pre_call_hook``: route + reserve (or refuse with 400/402) for the call types of the three
  served APIs (chat completions, Anthropic messages, OpenAI responses; any other is a 400); the
  upstream call is built from the decision: model, the output cap in that API's own field,
  fallbacks; every override LiteLLM would take from the client (retries, timeouts, credentials,
  tags) is removed. Ralex's request key goes where LiteLLM keeps its own bookkeeping.
- ``async_post_call_response_headers_hook``: ``x-ralex-*`` headers explaining the decision, owed to the
  gate (:mod:`ralex.proxy.exchange`), which alone writes them (each value through
  :func:`ralex.sinks.header_value`: the reason quotes the prompt).
- ``async_post_call_streaming_iterator_hook``: notes the generation id and whether the stream
  finished (chat chunks, Anthropic SSE frames or Responses events); a stream cut short is settled
  from OpenRouter's generation record (else the hold).
- ``log_pre_api_call``: each upstream call (primary, every fallback) is an attempt of its own.
- ``async_log_success_event``: settle to the real cost (OpenRouter's ``usage.cost``).
- ``async_log_failure_event`` / ``async_post_call_failure_hook``: attempts the upstream refused
  cost nothing; attempts it may have generated (timeouts, dropped connections) or that never
  reported back cost their own worst case.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Any, Final

from fastapi import HTTPException
from litellm.exceptions import APIConnectionError, Timeout
from litellm.integrations.custom_logger import CustomLogger
from litellm.responses.utils import ResponsesAPIRequestUtils

from ralex.engine import Rejected
from ralex.keys import AGENT, OPERATOR
from ralex.params import REFUSED, REFUSED_ELSEWHERE, refused_in
from ralex.proxy.auth import attributed_to
from ralex.proxy.exchange import owe, read_request
from ralex.proxy.runtime import NotReady, runtime
from ralex.request import ChatRequest

CALL_APIS: Final = {"completion": "chat", "acompletion": "chat", "anthropic_messages": "messages",
                    "aresponses": "responses"}
"""The call types Ralex admits and settles, and the request shape each carries; any other is refused."""
OUTPUT_CAP: Final = {"chat": "max_tokens", "messages": "max_tokens", "responses": "max_output_tokens"}
"""Where each API takes its output cap (LiteLLM drops max_tokens on /v1/responses: uncapped)."""
META_KEY: Final = "ralex_request_id"
META_HEADERS: Final = "ralex_headers"
CLIENT_OVERRIDES: Final = ("num_retries", "timeout", "stream_timeout", "client_side_timeout", "disable_fallbacks",
                           "ttl", "cache", "tags", "extra_headers", "provider_specific_header", "max_retries",
                           "mock_response", "mock_testing_fallbacks", "user")
"""Keys LiteLLM fills from request headers or the body that would change the upstream call."""
BILLABLE_STATUS: Final = frozenset({408, 499, 524})
_MESSAGE_STOP: Final = re.compile(r"(?:^|\n)event: *message_stop\b")
"""The last event of a complete Anthropic stream (LiteLLM's translation emits it once the upstream finished)."""


def read_for(data: dict[str, Any]) -> ChatRequest | None:
    """The gate's reading of this body (a large one, read off the event loop), if it is this body's."""
    read = read_request()
    if read is None or read.requested_alias != data.get("model") or read.stream != bool(data.get("stream")):
        return None
    return read


def _metadata(kwargs: dict[str, Any]) -> dict[str, Any]:
    params = kwargs.get("litellm_params") or {}
    return params.get("metadata") or kwargs.get("metadata") or {}


def _slot(data: dict[str, Any]) -> str:
    """Where LiteLLM keeps its bookkeeping for this request: ``metadata`` is the API's own field on
    /v1/messages and /v1/responses (forwarded upstream there), ``litellm_metadata`` the proxy's."""
    return "litellm_metadata" if "litellm_metadata" in data else "metadata"


def _ours(data: dict[str, Any]) -> dict[str, Any]:
    for slot in ("litellm_metadata", "metadata"):
        found = data.get(slot)
        if isinstance(found, dict) and META_KEY in found:
            return found
    return {}


def _header_generation_id(response: Any) -> str | None:
    """The ``X-Generation-Id`` header OpenRouter answered with, as LiteLLM keeps it."""
    hidden = getattr(response, "_hidden_params", None)
    headers = hidden.get("additional_headers") if isinstance(hidden, dict) else None
    found = headers.get("llm_provider-x-generation-id") if isinstance(headers, dict) else None
    return found if isinstance(found, str) and found else None


def _generation_id(response: Any) -> str | None:
    """OpenRouter's generation id: the header, else the answer's id (a translated /v1/messages answer
    has an id of LiteLLM's own, so the header comes first)."""
    ident = getattr(response, "id", None)
    return _header_generation_id(response) or (ident if isinstance(ident, str) and ident else None)


def _translated_generation_id(stream: Any) -> str | None:
    """A /v1/messages stream is LiteLLM's translation of an OpenRouter chat stream: the generation id is
    in the upstream's header, or the id of the chat chunks it has read so far."""
    found = _header_generation_id(stream)
    if found:
        return found
    chunks = getattr(stream, "chunks", None)
    ident = getattr(chunks[0], "id", None) if isinstance(chunks, list) and chunks else None
    return ident if isinstance(ident, str) and ident else None


def _responses_generation_id(ident: Any) -> str | None:
    """The upstream id inside a /v1/responses id (LiteLLM encodes provider, deployment and id in it)."""
    if not isinstance(ident, str) or not ident:
        return None
    if ident.startswith("resp_"):
        try:
            ident = ResponsesAPIRequestUtils.decode_responses_api_response_id(ident).get("response_id")
        except Exception:
            return None
    return ident if isinstance(ident, str) and ident and not ident.startswith("resp_") else None


def _stream_state(chunk: Any) -> tuple[str | None, bool]:
    """(generation id, finished) read from one streamed chunk of any served API."""
    if isinstance(chunk, bytes | str):  # /v1/messages: Anthropic SSE frames (the answer's text is JSON-escaped)
        text = chunk.decode(errors="replace") if isinstance(chunk, bytes) else chunk
        return None, _MESSAGE_STOP.search(text) is not None
    kind = getattr(chunk, "type", None)
    if isinstance(kind, str) and kind.startswith("response."):  # /v1/responses: typed events
        generation = _responses_generation_id(getattr(getattr(chunk, "response", None), "id", None))
        return generation, kind in ("response.completed", "response.incomplete", "response.failed")
    ident = getattr(chunk, "id", None)
    choices = getattr(chunk, "choices", None) or ()
    return (ident if isinstance(ident, str) and ident else None,
            any(getattr(c, "finish_reason", None) for c in choices))


def _real_cost(response: Any) -> float | None:
    """OpenRouter's own figure for what the request cost (``usage.cost``), if the answer carried it."""
    usage = getattr(response, "usage", None)
    cost = getattr(usage, "cost", None) if usage is not None else None
    try:
        return float(cost) if cost is not None else None
    except (TypeError, ValueError):
        return None


def may_be_billed(exc: BaseException | None) -> bool:
    """Whether a failed attempt may still have been generated (and billed) upstream.

    An error status from the upstream means it refused the call; a timeout or a dropped connection
    means it may have generated the answer that never arrived.
    """
    if exc is None:
        return False
    if isinstance(exc, Timeout | APIConnectionError | TimeoutError):
        return True
    return getattr(exc, "status_code", None) in BILLABLE_STATUS


class RalexHooks(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict[str, Any],
                                  call_type: Any) -> dict[str, Any]:
        api = CALL_APIS.get(str(call_type))
        if api is None:
            raise HTTPException(400, "Ralex serves chat completions (/v1/chat/completions), Anthropic messages "
                                     f"(/v1/messages) and OpenAI responses (/v1/responses) only, not {call_type}")
        if (name := refused_in(data, REFUSED if api == "chat" else REFUSED_ELSEWHERE)) is not None:
            raise HTTPException(400, f"parameter '{name}' is not allowed: {REFUSED_ELSEWHERE[name]}")
        try:
            engine = await runtime.ready()
        except NotReady as exc:
            raise HTTPException(503, f"Ralex budget guard is not ready ({exc}); check `docker compose logs "
                                     "litellm` and that postgres is healthy") from None
        client = attributed_to(user_api_key_dict)
        if client not in (AGENT, OPERATOR) and not runtime.key_active(client):  # revoked since it was checked
            raise HTTPException(401, f"key {client} was revoked; ask the operator for a new key") from None
        try:
            flight = await runtime.admit(engine, data, client, api, read_for(data))
        except Rejected as rejected:
            owe(rejected.headers)  # the gate writes them, whatever error shape LiteLLM builds
            raise HTTPException(rejected.status, rejected.message) from None
        decision = flight.decision
        for key in CLIENT_OVERRIDES:
            data.pop(key, None)
        data["model"] = decision.alias
        cap = OUTPUT_CAP[api]
        for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
            data.pop(key, None)
        data[cap] = decision.max_tokens
        if api == "chat":
            data["n"] = 1
        else:
            data.pop("n", None)
        data["fallbacks"] = [{decision.alias: [{"model": fb.alias, cap: fb.max_tokens}
                                               for fb in decision.fallbacks]}] if decision.fallbacks else []
        metadata = data.setdefault(_slot(data), {})
        metadata[META_KEY] = flight.key
        metadata[META_HEADERS] = flight.headers
        owe(flight.headers)
        return data

    async def async_post_call_response_headers_hook(self, data: dict[str, Any], user_api_key_dict: Any,
                                                    response: Any, request_headers: Any = None,
                                                    litellm_call_info: Any = None) -> dict[str, str] | None:
        headers = _ours(data).get(META_HEADERS)
        if not headers:
            return None
        headers = dict(headers)
        served = _served_model(response)
        planned = headers.get("x-ralex-model", "")
        if served and not served.endswith(planned):  # a fallback answered: say which
            engine = runtime.engine
            flight = engine.in_flight.get(headers.get("x-ralex-request-id", "")) if engine else None
            for fb in flight.decision.fallbacks if flight and engine else ():
                spec = engine.routing.aliases.get(fb.alias) if engine else None
                if spec is not None and served.endswith(spec.model):
                    headers["x-ralex-fallback-from"] = headers.get("x-ralex-route", "")
                    headers["x-ralex-route"] = fb.alias
                    headers["x-ralex-model"] = spec.model
                    headers["x-ralex-max-tokens"] = str(fb.max_tokens)
                    break
        owe(headers)  # the gate alone writes x-ralex-* headers (encoded for HTTP), none go through LiteLLM
        return None

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict: Any, response: Any,
                                                      request_data: dict[str, Any]) -> AsyncGenerator[Any, None]:
        key = _ours(request_data).get(META_KEY)
        engine = runtime.engine
        flight = engine.in_flight.get(key) if engine is not None and key else None
        finished = False
        if flight is not None and flight.generation_id is None and (started := _header_generation_id(response)):
            flight.generation_id = started  # the answer's headers name it before any chunk arrives
            runtime.note_generation(flight)
        try:
            async for chunk in response:
                if flight is not None:
                    generation, done = _stream_state(chunk)
                    generation = generation or _translated_generation_id(response)
                    if flight.generation_id is None and generation:
                        flight.generation_id = generation
                        runtime.note_generation(flight)
                    finished = finished or done
                yield chunk
        except Exception as exc:
            if flight is not None:  # cut mid-stream: the part already generated may be billed
                runtime.settle_from_upstream(flight.key, flight.generation_id, alias=flight.decision.alias,
                                             status="error", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            if flight is not None and not finished:  # the client left, or the stream broke off
                runtime.settle_from_upstream(flight.key, flight.generation_id, alias=flight.decision.alias,
                                             status="cancelled", error="the stream ended before the answer did")

    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        key = _metadata(kwargs).get(META_KEY)
        engine = runtime.engine
        flight = engine.in_flight.get(key) if engine is not None and key else None
        if engine is None or flight is None or flight.settling:
            return
        usage = getattr(response_obj, "usage", None)
        prompt = getattr(usage, "prompt_tokens", None)
        completion = getattr(usage, "completion_tokens", None)
        alias = _metadata(kwargs).get("model_group")
        cost = _real_cost(response_obj)
        if cost is None:  # no usage chunk: ask OpenRouter what the generation cost, else charge the hold
            runtime.settle_from_upstream(flight.key, _generation_id(response_obj) or flight.generation_id,
                                         alias=alias)
            return
        spec = engine.routing.aliases.get(alias or "")
        generation = _generation_id(response_obj) or flight.generation_id
        engine.settle(flight.key, cost, cost_source="upstream", model=spec.model if spec else None, alias=alias,
                      prompt_tokens=prompt, completion_tokens=completion, generation_id=generation)

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: dict[str, Any]) -> None:
        """An upstream call is about to be made (the primary, or a fallback): it is an attempt of its own.

        LiteLLM shares one logging object across a request's fallbacks and reports a failure only
        once per object; clearing that mark here gets each attempt's own failure reported.
        """
        kwargs.pop("has_logged_async_failure", None)
        kwargs.pop("has_logged_sync_failure", None)
        key = _metadata(kwargs).get(META_KEY)
        engine = runtime.engine
        if engine is not None and isinstance(key, str):
            engine.start_attempt(key, _metadata(kwargs).get("model_group"))

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        key = _metadata(kwargs).get(META_KEY)
        engine = runtime.engine
        if engine is not None and key is not None:
            exc = kwargs.get("exception")
            engine.note_failed_attempt(key, _metadata(kwargs).get("model_group"), billable=may_be_billed(exc))

    async def async_post_call_failure_hook(self, request_data: dict[str, Any], original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        key = _ours(request_data).get(META_KEY)
        engine = runtime.engine
        flight = engine.in_flight.get(key) if engine is not None and key else None
        if engine is not None and flight is not None and not flight.settling:
            engine.fail(flight.key, f"{type(original_exception).__name__}: {original_exception}")
        return None


def _served_model(response: Any) -> str | None:
    """The upstream model that produced the answer, as the response names it."""
    model = response.get("model") if isinstance(response, dict) else getattr(response, "model", None)
    return model if isinstance(model, str) and model else None


handler = RalexHooks()
