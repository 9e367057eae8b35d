"""Ralex's own endpoints on the proxy (master key only); `ralexctl` talks to these.

- ``GET /ralex/budget``: today's budget as the proxy holds it (spend, holds, tier, reset, ledger lag).
- ``PUT /ralex/budget``: change the live budget settings (limit, timezone, tiers, per-request
  ``caps``); applied before the response returns.
- ``GET /ralex/spend?days=7&by=alias``: spend per day from the ledger's daily aggregates.
- ``GET /ralex/status?since=<event id>`` (agent key too): budget left, tier, alert level, reset
  time and recent events (thresholds crossed, step-downs, refusals) for the agent's toasts.
- ``POST /ralex/route``: what the proxy would decide for a chat body now, without forwarding it
  (``ralex_remaining`` in the body asks "what if only this much were left today").
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.routing import APIRoute

from ralex.budget import BudgetError, parse_budget
from ralex.engine import Rejected
from ralex.proxy.auth import matches
from ralex.proxy.runtime import NotReady, ProxyRuntime

BUDGET_FIELDS = ("daily_limit", "timezone", "smart_min_remaining", "cheap_min_remaining", "emergency_max_tokens",
                 "caps", "alert_thresholds")


def _require_any_key(request: Request) -> None:
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not (matches(given, os.environ.get("LITELLM_MASTER_KEY")) or matches(given, os.environ.get("RALEX_AGENT_KEY"))):
        raise HTTPException(401, "this endpoint needs RALEX_AGENT_KEY (or LITELLM_MASTER_KEY) from .env")


def _require_master(request: Request) -> None:
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not matches(given, os.environ.get("LITELLM_MASTER_KEY")):
        raise HTTPException(401, "this endpoint needs LITELLM_MASTER_KEY from .env")


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(400, "the request body must be JSON") from None
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
        """Read-only budget status for the agent (its toasts): no keys, no prices, no ledger."""
        _require_any_key(request)
        try:
            return await runtime.status_view(since)
        except NotReady as exc:
            raise HTTPException(503, f"Ralex is not ready ({exc})") from None

    for path, endpoint, methods in (("/ralex/budget", budget, ["GET"]), ("/ralex/budget", set_budget, ["PUT"]),
                                    ("/ralex/spend", spend, ["GET"]), ("/ralex/route", explain, ["POST"]),
                                    ("/ralex/status", status, ["GET"])):
        app.router.routes.insert(0, APIRoute(path, endpoint, methods=methods, include_in_schema=False,
                                             tags=["ralex"]))
