"""Ralex's own endpoints on the proxy (master key only); `ralexctl` talks to these.

- ``GET /ralex/budget``: today's budget as the proxy holds it (spend, holds, tier, reset, ledger lag).
- ``PUT /ralex/budget``: change the live budget settings (limit, timezone, tiers, per-request
  ``caps``); applied before the response returns.
- ``GET /ralex/spend?days=7&by=alias``: spend per day from the ledger's daily aggregates.
- ``POST /ralex/route``: what the proxy would decide for a chat body now, without forwarding it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import psycopg
from fastapi import FastAPI, HTTPException, Request
from fastapi.routing import APIRoute

from ralex.budget import BudgetError
from ralex.ledger.store import SPEND_GROUPS, settings_update, spend_query
from ralex.policy import Decision, RouteInput, route
from ralex.proxy.auth import _matches
from ralex.request import ChatRequest, RequestError

if TYPE_CHECKING:
    from ralex.proxy.hooks import RalexHooks


def _require_master(request: Request) -> None:
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not _matches(given, os.environ.get("LITELLM_MASTER_KEY")):
        raise HTTPException(401, "this endpoint needs LITELLM_MASTER_KEY from .env")


def register(app: FastAPI, hooks: RalexHooks) -> None:
    async def budget(request: Request) -> dict[str, Any]:
        _require_master(request)
        engine = await hooks._ensure_started()
        snap = engine.snapshot()
        writer = hooks.writer
        return {
            "day": engine.book.day.isoformat(),
            "limit": snap.limit,
            "spent": snap.spent,
            "reserved": snap.reserved,
            "remaining": snap.remaining,
            "fraction_used": snap.fraction_used,
            "tier": snap.tier,
            "timezone": snap.timezone,
            "now": snap.now.isoformat(),
            "resets_at": snap.reset_at.isoformat(),
            "in_flight": engine.book.in_flight(),
            "thresholds": {
                "smart_min_remaining": snap.thresholds.smart_min_remaining,
                "cheap_min_remaining": snap.thresholds.cheap_min_remaining,
                "emergency_max_tokens": snap.thresholds.emergency_max_tokens,
            },
            "prices": {name: {"model": spec.model, "prompt": spec.prompt_price, "completion": spec.completion_price,
                              "max_cost_per_request": spec.max_cost_per_request}
                       for name, spec in engine.routing.aliases.items()},
            "settings_updated_at": engine.settings.updated_at.isoformat() if engine.settings.updated_at else None,
            "ledger": {
                "pending": writer.pending if writer else 0,
                "lag_seconds": writer.lag_seconds if writer else 0.0,
                "written": writer.written if writer else 0,
                "write_failures": writer.failures if writer else 0,
            },
        }

    async def set_budget(request: Request) -> dict[str, Any]:
        _require_master(request)
        await hooks._ensure_started()
        try:
            body = await request.json()
            update = settings_update(
                daily_limit=body.get("daily_limit"), timezone=body.get("timezone"),
                smart_min_remaining=body.get("smart_min_remaining"),
                cheap_min_remaining=body.get("cheap_min_remaining"),
                emergency_max_tokens=body.get("emergency_max_tokens"), caps=body.get("caps"),
                by=str(body.get("by", "api"))[:40])
        except (BudgetError, ValueError, AttributeError, TypeError) as exc:
            raise HTTPException(400, str(exc)) from None
        async with await psycopg.AsyncConnection.connect(hooks.settings.database_url, connect_timeout=5) as conn:
            if update is not None:
                async with conn.transaction():
                    await conn.execute(*update)
            await hooks._reload_settings(conn)
        return await budget(request)

    async def spend(request: Request, days: int = 7, by: str = "alias") -> dict[str, Any]:
        _require_master(request)
        if by not in SPEND_GROUPS:
            raise HTTPException(400, f"by must be one of {', '.join(SPEND_GROUPS)}")
        if not 1 <= days <= 366:
            raise HTTPException(400, "days must be between 1 and 366")
        engine = await hooks._ensure_started()
        async with await psycopg.AsyncConnection.connect(hooks.settings.database_url, connect_timeout=5) as conn:
            cursor = await conn.execute(spend_query(by), (engine.book.day, days))
            rows = await cursor.fetchall()
        return {"days": days, "by": by, "today": engine.book.day.isoformat(), "rows": [
            {"day": r[0].isoformat(), "key": r[1], "requests": int(r[2]), "refusals": int(r[3]),
             "spent": float(r[4])} for r in rows]}

    async def explain(request: Request) -> dict[str, Any]:
        _require_master(request)
        engine = await hooks._ensure_started()
        try:
            chat = ChatRequest.from_body(await request.json())
        except (RequestError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from None
        sticky = engine.turns.get(chat.turn, 0.0) if chat.requested_alias == "auto" else None
        outcome = route(RouteInput(chat.requested_alias, chat.task, chat.prompt_tokens, chat.max_tokens,
                                   chat.housekeeping, sticky), engine.snapshot(), engine.routing)
        if isinstance(outcome, Decision):
            return {"decision": "route", "alias": outcome.alias, "model": outcome.model, "reason": outcome.reason,
                    "tier": outcome.tier, "max_tokens": outcome.max_tokens, "worst_case": outcome.worst_case,
                    "reserve": outcome.reserve, "fallbacks": [f.alias for f in outcome.fallbacks]}
        return {"decision": "refuse", "status": outcome.status, "message": outcome.message,
                "needed": outcome.needed}

    for path, endpoint, methods in (("/ralex/budget", budget, ["GET"]), ("/ralex/budget", set_budget, ["PUT"]),
                                    ("/ralex/spend", spend, ["GET"]), ("/ralex/route", explain, ["POST"])):
        app.router.routes.insert(0, APIRoute(path, endpoint, methods=methods, include_in_schema=True,
                                             tags=["ralex"]))
