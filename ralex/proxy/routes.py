"""Ralex's own read-only endpoints on the proxy (master key only).

- ``GET /ralex/budget``: today's budget as the proxy holds it (spend, holds, tier, reset, ledger lag).
- ``POST /ralex/route``: what the proxy would decide for a chat body now, without forwarding it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.routing import APIRoute

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
            "settings_updated_at": engine.settings.updated_at.isoformat() if engine.settings.updated_at else None,
            "ledger": {
                "pending": writer.pending if writer else 0,
                "lag_seconds": writer.lag_seconds if writer else 0.0,
                "written": writer.written if writer else 0,
                "write_failures": writer.failures if writer else 0,
            },
        }

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

    for path, endpoint, methods in (("/ralex/budget", budget, ["GET"]), ("/ralex/route", explain, ["POST"])):
        app.router.routes.insert(0, APIRoute(path, endpoint, methods=methods, include_in_schema=True,
                                             tags=["ralex"]))
