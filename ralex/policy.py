"""The routing policy: one pure function from (request, budget, config) to a decision or a refusal.

The proxy hook, `ralexctl route` and the benchmarks all call :func:`route`; nothing else decides
where a request goes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from ralex.budget import BudgetSnapshot, Tier, affordable_output_tokens, usd, worst_case_cost
from ralex.classify import SMART_THRESHOLD, classify
from ralex.params import ALIASES

AUTO: Final = "auto"
ALLOWED_BY_TIER: Final[dict[Tier, tuple[str, ...]]] = {
    "full": ("cheap", "smart", "yolo"),
    "economy": ("cheap", "yolo"),
    "emergency": ("cheap",),
}


@dataclass(frozen=True, slots=True)
class AliasSpec:
    """A routable alias: the upstream model, its prices (USD per token) and its per-request cap."""

    name: str
    model: str
    prompt_price: float
    completion_price: float
    max_cost_per_request: float

    def worst_case(self, prompt_tokens: int, max_tokens: int) -> float:
        return worst_case_cost(prompt_tokens, max_tokens, self.prompt_price, self.completion_price)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    aliases: Mapping[str, AliasSpec]
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {"cheap": ("smart",)})
    default_max_tokens: int = 4096
    min_output_tokens: int = 64
    smart_threshold: float = SMART_THRESHOLD


@dataclass(frozen=True, slots=True)
class RouteInput:
    requested_alias: str
    task: str
    prompt_tokens: int
    """The prompt's bound from its bytes (:func:`ralex.request.estimate_prompt_tokens`)."""
    max_tokens: int | None = None
    housekeeping: bool = False
    sticky_alias: str | None = None
    billed_prompt: Mapping[str, int] = field(default_factory=dict)
    """A tighter bound per upstream model, from what it billed for this conversation's earlier steps
    (:class:`ralex.prefix.BilledPrefixes`)."""

    def prompt_for(self, spec: AliasSpec) -> int:
        """The prompt bound on ``spec``'s model: the billed-prefix bound when known, never above the byte bound."""
        return min(self.prompt_tokens, self.billed_prompt.get(spec.model, self.prompt_tokens))


