"""The budget engine around the policy: holds, settlement, failures, the budget day, refusals."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from ralex.budget import Thresholds
from ralex.engine import BudgetEngine, Rejected
from ralex.ledger.rows import BudgetSettings, LedgerRow
from ralex.policy import AliasSpec, Decision, Refusal, RoutingConfig

CHEAP = AliasSpec("cheap", "google/gemini-2.5-flash-lite", 1e-7, 4e-7, 0.001)
SMART = AliasSpec("smart", "anthropic/claude-sonnet-4.5", 3e-6, 1.5e-5, 0.01)
YOLO = AliasSpec("yolo", "google/gemini-2.5-flash-lite", 1e-7, 4e-7, 0.0005)
NOON = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Setup:
    engine: BudgetEngine
    rows: list[LedgerRow]
    holds: list[LedgerRow]
    clock: Clock


def setup(limit: float = 5.0, spent: float = 0.0, tz: str = "UTC", now: datetime = NOON,
          fallbacks: dict[str, tuple[str, ...]] | None = None) -> Setup:
    routing = RoutingConfig(aliases={"cheap": CHEAP, "smart": SMART, "yolo": YOLO},
                            fallbacks={} if fallbacks is None else fallbacks)
    settings = BudgetSettings(daily_limit=limit, timezone=tz, thresholds=Thresholds())
    rows: list[LedgerRow] = []
    holds: list[LedgerRow] = []
    clock = Clock(now)
    engine = BudgetEngine(routing, settings, spent, clock=clock, sink=rows.append, hold_sink=holds.append)
    return Setup(engine, rows, holds, clock)


def body(model: str = "cheap", text: str = "fix the typo in hello.py", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 100, **extra}


# --- admission ---------------------------------------------------------------------------------

def test_admit_reserves_the_worst_case_and_journals_the_hold_before_returning():
    s = setup()
    journaled_while_reserved: list[float] = []
    s.engine.hold_sink = lambda row: (s.holds.append(row),
                                      journaled_while_reserved.append(s.engine.snapshot().reserved))

    flight = s.engine.admit(body())

    reserve = flight.decision.reserve
    assert reserve == pytest.approx(flight.request.prompt_tokens * 1e-7 + 100 * 4e-7)
    assert s.engine.snapshot().reserved == pytest.approx(reserve)
    assert journaled_while_reserved == [pytest.approx(reserve)]
    [hold] = s.holds
    assert hold.request_id == uuid.UUID(flight.key)
    assert (hold.status, hold.cost_usd, hold.cost_source) == ("interrupted", reserve, "hold")
    assert (hold.alias_routed, hold.upstream_model, hold.budget_day) == ("cheap", CHEAP.model, date(2026, 11, 26))
    assert s.rows == []  # nothing is final yet


def test_admit_hands_the_client_its_route_and_budget_headers():
    s = setup()
    flight = s.engine.admit(body(max_tokens=300))
    assert flight.headers["x-ralex-route"] == "cheap"
    assert flight.headers["x-ralex-model"] == CHEAP.model
    assert flight.headers["x-ralex-max-tokens"] == "300"
    assert flight.headers["x-ralex-budget-remaining"] == "5.000000"
    assert flight.headers["x-ralex-budget-resets-at"] == "2026-11-27T00:00:00+00:00"
    assert flight.headers["x-ralex-request-id"] == flight.key


# --- settlement --------------------------------------------------------------------------------

def test_settle_replaces_the_hold_by_the_real_cost_and_records_one_row():
    s = setup()
    flight = s.engine.admit(body())

    row = s.engine.settle(flight.key, 0.00002, cost_source="usage", prompt_tokens=12, completion_tokens=30)

    assert s.rows == [row]
    assert row is not None
    assert (row.status, row.cost_usd, row.cost_source) == ("ok", 0.00002, "usage")
    assert (row.prompt_tokens, row.completion_tokens) == (12, 30)
    assert row.reserved_usd == flight.decision.reserve
    snap = s.engine.snapshot()
    assert (snap.spent, snap.reserved) == (pytest.approx(0.00002), 0.0)
    assert len(s.holds) == 1  # settling journals nothing more through the hold sink


def test_a_request_settles_only_once():
    s = setup()
    flight = s.engine.admit(body())
    s.engine.settle(flight.key, 0.00002, cost_source="usage")
    assert s.engine.settle(flight.key, 0.5, cost_source="usage") is None
    assert s.engine.fail(flight.key, "late error") is None
    assert s.engine.settle_at_hold(flight.key, "abandoned") is None
    assert len(s.rows) == 1
    assert s.engine.snapshot().spent == pytest.approx(0.00002)


def test_attempts_the_upstream_refused_cost_nothing():
    s = setup(fallbacks={"cheap": ("smart",)})
    flight = s.engine.admit(body())
    for alias in ("cheap", "smart"):
        s.engine.start_attempt(flight.key, alias)
        s.engine.note_failed_attempt(flight.key, alias, billable=False)

    row = s.engine.fail(flight.key, "503 from every provider")

    assert row is not None
    assert (row.status, row.cost_usd, row.cost_source) == ("error", 0.0, None)
    assert row.error == "503 from every provider"
    snap = s.engine.snapshot()
    assert (snap.spent, snap.reserved) == (0.0, 0.0)


def test_a_timed_out_attempt_is_charged_at_its_worst_case_when_the_request_fails():
    s = setup(fallbacks={"cheap": ("smart",)})
    flight = s.engine.admit(body())
    [smart_fallback] = flight.decision.fallbacks
    for alias in ("cheap", "smart"):
        s.engine.start_attempt(flight.key, alias)
        s.engine.note_failed_attempt(flight.key, alias, billable=True)

    row = s.engine.fail(flight.key, "timeout")

    assert row is not None
    charged = flight.decision.worst_case + smart_fallback.worst_case
    assert (row.status, row.cost_usd, row.cost_source) == ("error", pytest.approx(charged), "hold")
    assert s.engine.snapshot().spent == pytest.approx(charged)


def test_a_timed_out_attempt_is_added_to_the_cost_of_the_fallback_that_answered():
    s = setup(fallbacks={"cheap": ("smart",)})
    flight = s.engine.admit(body())
    s.engine.start_attempt(flight.key, "cheap")
    s.engine.note_failed_attempt(flight.key, "cheap", billable=True)
    s.engine.start_attempt(flight.key, "smart")

    row = s.engine.settle(flight.key, 0.0009, cost_source="usage", alias="smart", model=SMART.model)

    assert row is not None
    assert row.cost_usd == pytest.approx(0.0009 + flight.decision.worst_case)
    assert (row.alias_routed, row.fallback, row.upstream_model) == ("smart", True, SMART.model)
    assert row.max_tokens == flight.decision.fallbacks[0].max_tokens
    assert s.engine.snapshot().spent == pytest.approx(0.0009 + flight.decision.worst_case)


def test_an_attempt_that_started_and_never_reported_back_is_charged_at_its_worst_case():
    """The fallback's failure went unreported (or the request failed before it could be): it may have
    been generated, so it costs its own worst case; the refused primary costs nothing."""
    s = setup(fallbacks={"cheap": ("smart",)})
    flight = s.engine.admit(body())
    [smart_fallback] = flight.decision.fallbacks
    s.engine.start_attempt(flight.key, "cheap")
    s.engine.note_failed_attempt(flight.key, "cheap", billable=False)
    s.engine.start_attempt(flight.key, "smart")

    row = s.engine.fail(flight.key, "503, then no answer")

    assert row is not None
    assert (row.cost_usd, row.cost_source) == (pytest.approx(smart_fallback.worst_case), "hold")
    assert row.cost_usd <= flight.decision.reserve


def test_a_failure_whose_start_went_unseen_is_an_attempt_of_its_own():
    s = setup(fallbacks={"cheap": ("smart",)})
    flight = s.engine.admit(body())
    s.engine.note_failed_attempt(flight.key, "cheap", billable=True)

    row = s.engine.settle(flight.key, 0.0009, cost_source="usage", alias="smart", model=SMART.model)

    assert row is not None
    assert row.cost_usd == pytest.approx(0.0009 + flight.decision.worst_case)


def test_the_answering_attempt_is_charged_its_real_cost_once():
    s = setup(fallbacks={"cheap": ("smart",)})
    flight = s.engine.admit(body())
    s.engine.start_attempt(flight.key, "cheap")

    row = s.engine.settle(flight.key, 0.00002, cost_source="usage", alias="cheap")

    assert row is not None
    assert row.cost_usd == pytest.approx(0.00002)


def test_settle_at_hold_charges_the_whole_reserve():
    s = setup(fallbacks={"cheap": ("smart",)})
    flight = s.engine.admit(body())

    row = s.engine.settle_at_hold(flight.key, "cancelled", "client went away mid-stream")

    assert row is not None
    assert (row.status, row.cost_usd, row.cost_source) == ("cancelled", flight.decision.reserve, "hold")
    assert row.error == "client went away mid-stream"
    assert s.engine.snapshot().spent == pytest.approx(flight.decision.reserve)
    assert s.engine.snapshot().reserved == 0.0


def test_expire_charges_stale_holds_at_their_reserve_and_keeps_fresh_ones():
    s = setup()
    stale = s.engine.admit(body())
    fresh = s.engine.admit(body(text="rename foo to bar"))
    stale.started -= 3600  # admitted an hour ago and never heard of since

    expired = s.engine.expire(older_than=600)

    assert [row.request_id for row in expired] == [uuid.UUID(stale.key)]
    assert (expired[0].status, expired[0].cost_usd, expired[0].cost_source) == (
        "abandoned", stale.decision.reserve, "hold")
    assert s.rows == expired
    assert list(s.engine.in_flight) == [fresh.key]
    snap = s.engine.snapshot()
    assert snap.spent == pytest.approx(stale.decision.reserve)
    assert snap.reserved == pytest.approx(fresh.decision.reserve)


# --- the budget day ----------------------------------------------------------------------------

def test_the_budget_day_rolls_over_at_local_midnight_and_late_requests_settle_into_yesterday():
    before_midnight = datetime(2026, 11, 26, 22, 59, tzinfo=UTC)  # 23:59 in Berlin
    s = setup(limit=5.0, spent=4.0, tz="Europe/Berlin", now=before_midnight)
    late = s.engine.admit(body())
    assert s.engine.snapshot().spent == 4.0

    s.clock.now = before_midnight + timedelta(minutes=2)  # 00:01 on the 27th in Berlin
    snap = s.engine.snapshot()
    assert (snap.spent, snap.reserved) == (0.0, 0.0)
    assert snap.reset_at.isoformat() == "2026-11-28T00:00:00+01:00"

    row = s.engine.settle(late.key, 0.00003, cost_source="usage")
    assert row is not None
    assert row.budget_day == date(2026, 11, 26)
    assert s.engine.snapshot().spent == 0.0  # yesterday's cost does not eat into today

    today = s.engine.admit(body())
    assert today.day == date(2026, 11, 27)
    assert s.holds[-1].budget_day == date(2026, 11, 27)


def test_the_day_does_not_roll_at_utc_midnight_for_a_local_timezone():
    s = setup(spent=1.0, tz="America/New_York", now=datetime(2026, 11, 26, 23, 0, tzinfo=UTC))
    s.clock.now = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)  # still 20:00 on the 26th in New York
    assert s.engine.snapshot().spent == 1.0
    s.clock.now = datetime(2026, 11, 27, 5, 1, tzinfo=UTC)  # 00:01 on the 27th in New York
    assert s.engine.snapshot().spent == 0.0


# --- concurrency -------------------------------------------------------------------------------

def test_a_thousand_admits_in_flight_never_reserve_past_the_limit():
    limit = 0.01
    s = setup(limit=limit, fallbacks={"cheap": ("smart",)})
    admitted = []
    refusals = []
    for i in range(1000):
        try:
            admitted.append(s.engine.admit(body(text=f"fix the typo in module_{i}.py", max_tokens=4000)))
        except Rejected as exc:
            refusals.append(exc.status)

    assert admitted
    assert refusals
    assert set(refusals) == {402}
    refused = len(refusals)
    assert sum(f.decision.reserve for f in admitted) <= limit + 1e-12
    assert s.engine.snapshot().remaining >= -1e-12
    assert len(s.holds) == len(admitted)
    assert [row.status for row in s.rows] == ["refused"] * refused


# --- preview -----------------------------------------------------------------------------------

def test_preview_decides_like_admit_but_reserves_nothing():
    s = setup(fallbacks={"cheap": ("smart",)})
    preview = s.engine.preview(body(max_tokens=500))

    assert isinstance(preview, Decision)
    assert s.engine.snapshot().reserved == 0.0
    assert (s.engine.in_flight, s.rows, s.holds) == ({}, [], [])

    flight = s.engine.admit(body(max_tokens=500))
    assert (flight.decision.alias, flight.decision.max_tokens, flight.decision.reserve) == (
        preview.alias, preview.max_tokens, preview.reserve)


def turn_steps() -> tuple[dict[str, Any], dict[str, Any]]:
    """A user turn's first step and the tool step after it (same conversation, one tool call later)."""
    first_step: dict[str, Any] = {"model": "auto", "messages": [
        {"role": "user", "content": "review the auth module for race conditions"}]}
    tool_step = {"model": "auto", "messages": [
        *first_step["messages"],
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "def login(): ..."}]}
    return first_step, tool_step


