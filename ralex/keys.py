"""Client keys: one proxy key per client (a laptop's Claude Code, a colleague's Aider), each with an
optional daily sub-budget inside the global one.

Pure: key generation, hashing, name and budget validation, the key record. The proxy's runtime holds
the live map (hash -> key) and the ledger store the table (``client_keys``, migration 0007).

Keys are 256-bit random strings, so a plain SHA-256 of the key is enough to store them: nothing
short of the key itself maps to its hash (no password stretching needed, unlike human passwords).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final

KEY_PREFIX: Final = "sk-ralex-"
NAME_RULE: Final = re.compile(r"^[a-z0-9-]{1,40}$")
AGENT: Final = "agent"
"""Attribution of requests made with RALEX_AGENT_KEY (the OpenCode container)."""
OPERATOR: Final = "operator"
"""Attribution of requests made with LITELLM_MASTER_KEY."""
RESERVED_NAMES: Final = frozenset({AGENT, OPERATOR})
MAX_KEY_BUDGET: Final = 10_000.0


class ClientKeyError(ValueError):
    """A key name or sub-budget that cannot be used; the message names the fix."""


def new_key() -> str:
    """A fresh client key: ``sk-ralex-`` and 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(plain: str) -> str:
    """What the ledger stores for a key (hex SHA-256); the plain key is shown once and never stored."""
    return hashlib.sha256(plain.encode()).hexdigest()


def check_name(name: object) -> str:
    """A valid key name: lowercase letters, digits and '-', 1-40 characters; not agent or operator."""
    if not isinstance(name, str) or not NAME_RULE.match(name):
        shown = repr(name)[:60]
        raise ClientKeyError(f"key name {shown} is not valid: use 1-40 lowercase letters, digits and '-', "
                        "e.g. laptop-claude")
    if name in RESERVED_NAMES:
        raise ClientKeyError(f"key name {name!r} is reserved (it attributes the {name}'s own requests); "
                        "pick another, e.g. laptop-claude")
    return name


def parse_key_budget(value: object) -> float | None:
    """A daily sub-budget in dollars, or None for "global budget only" (``none``, ``off``, JSON null)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off", "")):
        return None
    if isinstance(value, bool):
        value = "not a number"
    try:
        amount = float(str(value).strip().lstrip("$"))
    except ValueError:
        raise ClientKeyError(f"sub-budget {value!r} is not a number; give dollars like 2 or 0.50, "
                        "or none for the global budget only") from None
    if not math.isfinite(amount) or amount < 0:
        raise ClientKeyError(f"sub-budget {value!r} must be zero or more dollars, e.g. 2 (or none)")
    if amount > MAX_KEY_BUDGET:
        raise ClientKeyError(f"sub-budget ${amount:,.2f} looks like a typo (over $10,000 a day)")
    return round(amount, 6)


@dataclass(frozen=True, slots=True)
class ClientKey:
    """One operator-created key as the ledger stores it (never the plain key)."""

    name: str
    key_hash: str
    daily_budget: float | None
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None
