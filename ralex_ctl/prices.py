"""Where the CLI finds model prices: the ledger's price cache, then OpenRouter, then config overrides."""

from __future__ import annotations

import contextlib
import os

import httpx

from ralex.config import RalexConfig
from ralex.ledger.store import LedgerUnavailable, connect
from ralex.pricing import DEFAULT_API_BASE, Price, fetch_prices, with_overrides


def stored_prices(dsn: str | None) -> dict[str, Price]:
    if not dsn:
        return {}
    try:
        with connect(dsn) as conn:
            rows = conn.execute(
                "SELECT model, prompt_usd_per_token, completion_usd_per_token, context_length FROM model_prices"
            ).fetchall()
    except (LedgerUnavailable, Exception):  # no ledger yet: fall through to the next source
        return {}
    return {r[0]: Price(float(r[1]), float(r[2]), r[3], "ledger") for r in rows}


def load_prices(config: RalexConfig) -> dict[str, Price]:
    wanted = {a.model for a in config.aliases.values()}
    prices = with_overrides(config, stored_prices(os.environ.get("RALEX_DATABASE_URL")))
    if not wanted <= prices.keys():
        with contextlib.suppress(httpx.HTTPError, ValueError):
            prices = {**fetch_prices(os.environ.get("OPENROUTER_API_BASE", DEFAULT_API_BASE),
                                     os.environ.get("OPENROUTER_API_KEY"), timeout=5), **prices}
    return with_overrides(config, prices)
