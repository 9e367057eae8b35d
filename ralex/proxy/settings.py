"""Process settings of the proxy, validated once at start (pydantic-settings)."""

from __future__ import annotations

import re
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ralex.budget import parse_budget, zone
from ralex.config import PLACEHOLDERS, ConfigError
from ralex.pricing import DEFAULT_API_BASE

REPLICA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A replica's name: it names a file (its journal) and a row (proxy_replica.id, the same check)."""


def replica_name(host: str) -> str:
    """A valid replica name made from a host name (anything else becomes '-')."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", host)[:64].lstrip("._-")
    return name or "proxy"


class ProxySettings(BaseSettings):
    """Everything the proxy reads from the environment (see .env.example)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    openrouter_api_key: str = Field(alias="OPENROUTER_API_KEY")
    openrouter_api_base: str = Field(DEFAULT_API_BASE, alias="OPENROUTER_API_BASE")
    litellm_master_key: str = Field(alias="LITELLM_MASTER_KEY")
    database_url: str = Field(alias="RALEX_DATABASE_URL")
    config_path: Path | None = Field(None, alias="RALEX_CONFIG")
    daily_budget: float | None = Field(None, alias="RALEX_DAILY_BUDGET")
    timezone: str | None = Field(None, alias="RALEX_TIMEZONE")
    port: int = Field(4000, alias="RALEX_PROXY_PORT")
    host: str = Field("0.0.0.0", alias="RALEX_PROXY_HOST")
    runtime_dir: Path = Field(Path("/tmp/ralex"), alias="RALEX_RUNTIME_DIR")
    journal_path: Path | None = Field(None, alias="RALEX_JOURNAL")
    """The ledger's write-ahead journal (default: RALEX_RUNTIME_DIR/ledger-journal.jsonl); keep it on a volume."""
    agent_socket: Path | None = Field(None, alias="RALEX_AGENT_SOCKET")
    """A Unix socket serving the agent routes only, for an agent container with no network."""
    metrics_port: int | None = Field(None, gt=0, lt=65536, alias="RALEX_METRICS_PORT")
    """A second TCP port serving /metrics only, with no key, for Prometheus on the stack's internal network
    (never publish it); on RALEX_PROXY_PORT /metrics needs LITELLM_MASTER_KEY."""
    max_body_bytes: int = Field(32 << 20, gt=0, alias="RALEX_MAX_BODY_BYTES")
    upstream_timeout: float = Field(120.0, gt=0, alias="RALEX_UPSTREAM_TIMEOUT")
    db_wait_seconds: float = Field(60.0, ge=0, alias="RALEX_DB_WAIT_SECONDS")
    exporter_db_password: str | None = Field(None, alias="RALEX_EXPORTER_DB_PASSWORD")
    """Password of the read-only `ralex_reader` role the budget exporter logs in with."""
    reservations: Literal["memory", "shared"] = Field("memory", alias="RALEX_RESERVATIONS")
    """Where admission checks and holds: this process's book (one proxy), or Postgres, shared by every
    replica (``shared``: required when more than one proxy serves the same ledger)."""
    replica_id: str = Field(default_factory=lambda: replica_name(socket.gethostname()), alias="RALEX_REPLICA_ID")
    """This replica's name in the shared ledger (default: the host name, a container's id); unique among the
    replicas running, stable across restarts where the platform allows (Swarm: proxy-{{.Task.Slot}})."""
    clock_start: datetime | None = Field(None, alias="RALEX_CLOCK_START")
    """Run the budget clock from this moment (what-if drills and tests of the midnight reset)."""

    @field_validator("openrouter_api_key")
    @classmethod
    def _key(cls, value: str) -> str:
        if value.strip().lower() in PLACEHOLDERS:
            raise ValueError("set OPENROUTER_API_KEY in .env to your key from https://openrouter.ai/keys")
        return value.strip()

    @field_validator("litellm_master_key")
    @classmethod
    def _master(cls, value: str) -> str:
        if value.strip().lower() in PLACEHOLDERS or value.startswith("changethis"):
            raise ValueError("set LITELLM_MASTER_KEY in .env to a random secret starting with sk-")
        if not value.startswith("sk-"):
            raise ValueError("LITELLM_MASTER_KEY must start with 'sk-' (LiteLLM requires it)")
        return value

    @field_validator("daily_budget", mode="before")
    @classmethod
    def _budget(cls, value: object) -> float | None:
        return None if value in (None, "") else parse_budget(value)

    @field_validator("timezone", mode="before")
    @classmethod
    def _tz(cls, value: object) -> str | None:
        if value in (None, ""):
            return None
        zone(str(value))
        return str(value)

    @field_validator("journal_path", "agent_socket", "metrics_port", mode="before")
    @classmethod
    def _path(cls, value: object) -> object:
        return None if value in (None, "") else value

    @field_validator("replica_id", mode="before")
    @classmethod
    def _replica(cls, value: object) -> object:
        if value in (None, ""):
            return replica_name(socket.gethostname())
        if not isinstance(value, str) or not REPLICA_ID.fullmatch(value):
            raise ValueError("RALEX_REPLICA_ID must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit (e.g. proxy-1)")
        return value

    @field_validator("clock_start", mode="before")
    @classmethod
    def _clock(cls, value: object) -> object:
        return None if value in (None, "") else value

    @model_validator(mode="after")
    def _ports(self) -> ProxySettings:
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError("RALEX_METRICS_PORT must differ from RALEX_PROXY_PORT (the metrics port serves "
                             "/metrics without a key)")
        return self

    def clock(self) -> Clock:
        return Clock(self.clock_start)


class Clock:
    """Wall clock, optionally started at another moment and running at normal speed from there."""

    def __init__(self, start: datetime | None = None) -> None:
        self._offset = 0.0
        if start is not None:
            aware = start if start.tzinfo else start.replace(tzinfo=UTC)
            self._offset = aware.timestamp() - time.time()

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self._offset, UTC)


def load_settings() -> ProxySettings:
    try:
        return ProxySettings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            if err["type"] == "missing":
                problems.append(f"{name} is not set; add it to .env (see .env.example)")
            else:
                message = err["msg"].removeprefix("Value error, ")
                problems.append(f"{name}: {message}" if err["loc"] else message)
        raise ConfigError("; ".join(problems)) from None
