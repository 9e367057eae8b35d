"""Reading an OpenAI-style chat request: the task text, housekeeping calls, size, and turn identity.

Pure functions over the request body; no I/O.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ralex.media import ImageError, data_url_image_size, image_tokens_bound
from ralex.params import APIS, RequestError, check_messages, check_model
from ralex.prefix import Prefixes

__all__ = ["ChatRequest", "RequestError", "chat_view", "content_text", "estimate_prompt_tokens", "task_text",
           "without_reminders"]

_HOUSEKEEPING = re.compile(
    r"(you are a title generator|generate (a )?(brief |short |concise )?title|thread title"
    r"|summari[sz](e|ing) (the|this|our) (conversation|session|chat)|conversation summary"
    r"|provide a detailed prompt for continuing|tasked with summari[sz]ing)",
)
"""Matched against lower-cased text (7x faster than re.IGNORECASE on an agent's system prompt)."""
PER_MESSAGE_TOKENS: Final = 8
TOOLS_OVERHEAD_TOKENS: Final = 600
"""What providers add when tools or an output schema are offered (Anthropic's tool-use system prompt is
~350 tokens; a schema reaches a model without native structured output as a forced tool)."""
CACHE_WRITE_FACTORS: Final = {"5m": 1.25, "1h": 2.0}
"""A prompt with ``cache_control`` breakpoints may be billed as a cache write, by its ``ttl``: 1.25x the
input price for 5 minutes (the default), 2x for an hour (Anthropic's prices)."""
LONGEST_CACHE_FACTOR: Final = max(CACHE_WRITE_FACTORS.values())
_TTL: Final = re.compile(r'"ttl"\s*:\s*"([^"\\]{0,16})"')


def cache_factor(control: object) -> float:
    """The cache-write price factor of one ``cache_control`` value; the highest for a ttl not known."""
    if not isinstance(control, Mapping):
        return LONGEST_CACHE_FACTOR
    ttl = control.get("ttl", "5m")
    return CACHE_WRITE_FACTORS.get(ttl, LONGEST_CACHE_FACTOR) if isinstance(ttl, str) else LONGEST_CACHE_FACTOR


def _tools_cache_factor(dumped: str) -> float:
    """The highest cache-write factor among ``cache_control`` values in tools, read from their JSON (1 if none)."""
    if '"cache_control"' not in dumped:
        return 1.0
    return max([CACHE_WRITE_FACTORS["5m"], *(CACHE_WRITE_FACTORS.get(ttl, LONGEST_CACHE_FACTOR)
                                             for ttl in _TTL.findall(dumped))])


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


_REMINDER_OPEN: Final = "<system-reminder>"
_REMINDER_CLOSE: Final = "</system-reminder>"
_FOLDED_LIKE_RE: Final = (("\u0130", "i"), ("\u0131", "i"), ("\u017f", "s"))
"""Letters ``re.IGNORECASE`` equates with the tags' ``i`` and ``s`` (U+0130, U+0131, U+017F); U+0130 is also
the one character whose ``lower()`` is two characters long, so replacing these first keeps every index."""


def _fold(text: str) -> str:
    """``text`` lower-cased the way ``re.IGNORECASE`` compares the reminder tags, same length as ``text``."""
    if not text.isascii():
        for odd, plain in _FOLDED_LIKE_RE:
            if odd in text:
                text = text.replace(odd, plain)
    return text.lower()


def without_reminders(text: str) -> str:
    """``text`` without its ``<system-reminder>...</system-reminder>`` spans (tags in any case).

    The same result as ``re.sub(r"<system-reminder>.*?</system-reminder>", "", text, flags=DOTALL |
    IGNORECASE)`` in one linear pass: the text is cut at every closer (``str.split``), and the first
    opener in a piece starts the reminder that this piece's closer ends (a piece with no opener keeps
    its closer as text). The regex retried every unclosed opener to the end of the text: quadratic.
    """
    folded = _fold(text)
    pieces = folded.split(_REMINDER_CLOSE)
    if len(pieces) == 1:
        return text
    kept: list[str] = []
    position = 0
    for piece in pieces[:-1]:
        start = piece.find(_REMINDER_OPEN)
        closer = position + len(piece)
        kept.append(text[position:position + start] if start >= 0 else text[position:closer + len(_REMINDER_CLOSE)])
        position = closer + len(_REMINDER_CLOSE)
    kept.append(text[position:])
    return "".join(kept)


def task_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The task as the user wrote it: the latest user-authored message, without injected reminders.

    Tool results, assistant steps and the system prompt are not the task. The whole message is kept
    (linear work); the classifier reads a bounded excerpt of it (:func:`ralex.classify.excerpt`).
    """
    for message in reversed(messages):
        if message.get("role") == "user":
            return without_reminders(content_text(message.get("content"))).strip()
    return ""


_HOUSEKEEPING_HINTS: Final = ("title", "summar", "continuing")
"""Every housekeeping phrase holds one of these: a substring test skips the regex for normal prompts."""


def is_housekeeping(messages: Sequence[Mapping[str, Any]]) -> bool:
    """A title or summary call an agent makes on its own (not a task for the user)."""
    for message in messages:
        if message.get("role") in ("system", "developer"):
            lowered = content_text(message.get("content"))[:2000].lower()
            if any(hint in lowered for hint in _HOUSEKEEPING_HINTS) and _HOUSEKEEPING.search(lowered):
                return True
    return False


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]], tools: object = None,
                           response_format: object = None) -> int:
    """Prompt size in tokens, from above: never below what a provider bills for the same prompt.

    Text counts one token per UTF-8 byte: byte-level BPE and SentencePiece with byte fallback
    never make more tokens than bytes, whatever the script (CJK, emoji, random symbols). Images
    count their pixel bound (:func:`ralex.media.image_tokens_bound`); tool calls, tool
    definitions and a structured-output ``response_format`` (its schema is prompt text the upstream
    bills) their JSON bytes; each message a framing allowance. With ``cache_control`` the total is
    scaled to the highest cache-write price among them. Raises :class:`RequestError` for an image it
    cannot size.
    """
    parts = prompt_parts(messages, tools, response_format)
    return math.ceil((sum(parts.per_message) + parts.fixed) * parts.factor)


@dataclass(frozen=True, slots=True)
class PromptParts:
    """:func:`estimate_prompt_tokens` piece by piece: each message's bound, the tools' and schema's
    (``fixed``) and the cache-write factor that scales the total."""

    per_message: tuple[int, ...]
    fixed: int
    factor: float


def prompt_parts(messages: Sequence[Mapping[str, Any]], tools: object = None,
                 response_format: object = None) -> PromptParts:
    per_message: list[int] = []
    factor = 1.0
    for index, message in enumerate(messages):
        total = PER_MESSAGE_TOKENS
        if "cache_control" in message:
            factor = max(factor, cache_factor(message["cache_control"]))
        content = message.get("content")
        if isinstance(content, str):
            total += text_bytes(content)
        elif isinstance(content, Sequence):
            for part in content:
                if not isinstance(part, Mapping):
                    total += len(str(part).encode())
                    continue
                if "cache_control" in part:
                    factor = max(factor, cache_factor(part["cache_control"]))
                if isinstance(part.get("text"), str):
                    total += text_bytes(part["text"])
                elif part.get("type") == "image_url":
                    total += _image_tokens(part.get("image_url"), index)
        for key in ("tool_calls", "name", "tool_call_id", "refusal", "reasoning", "reasoning_content"):
            value = message.get(key)
            if value:
                total += text_bytes(value) if isinstance(value, str) else len(json.dumps(value).encode())
        per_message.append(total)
    fixed = 0
    structured = _structured_output(response_format)
    if tools:
        dumped = json.dumps(tools)
        fixed += len(dumped.encode())
        factor = max(factor, _tools_cache_factor(dumped))
    if structured:
        fixed += len(json.dumps(structured).encode())
    if tools or structured:
        fixed += TOOLS_OVERHEAD_TOKENS
    return PromptParts(tuple(per_message), fixed, factor)


def _structured_output(response_format: object) -> object:
    """The part of a chat ``response_format`` the upstream reads as prompt: all of it but ``{"type": "text"}``."""
    if not response_format or response_format == {"type": "text"}:
        return None
    return response_format


EXTRA_CAPS: Final = (3, 9, 30)
"""The bound's buckets: a character whose NFKC form is longer in UTF-8 counts the cap of its bucket
(U+FDFA, the longest, grows by 30 bytes)."""
_ASTRAL: Final = re.compile("[\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class _Expanders:
    """Character classes of the characters NFKC lengthens in UTF-8: those of the Basic Multilingual Plane
    by bucket (the regex engine tests a BMP class with a bitmap: ~12 ms a MB), and the few beyond it
    (musical symbols; 25 in Python 3.11's Unicode) in a class of their own, read only when a text has
    characters beyond the BMP, at the largest cap among them."""

    any_bmp: re.Pattern[str]
    bmp: tuple[tuple[int, re.Pattern[str]], ...]
    astral: re.Pattern[str] | None
    astral_cap: int


@functools.cache
def _expanders() -> _Expanders:
    """Built once from the interpreter's own Unicode data (~0.2 s: the proxy builds it at start); only a
    character with a decomposition can change under NFKC."""
    bmp: dict[int, list[str]] = {cap: [] for cap in EXTRA_CAPS}
    astral: list[str] = []
    astral_cap = 0
    for code in range(0x80, 0x110000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF or not unicodedata.decomposition(char):
            continue
        extra = len(unicodedata.normalize("NFKC", char).encode()) - len(char.encode())
        if extra <= 0:
            continue
        if code > 0xFFFF:
            astral.append(char)
            astral_cap = max(astral_cap, extra)
        else:
            bmp[next(cap for cap in EXTRA_CAPS if extra <= cap)].append(char)

    def klass(chars: Sequence[str]) -> re.Pattern[str]:
        return re.compile("[" + "".join(re.escape(c) for c in chars) + "]")

    return _Expanders(klass([c for chars in bmp.values() for c in chars]),
                      tuple((cap, klass(chars)) for cap, chars in bmp.items() if chars),
                      klass(astral) if astral else None, astral_cap)


def prepare() -> None:
    """Build the tables text reading needs, so no request pays for them (the proxy calls it at start)."""
    _expanders()


def text_bytes(text: str) -> int:
    """UTF-8 bytes of ``text``, bounding its NFKC form too (some tokenizers normalize first: U+FDFA
    becomes 18 characters). Lone surrogates count as the 3 bytes they would take.

    A text already in NFKC form (the quick check: microseconds a MB) is its own bytes. Otherwise the
    bound is per character: each character NFKC lengthens adds its bucket's cap. Normalizing a text
    character by character bounds the whole from above - a cut can only keep a character and the
    mark after it from composing, and no composition is longer in UTF-8 than its parts - and counting
    costs a few scans in C (~40 ms a MB), never Python work per character."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return size
    tables = _expanders()
    extra = 0
    if tables.any_bmp.search(text) is not None:  # most text has none: one scan
        extra = sum(cap * pattern.subn("", text)[1] for cap, pattern in tables.bmp)
    if tables.astral is not None and _ASTRAL.search(text) is not None:
        extra += tables.astral_cap * tables.astral.subn("", text)[1]
    return size + extra


def _image_tokens(image: object, index: int) -> int:
    url = image.get("url") if isinstance(image, Mapping) else image
    try:
        width, height = data_url_image_size(url if isinstance(url, str) else "")
    except ImageError as exc:
        raise RequestError(f"messages[{index}]: {exc}") from None
    return image_tokens_bound(width, height)


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
        digest.update(piece.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


def session_key(messages: Sequence[Mapping[str, Any]]) -> str:
    """Identity of the conversation: its first user message."""
    for message in messages:
        if message.get("role") == "user":
            return hashlib.blake2b(content_text(message.get("content")).encode("utf-8", "surrogatepass"),
                                  digest_size=8).hexdigest()
    return ""


# --- one bound for every API: other shapes are read as the chat request they translate to -------------

_PLAIN_KEYS: Final = {"text": frozenset({"type", "text", "cache_control"}),
                      "input_text": frozenset({"type", "text", "cache_control"}),
                      "output_text": frozenset({"type", "text"}),
                      "image": frozenset({"type", "source", "cache_control"}),
                      "input_image": frozenset({"type", "image_url", "detail"})}


def _dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _parts(content: object) -> list[dict[str, Any]]:
    """Chat parts holding every byte of an Anthropic or Responses content list (images as data URLs).

    What has no chat equivalent (tool calls, thinking, reasoning, unknown fields) becomes a text part
    of its JSON, so the bound counts it whole; a tool result's own content is read the same way.
    """
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, Sequence):
        return [{"type": "text", "text": _dump(content)}]
    parts: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, Mapping):
            parts.append({"type": "text", "text": _dump(block)})
            continue
        kind = block.get("type")
        cache = {"cache_control": block["cache_control"]} if "cache_control" in block else {}
        if kind in ("text", "input_text", "output_text") and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"], **cache})
        elif kind == "image" and isinstance(block.get("source"), Mapping):
            source = block["source"]
            url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
            parts.append({"type": "image_url", "image_url": {"url": url}, **cache})
        elif kind == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": block.get("image_url")}})
        elif kind == "tool_result":
            parts.extend(_parts(block.get("content")))
            rest = {k: v for k, v in block.items() if k not in ("content", "cache_control")}
            parts.append({"type": "text", "text": _dump(rest), **cache})
            continue
        else:
            parts.append({"type": "text", "text": _dump(block), **cache})
            continue
        extra = {k: v for k, v in block.items() if k not in _PLAIN_KEYS.get(str(kind), ())}
        if extra:
            parts.append({"type": "text", "text": _dump(extra)})
    return parts


def _anthropic_view(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int | None]:
    messages: list[dict[str, Any]] = []
    if body.get("system") is not None:
        messages.append({"role": "system", "content": _parts(body["system"])})
    for message in body.get("messages") or ():
        role, content = message.get("role"), message.get("content")
        blocks = content if isinstance(content, list) else []
        if role == "user" and any(isinstance(b, Mapping) and b.get("type") == "tool_result" for b in blocks):
            # a tool step, not a new user turn: keeps the turn (sticky routing) and the task text
            results = [b for b in blocks if isinstance(b, Mapping) and b.get("type") == "tool_result"]
            steps: list[dict[str, Any]] = [
                {"role": "tool", "tool_call_id": str(b.get("tool_use_id", "")), "content": _parts([b])}
                for b in results]
            others = [b for b in blocks if not (isinstance(b, Mapping) and b.get("type") == "tool_result")]
            steps[-1]["content"].extend(_parts(others))
            messages.extend(steps)
            continue
        messages.append({"role": role if role in ("user", "assistant") else "system", "content": _parts(content)})
    return messages, body.get("max_tokens")


def _responses_view(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int | None]:
    messages: list[dict[str, Any]] = []
    if body.get("instructions") is not None:
        messages.append({"role": "system", "content": _parts(body["instructions"])})
    items = body.get("input")
    for item in [{"role": "user", "content": items}] if isinstance(items, str) else items or ():
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            rest = {k: v for k, v in item.items() if k not in ("type", "role", "content", "id", "status")}
            parts = _parts(item.get("content")) + ([{"type": "text", "text": _dump(rest)}] if rest else [])
            messages.append({"role": role if role in ("user", "assistant") else "system", "content": parts})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id", "")),
                             "content": [{"type": "text", "text": _dump(item)}]})
        else:  # function calls and reasoning: assistant steps, counted whole
            messages.append({"role": "assistant", "content": [{"type": "text", "text": _dump(item)}]})
    return messages, body.get("max_output_tokens")


