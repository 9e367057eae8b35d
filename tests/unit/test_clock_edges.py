"""The budget day under a frozen clock: half an hour either side of local midnight in zones from UTC-10
to UTC+14 (half-hour offsets and a half-hour daylight-saving shift included), and the nights the
clocks change in Berlin and New York, where the day lasts 23 or 25 hours.

Every decision about the day has one implementation, fed the moment to decide for: the budget day and
its window (:func:`ralex.budget.day_window`), the "resets in" text, the engine's new day and alert
crossings, the exporter's "today", `ralexctl route`'s spend of the day and `ralexctl status`' bar.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ralex.budget import (
    BudgetSnapshot,
    DayWindow,
    Thresholds,
    budget_day,
    day_start,
    day_window,
    format_duration,
    new_crossings,
    next_reset,
    resets_in,
    seconds_to_reset,
)
from ralex.engine import BudgetEngine, Crossing, Rejected
from ralex.exporter import LedgerCollector
from ralex.ledger import store
from ralex.ledger.rows import BudgetSettings
from ralex_ctl import render
from ralex_ctl.explain import explain_offline
from tests.unit.test_engine import body, setup
from tests.zones import CANDIDATES, PREFERRED, far_from_midnight, hours_left, on_another_date

ROOT = Path(__file__).resolve().parents[2]
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Pacific/Honolulu", "Asia/Kolkata", "Australia/Lord_Howe",
         "Pacific/Kiritimati")
EVENING = date(2026, 11, 26)
"""An ordinary day in every zone above (Lord Howe is on its summer time, +11, all of it)."""

# 2026's daylight-saving changes: (zone, the day the clocks change, its length, the wall hour that repeats
# or is skipped). Berlin: 02:00 -> 03:00 on 29 March, 03:00 -> 02:00 on 25 October; New York: 02:00 -> 03:00
# on 8 March, 02:00 -> 01:00 on 1 November.
SPRING = [("Europe/Berlin", date(2026, 3, 29)), ("America/New_York", date(2026, 3, 8))]
FALL = [("Europe/Berlin", date(2026, 10, 25)), ("America/New_York", date(2026, 11, 1))]
REPEATED_HOUR = {"Europe/Berlin": 2, "America/New_York": 1}
TRICKY = (*ZONES, "America/Santiago", "Africa/Cairo", "America/Havana", "Pacific/Chatham", "Asia/Kathmandu",
          "Pacific/Apia", "Australia/Adelaide", "Europe/London", "America/St_Johns", "Antarctica/Troll")
"""Daylight-saving changes at midnight itself (Santiago, Cairo, Havana), 45-minute offsets, a skipped
day (Apia, 2011), a two-hour change (Troll) and the zones above."""


def local(tz: str, day: date, hour: int, minute: int = 0, fold: int = 0) -> datetime:
    """A wall-clock moment in ``tz``, as the UTC instant a clock would report."""
    return datetime.combine(day, time(hour, minute, fold=fold), tzinfo=ZoneInfo(tz)).astimezone(UTC)


def real_seconds(later: datetime, earlier: datetime) -> float:
    return later.timestamp() - earlier.timestamp()


def just_before(moment: datetime) -> datetime:
    """The last microsecond before ``moment`` (in UTC: arithmetic on a zone's wall clock skips DST changes)."""
    return moment.astimezone(UTC) - timedelta(microseconds=1)


def snapshot(tz: str, now: datetime, limit: float = 5.0, spent: float = 5.0) -> BudgetSnapshot:
    return BudgetSnapshot(limit=limit, spent=spent, reserved=0.0, timezone=tz, now=now, thresholds=Thresholds())


# --- half an hour either side of midnight --------------------------------------------------------

@pytest.mark.parametrize("tz", ZONES)
def test_half_an_hour_before_midnight_the_day_has_thirty_minutes_left(tz: str):
    now = local(tz, EVENING, 23, 30)
    window = day_window(now, tz)
    assert window.day == budget_day(now, tz) == EVENING
    assert window.start == local(tz, EVENING, 0)
    assert window.end == next_reset(now, tz) == local(tz, EVENING + timedelta(days=1), 0)
    assert window.end.astimezone(ZoneInfo(tz)).isoformat().startswith("2026-11-27T00:00:00")
    assert now in window
    assert window.length == timedelta(hours=24)
    assert seconds_to_reset(now, tz) == 1800
    assert resets_in(now, tz) == "30m"
    refusal = snapshot(tz, now).exhausted_message(0.01)
    assert f"; resets at 00:00 {tz} (in 30m). Raise it with: ralexctl budget set 10" in refusal


@pytest.mark.parametrize("tz", ZONES)
def test_half_an_hour_after_midnight_a_new_day_has_begun(tz: str):
    now = local(tz, EVENING + timedelta(days=1), 0, 30)
    window = day_window(now, tz)
    assert window.day == EVENING + timedelta(days=1)
    assert window.start == local(tz, EVENING + timedelta(days=1), 0)
    assert real_seconds(now, window.start) == 1800
    assert resets_in(now, tz) == "23h30m"
    assert snapshot(tz, now).reset_line() == f"resets at 00:00 {tz} (in 23h30m)"


@pytest.mark.parametrize("tz", ZONES)
def test_the_engine_rolls_over_at_local_midnight_and_late_settles_stay_on_their_day(tz: str):
    before = local(tz, EVENING, 23, 30)
    s = setup(limit=5.0, spent=4.0, tz=tz, now=before)
    flight = s.engine.admit(body())
    assert flight.day == EVENING
    s.engine.apply_settings(replace(s.engine.settings, daily_limit=4.0 + flight.decision.reserve))  # all held
    with pytest.raises(Rejected) as refused:
        s.engine.admit(body())
    assert refused.value.status == 402
    assert f"resets at 00:00 {tz} (in 30m)" in refused.value.message
    assert refused.value.headers["x-ralex-budget-resets-at"] == local(tz, EVENING + timedelta(days=1), 0).astimezone(
        ZoneInfo(tz)).isoformat()

    s.clock.now = before + timedelta(hours=1)  # 00:30 the next day
    assert s.engine.today() == EVENING + timedelta(days=1)
    assert s.engine.snapshot().spent == 0.0
    settled = s.engine.settle(flight.key, 0.001, cost_source="upstream")
    assert settled is not None
    assert settled.budget_day == EVENING  # yesterday's request, yesterday's day
    served = s.engine.admit(body())  # the new day pays for what the old one refused
    assert served.day == EVENING + timedelta(days=1)
    assert s.holds[-1].budget_day == EVENING + timedelta(days=1)


@pytest.mark.parametrize("tz", ZONES)
def test_the_exporter_publishes_the_local_day_and_the_seconds_to_its_midnight(tz: str):
    for now, day, left in ((local(tz, EVENING, 23, 30), EVENING, 1800.0),
                           (local(tz, EVENING + timedelta(days=1), 0, 30), EVENING + timedelta(days=1), 84600.0)):
        ledger = FakeLedger(tz, {day: (1.25, 3, 1, 0, 0)})
        metrics = scrape(ledger, now)
        assert ledger.days == [day, day, day]  # totals, crossings and breakdown of the local day
        assert ledger.since == [now]  # the burn rate's hour ends at the same moment
        assert metrics["ralex_budget_seconds_to_reset"] == left
        assert metrics["ralex_budget_spent_today_usd"] == 1.25
        assert metrics["ralex_projected_spend_today_usd"] == pytest.approx(1.25 + 0.5 * left / 3600)
        assert metrics[f"ralex_budget_threshold_crossed/{day.isoformat()}/50"] == 1


@pytest.mark.parametrize("tz", ZONES)
def test_the_status_bar_counts_down_to_the_proxys_reset(tz: str):
    now = local(tz, EVENING, 23, 30)
    view = {"spent": 1.0, "limit": 5.0, "tier": "full", "timezone": tz, "now": now.isoformat(),
            "resets_at": next_reset(now, tz).isoformat()}
    assert f"resets in 30m ({tz})" in str(render.budget_line(view))


@pytest.mark.parametrize("tz", ZONES)
def test_ralexctl_route_offline_is_decided_at_one_moment(tz: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "ralex.yaml"
    config.write_text((ROOT / "tests" / "unit" / "priced.yaml").read_text().replace("timezone: UTC",
                                                                                      f"timezone: {tz}"))
    monkeypatch.setenv("RALEX_CONFIG", str(config))
    monkeypatch.delenv("RALEX_DATABASE_URL", raising=False)
    now = local(tz, EVENING, 23, 30)
    payload = explain_offline({"model": "cheap", "messages": [{"role": "user", "content": "fix a typo"}]}, 0.0,
                              now=now)
    assert payload["decision"] == "refuse"
    assert f"resets at 00:00 {tz} (in 30m)" in payload["message"]
    assert payload["resets_at"] == next_reset(now, tz).isoformat()


# --- the nights the clocks change --------------------------------------------------------------

@pytest.mark.parametrize(("tz", "day"), SPRING)
def test_the_spring_forward_day_lasts_23_hours_and_resets_at_its_midnight(tz: str, day: date):
    after_midnight = local(tz, day, 0, 30)
    window = day_window(after_midnight, tz)
    assert window.length == timedelta(hours=23)
    assert resets_in(after_midnight, tz) == "22h30m"  # real time: the skipped hour does not count
    assert resets_in(local(tz, day, 3, 30), tz) == "20h30m"  # 03:30 is an hour after 01:30, not two
    assert resets_in(local(tz, day, 23, 30), tz) == "30m"
    assert resets_in(local(tz, day - timedelta(days=1), 23, 30), tz) == "30m"  # the evening before
    assert window.end == local(tz, day + timedelta(days=1), 0)


@pytest.mark.parametrize(("tz", "day"), FALL)
def test_the_fall_back_day_lasts_25_hours_and_resets_at_its_midnight(tz: str, day: date):
    after_midnight = local(tz, day, 0, 30)
    window = day_window(after_midnight, tz)
    assert window.length == timedelta(hours=25)
    assert resets_in(after_midnight, tz) == "24h30m"
    assert resets_in(local(tz, day, 23, 30), tz) == "30m"
    assert resets_in(local(tz, day - timedelta(days=1), 23, 30), tz) == "30m"
    assert window.end == local(tz, day + timedelta(days=1), 0)


@pytest.mark.parametrize(("tz", "day"), FALL)
def test_both_passes_of_the_repeated_hour_belong_to_the_fall_back_day(tz: str, day: date):
    hour = REPEATED_HOUR[tz]
    first, second = local(tz, day, hour, 30, fold=0), local(tz, day, hour, 30, fold=1)
    assert real_seconds(second, first) == 3600  # the same wall time, an hour apart
    assert budget_day(first, tz) == budget_day(second, tz) == day
    assert day_window(first, tz) == day_window(second, tz)
    assert seconds_to_reset(first, tz) - seconds_to_reset(second, tz) == 3600
    left = 24 - hour - 0.5  # wall hours to midnight after the second pass
    assert resets_in(second, tz) == format_duration(left * 3600)
    assert resets_in(first, tz) == format_duration((left + 1) * 3600)


@pytest.mark.parametrize(("tz", "day"), FALL)
def test_a_request_at_01_30_on_the_fall_back_night_lands_on_that_day(tz: str, day: date):
    s = setup(limit=5.0, spent=1.0, tz=tz, now=local(tz, day - timedelta(days=1), 23, 59))
    assert s.engine.admit(body()).day == day - timedelta(days=1)
    for fold in (0, 1):
        s.clock.now = local(tz, day, 1, 30, fold=fold)
        flight = s.engine.admit(body())
        assert flight.day == day
        assert flight.headers["x-ralex-budget-resets-at"] == day_start(day + timedelta(days=1), tz).isoformat()
    assert s.engine.snapshot().spent == 0.0  # yesterday's $1 stays on yesterday


@pytest.mark.parametrize(("tz", "day"), [*SPRING, *FALL])
def test_the_engine_resets_at_each_midnight_around_a_clock_change(tz: str, day: date):
    s = setup(limit=5.0, spent=4.0, tz=tz, now=local(tz, day - timedelta(days=1), 23, 30))
    s.clock.now = local(tz, day, 0, 30)
    assert s.engine.snapshot().spent == 0.0
    s.engine.settle(s.engine.admit(body()).key, 2.0, cost_source="upstream")
    end = day_window(s.clock.now, tz).end
    s.clock.now = just_before(end)
    assert (s.engine.today(), s.engine.snapshot().spent) == (day, 2.0)
    s.clock.now = end
    assert (s.engine.today(), s.engine.snapshot().spent) == (day + timedelta(days=1), 0.0)


@pytest.mark.parametrize(("tz", "day"), [*SPRING, *FALL])
def test_the_exporter_counts_real_seconds_on_a_clock_change_day(tz: str, day: date):
    now = local(tz, day, 0, 30)
    expected = {23: 22.5, 25: 24.5}[round(day_window(now, tz).length.total_seconds() / 3600)] * 3600
    assert scrape(FakeLedger(tz, {}), now)["ralex_budget_seconds_to_reset"] == expected


@pytest.mark.parametrize(("tz", "day"), [*SPRING, *FALL])
def test_the_status_bar_counts_real_time_across_a_clock_change(tz: str, day: date):
    now = local(tz, day, 0, 30)
    view = {"spent": 1.0, "limit": 5.0, "tier": "full", "timezone": tz,
            "now": now.isoformat(), "resets_at": next_reset(now, tz).isoformat()}
    assert f"resets in {resets_in(now, tz)} ({tz})" in str(render.budget_line(view))
    assert resets_in(now, tz) in ("22h30m", "24h30m")


def test_the_reset_text_counts_real_time_whatever_timezone_the_moment_is_given_in():
    tz, day = SPRING[0]
    now = local(tz, day, 0, 30)
    as_local = now.astimezone(ZoneInfo(tz))  # same tzinfo as the reset: naive subtraction would say 23h30m
    assert snapshot(tz, as_local).reset_line() == snapshot(tz, now).reset_line() == f"resets at 00:00 {tz} (in 22h30m)"


def test_a_moment_without_a_timezone_is_refused_rather_than_read_in_this_machines():
    with pytest.raises(ValueError, match="has no timezone"):
        budget_day(datetime(2026, 11, 26, 23, 30), "UTC")


@pytest.mark.parametrize(("tz", "day", "start"), [
    ("America/Santiago", date(2026, 9, 6), "2026-09-06T01:00:00-03:00"),  # 00:00 -> 01:00
    ("Africa/Cairo", date(2026, 4, 24), "2026-04-24T01:00:00+03:00"),
])
def test_a_day_whose_midnight_is_skipped_starts_when_the_clocks_jump(tz: str, day: date, start: str):
    begins = day_start(day, tz)
    assert begins.isoformat() == start
    assert budget_day(just_before(begins), tz) == day - timedelta(days=1)
    assert budget_day(begins, tz) == day
    assert day_window(begins, tz).length == timedelta(hours=23)


# --- any moment, any zone --------------------------------------------------------------------------

MOMENTS = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
NOWADAYS = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
"""When the tests run: the candidate zones' offsets are today's (Kiritimati was at UTC-10 until 1995)."""


@given(now=MOMENTS, tz=st.sampled_from(TRICKY))
@example(now=datetime(2011, 12, 30, 9, 59, tzinfo=UTC), tz="Pacific/Apia")  # the day before the skipped 30th
@example(now=datetime(2011, 12, 30, 10, 0, tzinfo=UTC), tz="Pacific/Apia")  # ... and the 31st
@example(now=datetime(1994, 12, 31, 9, 0, tzinfo=UTC), tz="Pacific/Kiritimati")  # UTC-10 to UTC+14
@example(now=datetime(2026, 9, 6, 3, 59, 59, tzinfo=UTC), tz="America/Santiago")  # 23:59:59, then 01:00
@example(now=datetime(2026, 4, 23, 21, 59, 59, tzinfo=UTC), tz="Africa/Cairo")
@example(now=datetime(2026, 10, 25, 0, 30, tzinfo=UTC), tz="Europe/Berlin")  # 02:30, the first time
@example(now=datetime(2026, 10, 25, 1, 30, tzinfo=UTC), tz="Europe/Berlin")  # 02:30, the second time
@example(now=datetime(2026, 10, 4, 15, 30, tzinfo=UTC), tz="Australia/Lord_Howe")  # 02:00 -> 02:30
@settings(max_examples=400, deadline=None)
def test_every_moment_lies_in_its_day_and_the_day_ends_at_the_next_local_midnight(now: datetime, tz: str):
    zi = ZoneInfo(tz)
    window = day_window(now, tz)
    assert window.day == budget_day(now, tz) == now.astimezone(zi).date()
    assert window.start <= now < window.end
    assert budget_day(window.start, tz) == window.day
    assert budget_day(just_before(window.end), tz) == window.day
    assert budget_day(window.end, tz) > window.day
    wall = window.end.astimezone(zi)
    midnight = datetime.combine(wall.date(), time(0), tzinfo=zi)
    skipped = midnight.astimezone(UTC).astimezone(zi).replace(tzinfo=None) != midnight.replace(tzinfo=None)
    assert wall.time() == time(0) or skipped  # the next local midnight, or where the clocks jumped over it
    assert seconds_to_reset(now, tz) == real_seconds(window.end, now)
    assert 0 < seconds_to_reset(now, tz) <= window.length.total_seconds()
    assert resets_in(now, tz) != "0m"
    assert next_reset(now, tz) == window.end == day_window(just_before(window.end), tz).end


@given(now=MOMENTS, tz=st.sampled_from(TRICKY))
@settings(max_examples=200, deadline=None)
def test_consecutive_days_tile_time(now: datetime, tz: str):
    today = day_window(now, tz)
    tomorrow = day_window(today.end, tz)
    assert tomorrow.start == today.end
    assert isinstance(tomorrow, DayWindow)
    assert timedelta(hours=22) <= today.length <= timedelta(hours=26)


@given(seconds=st.floats(min_value=0.001, max_value=26 * 3600))
def test_the_wait_text_is_whole_minutes_rounded_up(seconds: float):
    text = format_duration(seconds)
    hours, _, minutes = text.rstrip("m").rpartition("h")
    total = int(hours or 0) * 60 + int(minutes)
    assert total * 60 >= seconds > (total - 1) * 60
    assert int(minutes) < 60
    assert len(minutes) == 2 or not hours


# --- alert thresholds and the new day ------------------------------------------------------------

def test_new_crossings_are_the_thresholds_reached_and_not_yet_announced_today():
    assert new_crossings(0.81, (50, 80, 95, 100), ()) == [50, 80]
    assert new_crossings(0.81, (50, 80, 95, 100), (50,)) == [80]
    assert new_crossings(0.5 - 1e-12, (50,), ()) == [50]
    assert new_crossings(0.49, (50,), ()) == []


@pytest.mark.parametrize("tz", ZONES)
def test_a_late_settle_after_midnight_announces_nothing_for_the_new_day(tz: str):
    """Yesterday's request settling just after midnight brings yesterday to 99 %: none of it is today's."""
    late = local(tz, EVENING, 23, 59)
    s = setup(limit=1.0, spent=0.49, tz=tz, now=late)
    crossings: list[Crossing] = []
    s.engine.on_crossing = crossings.append
    flight = s.engine.admit(body())
    s.clock.now = late + timedelta(minutes=1)  # 00:00 the next day
    s.engine.settle(flight.key, 0.5, cost_source="upstream")
    assert crossings == []
    assert s.engine.crossed == set()
    assert s.engine.snapshot().spent == 0.0
    s.engine.settle(s.engine.admit(body()).key, 0.55, cost_source="upstream")  # today's own 55 %
    assert [(c.day, c.threshold) for c in crossings] == [(EVENING + timedelta(days=1), 50)]


def test_a_refusal_just_before_midnight_exhausts_that_day_not_the_next():
    """The clock passes midnight while the refusal is being recorded: 100 % belongs to the day refused."""
    tz = "Europe/Berlin"
    s = setup(limit=1.0, spent=1.0, tz=tz, now=local(tz, EVENING, 23, 59))
    ticks = iter([just_before(local(tz, EVENING + timedelta(days=1), 0))])
    s.engine.clock = lambda: next(ticks, local(tz, EVENING + timedelta(days=1), 0))
    crossings: list[Crossing] = []
    s.engine.on_crossing = crossings.append
    with pytest.raises(Rejected):
        s.engine.admit(body())
    assert [(c.day, c.threshold) for c in crossings] == [(EVENING, t) for t in (50, 80, 95, 100)]


def test_figures_read_for_a_day_that_has_ended_are_not_carried_into_the_next():
    tz = "Europe/Berlin"
    s = setup(limit=5.0, tz=tz, now=local(tz, EVENING + timedelta(days=1), 0, 0))
    engine = BudgetEngine(s.engine.base_routing, s.engine.settings, 4.5, clock=s.clock, sink=s.rows.append,
                          day=EVENING)  # the spend was read at 23:59:59, the engine starts at 00:00
    assert engine.snapshot().spent == 0.0
    assert engine.today() == EVENING + timedelta(days=1)
    engine.apply_settings(s.engine.settings, 3.0, day=EVENING)  # a spend read for yesterday, applied today
    assert engine.snapshot().spent == 0.0


def test_a_new_timezone_moves_the_budget_to_that_zones_day():
    s = setup(limit=5.0, spent=1.0, tz="Europe/Berlin", now=local("Europe/Berlin", EVENING, 23, 30))
    east = BudgetSettings(daily_limit=5.0, timezone="Pacific/Kiritimati", thresholds=Thresholds())
    s.engine.apply_settings(east, 0.25, day=budget_day(s.clock.now, "Pacific/Kiritimati"))
    tomorrow = EVENING + timedelta(days=1)  # 12:30 tomorrow there, with that day's spend
    assert (s.engine.today(), s.engine.snapshot().spent) == (tomorrow, 0.25)
    assert s.engine.snapshot().reset_line() == "resets at 00:00 Pacific/Kiritimati (in 11h30m)"


# --- the zones tests on the real clock run in (tests/zones.py) -------------------------------------

@given(now=NOWADAYS)
@settings(max_examples=300, deadline=None)
def test_the_test_zone_is_hours_from_its_midnight_at_any_moment(now: datetime):
    tz = far_from_midnight(now)
    assert hours_left(tz, now) >= 6
    assert tz == PREFERRED or hours_left(PREFERRED, now) < 6
    assert "/" in tz  # ralexctl init takes it from TZ


@given(now=NOWADAYS, tz=st.sampled_from((*ZONES, *CANDIDATES)))
@settings(max_examples=300, deadline=None)
def test_another_date_is_always_one_timezone_away_with_time_to_spare(now: datetime, tz: str):
    day = budget_day(now, tz)
    other = on_another_date(day, now)
    assert budget_day(now, other) != day
    assert hours_left(other, now) >= 1


def test_the_candidate_zones_cover_every_whole_hour_offset():
    offsets = sorted(ZoneInfo(tz).utcoffset(datetime(2026, 6, 1)) // timedelta(hours=1) for tz in CANDIDATES)
    assert offsets == list(range(-12, 15))


# --- a fake ledger for the exporter --------------------------------------------------------------------

class FakeLedger:
    """Answers the exporter's queries; records the day and the moment each one asked for."""

    def __init__(self, tz: str, totals: dict[date, tuple[float, int, int, int, int]]) -> None:
        self.tz, self.totals = tz, totals
        self.days: list[date] = []
        self.since: list[datetime] = []
        self.closed = False

    def execute(self, query: str, params: tuple[Any, ...] = ()) -> Rows:
        if query == store.SELECT_SETTINGS:
            return Rows([(5.0, self.tz, 2.0, 0.5, 200, None, None, {}, [50, 80, 95, 100])])
        if query == store.DAY_TOTALS:
            self.days.append(params[0])
            found = self.totals.get(params[0])
            return Rows([found] if found else [])
        if query == store.CROSSING_FIGURES_ON_DAY:
            self.days.append(params[0])
            return Rows([(50, 2.5, 5.0)] if params[0] in self.totals else [])
        if query == store.BREAKDOWN:
            self.days.append(params[0])
            return Rows([])
        if query == store.LAST_HOUR_SPEND:
            self.since.append(params[0])
            return Rows([(0.5,)])
        if query == store.WRITE_LAG:
            return Rows([(0.1, 2.0)])
        if query == store.ACTIVE_KEYS:
            return Rows([])
        raise AssertionError(f"unexpected query {query}")

    def close(self) -> None:
        self.closed = True


class Rows(list[tuple[Any, ...]]):
    def fetchone(self) -> tuple[Any, ...] | None:
        return self[0] if self else None


def scrape(ledger: FakeLedger, now: datetime) -> dict[str, float]:
    collector = LedgerCollector("postgresql://unused", clock=lambda: now)
    collector._conn = ledger  # type: ignore[assignment]
    found: dict[str, float] = {}
    for family in collector.collect():
        for sample in family.samples:
            labels = sample.labels
            key = "/".join([sample.name, *(labels[k] for k in ("budget_day", "threshold") if k in labels)])
            found[key] = sample.value
    assert found["ralex_exporter_up"] == 1, "the scrape failed"
    return found
