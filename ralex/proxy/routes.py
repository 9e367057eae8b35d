"""Ralex's own endpoints on the proxy (master key only); `ralexctl` talks to these.

- ``GET /ralex/budget``: today's budget as the proxy holds it (spend, holds, tier, reset, ledger lag).
- ``PUT /ralex/budget``: change the live budget settings (limit, timezone, tiers, per-request
  ``caps``); applied before the response returns.
- ``GET /ralex/spend?days=7&by=alias``: spend per day from the ledger's daily aggregates.
- ``GET /ralex/status?since=<event id>`` (agent key too): budget left, tier, alert level, reset
  time and recent events (thresholds crossed, step-downs, refusals) for the agent's toasts. A client
  key gets its own sub-budget only (spent, held, left, reset time): never the day's budget or events.
- ``POST /ralex/route``: what the proxy would decide for a chat body now, without forwarding it
  (``ralex_remaining`` in the body asks "what if only this much were left today").
- ``GET /ralex/keys``: the client keys with their sub-budgets, today's spend and holds;
  ``POST /ralex/keys`` ``{"name": ..., "budget": 2}`` creates one and answers the plain key (once);
  ``PUT /ralex/keys/{name}`` ``{"budget": 5 | null}`` changes its sub-budget; ``DELETE
  /ralex/keys/{name}`` revokes it. Every change applies to the key's next request.

Keys are read as the gate reads them (:func:`ralex.proxy.auth.presented_key`); JSON bodies are parsed
as the gate parses them (:func:`ralex.params.parse_body`: bounded depth, no NaN).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.routing import APIRoute

from ralex.budget import BudgetError, key_summary, parse_budget
from ralex.engine import Rejected
from ralex.keys import ClientKey, ClientKeyError
from ralex.params import RequestError, parse_body
from ralex.proxy.auth import matches, presented_key
from ralex.proxy.runtime import NotReady, ProxyRuntime, UnknownKey, runtime

BUDGET_FIELDS = ("daily_limit", "timezone", "smart_min_remaining", "cheap_min_remaining", "emergency_max_tokens",
                 "caps", "alert_thresholds")


def _require_any_key(request: Request) -> ClientKey | None:
    """The client key calling (None: the master or the agent key); 401 for anything else."""
    given = presented_key(request.headers.raw)
    if matches(given, os.environ.get("LITELLM_MASTER_KEY")) or matches(given, os.environ.get("RALEX_AGENT_KEY")):
        return None
    key = runtime.client_key(given)
    if key is None or not key.active:
        raise HTTPException(401, "this endpoint needs RALEX_AGENT_KEY (or LITELLM_MASTER_KEY) from .env, or an "
                                 "active client key")
    return key


def _require_master(request: Request) -> None:
    if not matches(presented_key(request.headers.raw), os.environ.get("LITELLM_MASTER_KEY")):
        raise HTTPException(401, "this endpoint needs LITELLM_MASTER_KEY from .env")


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = parse_body(await request.body())
    except RequestError as exc:
        raise HTTPException(400, str(exc)) from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the request body must be a JSON object")
    return body


def register(app: FastAPI, runtime: ProxyRuntime) -> None:
    async def budget(request: Request) -> dict[str, Any]:
        _require_master(request)
        try:
            return await runtime.budget_view()
        except NotReady as exc:
            raise HTTPException(503, f"Ralex is not ready ({exc})") from None

    async def set_budget(request: Request) -> dict[str, Any]:
        _require_master(request)
        body = await _json_object(request)
        unknown = sorted(set(body) - set(BUDGET_FIELDS) - {"by"})
        if unknown:
            raise HTTPException(400, f"unknown budget field '{unknown[0]}'; use {', '.join(BUDGET_FIELDS)}")
        try:
            return await runtime.change_settings(by=str(body.get("by", "api"))[:40],
                                                 **{k: body[k] for k in BUDGET_FIELDS if k in body})
        except (BudgetError, ValueError, AttributeError, TypeError) as exc:
            raise HTTPException(400, str(exc)) from None

    async def spend(request: Request, days: int = 7, by: str = "alias") -> dict[str, Any]:
        _require_master(request)
        try:
            return await runtime.spend(days, by)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    async def explain(request: Request) -> dict[str, Any]:
        _require_master(request)
        body = await _json_object(request)
        remaining = body.pop("ralex_remaining", None)
        if remaining is not None:
            try:
                remaining = parse_budget(remaining)
            except BudgetError as exc:
                raise HTTPException(400, f"ralex_remaining: {exc}") from None
        try:
            return await runtime.explain(body, remaining)
        except Rejected as exc:
            raise HTTPException(exc.status, exc.message) from None

    async def status(request: Request, since: int | None = None) -> dict[str, Any]:
        """Read-only budget status for the agent (its toasts): no keys, no prices, no ledger. A client key
        sees its own sub-budget only: the day's budget and events belong to the operator."""
        key = _require_any_key(request)
        try:
            return await (runtime.status_view(since) if key is None else _own_status(key))
        except NotReady as exc:
            raise HTTPException(503, f"Ralex is not ready ({exc})") from None

    async def keys(request: Request) -> dict[str, Any]:
        _require_master(request)
        return await _keys_call(runtime.keys_view())

    async def add_key(request: Request) -> dict[str, Any]:
        _require_master(request)
        body = await _json_object(request)
        _only(body, ("name", "budget"))
        return await _keys_call(runtime.add_key(body.get("name"), body.get("budget")))

    async def set_key(request: Request, name: str) -> dict[str, Any]:
        _require_master(request)
        body = await _json_object(request)
        _only(body, ("budget",))
        if "budget" not in body:
            raise HTTPException(400, 'send {"budget": 5} (dollars a day) or {"budget": null} (global budget only)')
        return await _keys_call(runtime.set_key_budget(name, body["budget"]))

    async def revoke_key(request: Request, name: str) -> dict[str, Any]:
        _require_master(request)
        return await _keys_call(runtime.revoke_key(name))

    for path, endpoint, methods in (("/ralex/budget", budget, ["GET"]), ("/ralex/budget", set_budget, ["PUT"]),
                                    ("/ralex/spend", spend, ["GET"]), ("/ralex/route", explain, ["POST"]),
                                    ("/ralex/status", status, ["GET"]), ("/ralex/keys", keys, ["GET"]),
                                    ("/ralex/keys", add_key, ["POST"]), ("/ralex/keys/{name}", set_key, ["PUT"]),
                                    ("/ralex/keys/{name}", revoke_key, ["DELETE"])):
        app.router.routes.insert(0, APIRoute(path, endpoint, methods=methods, include_in_schema=False,
                                             tags=["ralex"]))


