"""Budget maths: the budget day, tiers, worst-case cost, refusal text, and the reservation book.

Everything here is pure except :class:`ReservationBook`, which is a tiny in-memory account that
the proxy mutates from one event loop (so check-and-reserve is atomic: no ``await`` inside).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
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


def _aware(now: datetime) -> datetime:
    """``now`` itself; a naive datetime is refused: it would be read in this machine's timezone."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"{now.isoformat()} has no timezone; budget days are computed from aware datetimes")
    return now


def budget_day(now: datetime, tz: str) -> date:
    """The budget day a moment belongs to: the calendar date in the configured timezone."""
    return _aware(now).astimezone(zone(tz)).date()


def day_start(day: date, tz: str) -> datetime:
    """The first moment of ``day`` in ``tz``: its local midnight (aware), or the end of the gap where a
    daylight-saving change skips midnight itself (clocks jumping from 23:59:59 to 01:00)."""
    zi = zone(tz)
    return datetime.combine(day, time(0), tzinfo=zi).astimezone(UTC).astimezone(zi)


@dataclass(frozen=True, slots=True)
class DayWindow:
    """One budget day: from its local midnight up to (not including) the next one. It lasts 24 hours,
    or 23 and 25 on the nights the clocks change; every duration here is real elapsed time."""

    day: date
    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        return timedelta(seconds=self.end.timestamp() - self.start.timestamp())

    def __contains__(self, now: datetime) -> bool:
        return self.start.timestamp() <= _aware(now).timestamp() < self.end.timestamp()

    def seconds_left(self, now: datetime) -> float:
        """Real seconds from ``now`` until the day ends (the budget resets)."""
        return max(0.0, self.end.timestamp() - _aware(now).timestamp())


def day_window(now: datetime, tz: str) -> DayWindow:
    """The budget day ``now`` belongs to in ``tz``, with its start and end (the next reset)."""
    day = budget_day(now, tz)
    return DayWindow(day, day_start(day, tz), day_start(day + timedelta(days=1), tz))


def next_reset(now: datetime, tz: str) -> datetime:
    """The next local midnight in ``tz`` (aware datetime) — when today's budget resets."""
    return day_window(now, tz).end


def seconds_to_reset(now: datetime, tz: str) -> float:
    """Real seconds until today's budget resets (23 or 25 hours from midnight on the nights clocks change)."""
    return day_window(now, tz).seconds_left(now)


