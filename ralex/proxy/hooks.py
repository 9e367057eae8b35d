"""Ralex inside the LiteLLM proxy: a thin adapter from LiteLLM's callbacks to the budget engine.

Wired in the generated LiteLLM config as ``litellm_settings.callbacks: [ralex.proxy.hooks.handler]``;
the state lives in :data:`ralex.proxy.runtime.runtime`.

- ``async_pre_call_hook``: route + reserve (or refuse with 400/402); the upstream call is built
  from the decision: model, max_tokens, fallbacks; every override LiteLLM would take from the
  client (retries, timeouts, credentials, tags) is removed.
- ``async_post_call_response_headers_hook``: ``x-ralex-*`` headers explaining the decision.
- ``async_post_call_streaming_iterator_hook``: notes the generation id and whether the stream
  finished; a stream cut short is settled from OpenRouter's generation record (else the hold).
- ``async_log_success_event``: settle to the real cost (OpenRouter's ``usage.cost``).
- ``async_log_failure_event`` / ``async_post_call_failure_hook``: attempts the upstream refused
  cost nothing; attempts it may have generated (timeouts, dropped connections) cost their hold.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any, Final

from fastapi import HTTPException
from litellm.exceptions import APIConnectionError, Timeout
from litellm.integrations.custom_logger import CustomLogger

from ralex.engine import Rejected
from ralex.keys import AGENT, OPERATOR
from ralex.params import REFUSED, refused_in
from ralex.proxy.auth import attributed_to
from ralex.proxy.runtime import NotReady, runtime

log = logging.getLogger("ralex.proxy")
if not logging.getLogger("ralex").handlers:  # LiteLLM configures only its own loggers
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("ralex").addHandler(_handler)
    logging.getLogger("ralex").setLevel(logging.INFO)
CHAT_CALLS: Final = frozenset({"completion", "acompletion"})
META_KEY: Final = "ralex_request_id"
META_HEADERS: Final = "ralex_headers"
CLIENT_OVERRIDES: Final = ("num_retries", "timeout", "stream_timeout", "client_side_timeout", "disable_fallbacks",
                           "ttl", "cache", "tags", "extra_headers", "provider_specific_header", "max_retries",
                           "mock_response", "mock_testing_fallbacks", "user")
"""Keys LiteLLM fills from request headers or the body that would change the upstream call."""
BILLABLE_STATUS: Final = frozenset({408, 499, 524})


def _metadata(kwargs: dict[str, Any]) -> dict[str, Any]:
    params = kwargs.get("litellm_params") or {}
    return params.get("metadata") or kwargs.get("metadata") or {}


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
        if call_type not in CHAT_CALLS:
            raise HTTPException(400, f"Ralex serves chat completions only (/v1/chat/completions), not {call_type}")
        if (name := refused_in(data)) is not None:
            raise HTTPException(400, f"parameter '{name}' is not allowed: {REFUSED[name]}")
        try:
            engine = await runtime.ready()
        except NotReady as exc:
            raise HTTPException(503, f"Ralex budget guard is not ready ({exc}); check `docker compose logs "
                                     "litellm` and that postgres is healthy") from None
        client = attributed_to(user_api_key_dict)
        if client not in (AGENT, OPERATOR) and not runtime.key_active(client):  # revoked since it was checked
            raise HTTPException(401, f"key {client} was revoked; ask the operator for a new key") from None
        try:
            flight = engine.admit(data, client)
        except Rejected as rejected:
            raise HTTPException(rejected.status, rejected.message, headers=rejected.headers) from None
        decision = flight.decision
        for key in CLIENT_OVERRIDES:
            data.pop(key, None)
        data["model"] = decision.alias
        data.pop("max_completion_tokens", None)
        data["max_tokens"] = decision.max_tokens
        data["n"] = 1
        data["fallbacks"] = [{decision.alias: [{"model": fb.alias, "max_tokens": fb.max_tokens}
                                               for fb in decision.fallbacks]}] if decision.fallbacks else []
        metadata = data.setdefault("metadata", {})
        metadata[META_KEY] = flight.key
        metadata[META_HEADERS] = flight.headers
        return data

    async def async_post_call_response_headers_hook(self, data: dict[str, Any], user_api_key_dict: Any,
                                                    response: Any, request_headers: Any = None,
                                                    litellm_call_info: Any = None) -> dict[str, str] | None:
        headers = (data.get("metadata") or {}).get(META_HEADERS)
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
        return headers

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict: Any, response: Any,
                                                      request_data: dict[str, Any]) -> AsyncGenerator[Any, None]:
        key = (request_data.get("metadata") or {}).get(META_KEY)
        engine = runtime.engine
        flight = engine.in_flight.get(key) if engine is not None and key else None
        finished = False
        try:
            async for chunk in response:
                if flight is not None:
                    if flight.generation_id is None and getattr(chunk, "id", None):
                        flight.generation_id = chunk.id
                        runtime.note_generation(flight)
                    choices = getattr(chunk, "choices", None) or ()
                    finished = finished or any(getattr(c, "finish_reason", None) for c in choices)
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
            runtime.settle_from_upstream(flight.key, flight.generation_id or getattr(response_obj, "id", None),
                                         alias=alias)
            return
        spec = engine.routing.aliases.get(alias or "")
        generation = flight.generation_id or getattr(response_obj, "id", None)
        engine.settle(flight.key, cost, cost_source="upstream", model=spec.model if spec else None, alias=alias,
                      prompt_tokens=prompt, completion_tokens=completion, generation_id=generation)

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        key = _metadata(kwargs).get(META_KEY)
        engine = runtime.engine
        if engine is not None and key is not None:
            exc = kwargs.get("exception")
            engine.note_failed_attempt(key, _metadata(kwargs).get("model_group"), billable=may_be_billed(exc))

    async def async_post_call_failure_hook(self, request_data: dict[str, Any], original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        key = (request_data.get("metadata") or {}).get(META_KEY)
        engine = runtime.engine
        flight = engine.in_flight.get(key) if engine is not None and key else None
        if engine is not None and flight is not None and not flight.settling:
            engine.fail(flight.key, f"{type(original_exception).__name__}: {original_exception}")
        return None


def _served_model(response: Any) -> str | None:
    """The upstream model that produced the answer, as the response names it."""
    model = getattr(response, "model", None)
    return model if isinstance(model, str) and model else None


handler = RalexHooks()
