"""The prompt estimate is an upper bound: never below what real tokenizers count for the same text.

Checked against the tokenizers LiteLLM ships for offline use: OpenAI's ``cl100k_base`` and
``o200k_base`` (tiktoken) and Anthropic's ``anthropic_tokenizer.json`` (Hugging Face tokenizers).
"""

from __future__ import annotations

import base64
import importlib.util
import os
import struct
import unicodedata
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from ralex.media import image_tokens_bound
from ralex.request import estimate_prompt_tokens

tiktoken = pytest.importorskip("tiktoken")
tokenizers = pytest.importorskip("tokenizers")


def _tokenizer_dir() -> Path | None:
    spec = importlib.util.find_spec("litellm")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"


TOKENIZERS = _tokenizer_dir()
# tiktoken's cache names a file by the SHA-1 of the URL it would download it from.
TIKTOKEN_FILES = {"cl100k_base": "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
                  "o200k_base": "fb374d419588a4632f3f557e76b4b70aebbca790"}
ANTHROPIC_FILE = "anthropic_tokenizer.json"
if TOKENIZERS is None or not all((TOKENIZERS / name).is_file()
                                 for name in [*TIKTOKEN_FILES.values(), ANTHROPIC_FILE]):
    pytest.skip(f"LiteLLM's bundled tokenizer files are not installed (looked in {TOKENIZERS})",
                allow_module_level=True)


@cache
def openai_counters() -> dict[str, Callable[[str], int]]:
    """tiktoken encodings read from LiteLLM's bundled cache, never from the network."""
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(TOKENIZERS)
    try:
        encodings = {name: tiktoken.get_encoding(name) for name in TIKTOKEN_FILES}
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved
    # A provider bills "<|endoftext|>" typed by a user as plain text, never as one special token.
    return {name: (lambda text, enc=enc: len(enc.encode(text, disallowed_special=())))
            for name, enc in encodings.items()}


@cache
def anthropic_counter() -> Callable[[str], int]:
    tokenizer = tokenizers.Tokenizer.from_file(str(TOKENIZERS / ANTHROPIC_FILE))
    return lambda text: len(tokenizer.encode(text).ids)


def estimates(text: str) -> list[int]:
    """The estimate of one user message holding ``text``, as a string and as a text part."""
    return [estimate_prompt_tokens([{"role": "user", "content": text}]),
            estimate_prompt_tokens([{"role": "user", "content": [{"type": "text", "text": text}]}])]


# --- text that tokenizers find expensive ------------------------------------------------------

CODE = ["def handle(request):\n", "    return self._cache[key]\n", "for (let i = 0; i < n; i++) {", "}\n",
        "#include <stdio.h>\n", "SELECT * FROM users WHERE id = $1;", "x !== undefined && y >>>= 2", "\t\t",
        "    ", "0x7fffffff", '{"key": [1, 2.5e-3, null]}', "fn main() -> Result<(), Box<dyn Error>> {",
        "=> ", "::", "/* TODO */", "<|endoftext|>", "<EOT>", "\r\n", "λx.x", "`rm -rf /`"]
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True)
ascii_text = st.text(st.characters(codec="ascii"))
code = st.lists(st.sampled_from(CODE) | identifiers, max_size=20).map("".join)
cjk = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
              | st.characters(min_codepoint=0x3040, max_codepoint=0x30FF)
              | st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3)
              | st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF))
emoji_char = st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF)
emoji = st.lists(
    st.tuples(emoji_char, st.sampled_from(["", "\u200d", "\ufe0f", "\u20e3"]),
              st.sampled_from(["", *map(chr, range(0x1F3FB, 0x1F400))]),
              st.sampled_from(["", *map(chr, range(0x1F1E6, 0x1F200))])).map("".join),
    max_size=20).map("".join)
combining = st.lists(st.tuples(st.characters(codec="ascii", categories=["L"]),
                               st.text(st.characters(categories=["Mn", "Mc", "Me"]), min_size=1, max_size=12)
                               ).map("".join), max_size=20).map("".join)
symbols = st.text(st.characters(categories=["Sm", "Sc", "Sk", "So", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po",
                                            "Zs", "Cc", "Cf", "Co"]))
anything = st.text()
# Compatibility characters that Unicode normalization (NFKC) expands to several characters.
COMPATIBILITY = "\ufdfa\ufdfb\ufdf2\u2a0c\u334a\u3300\u0f77\u0f79\U0001d1bf\ufb03\u2474\u00bd\u2026\u3250\u2177"
compatibility = st.text(st.sampled_from(COMPATIBILITY))
# Of those, the ones Anthropic's tokenizer counts above one token per UTF-8 byte once expanded.
EXPANDED_PAST_THE_ESTIMATE = "\ufdfa\ufdfb\u2a0c\u334a\u0f77\u0f79\U0001d1bf"