def format_duration(seconds: float) -> str:
    """`3h12m`, `56m`: whole minutes, rounded up (a reset 20 s away is `1m`, never `0m` before it)."""
    minutes = max(0, math.ceil(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def resets_in(now: datetime, tz: str) -> str:
    """How long until today's budget resets, as the refusal and the alerts say it: `3h12m`, `56m`."""
    return format_duration(seconds_to_reset(now, tz))


def new_crossings(fraction: float, thresholds: Iterable[int], crossed: Iterable[int]) -> list[int]:
    """The alert thresholds (percent) a day's spend ``fraction`` has reached and that were not ``crossed``
    earlier the same budget day, lowest first: each is announced once per budget day."""
    done = set(crossed)
    return sorted(t for t in set(thresholds) if t not in done and fraction * 100 >= t - 1e-9)


def suggest_raise(limit: float) -> str:
    """A sensible next budget to suggest: the next named tier above ``limit``, else double."""
    for amount in sorted(BUDGET_TIERS.values()):
        if amount > limit:
            return f"{amount:g}"
    return f"{max(1.0, limit * 2):g}"


def usd(amount: float) -> str:
    """Dollars for people: cents for normal amounts, more digits for tiny ones, and under a dollar
    the digits an amount was set with ($0.012 stays $0.012, up to four decimals)."""
    if amount != 0 and abs(amount) < 0.01:
        decimals = max(4, 1 - math.floor(math.log10(abs(amount))))
        return f"${amount:.{decimals}f}"
    if abs(amount) < 1 and abs(round(amount, 2) - amount) > 1e-9:
        return "$" + f"{amount:.4f}".rstrip("0")
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
class KeyAllowance:
    """A client key's daily sub-budget at one moment: its limit, what it spent today and holds."""

    name: str
    limit: float
    spent: float
    reserved: float

    @property
    def remaining(self) -> float:
        return self.limit - self.spent - self.reserved


Binding = Literal["day", "key"]

KEY_TIER_FRACTIONS: Final = (0.4, 0.1)
"""A key's sub-budget has the seed's tier shape scaled to its size: smart above 40 % of it left, cheap
above 10 %, then emergency (the seed's $2 and $0.50 on a $5 day). A $1 key is on the full tier above
$0.40 left. The day keeps its configured thresholds."""
TIER_RANK: Final[dict[Tier, int]] = {"emergency": 0, "economy": 1, "full": 2}
TIER_MEANS: Final[dict[Tier, str]] = {"full": "smart and cheap", "economy": "cheap only",
                                      "emergency": "short emergency answers"}


def sub_budget_text(limit: float) -> str:
    """What a key's daily sub-budget allows, in the words ``keys add`` and ``connect`` print."""
    smart, cheap = (limit * f for f in KEY_TIER_FRACTIONS)
    return (f"{usd(limit)}/day: smart while more than {usd(smart)} of it is left, cheap down to {usd(cheap)}, "
            "then short emergency answers; never past the day's budget")


def key_summary(name: str, limit: float | None, spent: float, held: float, reset_line: str) -> str:
    """A client key's own day in one line, for its own client (the day's budget is the operator's):
    `Key ana: $0.40 of $2.00 spent (20%) · $1.60 left · resets at 00:00 UTC (in 6h12m)`."""
    if limit is None:
        return f"Key {name}: {usd(spent)} spent today (no sub-budget: the team's daily budget) · {reset_line}"
    share = spent / limit if limit > 0 else 1.0
    return (f"Key {name}: {usd(spent)} of {usd(limit)} spent ({share:.0%}) · {usd(max(0.0, limit - spent - held))} "
            f"left · {reset_line}")


def key_thresholds(day: Thresholds, key_limit: float) -> Thresholds:
    """A key's tier thresholds: :data:`KEY_TIER_FRACTIONS` of its sub-budget."""
    smart, cheap = KEY_TIER_FRACTIONS
    return replace(day, smart_min_remaining=key_limit * smart, cheap_min_remaining=key_limit * cheap)


def binding(day_remaining: float, key: KeyAllowance | None) -> Binding:
    """Which budget is tighter for a request: the day's or the key's sub-budget (the day on a tie)."""
    return "key" if key is not None and key.remaining < day_remaining else "day"


def refused_by(amount: float, day_spent: float, day_reserved: float, day_limit: float,
               key: KeyAllowance | None = None) -> Binding | None:
    """The admission rule: a hold of ``amount`` must fit both the day's remaining budget and, for a key
    with a sub-budget, the key's remaining sub-budget (whichever is tighter wins). Returns the budget
    that refuses it, or None when it fits both."""
    if day_spent + day_reserved + amount > day_limit + 1e-12:
        return "day"
    if key is not None and key.spent + key.reserved + amount > key.limit + 1e-12:
        return "key"
    return None


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """Today's budget as the policy sees it at one moment.

    With ``key`` (a client key that has a sub-budget) ``remaining`` and ``tier`` are the tighter of
    the day's and the key's, so a nearly spent key steps down as a nearly spent day does.
    """

    limit: float
    spent: float
    reserved: float
    timezone: str
    now: datetime
    thresholds: Thresholds = field(default_factory=Thresholds)
    key: KeyAllowance | None = None

    @property
    def day_remaining(self) -> float:
        return self.limit - self.spent - self.reserved

    @property
    def binding(self) -> Binding:
        return binding(self.day_remaining, self.key)

    @property
    def remaining(self) -> float:
        day = self.day_remaining
        return min(day, self.key.remaining) if self.key is not None else day

    def left_text(self) -> str:
        """'$1.20 left', or "$0.30 left of key laptop's sub-budget" when the key is tighter."""
        left = usd(max(0.0, self.remaining))
        return f"{left} left of key {self.key.name}'s sub-budget" if self.key and self.binding == "key" \
            else f"{left} left"

    @property
    def tier(self) -> Tier:
        """The lower of the day's tier (its thresholds) and the key's (:func:`key_thresholds`)."""
        return self.tier_and_floors()[0]

    def tier_and_floors(self) -> tuple[Tier, Thresholds, str]:
        """The tier, the thresholds that set it and what they belong to ("" for the day, else
        "of key NAME's $X sub-budget"), for the policy's notes."""
        day = self.thresholds.tier(self.day_remaining)
        if self.key is None:
            return day, self.thresholds, ""
        scaled = key_thresholds(self.thresholds, self.key.limit)
        key = scaled.tier(self.key.remaining)
        if TIER_RANK[key] < TIER_RANK[day]:
            return key, scaled, f" of key {self.key.name}'s {usd(self.key.limit)} sub-budget"
        return day, self.thresholds, ""

    @property
    def window(self) -> DayWindow:
        """The budget day this snapshot is on."""
        return day_window(self.now, self.timezone)

    @property
    def day(self) -> date:
        return budget_day(self.now, self.timezone)

    @property
    def reset_at(self) -> datetime:
        return self.window.end

    @property
    def fraction_used(self) -> float:
        return (self.spent / self.limit) if self.limit > 0 else 1.0

    def reset_line(self) -> str:
        return f"resets at 00:00 {self.timezone} (in {resets_in(self.now, self.timezone)})"

    def summary(self) -> str:
        """Today's budget in one line, the same wherever it is shown (the agent's TUI, ``ralexctl``):
        `$0.42 of $5.00 spent (8%) · $4.58 left · tier full (smart and cheap) · resets at 00:00 UTC (in 6h12m)`.
        """
        tier = self.tier
        return (f"{usd(self.spent)} of {usd(self.limit)} spent ({self.fraction_used:.0%}) · {self.left_text()} · "
                f"tier {tier} ({TIER_MEANS[tier]}) · {self.reset_line()}")

    def exhausted_message(self, needed: float) -> str:
        """The text of the HTTP 402 refusal (naming the key when its sub-budget is what ran out)."""
        key = self.key
        if key is not None and self.binding == "key":
            held = f", {usd(key.reserved)} held by requests in flight" if key.reserved > 0.000_001 else ""
            return (
                f"Key {key.name}: daily sub-budget {usd(key.limit)} exhausted ({usd(key.spent)} spent{held}; "
                f"{usd(max(0.0, key.remaining))} left, this request needs up to {usd(needed)}); "
                f"{self.reset_line()}. Raise it with: ralexctl keys budget {key.name} {suggest_raise(key.limit)}"
            )
        held = f", {usd(self.reserved)} held by requests in flight" if self.reserved > 0.000_001 else ""
        left = max(0.0, self.day_remaining)
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
    """Today's spend plus the worst-case holds of requests in flight, in total and per client key.

    All methods are synchronous and never await, so within one asyncio event loop a
    check-and-reserve cannot interleave with another: concurrent requests cannot jointly
    overshoot the day's limit, nor a key's sub-budget, by more than the difference between one
    request's hold and its real cost.

    With several proxy replicas the check is Postgres's (``ralex_reserve``) and this book is the
    replica's view of it: its own holds, plus what the shared ledger last said of the others'
    (:meth:`observe`), which routing reads; admission itself never trusts that view.
    """

    def __init__(self, day: date, spent: float = 0.0, spent_by_key: Mapping[str, float] | None = None) -> None:
        self.day = day
        self.spent = spent
        self.spent_by_key: dict[str, float] = dict(spent_by_key or {})
        self._holds: dict[str, tuple[float, date, str]] = {}
        self._others = 0.0
        self._others_by_key: dict[str, float] = {}

    @property
    def reserved(self) -> float:
        return self._others + sum(amount for amount, day, _ in self._holds.values() if day == self.day)

    def reserved_by(self, client: str) -> float:
        own = sum(amount for amount, day, who in self._holds.values() if day == self.day and who == client)
        return self._others_by_key.get(client, 0.0) + own

    def in_flight(self) -> int:
        return len(self._holds)

    def roll_over(self, day: date, spent: float, spent_by_key: Mapping[str, float] | None = None) -> None:
        """Start a new budget day with ``spent`` (and per key ``spent_by_key``) already recorded for it."""
        self.day = day
        self.spent = spent
        self.spent_by_key = dict(spent_by_key or {})
        self._others = 0.0
        self._others_by_key = {}

    def observe(self, day: date, spent: float, held: float, by_key: Mapping[str, tuple[float, float]]) -> None:
        """What the shared ledger holds for ``day``: spent and held by every replica, in all and per key
        (``by_key``: name -> (spent, held)). Holds beyond this replica's own are the others'."""
        if day != self.day:
            return
        self.spent = spent
        self._others = max(0.0, held - sum(a for a, d, _ in self._holds.values() if d == day))
        for name, (key_spent, key_held) in by_key.items():
            self.spent_by_key[name] = key_spent
            own = sum(a for a, d, who in self._holds.values() if d == day and who == name)
            self._others_by_key[name] = max(0.0, key_held - own)

    def allowance(self, client: str, limit: float | None) -> KeyAllowance | None:
        """A key's sub-budget as it stands (None for a key without one)."""
        if limit is None:
            return None
        return KeyAllowance(client, limit, self.spent_by_key.get(client, 0.0), self.reserved_by(client))

    def fits(self, amount: float, limit: float, *, client: str = "", client_limit: float | None = None) -> bool:
        """Whether a hold of ``amount`` fits the day's ``limit`` and the client's sub-budget (:func:`refused_by`)."""
        return refused_by(amount, self.spent, self.reserved, limit, self.allowance(client, client_limit)) is None

    def take(self, key: str, amount: float, client: str = "") -> None:
        """Hold ``amount`` for request ``key`` (checked already: :meth:`fits`, or the shared ledger)."""
        self._holds[key] = (amount, self.day, client)

    def try_reserve(self, key: str, amount: float, limit: float, *, client: str = "",
                    client_limit: float | None = None) -> bool:
        """Hold ``amount`` if it fits the day's ``limit`` and the client's sub-budget ``client_limit``
        (checked together, nothing in between: :func:`refused_by`)."""
        if not self.fits(amount, limit, client=client, client_limit=client_limit):
            return False
        self.take(key, amount, client)
        return True

    def hold(self, key: str) -> float:
        held = self._holds.get(key)
        return held[0] if held else 0.0

    def settle(self, key: str, cost: float, client: str = "") -> date:
        """Replace a hold by the real cost; returns the budget day the cost belongs to."""
        _, day, who = self._holds.pop(key, (0.0, self.day, client))
        if day == self.day:
            self.spent += cost
            self.spent_by_key[who] = self.spent_by_key.get(who, 0.0) + cost
        return day

    def release(self, key: str) -> None:
        self._holds.pop(key, None)
