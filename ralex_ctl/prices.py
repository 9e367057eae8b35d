"""Where the CLI finds model prices when it computes a decision itself (the stack is down): the
ledger's price cache if it can be reached, else the dated snapshot shipped with the package. It
never calls the network: `ralexctl route` works on a machine with no connection."""

from __future__ import annotations

import os

from ralex.config import RalexConfig
from ralex.ledger.store import LedgerUnavailable, connect
from ralex.pricing import Price, snapshot_prices, with_overrides


def stored_prices(dsn: str | None) -> dict[str, Price]:
    if not dsn:
        return {}
    try:
        with connect(dsn) as conn:
            rows = conn.execute(
                "SELECT model, prompt_usd_per_token, completion_usd_per_token, context_length FROM model_prices"
            ).fetchall()
    except (LedgerUnavailable, Exception):  # no ledger yet: fall through to the snapshot
        return {}
    return {r[0]: Price(float(r[1]), float(r[2]), r[3], "ledger") for r in rows}


def offline_prices(config: RalexConfig) -> tuple[dict[str, Price], str]:
    """Prices for every alias and where they come from, in words."""
    wanted = {a.model for a in config.aliases.values()}
    stored = stored_prices(os.environ.get("RALEX_DATABASE_URL"))
    if wanted <= with_overrides(config, stored).keys():
        return with_overrides(config, stored), "the ledger's cache of OpenRouter's prices"
    snapshot, as_of = snapshot_prices()
    return with_overrides(config, {**snapshot, **stored}), f"price snapshot of {as_of} shipped with ralexctl (offline)"
