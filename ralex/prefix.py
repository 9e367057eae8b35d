"""Holds that follow the bill: an agent's step is its previous step plus a little.

The provider reports each answered request's exact prompt tokens. A later request of the same client
on the same model that starts with the very same bytes (tools, structured-output schema, then the
same messages in the same order) costs at most those tokens for that prefix, plus the byte bound of
what is new (:func:`ralex.request.prompt_parts`): one token per UTF-8 byte, each message's framing
allowance, the pixel bound of an image. So the hold is

    billed tokens of the longest billed prefix + bound of the rest + :data:`SLACK`

and the byte bound of the whole prompt when no prefix is known (a first step, another client, another
model, an edited history). It is never below the bill: the prefix part is what the provider itself
counted, the rest is bounded from above.

What is compared: each message's role, content (text, images, tool calls and results) and names,
byte for byte, without ``cache_control`` markers (agents move them from step to step; they change the
price, which the hold scales for, not the tokens). Digests are chained (SHA-256), so a request of M
messages costs M digests of its own bytes: linear, whatever it holds.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

SLACK: Final = 16
"""Tokens added to a prefix-based bound: the chat template's tokens at the seam where the new
messages join the billed ones."""
SHARED_HEADS: Final = (1, 2)
"""Besides a billed request itself, its first one and two messages (with its tools) are remembered, at
the whole request's billed tokens: a prefix never costs more than the request it starts, and a new
session's first step or title call repeats the system prompt (and often the first message) of an
earlier one."""
MAX_REMEMBERED: Final = 4096
"""Billed prefixes kept (least recently used dropped): an agent's session needs its last few."""


def _without_cache_control(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(v) for v in value]
    return value


def message_bytes(message: Mapping[str, Any]) -> bytes:
    """A message as compared between steps: canonical JSON without ``cache_control``."""
    return json.dumps(_without_cache_control(message), sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"), default=str).encode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True)
class Prefixes:
    """One request's prefixes: ``digests[k]`` names its first ``k`` messages (with its tools and
    schema), ``rest[k]`` bounds the tokens of the messages after them (before the cache factor)."""

    digests: tuple[bytes, ...]
    rest: tuple[int, ...]
    factor: float

    @classmethod
    def of(cls, messages: Sequence[Mapping[str, Any]], per_message: Sequence[int], head: object,
           factor: float) -> Prefixes:
        """``per_message``: each message's token bound; ``head``: what precedes the messages in every
        prefix (tools, structured-output schema)."""
        digest = hashlib.sha256(json.dumps(_without_cache_control(head), sort_keys=True, default=str).encode()).digest()
        digests = [digest]
        for message in messages:
            digest = hashlib.sha256(digest + hashlib.sha256(message_bytes(message)).digest()).digest()
            digests.append(digest)
        rest = [0] * (len(per_message) + 1)
        for k in range(len(per_message) - 1, -1, -1):
            rest[k] = rest[k + 1] + per_message[k]
        return cls(tuple(digests), tuple(rest), factor)

    @property
    def whole(self) -> bytes:
        return self.digests[-1]


class BilledPrefixes:
    """What the provider billed for recent requests, by client, model and prefix digest (thread-safe:
    the gate reads it on the loop, settles arrive from LiteLLM's callbacks)."""

    def __init__(self, max_entries: int = MAX_REMEMBERED) -> None:
        self.max_entries = max_entries
        self._billed: OrderedDict[tuple[str, str, bytes], int] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, client: str, model: str, prefixes: Prefixes, prompt_tokens: int) -> None:
        """The upstream billed ``prompt_tokens`` for this request: exact for the whole of it, an upper
        bound for its first messages (:data:`SHARED_HEADS`)."""
        if prompt_tokens <= 0:
            return
        whole = len(prefixes.digests) - 1
        with self._lock:
            for k in (*(h for h in SHARED_HEADS if h < whole), whole):
                key = (client, model, prefixes.digests[k])
                known = self._billed.get(key)
                self._billed[key] = prompt_tokens if k == whole or known is None else min(known, prompt_tokens)
                self._billed.move_to_end(key)
            while len(self._billed) > self.max_entries:
                self._billed.popitem(last=False)

    def bound(self, client: str, model: str, prefixes: Prefixes) -> int | None:
        """The prompt bound from the longest billed prefix of this request, or None when none is known."""
        with self._lock:
            for k in range(len(prefixes.digests) - 1, 0, -1):
                billed = self._billed.get((client, model, prefixes.digests[k]))
                if billed is not None:
                    self._billed.move_to_end((client, model, prefixes.digests[k]))
                    return math.ceil((billed + prefixes.rest[k] + SLACK) * prefixes.factor)
        return None

    def __len__(self) -> int:
        return len(self._billed)
