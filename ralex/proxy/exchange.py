"""Headers the hooks owe a response, handed to the gate that sends it.

LiteLLM's /v1/messages endpoint rebuilds the headers of its error answers (and of some others), so a
402's ``x-ralex-*`` headers raised from the pre-call hook never reach the client. The gate opens an
exchange per model request (a context variable LiteLLM's tasks inherit); the hooks note the headers
there, as plain text, and the gate writes them on the answer, each encoded for HTTP
(:func:`ralex.sinks.header_value`): no ``x-ralex-*`` header reaches the client another way.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Final

_owed: Final[ContextVar[dict[str, str] | None]] = ContextVar("ralex_owed_headers", default=None)


def open_exchange() -> dict[str, str]:
    """Start collecting the headers owed to this request's response (called by the gate)."""
    headers: dict[str, str] = {}
    _owed.set(headers)
    return headers


def owe(headers: Mapping[str, str]) -> None:
    """Note headers the response must carry (a no-op outside a gated request)."""
    owed = _owed.get()
    if owed is not None:
        owed.update(headers)
