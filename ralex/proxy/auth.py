"""Proxy authentication (LiteLLM `general_settings.custom_auth`).

Ralex runs LiteLLM without its database, so LiteLLM's own key checks answer a wrong key with
"No connected db." This answers 401 with what to use instead. Two keys are known:

- ``LITELLM_MASTER_KEY``: the operator's key (ralexctl, admin routes);
- ``RALEX_AGENT_KEY`` (optional): the coding agent's key, allowed only the model routes, so the
  sandboxed agent never holds a key that can change the proxy.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Final

from fastapi import HTTPException, Request
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

AGENT_ROUTES: Final = frozenset({"/v1/chat/completions", "/chat/completions", "/v1/models", "/models",
                                 "/ralex/status"})
"""The only paths the agent key may call (exact: LiteLLM's pass-through routes such as
/openrouter/v1/chat/completions end the same way and would bypass the budget)."""


def is_agent_route(path: str) -> bool:
    return path.rstrip("/") in AGENT_ROUTES


def matches(given: str, expected: str | None) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), (expected or "").encode())


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    given = api_key.removeprefix("Bearer ").strip()
    if matches(given, os.environ.get("LITELLM_MASTER_KEY")):
        return UserAPIKeyAuth(api_key=given, user_role=LitellmUserRoles.PROXY_ADMIN)
    if matches(given, os.environ.get("RALEX_AGENT_KEY")):
        if not is_agent_route(request.url.path):
            raise HTTPException(403, f"the agent key may only call the model routes, not {request.url.path}")
        return UserAPIKeyAuth(api_key=hashlib.sha256(given.encode()).hexdigest(), user_id="ralex-agent")
    if not given:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>' with LITELLM_MASTER_KEY "
                                 "or RALEX_AGENT_KEY from .env")
    raise HTTPException(401, "invalid API key: use LITELLM_MASTER_KEY (or RALEX_AGENT_KEY for the agent) "
                             "from .env")