MIXED = st.lists(ascii_text | code | cjk | emoji | combining | symbols | anything, max_size=8).map("".join)
MIXED_WITH_COMPATIBILITY = st.lists(ascii_text | code | cjk | emoji | combining | symbols | anything | compatibility,
                                    max_size=8).map("".join)


def nfkc_grows(text: str) -> bool:
    return len(unicodedata.normalize("NFKC", text).encode()) > len(text.encode())


# --- the bound --------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(MIXED_WITH_COMPATIBILITY)
@example("")
@example("a" * 10_000)
@example("🏳️‍🌈👩🏽‍💻🇺🇦" * 50)
@example("Z̸̢̛̯̣̈́̓a̷̡̜͚͒l̵͈̿g̴̱̔o̶̧̓" * 40)
@example("".join(map(chr, range(0x20, 0x7F))) * 20)
@example("\ufdfa" * 200)
def test_the_estimate_is_never_below_openai_tokenizers(text):
    counters = openai_counters()
    for estimate in estimates(text):
        for name, count in counters.items():
            assert estimate >= count(text), name


@settings(max_examples=400, deadline=None)
@given(MIXED)
@example("")
@example("🏳️‍🌈👩🏽‍💻🇺🇦" * 50)
@example("Z̸̢̛̯̣̈́̓a̷̡̜͚͒l̵͈̿g̴̱̔o̶̧̓" * 40)
@example("漢字かなカナ한국어" * 100)
@example("<EOT><META>" * 100)
def test_the_estimate_is_never_below_anthropics_tokenizer(text):
    # Text that NFKC normalization lengthens is the known gap, pinned by the test below.
    assume(not nfkc_grows(text))
    count = anthropic_counter()
    for estimate in estimates(text):
        assert estimate >= count(text)


@pytest.mark.parametrize("char", list(EXPANDED_PAST_THE_ESTIMATE), ids=lambda c: f"U+{ord(c):04X}")
def test_the_estimate_covers_characters_that_normalization_expands(char):
    text = char * 200
    for estimate in estimates(text):
        assert estimate >= anthropic_counter()(text)


# --- images -----------------------------------------------------------------------------------

