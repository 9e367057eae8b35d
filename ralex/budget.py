"""Budget maths: the budget day, tiers, worst-case cost, refusal text, and the reservation book.

Everything here is pure except :class:`ReservationBook`, which is a tiny in-memory account that
the proxy mutates from one event loop (so check-and-reserve is atomic: no ``await`` inside).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

BUDGET_TIERS: Final[dict[str, float]] = {"lite": 2.0, "standard": 5.0, "power": 10.0, "max": 20.0}
"""Named daily budgets (USD); `ralexctl budget tier power` picks one."""

ALERT_LEVELS: Final[tuple[int, ...]] = (50, 80, 95, 100)
"""Default alert thresholds, percent of the daily budget (live setting: `ralexctl budget alerts`)."""


def alert_level(fraction: float, thresholds: tuple[int, ...] = ALERT_LEVELS) -> int:
    """The highest alert threshold today's spend has reached, else 0."""
    reached = [level for level in thresholds if fraction * 100 >= level - 1e-9]
    return max(reached) if reached else 0


def parse_thresholds(values: object) -> tuple[int, ...]:
    """Validated alert thresholds: 1-8 whole percentages between 1 and 100. Raises BudgetError."""
    if isinstance(values, str | bytes) or not isinstance(values, list | tuple):
        raise BudgetError("alert thresholds must be a list of percentages such as 50 80 95")
    parsed = set()
    for value in values:
        try:
            level = int(str(value).strip().rstrip("%"))
        except ValueError:
            raise BudgetError(f"alert threshold {value!r} is not a whole percentage; use e.g. 50 80 95") from None
        if not 1 <= level <= 100:
            raise BudgetError(f"alert threshold {level} must be between 1 and 100 (percent of the daily budget)")
        parsed.add(level)
    if not 1 <= len(parsed) <= 8:
        raise BudgetError("give between 1 and 8 alert thresholds, e.g. ralexctl budget alerts 50 80 95 100")
    return tuple(sorted(parsed))


Tier = Literal["full", "economy", "emergency"]


class BudgetError(ValueError):
    """A budget setting is invalid; the message names the fix."""


def parse_budget(value: object) -> float:
    """Validate a daily budget given by a user (CLI argument, env var, API body)."""
    try:
        amount = float(str(value).strip().lstrip("$"))
    except ValueError:
        raise BudgetError(
            f"daily budget {value!r} is not a number; give dollars like 5 or 12.50, "
            f"or a tier name: {', '.join(BUDGET_TIERS)}"
        ) from None
    if not math.isfinite(amount) or amount < 0:
        raise BudgetError(f"daily budget {value!r} must be a positive amount of dollars, e.g. 5")
    if amount > 10_000:
        raise BudgetError(f"daily budget ${amount:,.2f} looks like a typo (over $10,000 a day)")
    return round(amount, 6)


CAPPED_ALIASES: Final = ("cheap", "smart", "yolo")

CAP_PRESETS: Final[dict[str, dict[str, float]]] = {
    "agent": {"cheap": 0.10, "smart": 0.60, "yolo": 0.10},
    "strict": {"cheap": 0.001, "smart": 0.01, "yolo": 0.0005},
}
"""Named per-request caps (USD): `agent` (the shipped default) admits every step of a coding agent's
working day, up to a session near its context limit; `strict` is sized for one-shot chat prompts
and refuses an agent's steps. `ralexctl budget caps strict` applies one live."""


def cap_preset(name: str) -> dict[str, float]:
    try:
        return dict(CAP_PRESETS[name])
    except KeyError:
        raise BudgetError(f"unknown caps preset {name!r}; use one of: {', '.join(CAP_PRESETS)}") from None


def parse_caps(caps: Mapping[str, object]) -> dict[str, float]:
    """Validated per-request caps: {"smart": 0.5}. Raises BudgetError naming the fix."""
    if not isinstance(caps, Mapping):
        raise BudgetError('caps must be an object such as {"smart": 0.50}')
    parsed = {}
    for alias, value in caps.items():
        if alias not in CAPPED_ALIASES:
            raise BudgetError(f"no per-request cap for {alias!r}; caps exist for {', '.join(CAPPED_ALIASES)}")
        try:
            amount = parse_budget(value)
        except BudgetError:
            amount = 0.0
        if amount <= 0:
            raise BudgetError(f"the {alias} cap must be a positive dollar amount such as 0.05, not {value!r}")
        parsed[alias] = amount
    return parsed


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BudgetError(
            f"unknown timezone {name!r}; use an IANA name such as Europe/Berlin or UTC"
        ) from None


def budget_day(now: datetime, tz: str) -> date:
    """The budget day a moment belongs to: the calendar date in the configured timezone."""
    return now.astimezone(zone(tz)).date()