def test_preview_remembers_no_turn():
    s = setup()
    first_step, tool_step = turn_steps()

    s.engine.preview(first_step)
    after_preview = s.engine.preview(tool_step)
    assert isinstance(after_preview, Decision)
    assert after_preview.kind != "turn"

    s.engine.admit(first_step)
    after_admit = s.engine.preview(tool_step)
    assert isinstance(after_admit, Decision)
    assert after_admit.kind == "turn"
    assert after_admit.reason.startswith("same turn")


def test_two_keys_sending_the_same_first_prompt_never_share_a_turn():
    """A tight key's step-down must not downgrade a full-budget key that happens to send the same
    conversation (nor the full-budget key's choice lift the tight key)."""
    s = setup()
    s.engine.set_key_budgets({"tight": 1.0, "roomy": None})
    earlier = s.engine.admit(body(), "tight")
    s.engine.settle(earlier.key, 0.7, cost_source="upstream")
    first_step, tool_step = turn_steps()

    tight = s.engine.admit(first_step, "tight")
    roomy = s.engine.admit(first_step, "roomy")
    assert tight.decision.alias == "cheap"  # $0.30 of the key's $1 left (under 40 %): smart is out of its reach
    assert (roomy.decision.alias, roomy.decision.kind) == ("smart", "task-smart")
    assert not roomy.decision.reason.startswith("same turn")

    tight_step = s.engine.admit(tool_step, "tight")
    roomy_step = s.engine.admit(tool_step, "roomy")
    assert (tight_step.decision.alias, tight_step.decision.kind) == ("cheap", "turn")
    assert (roomy_step.decision.alias, roomy_step.decision.kind) == ("smart", "turn")
    assert s.engine.admit(tool_step, "agent").decision.kind != "turn"  # a third key: a turn of its own


