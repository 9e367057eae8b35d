from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ralex.budget import (
    BudgetError,
    ReservationBook,
    budget_day,
    format_duration,
    next_reset,
    parse_budget,
    suggest_raise,
    usd,
)


@pytest.mark.parametrize(("given", "expected"), [("5", 5.0), ("$12.50", 12.5), (2, 2.0), ("0", 0.0)])
def test_parse_budget_accepts_dollars(given, expected):
    assert parse_budget(given) == expected


@pytest.mark.parametrize("bad", ["-1", "ten", "nan", "inf", "", "50000"])
def test_parse_budget_rejects_nonsense_with_a_fix(bad):
    with pytest.raises(BudgetError, match=r"budget"):
        parse_budget(bad)


def test_budget_day_and_reset_follow_the_configured_timezone():
    late_utc = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)  # already 00:30 on the 27th in Berlin
    assert budget_day(late_utc, "UTC") == date(2026, 11, 26)
    assert budget_day(late_utc, "Europe/Berlin") == date(2026, 11, 27)
    assert next_reset(late_utc, "Europe/Berlin").isoformat() == "2026-11-28T00:00:00+01:00"


def test_reset_across_a_daylight_saving_change():
    before_dst_end = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    reset = next_reset(before_dst_end, "Europe/Berlin")
    assert reset.isoformat() == "2026-10-25T00:00:00+02:00"


def test_formatting():
    assert format_duration(3 * 3600 + 12 * 60) == "3h12m"
    assert format_duration(59) == "1m"
    assert usd(5) == "$5.00"
    assert usd(0.000021) == "$0.000021"
    assert suggest_raise(5) == "10"
    assert suggest_raise(20) == "40"


def test_reservations_cannot_jointly_overshoot():
    book = ReservationBook(date(2026, 11, 26), spent=4.99)
    assert book.try_reserve("a", 0.006, limit=5.0)
    assert not book.try_reserve("b", 0.006, limit=5.0)
    book.settle("a", 0.001)
    assert book.spent == pytest.approx(4.991)
    assert book.try_reserve("b", 0.006, limit=5.0)
    book.release("b")
    assert book.reserved == 0


def test_a_hold_from_yesterday_settles_on_yesterday():
    book = ReservationBook(date(2026, 11, 26), spent=1.0)
    book.try_reserve("late", 0.5, limit=5.0)
    book.roll_over(date(2026, 11, 27), 0.0)
    assert book.reserved == 0
    assert book.settle("late", 0.2) == date(2026, 11, 26)
    assert book.spent == 0.0


@pytest.mark.parametrize(("amount", "shown"), [
    (5, "$5.00"), (0.5, "$0.50"), (0.012, "$0.012"), (0.0125, "$0.0125"), (0.0068, "$0.0068"), (0, "$0.00"),
    (1234.5, "$1,234.50"), (0.123456, "$0.1235"), (0.000012, "$0.000012"),
])
def test_an_amount_is_shown_with_the_digits_it_was_set_with(amount: float, shown: str):
    from ralex.budget import usd

    assert usd(amount) == shown


def test_the_summary_is_the_one_line_every_place_shows():
    from datetime import datetime

    from ralex.budget import BudgetSnapshot, KeyAllowance
    now = datetime.fromisoformat("2026-11-26T22:30:00+00:00")
    day = BudgetSnapshot(limit=0.012, spent=0.0068, reserved=0.0, timezone="UTC", now=now)
    assert day.summary() == ("$0.0068 of $0.012 spent (57%) · $0.0052 left · tier emergency (short emergency answers) "
                             "· resets at 00:00 UTC (in 1h30m)")
    keyed = BudgetSnapshot(limit=5.0, spent=1.0, reserved=0.0, timezone="UTC", now=now,
                           key=KeyAllowance(name="alice", limit=1.0, spent=0.7, reserved=0.0))
    assert keyed.summary().startswith("$1.00 of $5.00 spent (20%) · $0.30 left of key alice's sub-budget · "
                                      "tier economy (cheap only)")
