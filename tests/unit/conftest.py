from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ralex.budget import BudgetSnapshot, Thresholds
from ralex.policy import AliasSpec, RoutingConfig

# Prices of the default models on OpenRouter (USD per token).
CHEAP = AliasSpec("cheap", "google/gemini-2.5-flash-lite", 1e-7, 4e-7, 0.001)
SMART = AliasSpec("smart", "anthropic/claude-sonnet-4.5", 3e-6, 1.5e-5, 0.01)
YOLO = AliasSpec("yolo", "google/gemini-2.5-flash-lite", 1e-7, 4e-7, 0.0005)
NOON = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def cfg() -> RoutingConfig:
    return RoutingConfig(aliases={"cheap": CHEAP, "smart": SMART, "yolo": YOLO})


def snap(remaining: float, limit: float = 5.0, reserved: float = 0.0, tz: str = "UTC",
         now: datetime = NOON) -> BudgetSnapshot:
    return BudgetSnapshot(limit=limit, spent=limit - remaining - reserved, reserved=reserved, timezone=tz,
                          now=now, thresholds=Thresholds())
