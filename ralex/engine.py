"""The budget engine: admits, settles and records requests around the pure policy.

It owns the in-memory state of one proxy process (today's spend, holds of requests in flight,
the per-turn routing memory) and hands ledger rows to the writer. The LiteLLM hook adapts
LiteLLM's callbacks to :meth:`admit`, :meth:`settle` and :meth:`fail`.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Final, NoReturn

from ralex.budget import BudgetSnapshot, ReservationBook, budget_day, new_crossings, usd
from ralex.classify import classify
from ralex.keys import OPERATOR
from ralex.ledger.rows import BudgetSettings, LedgerRow
from ralex.policy import Decision, Refusal, RouteInput, RoutingConfig, UnknownAlias, route, with_caps
from ralex.prefix import BilledPrefixes
from ralex.request import ChatRequest, RequestError

Clock = Callable[[], datetime]
Sink = Callable[[LedgerRow], None]
STICKY_MAX: Final = 10_000
EVENTS_KEPT: Final = 200
EVENTS_SHOWN: Final = 5


class Rejected(Exception):
    """A request Ralex will not forward; ``status``, ``message`` and ``headers`` (plain text, encoded by
    the header writer) go to the client."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(slots=True)
class Attempt:
    """One call to the upstream on one alias; ``ended``: open (no failure reported: it answered, or
    ended unseen), refused (an error status: nothing generated) or billable (timed out, cut)."""

    alias: str
    ended: str = "open"


@dataclass(slots=True)
class InFlight:
    key: str
    request: ChatRequest
    decision: Decision
    day: date
    started: float
    remaining_after: float
    client: str = OPERATOR
    """The name its spend is attributed to: a client key, ``agent`` or ``operator``."""
    attempts: list[Attempt] = field(default_factory=list)
    """Every upstream attempt made for it so far (primary, then fallbacks), in order."""
    generation_id: str | None = None
    settling: bool = False
    """Its cost is being looked up upstream; LiteLLM's late callbacks must not settle it."""
    headers: dict[str, str] = field(default_factory=dict)
    """The ``x-ralex-*`` headers explaining the decision, as plain text (the reason quotes the prompt):
    the gate writes them, each through :func:`ralex.sinks.header_value`."""

    def worst_case_of(self, alias: str | None) -> float:
        """The worst case of one attempt on ``alias`` (the routed alias or one of its fallbacks)."""
        d = self.decision
        return next((fb.worst_case for fb in d.fallbacks if fb.alias == alias and alias != d.alias), d.worst_case)

    def unanswered_cost(self, *, answered: bool) -> float:
        """What the attempts that brought no answer may have been billed: each at its own worst case,
        unless the upstream refused it (an error status: nothing generated). ``answered``: the latest
        attempt, if no failure of it was reported, answered and is charged its real cost elsewhere."""
        answering = answered and bool(self.attempts) and self.attempts[-1].ended == "open"
        attempts = self.attempts[:-1] if answering else self.attempts
        return sum(self.worst_case_of(a.alias) for a in attempts if a.ended != "refused")


@dataclass(frozen=True, slots=True)
class Admission:
    """A request routed and priced that holds nothing yet: :meth:`BudgetEngine.commit` puts it in flight
    once its hold (``decision.reserve``) fits the budget, :meth:`BudgetEngine.refuse` refuses it."""

    request: ChatRequest
    snapshot: BudgetSnapshot
    sticky: str | None
    decision: Decision
    key: str
    """The request id its hold, ledger row and headers carry."""
    client: str
    now: datetime
    mono: float


@dataclass(frozen=True, slots=True)
class Event:
    """Something the person at the agent should hear about (the agent's toast reads these)."""

    id: int
    kind: str
    """threshold, step_down or refused"""
    at: datetime
    text: str


@dataclass(frozen=True, slots=True)
class Crossing:
    day: date
    threshold: int
    at: datetime
    spent: float
    limit: float