@dataclass(frozen=True, slots=True)
class Fallback:
    alias: str
    max_tokens: int
    worst_case: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes and why. ``reserve`` is the hold taken against today's budget."""

    alias: str
    model: str
    reason: str
    tier: Tier
    max_tokens: int
    worst_case: float
    reserve: float
    fallbacks: tuple[Fallback, ...] = ()
    intent: str = ""
    kind: str = ""
    """Low-cardinality label of why: task-cheap, task-smart, user, title, turn, downgraded, emergency."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """The request cannot be served within the budget; ``message`` tells the user what to do."""

    message: str
    needed: float
    status: int = 402
    reason: str = "budget"


class UnknownAlias(ValueError):
    pass


def _intent(inp: RouteInput, cfg: RoutingConfig) -> tuple[str, str, str]:
    """(alias wanted, reason, kind of reason)."""
    if inp.requested_alias != AUTO:
        return inp.requested_alias, f"you asked for {inp.requested_alias}", "user"
    if inp.housekeeping:
        return "cheap", "title/summary call", "title"
    if inp.sticky_alias:
        return inp.sticky_alias, f"same turn: keeps {inp.sticky_alias} chosen at the turn's first step", "turn"
    verdict = classify(inp.task, cfg.smart_threshold)
    return verdict.label, verdict.explain(), f"task-{verdict.label}"


def _downgrade(intent: str, tier: Tier, snapshot: BudgetSnapshot) -> tuple[str, str]:
    allowed = ALLOWED_BY_TIER[tier]
    if intent in allowed:
        return intent, ""
    _, th, whose = snapshot.tier_and_floors()
    floor = th.smart_min_remaining if intent == "smart" else th.cheap_min_remaining
    left = f"{usd(max(0.0, snapshot.key.remaining))} left" if whose and snapshot.key else snapshot.left_text()
    note = f"{intent} needs more than {usd(floor)} left{whose} ({left})"
    return "cheap", f"; {note}, using cheap"


def route(inp: RouteInput, snapshot: BudgetSnapshot, cfg: RoutingConfig) -> Decision | Refusal:
    """Decide the alias, output allowance and budget hold for one request.

    Order: intent (user override, housekeeping, turn stickiness, task classification) ->
    tier ceiling (remaining budget) -> fit the per-request cap and the remaining budget, clamping
    ``max_tokens`` or stepping down to cheap -> a fallback only if it fits too.
    """
    if inp.requested_alias not in ALIASES:
        raise UnknownAlias(
            f"unknown model {inp.requested_alias!r}; use one of: {', '.join(ALIASES)} "
            "(auto lets ralex choose)"
        )
    tier = snapshot.tier
    intent, why, kind = _intent(inp, cfg)
    alias, downgrade_note = _downgrade(intent, tier, snapshot)
    why += downgrade_note

    wanted = inp.max_tokens or cfg.default_max_tokens
    if tier == "emergency":
        wanted = min(wanted, snapshot.thresholds.emergency_max_tokens)
        _, th, whose = snapshot.tier_and_floors()
        why += f"; emergency mode (under {usd(th.cheap_min_remaining)} left{whose}): " \
               f"max_tokens {wanted}"
    floor = min(wanted, cfg.min_output_tokens)
    remaining = snapshot.remaining

    candidates = [alias] if alias == "cheap" else [alias, "cheap"]
    needed = 0.0
    capped_by = ""
    for name in candidates:
        spec = cfg.aliases[name]
        allowance = min(spec.max_cost_per_request, remaining)
        prompt = inp.prompt_for(spec)
        fits = affordable_output_tokens(allowance, prompt, spec.prompt_price, spec.completion_price)
        if fits >= floor:
            max_tokens = min(wanted, fits)
            note = ""
            if name != alias:
                note += f"; {alias} does not fit, using {name}"
            if max_tokens < wanted:
                bound = "per-request cap" if spec.max_cost_per_request <= remaining else "remaining budget"
                note += f"; max_tokens {wanted} -> {max_tokens} to fit the {bound}"
            worst = spec.worst_case(prompt, max_tokens)
            fallbacks, reserve, fb_note = _fallbacks(name, tier, inp, max_tokens, worst, remaining, cfg)
            return Decision(
                alias=name, model=spec.model, reason=why + note + fb_note, tier=tier, max_tokens=max_tokens,
                worst_case=worst, reserve=reserve, fallbacks=fallbacks, intent=intent,
                kind="emergency" if tier == "emergency" else "downgraded" if name != intent else kind,
            )
        need = spec.worst_case(prompt, floor)
        needed = need if not needed else min(needed, need)
        if spec.max_cost_per_request < need and spec.max_cost_per_request <= remaining:
            capped_by = name
    spec = cfg.aliases[candidates[-1]]
    if capped_by and needed <= remaining:
        cap = cfg.aliases[capped_by].max_cost_per_request
        return Refusal(
            message=(
                f"This request needs up to {usd(needed)} on {capped_by} "
                f"(~{inp.prompt_for(cfg.aliases[capped_by])} prompt tokens), "
                f"over its per-request cap of {usd(cap)}. Shorten the conversation, or raise the cap (live): "
                f"ralexctl budget cap {capped_by} {suggested_cap(needed)}"
            ),
            needed=needed,
            reason="per-request cap",
        )
    return Refusal(message=snapshot.exhausted_message(needed), needed=needed)


def suggested_cap(needed: float) -> str:
    """A round cap comfortably above ``needed``: room for the output and the conversation to grow."""
    for step in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0):
        if step >= needed * 4:
            return f"{step:g}"
    return f"{math.ceil(needed * 4):g}"


def with_caps(cfg: RoutingConfig, caps: Mapping[str, float]) -> RoutingConfig:
    """The routing config with per-request caps changed live (unknown aliases are ignored)."""
    if not caps:
        return cfg
    aliases = {name: replace(spec, max_cost_per_request=caps[name]) if name in caps else spec
               for name, spec in cfg.aliases.items()}
    return replace(cfg, aliases=aliases)


def _fallbacks(alias: str, tier: Tier, inp: RouteInput, max_tokens: int, worst: float, remaining: float,
               cfg: RoutingConfig) -> tuple[tuple[Fallback, ...], float, str]:
    """Fallback chain the budget can carry; each gets the output allowance that fits its cap.

    Every attempt may be billed (an attempt that timed out was still generated upstream), so the
    hold is the sum of the chain's worst cases, and a fallback joins only if that sum still fits.
    """
    chain: list[Fallback] = []
    reserve = worst
    skipped: list[str] = []
    for name in cfg.fallbacks.get(alias, ()):
        spec = cfg.aliases[name]
        if name not in ALLOWED_BY_TIER[tier]:
            skipped.append(f"{name} (tier)")
            continue
        fits = affordable_output_tokens(min(spec.max_cost_per_request, remaining - reserve), inp.prompt_for(spec),
                                        spec.prompt_price, spec.completion_price)
        fb_tokens = min(max_tokens, fits)
        if fb_tokens < min(max_tokens, cfg.min_output_tokens):
            skipped.append(f"{name} (budget)")
            continue
        fb_worst = spec.worst_case(inp.prompt_for(spec), fb_tokens)
        chain.append(Fallback(name, fb_tokens, fb_worst))
        reserve += fb_worst
    note = f"; no fallback to {', '.join(skipped)}" if skipped else ""
    return tuple(chain), reserve, note
