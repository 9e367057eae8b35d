"""Reading an OpenAI-style chat request: the task text, housekeeping calls, size, and turn identity.

Pure functions over the request body; no I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL | re.IGNORECASE)
_HOUSEKEEPING = re.compile(
    r"(you are a title generator|generate (a )?(brief |short |concise )?title|thread title"
    r"|summari[sz](e|ing) (the|this|our) (conversation|session|chat)|conversation summary"
    r"|provide a detailed prompt for continuing|tasked with summari[sz]ing)",
    re.IGNORECASE,
)
PER_MESSAGE_TOKENS: Final = 4
BYTES_PER_TOKEN_FLOOR: Final = 3
"""Prompt tokens are estimated as UTF-8 bytes / 3, rounded up: above what BPE tokenizers produce
for English and code (about 4 bytes a token), so a reservation is an upper bound."""


class RequestError(ValueError):
    """The request body cannot be served; the message says what is wrong and how to fix it."""


def content_text(content: object) -> str:
    """Text of a message's ``content``: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)


def validate_messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise RequestError("the request has no 'messages'; send a chat completion with a messages list")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise RequestError(f"messages[{index}] must be an object with a 'role'")
    return messages


def task_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The task as the user wrote it: the latest user-authored message, without injected reminders.

    Tool results, assistant steps and the system prompt are not the task.
    """
    for message in reversed(messages):
        if message.get("role") == "user":
            return _REMINDER.sub("", content_text(message.get("content"))).strip()
    return ""


def is_housekeeping(messages: Sequence[Mapping[str, Any]]) -> bool:
    """A title or summary call an agent makes on its own (not a task for the user)."""
    for message in messages:
        if message.get("role") in ("system", "developer") and _HOUSEKEEPING.search(
            content_text(message.get("content"))[:2000]
        ):
            return True
    return False


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]], tools: object = None) -> int:
    """Conservative prompt size in tokens (see :data:`BYTES_PER_TOKEN_FLOOR`)."""
    total_bytes = 0
    for message in messages:
        total_bytes += len(content_text(message.get("content")).encode())
        if message.get("tool_calls"):
            total_bytes += len(json.dumps(message["tool_calls"]).encode())
    if tools:
        total_bytes += len(json.dumps(tools).encode())
    return math.ceil(total_bytes / BYTES_PER_TOKEN_FLOOR) + PER_MESSAGE_TOKENS * len(messages)


def requested_max_tokens(body: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise RequestError(f"'{key}' must be a positive whole number, got {value!r}")
        return value
    return None


def turn_key(messages: Sequence[Mapping[str, Any]], requested_alias: str) -> str:
    """Identity of the current user turn: the same across the tool steps of one agent turn.

    Built from the conversation's first user message (which names the session), how many user
    messages there are, and the latest one. A tool step only appends assistant and tool
    messages, so the key stays; a new user message changes it.
    """
    users = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    first = users[0] if users else ""
    latest = users[-1] if users else ""
    digest = hashlib.blake2b(digest_size=12)
    for piece in (requested_alias, first, str(len(users)), latest):
        digest.update(piece.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def session_key(messages: Sequence[Mapping[str, Any]]) -> str:
    """Identity of the conversation: its first user message."""
    for message in messages:
        if message.get("role") == "user":
            return hashlib.blake2b(content_text(message.get("content")).encode(), digest_size=8).hexdigest()
    return ""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What the policy needs to know about one chat completion request."""

    requested_alias: str
    task: str
    housekeeping: bool
    prompt_tokens: int
    max_tokens: int | None
    turn: str
    session: str
    stream: bool

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ChatRequest:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestError("the request has no 'model'; use one of ralex's aliases: auto, cheap, smart, yolo")
        messages = validate_messages(body)
        return cls(
            requested_alias=model,
            task=task_text(messages),
            housekeeping=is_housekeeping(messages),
            prompt_tokens=estimate_prompt_tokens(messages, body.get("tools")),
            max_tokens=requested_max_tokens(body),
            turn=turn_key(messages, model),
            session=session_key(messages),
            stream=bool(body.get("stream")),
        )