def test_the_engine_hands_its_reason_on_as_text_the_header_writer_encodes():
    """The classifier quotes the prompt; the engine does not pre-clean it (the gate's writer encodes
    it), and the ledger row keeps the same words."""
    s = setup()
    flight = s.engine.admit(body(model="auto", text="Hi,\ncan you fix the typo in a.py"))
    assert "\n" in flight.headers["x-ralex-reason"]
    assert flight.headers["x-ralex-reason"] == flight.decision.reason
    row = s.engine.settle(flight.key, 0.00001, cost_source="upstream")
    assert row is not None
    assert row.reason == flight.decision.reason


def test_preview_over_budget_returns_the_refusal_without_recording_it():
    s = setup(limit=5.0, spent=5.0)
    outcome = s.engine.preview(body())
    assert isinstance(outcome, Refusal)
    assert "exhausted" in outcome.message
    assert s.rows == []


# --- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("bad", "words"), [
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, "unknown model 'gpt-4o'"),
    ({"model": "auto"}, "no 'messages'"),
    ({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "lots"}, "positive whole"),
    ({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}, "inline as a data: URL"),
])
def test_bad_bodies_are_rejected_with_400_and_reserve_nothing(bad, words):
    s = setup()
    with pytest.raises(Rejected) as caught:
        s.engine.admit(bad)
    assert caught.value.status == 400
    assert words in caught.value.message
    assert (s.engine.in_flight, s.holds, s.rows) == ({}, [], [])