async def _own_status(key: ClientKey) -> dict[str, Any]:
    """One client key's view of its budget: its sub-budget (None: the day's budget only, not shown), what it
    spent and holds today, what is left of it, and when the day resets."""
    view = await runtime.keys_view()
    mine = next((k for k in view["keys"] if k["name"] == key.name), None)
    if mine is None:  # revoked meanwhile
        raise HTTPException(401, f"key {key.name} is no longer active")
    return {"key": key.name, "daily_budget": mine["daily_budget"], "spent": mine["spent_today"],
            "held": mine["held"], "remaining": mine["remaining"], "resets_at": view["resets_at"],
            "summary": key_summary(key.name, mine["daily_budget"], mine["spent_today"], mine["held"],
                                   view["reset_line"])}


def _only(body: dict[str, Any], fields: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise HTTPException(400, f"unknown field '{unknown[0]}'; use {', '.join(fields)}")


async def _keys_call(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A key operation, its failures as the client's 4xx (never a 5xx for bad input)."""
    try:
        return await call
    except ClientKeyError as exc:
        raise HTTPException(400, str(exc)) from None
    except UnknownKey as exc:
        raise HTTPException(404, str(exc)) from None
    except NotReady as exc:
        raise HTTPException(503, f"Ralex is not ready ({exc})") from None
