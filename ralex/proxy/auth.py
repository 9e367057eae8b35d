"""Proxy authentication (LiteLLM `general_settings.custom_auth`).

Ralex runs LiteLLM without its database, so LiteLLM's own key checks answer a wrong key with
"No connected db." This answers 401 with what to use instead. The keys known:

- ``LITELLM_MASTER_KEY``: the operator's key (ralexctl, admin routes); its requests are attributed
  to ``operator``;
- ``RALEX_AGENT_KEY`` (optional): the coding agent's key, allowed only the model routes, so the
  sandboxed agent never holds a key that can change the proxy; attributed to ``agent``;
- client keys (``ralexctl keys add NAME``): allowed only the model routes too, each attributed to
  its name and held to its daily sub-budget; a revoked key is refused with 401 naming it.

A key is read one way everywhere (:func:`presented_key`): the gate reads it, and LiteLLM and Ralex's
own routes then see only that key, as ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from typing import Any, Final

from fastapi import HTTPException, Request
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

from ralex.keys import AGENT, OPERATOR, ClientKey
from ralex.proxy.runtime import NotReady, runtime
from ralex.sinks import client_label

AGENT_ROUTES: Final = frozenset({"/v1/chat/completions", "/chat/completions", "/v1/messages", "/v1/responses",
                                 "/v1/messages/count_tokens", "/v1/models", "/models", "/ralex/status"})
"""The only paths the agent key may call (exact: LiteLLM's pass-through routes such as
/openrouter/v1/chat/completions end the same way and would bypass the budget)."""


CREDENTIAL_HEADERS: Final = frozenset({b"authorization", b"x-api-key", b"api-key", b"x-goog-api-key",
                                       b"ocp-apim-subscription-key", b"x-litellm-api-key"})
"""Every request header LiteLLM would take a key from; the gate replaces them all with the key it read."""


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The API key a request presents, read the one way the whole proxy reads it.

    ``Authorization: Bearer <key>`` (the scheme in any case), else ``x-api-key: <key>`` (Anthropic's
    clients); the first of each header counts. Empty when there is none: another scheme in
    ``Authorization`` (Basic, a bare key) or any other header is no key at all.
    """
    authorization = api_key = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"authorization" and authorization is None:
            authorization = value.decode("latin-1").strip()
        elif lowered == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1").strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return api_key or ""


def with_key(headers: Iterable[tuple[bytes, bytes]], key: str) -> list[tuple[bytes, bytes]]:
    """The headers LiteLLM sees: ``headers`` without any credential header, the ``User-Agent`` as its
    bounded label (:func:`ralex.sinks.client_label`), plus ``Authorization: Bearer <key>`` when there is a key."""
    kept = [(k, client_label(v) if k.lower() == b"user-agent" else v) for k, v in headers
            if k.lower() not in CREDENTIAL_HEADERS]
    return [*kept, (b"authorization", b"Bearer " + key.encode("latin-1", "replace"))] if key else kept


def is_agent_route(path: str) -> bool:
    return path.rstrip("/") in AGENT_ROUTES


AGENT_USER: Final = "ralex-agent"
KEY_USER_PREFIX: Final = "ralex-key:"


def matches(given: str, expected: str | None) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), (expected or "").encode())


def revoked_message(key: ClientKey) -> str:
    when = key.revoked_at.strftime("%Y-%m-%d %H:%M %Z") if key.revoked_at else "earlier"
    return (f"key {key.name} was revoked ({when}); ask the operator for a new key "
            "(ralexctl keys add NAME)")


def attributed_to(user: Any) -> str:
    """Who a request's spend belongs to, from what :func:`user_api_key_auth` returned for it."""
    user_id = str(getattr(user, "user_id", None) or "")
    if user_id == AGENT_USER:
        return AGENT
    if user_id.startswith(KEY_USER_PREFIX):
        return user_id.removeprefix(KEY_USER_PREFIX)
    return OPERATOR


async def client_key(given: str) -> ClientKey | None:
    """The client key a token is, once the runtime has loaded them (503 while Postgres is away)."""
    if not runtime.started:
        try:
            await runtime.ready()
        except NotReady as exc:
            raise HTTPException(503, f"Ralex cannot check client keys yet ({exc}); check that postgres is "
                                     "healthy") from None
    return runtime.client_key(given)


async def user_api_key_auth(request: Request, api_key: str | None) -> UserAPIKeyAuth:
    given = api_key.removeprefix("Bearer ").strip() if isinstance(api_key, str) else ""  # None: no key sent
    if matches(given, os.environ.get("LITELLM_MASTER_KEY")):
        return UserAPIKeyAuth(api_key=given, user_role=LitellmUserRoles.PROXY_ADMIN)
    if matches(given, os.environ.get("RALEX_AGENT_KEY")):
        if not is_agent_route(request.url.path):
            raise HTTPException(403, f"the agent key may only call the model routes, not {request.url.path}")
        return UserAPIKeyAuth(api_key=hashlib.sha256(given.encode()).hexdigest(), user_id=AGENT_USER)
    if not given:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>' with LITELLM_MASTER_KEY "
                                 "or RALEX_AGENT_KEY from .env")
    key = await client_key(given)
    if key is not None:
        if not key.active:
            raise HTTPException(401, revoked_message(key))
        if not is_agent_route(request.url.path):
            raise HTTPException(403, f"client keys may only call the model routes, not {request.url.path}")
        return UserAPIKeyAuth(api_key=key.key_hash, user_id=KEY_USER_PREFIX + key.name, key_alias=key.name)
    raise HTTPException(401, "invalid API key: use LITELLM_MASTER_KEY (or RALEX_AGENT_KEY for the agent) "
                             "from .env, or a client key from `ralexctl keys add`")
