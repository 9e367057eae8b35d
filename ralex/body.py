"""A model request's body, read once: parsed, checked, made forwardable, and read as admission reads it.

Pure, and light to import (no LiteLLM): the gate (:mod:`ralex.proxy.server`) runs :func:`read_body` on
the event loop for a small body and in a worker process for a large one (:class:`BodyReader`), so a
32 MB body's parse and reading never hold the proxy's interpreter while other requests wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Final

from ralex.params import RequestError, forwardable, forwardable_messages, forwardable_responses, parse_body
from ralex.request import ChatRequest

log = logging.getLogger("ralex.proxy")

WHAT: Final = {"chat": "a chat completion object", "messages": "an Anthropic Messages request",
               "responses": "an OpenAI Responses request"}
SHAPE_DOCS: Final = {"chat": "https://platform.openai.com/docs/api-reference/chat/create",
                     "messages": "https://docs.anthropic.com/en/api/messages",
                     "responses": "https://platform.openai.com/docs/api-reference/responses/create"}
LONE_SURROGATE: Final = ("the request holds a lone UTF-16 surrogate escape (such as \\ud800), which is not valid "
                         "Unicode; send whole characters")
OFF_LOOP_BYTES: Final = 128 << 10
"""A body larger than this is read in a worker process; a smaller one on the event loop (a few ms at most)."""


@dataclass(frozen=True, slots=True)
class Checked:
    clean: dict[str, Any]
    """What may be forwarded (LiteLLM takes it as the parsed body)."""
    dropped: list[str]
    """Fields dropped by name (the ``x-ralex-dropped`` header)."""
    payload: bytes | None
    """The bytes to forward, or None: the body as it came (nothing dropped, no escaped surrogates)."""
    read: ChatRequest | None
    """``ChatRequest.from_body(clean, api)``, when asked for and readable (admission reads it otherwise)."""


def read_body(raw: bytes, api: str, with_request: bool) -> Checked | str:
    """``raw`` checked for ``api``, or the 400 message naming the problem."""
    dropped: list[str] = []
    try:
        body = parse_body(raw, what=WHAT[api])
        if api == "messages":
            clean, dropped = forwardable_messages(body)
        elif api == "responses":
            clean, dropped = forwardable_responses(body)
        else:
            clean = forwardable(body)
    except RequestError as exc:
        return str(exc)
    except Exception:  # a shape the checks did not foresee: still the client's input, never a 500
        log.exception("ralex: unexpected request shape")
        return f"the request body does not have the shape of {WHAT[api]}; see {SHAPE_DOCS[api]}"
    payload = None
    if dropped or len(clean) != len(body) or b"\\ud" in raw or b"\\uD" in raw:
        try:
            payload = json.dumps(clean, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            return LONE_SURROGATE
    read = None
    if with_request:
        try:
            read = ChatRequest.from_body(clean, api)
        except Exception:  # admission reads it again and answers the problem
            read = None
    return Checked(clean, dropped, payload, read)


class BodyReader:
    """Reads bodies for the gate: a small one at once, a large one in a worker process started on first
    use (spawned: it imports this module, not LiteLLM: 28 MiB, and 12 MiB for multiprocessing's resource
    tracker). If the worker dies (out of memory), the
    body is read in a thread instead and the next large body gets a new worker."""

    def __init__(self, workers: int = 1) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def read(self, raw: bytes, api: str) -> Checked | str:
        if len(raw) <= OFF_LOOP_BYTES:
            return read_body(raw, api, False)
        loop = asyncio.get_running_loop()
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self._workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            return await loop.run_in_executor(self._pool, read_body, raw, api, True)
        except BrokenProcessPool:
            log.warning("ralex: the body reader's worker stopped; reading this body in a thread")
            self._pool = None
            return await asyncio.to_thread(read_body, raw, api, True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
