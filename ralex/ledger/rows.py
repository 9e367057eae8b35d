"""The ledger's domain types: budget settings and one ledger row. No database driver here;
:mod:`ralex.ledger.store` converts them at the edge."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any

from ralex.budget import ALERT_LEVELS, Thresholds


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    daily_limit: float
    timezone: str
    thresholds: Thresholds
    updated_at: datetime | None = None
    updated_by: str = ""
    caps: Mapping[str, float] = field(default_factory=dict)
    """Per-request caps set live, by alias; they override config/ralex.yaml's."""
    alert_thresholds: tuple[int, ...] = ALERT_LEVELS
    """Percentages of the daily budget that raise an alert, each once per budget day."""



@dataclass(slots=True)
class LedgerRow:
    """One request as the ledger records it."""

    ts: datetime
    budget_day: date
    alias_requested: str
    status: str
    request_id: uuid.UUID = field(default_factory=uuid.uuid4)
    alias_routed: str | None = None
    upstream_model: str | None = None
    reason: str = ""
    tier: str | None = None
    fallback: bool = False
    stream: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    max_tokens: int | None = None
    estimated_cost_usd: float = 0.0
    reserved_usd: float = 0.0
    cost_usd: float = 0.0
    cost_source: str | None = None
    latency_ms: int | None = None
    turn_key: str | None = None
    session_key: str | None = None
    error: str | None = None
    route_kind: str = ""
    generation_id: str | None = None
    key_name: str = "agent"
    """Who made the request: a client key's name, ``agent`` (RALEX_AGENT_KEY) or ``operator`` (the
    master key). Journal lines written before keys existed read back as ``agent``, as migration 0007
    attributes the ledger rows of that time."""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a ledger value")


def row_to_json(row: LedgerRow) -> dict[str, Any]:
    """A ledger row as plain JSON values (journal lines)."""
    values = {name: getattr(row, name) for name in ROW_FIELDS}
    return {name: _plain(v) if isinstance(v, datetime | date | uuid.UUID) else v for name, v in values.items()}


def row_json_line(kind: str, row: LedgerRow) -> bytes:
    """One journal line: ``{"<kind>": {...row...}}`` (the request path's hot spot: no asdict copy)."""
    values = {name: getattr(row, name) for name in ROW_FIELDS}
    return (json.dumps({kind: values}, default=_plain, separators=(",", ":")) + "\n").encode()


def row_from_json(record: Mapping[str, Any]) -> LedgerRow:
    values = dict(record)
    values["ts"] = datetime.fromisoformat(values["ts"])
    values["budget_day"] = date.fromisoformat(values["budget_day"])
    values["request_id"] = uuid.UUID(values["request_id"])
    return LedgerRow(**values)


ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LedgerRow))
