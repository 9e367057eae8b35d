from __future__ import annotations

import pytest

from ralex.budget import BudgetError, parse_caps
from ralex.policy import Decision, Refusal, RouteInput, UnknownAlias, route, with_caps
from tests.unit.conftest import snap


def decide(cfg, text="add a docstring to Cache", alias="auto", remaining=4.0, **kw) -> Decision:
    out = route(RouteInput(alias, text, kw.pop("prompt_tokens", 200), **kw), snap(remaining), cfg)
    assert isinstance(out, Decision), out
    return out


def test_auto_sends_a_typo_fix_to_cheap_and_a_design_review_to_smart(cfg):
    assert decide(cfg, "fix the typo in the README").alias == "cheap"
    smart = decide(cfg, "review the architecture of the billing service for race conditions")
    assert smart.alias == "smart"
    assert "task looks smart" in smart.reason


def test_reason_names_the_evidence(cfg):
    assert "typo" in decide(cfg, "fix the typo in load_user").reason


def test_title_calls_go_cheap_even_for_smart_looking_text(cfg):
    d = decide(cfg, "review the architecture", housekeeping=True)
    assert d.alias == "cheap"
    assert d.reason.startswith("title/summary call")


def test_sticky_turn_keeps_the_first_steps_alias(cfg):
    d = decide(cfg, "ok", sticky_alias="smart")
    assert d.alias == "smart"
    assert "same turn" in d.reason


def test_user_override_is_honoured_when_the_budget_allows(cfg):
    assert decide(cfg, "fix typo", alias="smart").alias == "smart"


@pytest.mark.parametrize(("remaining", "asked", "expected", "tier"), [
    (4.0, "smart", "smart", "full"),
    (2.01, "smart", "smart", "full"),
    (2.0, "smart", "cheap", "economy"),
    (1.2, "smart", "cheap", "economy"),
    (1.2, "yolo", "yolo", "economy"),
    (0.5, "smart", "cheap", "emergency"),
    (0.3, "yolo", "cheap", "emergency"),
])
def test_tiers_cap_what_an_override_gets(cfg, remaining, asked, expected, tier):
    d = decide(cfg, "design a plugin system", alias=asked, remaining=remaining)
    assert (d.alias, d.tier) == (expected, tier)


def test_downgrade_says_why(cfg):
    d = decide(cfg, "design a plugin system", remaining=1.2)
    assert d.alias == "cheap"
    assert "smart needs more than $2.00 left ($1.20 left)" in d.reason


def test_emergency_mode_limits_output_to_200_tokens(cfg):
    d = decide(cfg, "fix typo", remaining=0.3, max_tokens=4000)
    assert (d.alias, d.max_tokens, d.tier) == ("cheap", 200, "emergency")


def test_per_request_cap_clamps_max_tokens(cfg):
    d = decide(cfg, "design it", alias="smart", prompt_tokens=1000, max_tokens=8000)
    # (0.01 - 1000 * 3e-6) / 1.5e-5 = 466 output tokens fit under smart's $0.01 cap
    assert d.max_tokens == 466
    assert d.worst_case <= 0.01


def test_worst_case_never_exceeds_the_remaining_budget(cfg):
    d = decide(cfg, "fix typo", remaining=0.0002, prompt_tokens=500, max_tokens=4000)
    assert d.worst_case <= 0.0002 + 1e-12
    assert d.reserve <= 0.0002 + 1e-12


def test_refusal_when_even_cheap_cannot_fit(cfg):
    out = route(RouteInput("auto", "fix typo", 5000), snap(0.0001), cfg)
    assert isinstance(out, Refusal)
    assert out.status == 402
    assert out.message.startswith("Daily budget $5.00 exhausted")
    assert "resets at 00:00 UTC (in 12h00m)" in out.message
    assert "Raise it with: ralexctl budget set 10" in out.message


def test_prompt_over_the_per_request_cap_is_refused_with_the_cap_named(cfg):
    out = route(RouteInput("cheap", "fix typo", 20_000), snap(4.0), cfg)
    assert isinstance(out, Refusal)
    assert "per-request cap" in out.message
    suggested = out.message.rsplit("ralexctl budget cap cheap ", 1)[1]
    assert float(suggested) >= 2 * out.needed  # room for the answer and a growing conversation

    raised = with_caps(cfg, {"cheap": float(suggested)})
    assert isinstance(route(RouteInput("cheap", "fix typo", 20_000), snap(4.0), raised), Decision)
    assert cfg.aliases["cheap"].max_cost_per_request < float(suggested)  # the original is untouched


@pytest.mark.parametrize(("caps", "message"), [
    ({"auto": 1}, "no per-request cap for 'auto'"),
    ({"smart": "lots"}, "positive dollar amount"),
    ({"smart": 0}, "positive dollar amount"),
    ({"cheap": -1}, "positive dollar amount"),
])
def test_live_caps_are_validated_with_the_fix_named(caps, message):
    with pytest.raises(BudgetError, match=message):
        parse_caps(caps)
    assert parse_caps({"smart": "0.50", "cheap": "$0.05"}) == {"smart": 0.5, "cheap": 0.05}


def test_fallback_to_smart_only_when_the_budget_carries_it(cfg):
    full = decide(cfg, "fix typo", max_tokens=300)
    assert [f.alias for f in full.fallbacks] == ["smart"]
    # every attempt may be billed (a timed-out one too): the hold is the chain's sum
    assert full.reserve == pytest.approx(full.worst_case + 200 * 3e-6 + 300 * 1.5e-5)
    economy = decide(cfg, "fix typo", remaining=1.0, max_tokens=300)
    assert economy.fallbacks == ()
    assert "no fallback to smart (tier)" in economy.reason


def test_unknown_alias_is_rejected_with_the_valid_ones(cfg):
    with pytest.raises(UnknownAlias, match="use one of: auto, cheap, smart, yolo"):
        route(RouteInput("gpt-4", "x", 10), snap(4.0), cfg)
