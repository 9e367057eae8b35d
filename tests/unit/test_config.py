from __future__ import annotations

from pathlib import Path

import pytest

from ralex.config import ConfigError, load_config
from ralex.pricing import Price, parse_models, routing_config

GOOD = Path(__file__).resolve().parents[2] / "config" / "ralex.yaml"


def test_shipped_policy_file_is_valid():
    cfg = load_config(GOOD)
    from ralex.budget import CAP_PRESETS

    # the shipped caps are the agent preset: one source for both
    assert {name: a.max_cost_per_request for name, a in cfg.aliases.items()} == CAP_PRESETS["agent"]
    assert cfg.budget.daily_limit == 5.0


def test_broken_yaml_names_the_line(tmp_path):
    bad = tmp_path / "ralex.yaml"
    bad.write_text("aliases:\n  cheap:\n    model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"ralex.yaml: line \d+: invalid YAML"):
        load_config(bad)


def test_invalid_value_names_its_line_and_key(tmp_path):
    bad = tmp_path / "ralex.yaml"
    text = GOOD.read_text()
    line = text[:text.index("max_cost_per_request: 0.60")].count("\n") + 1
    bad.write_text(text.replace("max_cost_per_request: 0.60", "max_cost_per_request: -3"))
    with pytest.raises(ConfigError, match=rf"line {line}: aliases.smart.max_cost_per_request"):
        load_config(bad)


def test_unknown_key_is_an_error(tmp_path):
    bad = tmp_path / "ralex.yaml"
    bad.write_text(GOOD.read_text() + "\nbudgett: {}\n")
    with pytest.raises(ConfigError, match="budgett"):
        load_config(bad)


def test_openrouter_prices_are_parsed_from_strings():
    prices = parse_models({"data": [
        {"id": "a/b", "pricing": {"prompt": "0.0000001", "completion": "0.0000004"}, "context_length": 10},
        {"id": "router/auto", "pricing": {"prompt": "-1", "completion": "-1"}},
    ]})
    assert prices == {"a/b": Price(1e-7, 4e-7, 10)}


def test_a_model_without_a_price_is_a_start_up_error():
    with pytest.raises(ConfigError, match=r"no price known for cheap -> google/gemini-2\.5-flash-lite"):
        routing_config(load_config(GOOD), {"anthropic/claude-sonnet-4.5": Price(3e-6, 1.5e-5)})
