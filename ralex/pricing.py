"""Model prices: OpenRouter's `/api/v1/models` list, config overrides, and the alias table.

A model with no known price stops the proxy at start: a silent $0 would let it overspend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import httpx

from ralex.config import ConfigError, RalexConfig
from ralex.policy import AliasSpec, RoutingConfig

DEFAULT_API_BASE: Final = "https://openrouter.ai/api/v1"


@dataclass(frozen=True, slots=True)
class Price:
    prompt: float
    completion: float
    context_length: int | None = None
    source: str = "openrouter"


def parse_models(payload: Mapping[str, Any]) -> dict[str, Price]:
    """Prices from an OpenRouter `/models` response (prices are strings, USD per token)."""
    prices: dict[str, Price] = {}
    for model in payload.get("data") or []:
        pricing = model.get("pricing") or {}
        try:
            prompt = float(pricing["prompt"])
            completion = float(pricing["completion"])
        except (KeyError, TypeError, ValueError):
            continue
        if prompt < 0 or completion < 0:  # OpenRouter marks variable-price routers with -1
            continue
        prices[model["id"]] = Price(prompt, completion, model.get("context_length"))
    return prices


def fetch_prices(api_base: str, api_key: str | None = None, timeout: float = 10.0) -> dict[str, Price]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(f"{api_base.rstrip('/')}/models", headers=headers, timeout=timeout)
    response.raise_for_status()
    return parse_models(response.json())


async def afetch_prices(api_base: str, api_key: str | None = None, timeout: float = 10.0) -> dict[str, Price]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(timeout=timeout) as client:
        response = await client.get(f"{api_base.rstrip('/')}/models", headers=headers)
        response.raise_for_status()
        return parse_models(response.json())


def snapshot_prices() -> tuple[dict[str, Price], str]:
    """The dated price list shipped with the package, and its date (for offline explanations only)."""
    data = json.loads(resources.files("ralex.data").joinpath("prices-snapshot.json").read_text())
    prices = {model: Price(p["prompt"], p["completion"], p.get("context_length"), "snapshot")
              for model, p in data["models"].items()}
    return prices, str(data["as_of"])


def with_overrides(config: RalexConfig, fetched: Mapping[str, Price]) -> dict[str, Price]:
    merged = dict(fetched)
    for model, override in config.prices.items():
        merged[model] = Price(override.prompt, override.completion, merged.get(model, Price(0, 0)).context_length,
                              source="config")
    return merged


def routing_config(config: RalexConfig, prices: Mapping[str, Price]) -> RoutingConfig:
    """The policy's view of the config: every alias with its prices. Unknown prices are an error."""
    specs: dict[str, AliasSpec] = {}
    missing = []
    for name, alias in config.aliases.items():
        price = prices.get(alias.model)
        if price is None:
            missing.append(f"{name} -> {alias.model}")
            continue
        specs[name] = AliasSpec(name, alias.model, price.prompt, price.completion, alias.max_cost_per_request)
    if missing:
        raise ConfigError(
            f"no price known for {', '.join(missing)}: OpenRouter's model list does not have it and "
            "config/ralex.yaml sets no override. Check the model id, or add it under `prices:` "
            "as {prompt: <USD per token>, completion: <USD per token>}"
        )
    return RoutingConfig(
        aliases=specs,
        fallbacks={k: tuple(v) for k, v in config.fallbacks.items()},
        default_max_tokens=config.routing.default_max_tokens,
        min_output_tokens=config.routing.min_output_tokens,
        smart_threshold=config.routing.smart_threshold,
    )
