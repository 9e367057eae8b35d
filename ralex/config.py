"""Configuration: the policy file (`config/ralex.yaml`) and process settings from the environment.

Errors name the file, the line and the fix; they never fall back silently.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ralex.budget import Thresholds, parse_budget, zone

_REPO_CONFIG: Final = Path(__file__).resolve().parent.parent / "config" / "ralex.yaml"
_PACKAGED_CONFIG: Final = Path(__file__).resolve().parent / "data" / "ralex.yaml"
DEFAULT_CONFIG_PATH: Final = _REPO_CONFIG if _REPO_CONFIG.exists() else _PACKAGED_CONFIG
"""The shipped policy: config/ralex.yaml in a checkout; the copy packaged with an installed ralexctl."""
ROUTED_ALIASES: Final = ("cheap", "smart", "yolo")
PLACEHOLDERS: Final = frozenset({"", "changethis", "change-me", "changeme", "sk-or-...", "sk-..."})


class ConfigError(RuntimeError):
    """Invalid configuration; the message says where and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AliasConfig(_Strict):
    model: str = Field(min_length=3, description="OpenRouter model id, e.g. google/gemini-2.5-flash-lite")
    max_cost_per_request: float = Field(gt=0)


class PriceOverride(_Strict):
    prompt: float = Field(ge=0, description="USD per prompt token")
    completion: float = Field(ge=0, description="USD per completion token")


class BudgetDefaults(_Strict):
    """First-start values; the live ones are in Postgres and change with `ralexctl budget`."""

    daily_limit: float = 5.0
    timezone: str = "UTC"
    smart_min_remaining: float = 2.0
    cheap_min_remaining: float = 0.5
    emergency_max_tokens: int = Field(200, gt=0)

    @field_validator("daily_limit", mode="before")
    @classmethod
    def _limit(cls, value: object) -> float:
        return parse_budget(value)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        zone(value)
        return value

    def thresholds(self) -> Thresholds:
        return Thresholds(self.smart_min_remaining, self.cheap_min_remaining, self.emergency_max_tokens)


class RoutingOptions(_Strict):
    smart_threshold: float = 0.0
    default_max_tokens: int = Field(4096, gt=0)
    min_output_tokens: int = Field(64, gt=0)
    sticky_turn_ttl_seconds: int = Field(7200, gt=0)


class RalexConfig(_Strict):
    aliases: dict[str, AliasConfig]
    fallbacks: dict[str, list[str]] = Field(default_factory=lambda: {"cheap": ["smart"]})
    budget: BudgetDefaults = BudgetDefaults()
    routing: RoutingOptions = RoutingOptions()
    prices: dict[str, PriceOverride] = Field(default_factory=dict)
    price_refresh_seconds: int = Field(6 * 3600, ge=60)

    @field_validator("aliases")
    @classmethod
    def _all_aliases(cls, value: dict[str, AliasConfig]) -> dict[str, AliasConfig]:
        missing = [name for name in ROUTED_ALIASES if name not in value]
        extra = [name for name in value if name not in ROUTED_ALIASES]
        if missing:
            raise ValueError(f"aliases {', '.join(missing)} are missing; define cheap, smart and yolo")
        if extra:
            raise ValueError(f"unknown aliases {', '.join(extra)}; only cheap, smart and yolo are routed")
        return value

    @field_validator("fallbacks")
    @classmethod
    def _fallbacks(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for source, chain in value.items():
            for name in [source, *chain]:
                if name not in ROUTED_ALIASES:
                    raise ValueError(f"fallback alias {name!r} is not one of cheap, smart, yolo")
        return value


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = {}
    lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        mapping[key] = loader.construct_object(value_node, deep=True)
        lines[key] = key_node.start_mark.line + 1
    mapping["__lines__"] = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _strip_lines(v) for k, v in data.items() if k != "__lines__"}
    if isinstance(data, list):
        return [_strip_lines(v) for v in data]
    return data


def _line_of(data: Any, loc: tuple[int | str, ...]) -> int | None:
    line = None
    node = data
    for part in loc:
        if isinstance(node, dict):
            line = node.get("__lines__", {}).get(part, line)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
    return line


def load_config(path: Path | str | None = None) -> RalexConfig:
    """Read and validate the policy file; errors name the line and the problem."""
    path = Path(path or os.environ.get("RALEX_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the policy file ({exc.strerror}); set RALEX_CONFIG to its path"
        ) from None
    try:
        raw = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: {where}: invalid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: line 1: expected a mapping with aliases, budget and routing")
    try:
        return RalexConfig.model_validate(_strip_lines(raw))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(raw, loc)
            where = f"line {line}" if line else "top level"
            dotted = ".".join(str(p) for p in loc)
            problems.append(f"{path}: {where}: {dotted}: {err['msg']}")
        raise ConfigError("; ".join(problems)) from None


def require_secret(env: Mapping[str, str], name: str, hint: str) -> str:
    value = env.get(name, "").strip()
    if value.lower() in PLACEHOLDERS or value.startswith("changethis"):
        raise ConfigError(f"{name} is not set (or still a placeholder); {hint}")
    return value


SECRETS_DIR: Final = Path("/run/secrets")
"""Where Docker Swarm and Compose mount secrets (RALEX_SECRETS_DIR elsewhere, e.g. Kubernetes' secret volumes)."""


def read_secret_files(names: tuple[str, ...], environ: dict[str, str] | None = None) -> list[str]:
    """Fill each of ``names`` that the environment lacks from a file of that name in the secrets folder
    (``RALEX_SECRETS_DIR``, default /run/secrets): a Swarm secret ``OPENROUTER_API_KEY`` is the variable
    OPENROUTER_API_KEY. A variable that is set wins. Returns the names read from files; raises ConfigError
    for a secret file that cannot be read or holds no value."""
    env = os.environ if environ is None else environ
    folder = Path(env.get("RALEX_SECRETS_DIR") or SECRETS_DIR)
    found = []
    for name in names:
        path = folder / name
        if env.get(name) or not path.is_file():
            continue
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the secret {name} from {path} ({exc})") from None
        if not value or any(c in value for c in "\r\n\0"):
            raise ConfigError(f"the secret file {path} must hold one line: the value of {name}")
        env[name] = value
        found.append(name)
    return found
