"""Headers the hooks owe a response, handed to the gate that sends it.

LiteLLM's /v1/messages endpoint rebuilds the headers of its error answers (and of some others), so a
402's ``x-ralex-*`` headers raised from the pre-call hook never reach the client. The gate opens an
exchange per model request (a context variable LiteLLM's tasks inherit); the hooks note the headers
there, as plain text, and the gate writes them on the answer, each encoded for HTTP
(:func:`ralex.sinks.header_value`): no ``x-ralex-*`` header reaches the client another way.

The exchange also carries the gate's reading of a large body (:class:`ralex.request.ChatRequest`,
made in a worker thread with the parse), so admission does not read it again on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Final

from ralex.request import ChatRequest

_owed: Final[ContextVar[dict[str, str] | None]] = ContextVar("ralex_owed_headers", default=None)
_read: Final[ContextVar[ChatRequest | None]] = ContextVar("ralex_read_request", default=None)


def open_exchange(read: ChatRequest | None = None) -> dict[str, str]:
    """Start collecting the headers owed to this request's response (called by the gate); ``read``: the
    body as admission reads it, when the gate read it already (a large body, off the event loop)."""
    headers: dict[str, str] = {}
    _owed.set(headers)
    _read.set(read)
    return headers


def read_request() -> ChatRequest | None:
    """The gate's reading of this request's body, if it made one."""
    return _read.get()


def owe(headers: Mapping[str, str]) -> None:
    """Note headers the response must carry (a no-op outside a gated request)."""
    owed = _owed.get()
    if owed is not None:
        owed.update(headers)
