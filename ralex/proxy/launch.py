"""`ralex-proxy`: check everything, prepare the ledger and prices, then exec the LiteLLM proxy.

Start-up order (each failure is one readable line and exit code 2):
1. settings from the environment, the policy file;
2. Postgres reachable (waits up to RALEX_DB_WAIT_SECONDS), migrations applied, budget seeded;
3. prices for every alias (OpenRouter's list, cached in Postgres, overrides from the policy file);
4. the LiteLLM config generated from the policy file, then LiteLLM's app runs behind Ralex's gate
   (:mod:`ralex.proxy.server`) in this process.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import httpx
import psycopg
import yaml

from ralex.config import ConfigError, RalexConfig, load_config, read_secret_files
from ralex.ledger.store import (
    UPSERT_PRICE,
    LedgerUnavailable,
    connect,
    ensure_reader_role,
    migrate,
    seed_settings,
)
from ralex.pricing import Price, fetch_prices, routing_config, with_overrides
from ralex.proxy.settings import ProxySettings, load_settings

log = logging.getLogger("ralex.launch")
PROXY_SECRETS: Final = ("OPENROUTER_API_KEY", "LITELLM_MASTER_KEY", "RALEX_AGENT_KEY", "RALEX_DATABASE_URL",
                        "RALEX_EXPORTER_DB_PASSWORD")
"""Settings that may come from secret files (Swarm secrets) instead of the environment."""


def wait_for_db(settings: ProxySettings) -> psycopg.Connection[Any]:
    deadline = time.monotonic() + settings.db_wait_seconds
    while True:
        try:
            return connect(settings.database_url, autocommit=True)
        except LedgerUnavailable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)


def resolve_prices(settings: ProxySettings, config: RalexConfig, conn: psycopg.Connection[Any]) -> dict[str, Price]:
    """Live prices from OpenRouter (stored for the next start); the stored ones if it is unreachable."""
    try:
        fetched = fetch_prices(settings.openrouter_api_base, settings.openrouter_api_key)
        wanted = {a.model for a in config.aliases.values()}
        with conn.transaction():
            for model in wanted & fetched.keys():
                p = fetched[model]
                conn.execute(UPSERT_PRICE, (model, p.prompt, p.completion, p.context_length, "openrouter"))
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("ralex: OpenRouter price list unavailable (%s); using stored prices", exc)
        rows = conn.execute(
            "SELECT model, prompt_usd_per_token, completion_usd_per_token, context_length FROM model_prices"
        ).fetchall()
        fetched = {r[0]: Price(float(r[1]), float(r[2]), r[3], "stored") for r in rows}
    return with_overrides(config, fetched)


def litellm_config(config: RalexConfig, prices: dict[str, Price], settings: ProxySettings) -> dict[str, Any]:
    """The LiteLLM proxy config, generated so the policy file stays the one source of truth."""
    model_list = []
    for name in ("auto", "cheap", "smart", "yolo"):
        alias = config.aliases["cheap" if name == "auto" else name]
        price = prices[alias.model]
        model_list.append({
            "model_name": name,
            "litellm_params": {
                "model": f"openrouter/{alias.model}",
                "api_key": "os.environ/OPENROUTER_API_KEY",
                "api_base": settings.openrouter_api_base,
                "timeout": settings.upstream_timeout,
                "stream_timeout": settings.upstream_timeout,
                # /v1/responses through LiteLLM's chat bridge: every API reaches OpenRouter as a chat
                # completion, the one upstream shape whose cap, usage.cost and streams Ralex settles
                "use_chat_completions_api": True,
            },
            "model_info": {
                "input_cost_per_token": price.prompt,
                "output_cost_per_token": price.completion,
                **({"max_input_tokens": price.context_length} if price.context_length else {}),
            },
        })
    return {
        "model_list": model_list,
        "litellm_settings": {
            "callbacks": ["ralex.proxy.hooks.handler", "prometheus"],
            "drop_params": True,
            "require_auth_for_metrics_endpoint": False,
            "num_retries": 0,
            "request_timeout": settings.upstream_timeout,
        },
        "router_settings": {"num_retries": 0, "allowed_fails": 1000},
        "general_settings": {
            "master_key": "os.environ/LITELLM_MASTER_KEY",
            "custom_auth": "ralex.proxy.auth.user_api_key_auth",
        },
    }


def prepare_ledger(settings: ProxySettings, config: RalexConfig, conn: psycopg.Connection[Any]) -> None:
    """Migrations, the first budget settings and the exporter's role: safe from several replicas at
    once (one migrator at a time, seeds that keep what is there)."""
    applied = migrate(conn)
    if applied:
        log.info("ralex: applied migrations %s", ", ".join(applied))
    defaults = config.budget.model_copy(update={
        k: v for k, v in (("daily_limit", settings.daily_budget), ("timezone", settings.timezone)) if v is not None
    })
    seed_settings(conn, defaults)
    if settings.exporter_db_password:
        ensure_reader_role(conn, "ralex_reader", settings.exporter_db_password)


def prepare() -> tuple[ProxySettings, Path]:
    settings = load_settings()
    config = load_config(settings.config_path)
    with wait_for_db(settings) as conn:
        prepare_ledger(settings, config, conn)
        prices = resolve_prices(settings, config, conn)
    routing_config(config, prices)  # every alias has a price, or a clear error
    runtime = settings.runtime_dir
    runtime.mkdir(parents=True, exist_ok=True)
    (runtime / "prices.json").write_text(json.dumps({m: asdict(p) for m, p in prices.items()}))
    config_path = runtime / "litellm.yaml"
    config_path.write_text(yaml.safe_dump(litellm_config(config, prices, settings), sort_keys=False))
    return settings, config_path


def migrate_only() -> None:
    """`ralex-proxy migrate`: apply the ledger's migrations and seeds, then exit (0, or 2 naming the cause)."""
    try:
        settings = load_settings()
        config = load_config(settings.config_path)
        with wait_for_db(settings) as conn:
            prepare_ledger(settings, config, conn)
    except (ConfigError, LedgerUnavailable) as exc:
        print(f"ralex-proxy migrate: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print("ralex-proxy migrate: the ledger is up to date")


def main() -> None:
    # One line per record, once: Ralex's own at INFO with time and name; everything else (LiteLLM, httpx,
    # uvicorn's access log aside) from WARNING on, through the same root handler.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("ralex").setLevel(logging.INFO)
    try:
        read_secret_files(PROXY_SECRETS)
    except ConfigError as exc:
        print(f"ralex-proxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if sys.argv[1:] == ["migrate"]:  # a one-shot job before the replicas start (Swarm, Kubernetes)
        migrate_only()
        return
    if sys.argv[1:]:
        print(f"ralex-proxy: unknown arguments {' '.join(sys.argv[1:])!r}; run `ralex-proxy` to serve, "
              "or `ralex-proxy migrate` to prepare the ledger and exit", file=sys.stderr)
        raise SystemExit(2)
    try:
        settings, config_path = prepare()
    except (ConfigError, LedgerUnavailable) as exc:
        print(f"ralex-proxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ["RALEX_RUNTIME_DIR"] = str(settings.runtime_dir)
    from ralex.proxy.server import serve

    try:
        serve(settings, config_path)
    except OSError as exc:  # the port or the socket path is taken
        print(f"ralex-proxy: cannot listen ({exc}); is another proxy running?", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