class TurnMemory:
    """Which alias each user turn of each key started on, so its tool steps stay on it (LRU + TTL).

    A turn is remembered per key (a client key's name, ``agent``, ``operator``): two keys sending the
    same conversation are two turns, and neither inherits the other's decision.
    """

    def __init__(self, ttl_seconds: float, max_entries: int = STICKY_MAX) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def get(self, client: str, turn: str, now: float) -> str | None:
        entry = self._entries.get((client, turn))
        if entry is None or now - entry[1] > self._ttl:
            return None
        self._entries.move_to_end((client, turn))
        return entry[0]

    def put(self, client: str, turn: str, alias: str, now: float) -> None:
        self._entries[(client, turn)] = (alias, now)
        self._entries.move_to_end((client, turn))
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class BudgetEngine:
    def __init__(self, routing: RoutingConfig, settings: BudgetSettings, spent_today: float, *, clock: Clock,
                 sink: Sink, hold_sink: Sink | None = None, sticky_ttl: float = 7200.0,
                 crossed_today: Iterable[int] = (), on_crossing: Callable[[Crossing], None] | None = None,
                 spent_by_key: Mapping[str, float] | None = None,
                 key_budgets: Mapping[str, float | None] | None = None, day: date | None = None) -> None:
        """``sink`` takes every finished row; ``hold_sink`` the row each admitted request would
        leave if the process died before it settled (the write-ahead journal); ``on_crossing``
        each alert threshold the day's spend reaches, once per budget day (``crossed_today``:
        those already recorded); ``spent_by_key`` today's spend per key name so far;
        ``key_budgets`` each client key's daily sub-budget (None: the global budget only);
        ``day`` the budget day those figures were read for (default: today by ``clock``): if it
        has ended by the first request, that request starts the next day afresh."""
        self.settings = settings
        self.hold_sink = hold_sink
        self.on_crossing = on_crossing
        self.crossed: set[int] = set(crossed_today)
        self.events: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self._event_ids = itertools.count(1)
        self.base_routing = routing
        self.routing = with_caps(routing, settings.caps)
        self.clock = clock
        self.sink = sink
        self.book = ReservationBook(day or budget_day(clock(), settings.timezone), spent_today, spent_by_key)
        self.key_budgets: dict[str, float | None] = dict(key_budgets or {})
        self.turns = TurnMemory(sticky_ttl)
        self.prefixes = BilledPrefixes()
        """What the upstream billed for recent requests: later steps of the same conversation are held
        by it (:mod:`ralex.prefix`)."""
        self.in_flight: dict[str, InFlight] = {}

    # --- state ------------------------------------------------------------------------------
    def snapshot(self, now: datetime | None = None, client: str | None = None) -> BudgetSnapshot:
        """Today's budget; for ``client`` (a key with a sub-budget) scoped to the tighter of both."""
        now = now or self.clock()
        self._roll(now)
        key = self.book.allowance(client, self.key_budgets.get(client)) if client is not None else None
        return BudgetSnapshot(self.settings.daily_limit, self.book.spent, self.book.reserved,
                              self.settings.timezone, now, self.settings.thresholds, key)

    def set_key_budgets(self, budgets: Mapping[str, float | None]) -> None:
        """The live sub-budgets of the client keys (applied from the next admission on)."""
        self.key_budgets = dict(budgets)

    def today(self, now: datetime | None = None) -> date:
        """The current budget day (rolling over to it first if midnight has passed)."""
        self._roll(now or self.clock())
        return self.book.day

    def key_usage(self, client: str) -> tuple[float, float]:
        """(spent today, held by requests in flight) of one key name."""
        self._roll(self.clock())
        return self.book.spent_by_key.get(client, 0.0), self.book.reserved_by(client)

    def _roll(self, now: datetime) -> None:
        today = budget_day(now, self.settings.timezone)
        if today != self.book.day:
            self.book.roll_over(today, 0.0)
            self.crossed.clear()

    def apply_settings(self, settings: BudgetSettings, spent_for_today: float | None = None,
                       spent_by_key: Mapping[str, float] | None = None, *, day: date | None = None) -> None:
        """Take new live settings; with a new timezone the budget day may change too. ``spent_for_today``
        and ``spent_by_key`` are the spend of ``day`` (default: today by the clock), the day the caller
        read them for, so a midnight passing meanwhile cannot put one day's spend on the next."""
        self.settings = settings
        self.routing = with_caps(self.base_routing, settings.caps)
        today = day or budget_day(self.clock(), settings.timezone)
        if today != self.book.day:
            self.book.roll_over(today, spent_for_today or 0.0, spent_by_key)
            self.crossed.clear()
        self._check_crossings()

    def observe(self, day: date, spent: float, held: float, by_key: Mapping[str, tuple[float, float]]) -> None:
        """What the shared ledger holds for ``day`` (every replica's spend and holds, in all and per key:
        name -> (spent, held)): routing and alerts follow it (:meth:`ReservationBook.observe`)."""
        self._roll(self.clock())
        self.book.observe(day, spent, held, by_key)
        if day == self.book.day:
            self._check_crossings()

    def set_routing(self, routing: RoutingConfig) -> None:
        """New prices or config; the live caps still apply on top."""
        self.base_routing = routing
        self.routing = with_caps(routing, self.settings.caps)

    # --- admission ---------------------------------------------------------------------------
    def _decide(self, body: Mapping[str, Any], now: datetime, mono: float, client: str | None = None,
                api: str = "chat", read: ChatRequest | None = None
                ) -> tuple[ChatRequest, BudgetSnapshot, str | None, Decision | Refusal]:
        try:
            request = read if read is not None else ChatRequest.from_body(body, api)
        except RequestError as exc:
            raise Rejected(400, str(exc)) from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a shape no check foresaw
            raise Rejected(400, f"the request body does not have the shape of a chat completion ({exc})") from None
        sticky = None
        if request.requested_alias == "auto" and not request.housekeeping:
            sticky = self.turns.get(client or OPERATOR, request.turn, mono)
        snapshot = self.snapshot(now, client)
        try:
            outcome = route(
                RouteInput(request.requested_alias, request.task, request.prompt_tokens, request.max_tokens,
                           request.housekeeping, sticky, self._billed_prompt(request, client or OPERATOR)),
                snapshot, self.routing,
            )
        except UnknownAlias as exc:
            raise Rejected(400, str(exc)) from None
        return request, snapshot, sticky, outcome

    def _billed_prompt(self, request: ChatRequest, client: str) -> dict[str, int]:
        """Per upstream model, the prompt bound from the longest prefix of this request it already billed."""
        if request.prefixes is None:
            return {}
        models = {spec.model for spec in self.routing.aliases.values()}  # cheap and yolo may share one
        return {model: bound for model in models if (bound := self.prefixes.bound(client, model, request.prefixes))}

    def preview(self, body: Mapping[str, Any], remaining: float | None = None) -> Decision | Refusal:
        """What :meth:`admit` would decide now, without reserving or remembering anything.

        ``remaining`` asks "what if only this much were left today" instead of the real figure.
        """
        return self.explain(body, remaining)[1]

    def explain(self, body: Mapping[str, Any], remaining: float | None = None
                ) -> tuple[dict[str, Any], Decision | Refusal]:
        """The preview with everything a person needs to understand it (JSON-ready), and the outcome.

        The one implementation behind ``POST /ralex/route`` and ``ralexctl route``; raises
        :class:`Rejected` (400) for a body admission would refuse as malformed.
        """
        saved = self.book.spent
        now = self.clock()
        self._roll(now)
        if remaining is not None:  # what-if: pretend the day has exactly this much left (no holds)
            self.book.spent = self.settings.daily_limit - remaining - self.book.reserved
        try:
            request, snapshot, sticky, outcome = self._decide(body, now, time.monotonic())
        finally:
            self.book.spent = saved
        verdict = classify(request.task, self.routing.smart_threshold)
        payload: dict[str, Any] = {
            "requested": request.requested_alias,
            "remaining": round(max(0.0, snapshot.remaining), 6),
            "tier": snapshot.tier,
            "prompt_tokens_bound": request.prompt_tokens,
            "classification": {"label": verdict.label, "score": verdict.score, "signals": list(verdict.matched)},
            "caps": {name: spec.max_cost_per_request for name, spec in self.routing.aliases.items()},
            "resets_at": snapshot.reset_at.isoformat(),
        }
        if sticky:
            payload["sticky_alias"] = sticky
        if isinstance(outcome, Decision):
            payload.update({
                "decision": "route", "alias": outcome.alias, "model": outcome.model, "reason": outcome.reason,
                "max_tokens": outcome.max_tokens, "worst_case_usd": outcome.worst_case,
                "reserve_usd": outcome.reserve, "fallbacks": [asdict(f) for f in outcome.fallbacks],
            })
        else:
            payload.update({"decision": "refuse", "status": outcome.status, "message": outcome.message,
                            "needed_usd": outcome.needed})
        return payload, outcome

    def plan(self, body: Mapping[str, Any], client: str = OPERATOR, api: str = "chat",
             read: ChatRequest | None = None) -> Admission:
        """Route and price a request, holding nothing yet; raises :class:`Rejected` (400 bad request,
        402 when no route fits today's budget or a cap). ``read``: ``ChatRequest.from_body(body, api)``
        made already (off the event loop, by the gate)."""
        now = self.clock()
        mono = time.monotonic()
        request, snapshot, sticky, outcome = self._decide(body, now, mono, client, api, read)
        if isinstance(outcome, Refusal):
            self._refuse(request, outcome, snapshot, now, client)
        return Admission(request, snapshot, sticky, outcome, str(uuid.uuid4()), client, now, mono)

    def admit(self, body: Mapping[str, Any], client: str = OPERATOR, api: str = "chat",
              read: ChatRequest | None = None) -> InFlight:
        """Route and reserve in this process's book, or raise :class:`Rejected` (400 bad request, 402 over budget).

        ``client`` names who asks (a client key, ``agent``, ``operator``): a key with a daily
        sub-budget is routed by the tighter of its remaining and the day's, and its hold must fit
        both, checked and taken in one synchronous step (no overshoot of either under concurrency).
        ``api`` names the body's shape (:data:`ralex.params.APIS`); every shape is bounded alike.
        """
        plan = self.plan(body, client, api, read)
        if not self.book.fits(plan.decision.reserve, self.settings.daily_limit, client=client,
                              client_limit=self.client_limit(client)):
            self.refuse(plan)
        return self.commit(plan)

    def client_limit(self, client: str) -> float | None:
        """The daily sub-budget of ``client`` (None: the day's budget only)."""
        return self.key_budgets.get(client)

    def refuse(self, plan: Admission) -> NoReturn:
        """The budget cannot hold ``plan``: refuse it with 402, naming the budget that ran out as it
        stands now (this book, or the shared ledger's figures it last observed)."""
        snapshot = self.snapshot(plan.now, plan.client)
        refusal = Refusal(snapshot.exhausted_message(plan.decision.reserve), plan.decision.reserve)
        self._refuse(plan.request, refusal, snapshot, plan.now, plan.client)

    def _refuse(self, request: ChatRequest, refusal: Refusal, snapshot: BudgetSnapshot, now: datetime,
                client: str) -> NoReturn:
        by_key = refusal.reason == "budget" and snapshot.binding == "key"
        self._record_refusal(request, refusal, snapshot, now, client)
        if not by_key:  # a key's own sub-budget is its client's business, not the agent's toasts
            self._event("refused", refusal.message, now)
        if refusal.reason == "budget" and not by_key:
            self._check_crossings(now, exhausted=True, needed=refusal.needed)
        raise Rejected(refusal.status, refusal.message, {
            "x-ralex-route": "refused",
            "x-ralex-reason": refusal.reason,
            "x-ralex-key": client,
            "x-ralex-budget-remaining": f"{max(0.0, snapshot.remaining):.6f}",
            "x-ralex-budget-resets-at": snapshot.reset_at.isoformat(),
        })

    def commit(self, plan: Admission) -> InFlight:
        """Hold ``plan``'s worst case (it fits: checked by :meth:`admit`, or by the shared ledger) and put
        the request in flight."""
        request, outcome, client = plan.request, plan.decision, plan.client
        self.book.take(plan.key, outcome.reserve, client)
        if request.requested_alias == "auto" and not request.housekeeping and plan.sticky is None:
            self.turns.put(client, request.turn, outcome.alias, plan.mono)
        flight = self.flight(plan)
        self.in_flight[plan.key] = flight
        if outcome.alias != outcome.intent and outcome.intent and plan.snapshot.binding == "day":
            self._event("step_down", f"{outcome.intent} -> {outcome.alias}: {usd(max(0.0, plan.snapshot.remaining))} "
                                     f"left ({outcome.reason.split('; ', 1)[-1]})", plan.now)
        if self.hold_sink is not None:
            self.hold_sink(self.hold_row(flight))
        return flight

    def flight(self, plan: Admission) -> InFlight:
        """The request ``plan`` in flight, with the headers explaining its decision (nothing is held or kept)."""
        request, snapshot, outcome, client, key = plan.request, plan.snapshot, plan.decision, plan.client, plan.key
        remaining_after = self.settings.daily_limit - self.book.spent - self.book.reserved
        flight = InFlight(key, request, outcome, self.book.day, plan.mono, remaining_after, client)
        flight.headers = {
            "x-ralex-key": client,
            "x-ralex-route": outcome.alias,
            "x-ralex-model": outcome.model,
            "x-ralex-reason": outcome.reason,
            "x-ralex-tier": outcome.tier,
            "x-ralex-budget-remaining": f"{max(0.0, snapshot.remaining):.6f}",
            "x-ralex-budget-resets-at": snapshot.reset_at.isoformat(),
            "x-ralex-max-tokens": str(outcome.max_tokens),
            "x-ralex-request-id": key,
        }
        return flight

    def hold_row(self, flight: InFlight) -> LedgerRow:
        """What a request is charged if it never reports back: its whole hold."""
        return self._row(flight, status="interrupted", day=flight.day, cost=flight.decision.reserve,
                         cost_source="hold", error="the proxy stopped before the request settled")

    def open_holds(self) -> list[LedgerRow]:
        return [self.hold_row(flight) for flight in self.in_flight.values()]

    # --- completion --------------------------------------------------------------------------
    def settle(self, key: str, cost: float, *, cost_source: str, model: str | None = None,
               alias: str | None = None, prompt_tokens: int | None = None,
               completion_tokens: int | None = None, status: str = "ok",
               generation_id: str | None = None) -> LedgerRow | None:
        """Replace the request's hold by its real cost (plus failed attempts that may be billed) and record it."""
        flight = self.in_flight.pop(key, None)
        if flight is None:
            return None
        cost += flight.unanswered_cost(answered=True)
        day = self.book.settle(key, cost, flight.client)
        if cost_source == "upstream" and model and prompt_tokens and flight.request.prefixes is not None:
            # the answer's own usage: the model's native count of exactly this prompt
            self.prefixes.remember(flight.client, model, flight.request.prefixes, prompt_tokens)
        self._check_crossings()
        row = self._row(flight, status=status, day=day, cost=cost, cost_source=cost_source, model=model,
                        alias=alias, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        generation_id=generation_id or flight.generation_id)
        self.sink(row)
        return row

    def fail(self, key: str, error: str) -> LedgerRow | None:
        """The request failed upstream (every fallback included). Attempts the upstream refused
        cost nothing; attempts it may have generated (timeouts, cut streams) are charged at their
        worst case, since their real cost is unknown."""
        flight = self.in_flight.pop(key, None)
        if flight is None:
            return None
        cost = flight.unanswered_cost(answered=False)
        day = self.book.settle(key, cost, flight.client)
        self._check_crossings()
        row = self._row(flight, status="error", day=day, cost=cost, cost_source="hold" if cost else None,
                        error=error[:500])
        self.sink(row)
        return row

    def start_attempt(self, key: str, alias: str | None) -> None:
        """An upstream call on ``alias`` is about to be made for the request: it counts as billed at its
        worst case until it answers or the upstream refuses it."""
        flight = self.in_flight.get(key)
        if flight is not None:
            flight.attempts.append(Attempt(alias or flight.decision.alias))

    def note_failed_attempt(self, key: str, alias: str | None = None, *, billable: bool = False) -> None:
        """The latest attempt failed; ``billable`` when the upstream may have generated (and billed) it.
        A failure with no attempt on record (its start went unseen) is an attempt of its own."""
        flight = self.in_flight.get(key)
        if flight is None:
            return
        alias = alias or flight.decision.alias
        latest = flight.attempts[-1] if flight.attempts else None
        if latest is None or latest.ended != "open" or latest.alias != alias:
            latest = Attempt(alias)
            flight.attempts.append(latest)
        latest.ended = "billable" if billable else "refused"

    def settle_at_hold(self, key: str, status: str, error: str | None = None) -> LedgerRow | None:
        """Charge a request its whole hold: its real cost is unknown, and the hold is its upper bound."""
        flight = self.in_flight.pop(key, None)
        if flight is None:
            return None
        cost = flight.decision.reserve
        day = self.book.settle(key, cost, flight.client)
        self._check_crossings()
        row = self._row(flight, status=status, day=day, cost=cost, cost_source="hold", error=error)
        self.sink(row)
        return row

    def expire(self, older_than: float) -> list[LedgerRow]:
        """Holds whose request never reported back are charged at their worst case (never under)."""
        now = time.monotonic()
        stale = [f for f in self.in_flight.values() if now - f.started > older_than]
        return [row for f in stale if (row := self.settle_at_hold(f.key, "abandoned"))]

    # --- alerts and events ----------------------------------------------------------------------
    def _check_crossings(self, now: datetime | None = None, *, exhausted: bool = False,
                         needed: float | None = None) -> None:
        """Each threshold today's spend reaches is announced once per budget day. Spend never passes
        the limit (requests that do not fit are refused), so 100 % is reached when the budget is
        spent to the cent or a request is refused because the day cannot pay for it (``exhausted``,
        at ``now``: the moment of that refusal, ``needed``: what it needed). The thresholds reached
        only that way are announced once, for what they mean: the next request does not fit."""
        now = now or self.clock()
        self._roll(now)  # only the current day's spend crosses: a late settle of yesterday's request does not
        limit = self.settings.daily_limit
        spent = self.book.spent
        real = spent / limit if limit > 0 else 1.0
        crossed = new_crossings(1.0 if exhausted else real, self.settings.alert_thresholds, self.crossed)
        reset = self.snapshot(now).reset_line()
        unreached = [t for t in crossed if real * 100 < t - 1e-9]
        for threshold in crossed:
            self.crossed.add(threshold)
            if threshold not in unreached:
                self._event("threshold", f"{threshold} % of today's budget spent ({usd(spent)} of {usd(limit)}); "
                                         f"{reset}", now)
        if unreached:
            left = max(0.0, limit - spent - self.book.reserved)
            asks = f"it needs up to {usd(needed)}, " if needed is not None else ""
            self._event("threshold", f"Today's budget cannot pay the next request ({asks}{usd(left)} left; "
                                     f"{usd(spent)} of {usd(limit)} spent, {real:.0%}); {reset}", now)
        for threshold in crossed:
            if self.on_crossing is not None:
                self.on_crossing(Crossing(self.book.day, threshold, now, spent, limit))

    def _event(self, kind: str, text: str, now: datetime) -> None:
        self.events.append(Event(next(self._event_ids), kind, now, text[:300]))

    def events_since(self, last_id: int | None) -> list[Event]:
        if last_id is None:
            return list(self.events)[-EVENTS_SHOWN:]
        return [e for e in self.events if e.id > last_id]

    # --- rows --------------------------------------------------------------------------------
    def _row(self, flight: InFlight, *, status: str, day: date, cost: float, cost_source: str | None,
             model: str | None = None, alias: str | None = None, prompt_tokens: int | None = None,
             completion_tokens: int | None = None, error: str | None = None,
             generation_id: str | None = None) -> LedgerRow:
        d = flight.decision
        routed = alias or d.alias
        max_tokens = next((fb.max_tokens for fb in d.fallbacks if fb.alias == routed != d.alias), d.max_tokens)
        return LedgerRow(
            ts=self.clock(), budget_day=day, alias_requested=flight.request.requested_alias, status=status,
            request_id=uuid.UUID(flight.key), alias_routed=routed, upstream_model=model or d.model,
            reason=d.reason, tier=d.tier, fallback=routed != d.alias, stream=flight.request.stream,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, max_tokens=max_tokens,
            estimated_cost_usd=d.worst_case, reserved_usd=d.reserve, cost_usd=cost, cost_source=cost_source,
            latency_ms=int((time.monotonic() - flight.started) * 1000), turn_key=flight.request.turn,
            session_key=flight.request.session, error=error, route_kind=d.kind,
            generation_id=generation_id or flight.generation_id, key_name=flight.client,
        )

    def _record_refusal(self, request: ChatRequest, refusal: Refusal, snapshot: BudgetSnapshot,
                        now: datetime, client: str) -> None:
        self.sink(LedgerRow(
            ts=now, budget_day=self.book.day, alias_requested=request.requested_alias, status="refused",
            reason=f"{refusal.reason}: {refusal.message}", tier=snapshot.tier, stream=request.stream,
            prompt_tokens=request.prompt_tokens, estimated_cost_usd=refusal.needed, turn_key=request.turn,
            session_key=request.session, route_kind="refused" if refusal.reason == "budget" else "cap-refused",
            key_name=client,
        ))