def test_a_lone_surrogate_in_the_text_is_counted_not_a_crash():
    """The proxy's gate refuses such bodies with a 400; the engine itself still prices them from above."""
    s = setup()
    flight = s.engine.admit(body(text="fix this \ud800"))  # what json.loads makes of "fix this \\ud800"
    assert flight.request.prompt_tokens >= len("fix this ") + 3


def test_over_budget_is_rejected_with_402_the_refusal_text_and_headers():
    s = setup(limit=5.0, spent=5.0)
    with pytest.raises(Rejected) as caught:
        s.engine.admit(body())

    rejected = caught.value
    assert rejected.status == 402
    assert "Daily budget $5.00 exhausted ($5.00 spent; $0.00 left" in rejected.message
    assert "resets at 00:00 UTC (in 12h00m)" in rejected.message
    assert "ralexctl budget set 10" in rejected.message
    assert rejected.headers == {
        "x-ralex-route": "refused",
        "x-ralex-reason": "budget",
        "x-ralex-key": "operator",
        "x-ralex-budget-remaining": "0.000000",
        "x-ralex-budget-resets-at": "2026-11-27T00:00:00+00:00",
    }
    [row] = s.rows
    assert (row.status, row.route_kind, row.cost_usd) == ("refused", "refused", 0.0)
    assert s.holds == []
    assert s.engine.snapshot().reserved == 0.0