def next_reset(now: datetime, tz: str) -> datetime:
    """The next local midnight in ``tz`` (aware datetime) — when today's budget resets."""
    zi = zone(tz)
    local = now.astimezone(zi)
    return datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zi)


def format_duration(seconds: float) -> str:
    minutes = max(0, math.ceil(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def suggest_raise(limit: float) -> str:
    """A sensible next budget to suggest: the next named tier above ``limit``, else double."""
    for amount in sorted(BUDGET_TIERS.values()):
        if amount > limit:
            return f"{amount:g}"
    return f"{max(1.0, limit * 2):g}"


def usd(amount: float) -> str:
    """Dollars for people: cents for normal amounts, more digits for tiny ones."""
    if amount != 0 and abs(amount) < 0.01:
        decimals = max(4, 1 - math.floor(math.log10(abs(amount))))
        return f"${amount:.{decimals}f}"
    return f"${amount:,.2f}"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Remaining-budget thresholds that pick the tier (all configurable, stored in Postgres)."""

    smart_min_remaining: float = 2.0
    cheap_min_remaining: float = 0.5
    emergency_max_tokens: int = 200

    def tier(self, remaining: float) -> Tier:
        if remaining > self.smart_min_remaining:
            return "full"
        if remaining > self.cheap_min_remaining:
            return "economy"
        return "emergency"


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """Today's budget as the policy sees it at one moment."""

    limit: float
    spent: float
    reserved: float
    timezone: str
    now: datetime
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def remaining(self) -> float:
        return self.limit - self.spent - self.reserved

    @property
    def tier(self) -> Tier:
        return self.thresholds.tier(self.remaining)

    @property
    def reset_at(self) -> datetime:
        return next_reset(self.now, self.timezone)

    @property
    def fraction_used(self) -> float:
        return (self.spent / self.limit) if self.limit > 0 else 1.0

    def reset_line(self) -> str:
        reset = self.reset_at
        wait = format_duration((reset - self.now).total_seconds())
        return f"resets at 00:00 {self.timezone} (in {wait})"

    def exhausted_message(self, needed: float) -> str:
        """The text of the HTTP 402 refusal."""
        held = f", {usd(self.reserved)} held by requests in flight" if self.reserved > 0.000_001 else ""
        left = max(0.0, self.remaining)
        return (
            f"Daily budget {usd(self.limit)} exhausted ({usd(self.spent)} spent{held}; "
            f"{usd(left)} left, this request needs up to {usd(needed)}); {self.reset_line()}. "
            f"Raise it with: ralexctl budget set {suggest_raise(self.limit)}"
        )


def worst_case_cost(prompt_tokens: int, max_tokens: int, prompt_price: float, completion_price: float) -> float:
    """Upper bound of a request's cost: every prompt token plus every allowed output token."""
    return prompt_tokens * prompt_price + max_tokens * completion_price


def affordable_output_tokens(allowance: float, prompt_tokens: int, prompt_price: float,
                             completion_price: float) -> int:
    """How many output tokens fit in ``allowance`` dollars after paying for the prompt."""
    left = allowance - prompt_tokens * prompt_price
    if left < 0:
        return -1
    if completion_price <= 0:
        return 1 << 30
    return math.floor(left / completion_price + 1e-9)


class ReservationBook:
    """Today's spend plus the worst-case holds of requests in flight.

    All methods are synchronous and never await, so within one asyncio event loop a
    check-and-reserve cannot interleave with another: concurrent requests cannot jointly
    overshoot the limit by more than the difference between one request's hold and its real cost.
    """

    def __init__(self, day: date, spent: float = 0.0) -> None:
        self.day = day
        self.spent = spent
        self._holds: dict[str, tuple[float, date]] = {}

    @property
    def reserved(self) -> float:
        return sum(amount for amount, day in self._holds.values() if day == self.day)

    def in_flight(self) -> int:
        return len(self._holds)

    def roll_over(self, day: date, spent: float) -> None:
        """Start a new budget day with ``spent`` already recorded for it."""
        self.day = day
        self.spent = spent

    def try_reserve(self, key: str, amount: float, limit: float) -> bool:
        if self.spent + self.reserved + amount > limit + 1e-12:
            return False
        self._holds[key] = (amount, self.day)
        return True

    def hold(self, key: str) -> float:
        held = self._holds.get(key)
        return held[0] if held else 0.0

    def settle(self, key: str, cost: float) -> date:
        """Replace a hold by the real cost; returns the budget day the cost belongs to."""
        _, day = self._holds.pop(key, (0.0, self.day))
        if day == self.day:
            self.spent += cost
        return day

    def release(self, key: str) -> None:
        self._holds.pop(key, None)