def png_data_url(width: int, height: int) -> str:
    """A PNG's signature and header chunk: all it takes to know its pixel size."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + chunk).decode()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 7_000), st.integers(1, 7_000), ascii_text | code | cjk)
@example(1, 1, "")
@example(7_000, 7_000, "what is on this screenshot?")
def test_a_message_with_an_inline_image_is_estimated_above_the_images_bound(width, height, text):
    message = {"role": "user", "content": [{"type": "text", "text": text},
                                           {"type": "image_url", "image_url": {"url": png_data_url(width, height)}}]}
    estimate = estimate_prompt_tokens([message])
    text_tokens = max(count(text) for count in openai_counters().values())
    assert estimate >= image_tokens_bound(width, height) + text_tokens


def test_every_inline_image_of_a_conversation_is_counted():
    one = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url(1920, 1080)}}]}
    assert estimate_prompt_tokens([one, one, one]) >= 3 * image_tokens_bound(1920, 1080)


# --- cache writes are held at the price of their ttl -------------------------------------------------

ONE_HOUR = {"type": "ephemeral", "ttl": "1h"}
FIVE_MINUTES = {"type": "ephemeral"}


@pytest.mark.parametrize(("control", "factor"), [(FIVE_MINUTES, 1.25), ({"type": "ephemeral", "ttl": "5m"}, 1.25),
                                                 (ONE_HOUR, 2.0), ({"type": "ephemeral", "ttl": "1d"}, 2.0)])
def test_a_cache_write_is_held_at_its_ttls_price(control: dict[str, str], factor: float):
    """Anthropic bills a cache write 1.25x the input price for 5 minutes and 2x for an hour; a ttl not
    known is held at the highest."""
    from ralex.request import ChatRequest

    text = "x" * 10_000
    plain = estimate_prompt_tokens([{"role": "user", "content": text}])
    part = [{"role": "user", "content": [{"type": "text", "text": text, "cache_control": control}]}]
    assert estimate_prompt_tokens(part) >= plain * factor
    tools = [{"name": "read", "input_schema": {"type": "object"}, "cache_control": control}]
    messages = {"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": text}], "tools": tools}
    assert ChatRequest.from_body(messages, "messages").prompt_tokens >= plain * factor
    system = {"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
              "system": [{"type": "text", "text": text, "cache_control": control}]}
    assert ChatRequest.from_body(system, "messages").prompt_tokens >= plain * factor


# --- holds from the billed prefix (ralex/prefix.py) -------------------------------------------------

TEMPLATE_TOKENS = 4
"""What a chat template adds per message (role and separators): OpenAI's is 3-4 tokens, Anthropic's fewer."""


def billed_tokens(messages: list[dict[str, object]], tools: object) -> int:
    """A provider's count of a whole prompt: each message's text and tool calls by the real tokenizer
    that counts most, its template tokens, and the tool definitions."""
    import json

    counters = [*openai_counters().values(), anthropic_counter()]

    def tokens(text: str) -> int:
        return max(fn(text) for fn in counters)

    total = tokens(json.dumps(tools)) if tools else 0
    for message in messages:
        total += TEMPLATE_TOKENS
        content = message.get("content")
        if isinstance(content, str):
            total += tokens(content)
        elif isinstance(content, list):
            total += sum(tokens(str(part["text"])) for part in content if isinstance(part, dict) and "text" in part)
        if message.get("tool_calls"):
            total += tokens(json.dumps(message["tool_calls"]))
    return total


TOOLS = [{"type": "function", "function": {"name": "read", "description": "Read a file",
                                           "parameters": {"type": "object",
                                                          "properties": {"filePath": {"type": "string"}}}}}]
step_text = ascii_text | code | cjk | emoji | symbols | anything


@st.composite
def steps(draw: st.DrawFn) -> list[list[dict[str, object]]]:
    """A conversation as an agent grows it: each step adds an assistant tool call and its result, or a
    user message; now and then the agent moves its cache_control marker or rewrites an old message."""
    grown: list[list[dict[str, object]]] = []
    messages: list[dict[str, object]] = [{"role": "system", "content": draw(step_text)},
                                         {"role": "user", "content": draw(step_text)}]
    for n in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["tool", "user", "edit"]))
        if kind == "tool":
            call = {"id": f"call_{n}", "type": "function",
                    "function": {"name": "read", "arguments": draw(step_text)}}
            messages += [{"role": "assistant", "content": "", "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": f"call_{n}", "content": draw(step_text)}]
        elif kind == "user":
            messages.append({"role": "user", "content": [{"type": "text", "text": draw(step_text)}]})
        elif len(messages) > 2:
            index = draw(st.integers(1, len(messages) - 1))
            messages[index] = {"role": "user", "content": draw(step_text)}
        marked = [dict(m) for m in messages]
        marked[-1]["cache_control"] = {"type": "ephemeral"}  # agents mark the latest message each step
        grown.append(marked)
    return grown


@settings(max_examples=150, deadline=None)
@given(steps())
def test_a_hold_from_the_billed_prefix_is_never_below_the_next_steps_count(conversation):
    from ralex.prefix import BilledPrefixes
    from ralex.request import ChatRequest

    billed = BilledPrefixes()
    for messages in conversation:
        request = ChatRequest.from_body({"model": "smart", "messages": messages, "tools": TOOLS})
        assert request.prefixes is not None
        real = billed_tokens(messages, TOOLS)
        known = billed.bound("agent", "anthropic/claude-sonnet-4.5", request.prefixes)
        hold = min(known, request.prompt_tokens) if known else request.prompt_tokens  # RouteInput.prompt_for
        assert real <= hold
        billed.remember("agent", "anthropic/claude-sonnet-4.5", request.prefixes, real)


@settings(max_examples=100, deadline=None)
@given(steps(), step_text, step_text)
def test_a_new_session_on_the_same_system_prompt_is_held_above_its_count(conversation, first, title):
    """A new session repeats an earlier one's system prompt (and tools): its first step is held from
    the earlier session's bill (ralex/prefix.py SHARED_HEADS), never below its own count."""
    from ralex.prefix import BilledPrefixes
    from ralex.request import ChatRequest

    billed = BilledPrefixes()
    for messages in conversation:
        request = ChatRequest.from_body({"model": "smart", "messages": messages, "tools": TOOLS})
        assert request.prefixes is not None
        billed.remember("agent", "m", request.prefixes, billed_tokens(messages, TOOLS))
    for messages in ([conversation[0][0], {"role": "user", "content": first}],
                     [conversation[0][0], conversation[0][1], {"role": "user", "content": title}]):
        request = ChatRequest.from_body({"model": "smart", "messages": messages, "tools": TOOLS})
        assert request.prefixes is not None
        known = billed.bound("agent", "m", request.prefixes)
        assert known is not None
        assert billed_tokens(messages, TOOLS) <= min(known, request.prompt_tokens)