def _responses_format(body: Mapping[str, Any]) -> object:
    """``text.format`` as the chat ``response_format`` LiteLLM forwards it as: a schema moves under
    ``json_schema`` with LiteLLM's defaults for ``name`` and ``strict`` (every other field is kept, from above)."""
    options = body.get("text")
    form = options.get("format") if isinstance(options, Mapping) else None
    if isinstance(form, Mapping) and form.get("type") == "json_schema":
        schema = {"name": "response_schema", "strict": False, **{k: v for k, v in form.items() if k != "type"}}
        return {"type": "json_schema", "json_schema": schema}
    return form


def chat_view(body: Mapping[str, Any], api: str) -> Mapping[str, Any]:
    """The chat request an Anthropic Messages or OpenAI Responses body translates to, for the policy.

    Every text, tool and image part of the original is in the view (tool calls, reasoning and unknown
    fields as their JSON; a Responses ``text.format`` as ``response_format``), so
    :func:`estimate_prompt_tokens` bounds the translated prompt from above; a cache breakpoint
    anywhere keeps the cache-write price. Pure; ``api`` is one of :data:`APIS`.
    """
    if api == "chat":
        return body
    if api not in APIS:
        raise RequestError(f"unknown API {api!r}; Ralex serves " + ", ".join(APIS))
    messages, max_tokens = _anthropic_view(body) if api == "messages" else _responses_view(body)
    response_format = _responses_format(body) if api == "responses" else None
    if not messages:
        raise RequestError("the request holds no messages")
    tools = body.get("tools")  # its cache breakpoints, and the messages', are read by prompt_parts
    view: dict[str, Any] = {"model": body.get("model"), "messages": messages, "stream": body.get("stream")}
    if tools:
        view["tools"] = tools
    if response_format is not None:
        view["response_format"] = response_format
    if max_tokens is not None:
        view["max_tokens"] = max_tokens
    return view


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
    prefixes: Prefixes | None = None
    """Its prefixes, to hold by what the provider billed for an earlier step (:mod:`ralex.prefix`)."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any], api: str = "chat") -> ChatRequest:
        """Read a request of any served API (:data:`ralex.params.APIS`) through its chat view."""
        body = chat_view(body, api)
        model = check_model(body)
        messages = check_messages(body)
        parts = prompt_parts(messages, body.get("tools"), body.get("response_format"))
        head = {"tools": body.get("tools"), "schema": _structured_output(body.get("response_format"))}
        return cls(
            requested_alias=model,
            task=task_text(messages),
            housekeeping=is_housekeeping(messages),
            prompt_tokens=math.ceil((sum(parts.per_message) + parts.fixed) * parts.factor),
            max_tokens=requested_max_tokens(body),
            turn=turn_key(messages, model),
            session=session_key(messages),
            stream=bool(body.get("stream")),
            prefixes=Prefixes.of(messages, parts.per_message, head, parts.factor),
        )