def test_a_prompt_over_every_per_request_cap_is_refused_with_the_cap_fix():
    s = setup()
    with pytest.raises(Rejected) as caught:
        s.engine.admit(body(model="smart", text="x" * 20_000))
    assert caught.value.status == 402
    assert "per-request cap" in caught.value.message
    assert "ralexctl budget cap" in caught.value.message
    assert caught.value.headers["x-ralex-reason"] == "per-request cap"
    assert s.rows[-1].route_kind == "cap-refused"


# --- fallback chains ---------------------------------------------------------------------------

def test_a_fallback_chain_holds_the_sum_of_its_attempts_worst_cases():
    s = setup(fallbacks={"cheap": ("smart",)})
    flight = s.engine.admit(body(max_tokens=200))

    prompt = flight.request.prompt_tokens
    cheap_worst = prompt * 1e-7 + 200 * 4e-7
    smart_worst = prompt * 3e-6 + 200 * 1.5e-5
    [fallback] = flight.decision.fallbacks
    assert (fallback.alias, fallback.max_tokens) == ("smart", 200)
    assert flight.decision.worst_case == pytest.approx(cheap_worst)
    assert fallback.worst_case == pytest.approx(smart_worst)
    assert flight.decision.reserve == pytest.approx(cheap_worst + smart_worst)
    assert s.holds[0].cost_usd == pytest.approx(cheap_worst + smart_worst)
    assert s.engine.snapshot().reserved == pytest.approx(cheap_worst + smart_worst)


def test_a_fallback_the_tier_forbids_adds_nothing_to_the_hold():
    s = setup(limit=5.0, spent=4.0, fallbacks={"cheap": ("smart",)})  # $1 left: economy, no smart
    flight = s.engine.admit(body(max_tokens=200))
    assert flight.decision.fallbacks == ()
    assert flight.decision.reserve == pytest.approx(flight.decision.worst_case)
    assert "no fallback to smart (tier)" in flight.decision.reason


# --- holds that follow the bill ------------------------------------------------------------------

def grown(steps: int, text: str = "x" * 4000) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are an agent. " * 200},
                                      {"role": "user", "content": "refactor the auth module"}]
    for n in range(steps):
        messages += [{"role": "assistant", "content": "", "tool_calls": [
                          {"id": f"c{n}", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
                     {"role": "tool", "tool_call_id": f"c{n}", "content": text}]
    return {"model": "smart", "messages": messages, "max_tokens": 100}


def roomy() -> Setup:
    """Caps high enough for a long conversation on either alias."""
    s = setup(limit=5.0)
    s.engine.set_routing(RoutingConfig(aliases={"cheap": replace(CHEAP, max_cost_per_request=1.0),
                                                "smart": replace(SMART, max_cost_per_request=1.0), "yolo": YOLO},
                                       fallbacks={}))
    return s


def test_a_later_step_is_held_by_what_the_upstream_billed_for_the_earlier_one():
    s = roomy()
    first = s.engine.admit(grown(3), client="agent")
    assert first.decision.alias == "smart"
    byte_hold = first.decision.worst_case
    s.engine.settle(first.key, 0.003, cost_source="upstream", model=SMART.model, alias="smart", prompt_tokens=1000)
    second = s.engine.admit(grown(4), client="agent")
    new_part = second.request.prefixes.rest[len(grown(3)["messages"])]
    expected = 1000 + new_part + 16
    assert second.decision.worst_case == pytest.approx(expected * SMART.prompt_price + 100 * SMART.completion_price)
    assert second.decision.worst_case < byte_hold  # 4 steps held below 3 steps' byte bound
    assert second.request.prompt_tokens > expected  # the byte bound, unused


def test_a_billed_prefix_helps_only_its_own_client_and_model_and_only_from_the_answers_usage():
    s = roomy()
    first = s.engine.admit(grown(3), client="agent")
    s.engine.settle(first.key, 0.003, cost_source="upstream", model=SMART.model, alias="smart", prompt_tokens=1000)
    other = s.engine.admit(grown(4), client="alice")
    assert other.decision.worst_case == pytest.approx(other.request.prompt_tokens * SMART.prompt_price
                                                      + 100 * SMART.completion_price)
    looked_up = s.engine.admit(grown(5), client="bob")
    s.engine.settle(looked_up.key, 0.003, cost_source="generation", model=SMART.model, prompt_tokens=10)
    again = s.engine.admit(grown(6), client="bob")
    assert again.decision.worst_case == pytest.approx(again.request.prompt_tokens * SMART.prompt_price
                                                      + 100 * SMART.completion_price)
    cheap = s.engine.admit({**grown(4), "model": "cheap"}, client="agent")  # another model: its own bill
    assert cheap.decision.worst_case == pytest.approx(cheap.request.prompt_tokens * CHEAP.prompt_price
                                                      + 100 * CHEAP.completion_price)
