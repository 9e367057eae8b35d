"""Budget timezones for tests that run on the real clock (the integration proxies, the compose, e2e and
arm64 stacks), so that no test depends on the hour it happens to start at.

A budget day ends at local midnight. Tests on the real clock spend, cross thresholds and compare the
day's figures over seconds to hours; a midnight in between would reset the day under them. They run
in a timezone whose midnight is hours away (:func:`far_from_midnight`), and a test that needs a new
budget day moves the budget to a zone on another date (:func:`on_another_date`). Midnight itself, the
daylight-saving nights and every zone's edge are tested under a frozen clock in
tests/unit/test_clock_edges.py.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Final

from ralex.budget import budget_day, seconds_to_reset

PREFERRED: Final = "Europe/Berlin"
"""The zone the tests are written for, used whenever its midnight is far enough away."""

CANDIDATES: Final = (
    "Etc/GMT+12", "Pacific/Pago_Pago", "Pacific/Honolulu", "Pacific/Gambier", "Pacific/Pitcairn", "America/Phoenix",
    "America/Regina", "America/Bogota", "America/La_Paz", "America/Sao_Paulo", "Atlantic/South_Georgia",
    "Atlantic/Cape_Verde", "Africa/Abidjan", "Africa/Lagos", "Africa/Johannesburg", "Africa/Nairobi", "Asia/Dubai",
    "Asia/Tashkent", "Asia/Dhaka", "Asia/Bangkok", "Asia/Singapore", "Asia/Tokyo", "Australia/Brisbane",
    "Pacific/Guadalcanal", "Pacific/Tarawa", "Pacific/Fakaofo", "Pacific/Kiritimati",
)
"""One zone without daylight saving for each whole-hour UTC offset from -12 to +14 (26 hours apart: at
any moment two of them are on different dates). Every name has a "/": `ralexctl init` takes TZ only then."""


def hours_left(tz: str, now: datetime) -> float:
    """Hours until the budget day of ``now`` ends in ``tz`` (real time)."""
    return seconds_to_reset(now, tz) / 3600


def _hours_from_noon(tz: str, now: datetime) -> float:
    return abs(hours_left(tz, now) - 12)


def far_from_midnight(now: datetime | None = None, hours: float = 6.0, preferred: str = PREFERRED) -> str:
    """``preferred`` if its budget day has at least ``hours`` left at ``now``, else the candidate where it is
    nearest to noon (about 12 hours before its midnight)."""
    now = now or datetime.now(UTC)
    if hours_left(preferred, now) >= hours:
        return preferred
    return min(CANDIDATES, key=lambda tz: _hours_from_noon(tz, now))


def on_another_date(day: date, now: datetime | None = None) -> str:
    """A candidate zone whose date at ``now`` is not ``day``, the one whose day has the most time left
    (at any moment at least an hour: the candidates' dates differ for 26 hours around each midnight)."""
    now = now or datetime.now(UTC)
    others = [tz for tz in CANDIDATES if budget_day(now, tz) != day]
    assert others, f"every candidate zone is on {day} at {now.isoformat()}"
    return max(others, key=lambda tz: hours_left(tz, now))
