"""Request text is hostile: reading it costs linear work, and every byte the upstream bills is in the bound.

Results only, no timings: an input that used to cost quadratic time (an unclosed tag repeated) is read
here at megabyte sizes, so a regression shows as a run that does not finish.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ralex.request import (
    ChatRequest,
    chat_view,
    estimate_prompt_tokens,
    task_text,
    text_bytes,
    without_reminders,
)
from tests.unit.test_agent_apis import claude_code_turn, codex_turn, litellm_responses

OLD_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL | re.IGNORECASE)
"""The regex the scan replaces (quadratic on an unclosed tag repeated): the reference on small inputs."""
OPEN, CLOSE = "<system-reminder>", "</system-reminder>"
MB = 1 << 20


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are a coding agent."}, {"role": "user", "content": text}]


# --- the reminder scan ---------------------------------------------------------------------------------

PIECES = st.sampled_from([OPEN, CLOSE, OPEN.upper(), CLOSE.upper(), "<System-Reminder>", "</SYSTEM-reminder>",
                          "<\u017fy\u017ftem-rem\u0131nder>", "</\u017fystem-rem\u0130nder>", "<system-reminder",
                          "/system-reminder>", "<", ">", "/", "-", "\n", "\r", "\0", "\u2028", " ", "x", "\u0130",
                          "\u212a", "fix the typo"])


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=4)), max_size=24).map("".join))
@example(OPEN * 3 + "a" + CLOSE + "b" + CLOSE)
@example("\u0130" + OPEN + "x" + CLOSE + "\u0130")
@example("<\u017fy\u017ftem-rem\u0131nder>hidden</SYSTEM-REMINDER>shown")
def test_the_scan_removes_exactly_what_the_old_regex_removed(text: str):
    assert without_reminders(text) == OLD_REMINDER.sub("", text)


@pytest.mark.parametrize(("text", "task"), [
    ("add a docstring" + OPEN + "plan mode" + CLOSE, "add a docstring"),
    (OPEN + "a" + OPEN + "b" + CLOSE + "c" + CLOSE + "fix it", "c" + CLOSE + "fix it"),  # no nesting: first closer
    ("fix" + OPEN + "x", "fix" + OPEN + "x"),  # an unclosed tag is text
    (OPEN.upper() + "loud" + CLOSE.title() + "rename foo", "rename foo"),
    (OPEN + "\0\r\n\u2028" + CLOSE + "bump\0the\u2028version\r\n", "bump\0the\u2028version"),
    ("a" + OPEN + CLOSE + "b" + OPEN + CLOSE + "c", "abc"),
])
def test_reminders_leave_the_users_words(text: str, task: str):
    assert task_text(user(text)) == task


@pytest.mark.parametrize("megabytes", [1, 10])
def test_megabytes_of_unclosed_tags_are_read_as_text(megabytes: int):
    text = "fix the typo " + OPEN * (megabytes * MB // len(OPEN))
    assert task_text(user(text)) == text.strip()


def test_megabytes_of_openers_before_one_closer_are_one_reminder():
    text = OPEN * (4 * MB // len(OPEN)) + CLOSE + " fix the typo in a.py"
    assert task_text(user(text)) == "fix the typo in a.py"


def test_a_hundred_thousand_closed_reminders_all_go():
    text = (OPEN + "note\n" + CLOSE + "x") * 100_000
    assert task_text(user(text)) == "x" * 100_000


def test_unclosed_tags_mixed_with_controls_and_line_separators():
    noise = (OPEN + "\0" + "\r\n" + "\u2028" + "<" + "</" + "system-" + " " * 7 + "!?.,;" * 3) * 20_000
    assert task_text(user(noise + "do it")) == (noise + "do it").strip()


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
def test_every_api_reads_a_hostile_body_whole(api: str):
    text = "convert this " * 40_000 + OPEN * 40_000 + "a-" * 200_000  # ~1.6 MB
    body: dict[str, Any]
    if api == "chat":
        body = {"model": "auto", "messages": user(text)}
    elif api == "messages":
        body = {**claude_code_turn(), "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}
    else:
        body = codex_turn(text)
    request = ChatRequest.from_body(body, api)
    assert request.task == text.strip()
    assert request.prompt_tokens >= len(text.encode())


def test_many_tool_results_in_one_message_become_one_tool_message_each():
    blocks: list[Any] = [{"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": f"out {i}"}
                         for i in range(20_000)]
    blocks.append({"type": "text", "text": "and the note"})
    body = {**claude_code_turn(), "messages": [*claude_code_turn()["messages"],
                                              {"role": "assistant", "content": "running"},
                                              {"role": "user", "content": blocks}]}
    view = chat_view(body, "messages")
    tools = [m for m in view["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tools] == [f"toolu_{i}" for i in range(20_000)]
    assert tools[-1]["content"][-1]["text"] == "and the note"


# --- structured-output schemas are prompt text ---------------------------------------------------------

def big_schema(size: int = 200_000) -> dict[str, Any]:
    """A JSON schema of about ``size`` bytes: many described string properties."""
    properties = {f"field_{i}": {"type": "string", "description": "d" * 180} for i in range(size // 210)}
    return {"type": "object", "properties": properties, "required": sorted(properties)}


def test_a_200_kb_chat_schema_raises_the_bound_by_its_size():
    body = {"model": "auto", "messages": user("extract the fields")}
    plain = ChatRequest.from_body(body).prompt_tokens
    schema = {"type": "json_schema", "json_schema": {"name": "out", "schema": big_schema(), "strict": True}}
    priced = ChatRequest.from_body({**body, "response_format": schema}).prompt_tokens
    assert priced - plain >= 200_000


def test_a_200_kb_responses_schema_raises_the_bound_by_its_size():
    body = codex_turn("extract the fields")
    plain = ChatRequest.from_body(body, "responses").prompt_tokens
    fmt = {"type": "json_schema", "name": "out", "schema": big_schema(), "strict": True}
    priced = ChatRequest.from_body({**body, "text": {"format": fmt}}, "responses").prompt_tokens
    assert priced - plain >= 200_000


@pytest.mark.parametrize("fmt", [{"type": "json_schema", "name": "out", "schema": big_schema(2_000), "strict": True},
                                 {"type": "json_schema", "schema": big_schema(2_000), "description": "the fields"},
                                 {"type": "json_object"}])
def test_the_responses_format_is_counted_as_the_chat_format_litellm_forwards(fmt: dict[str, Any]):
    body = {**codex_turn("extract the fields"), "text": {"format": fmt}}
    counted = chat_view(body, "responses")["response_format"]
    forwarded = litellm_responses(copy.deepcopy(body))["response_format"]
    assert counted["type"] == forwarded["type"]
    assert counted.get("json_schema", {}).items() >= forwarded.get("json_schema", {}).items()


def test_a_schema_alone_adds_the_tool_overhead_and_with_tools_it_is_added_once():
    messages = user("x")
    schema = {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    base = estimate_prompt_tokens(messages)
    with_schema = estimate_prompt_tokens(messages, response_format=schema)
    with_tools = estimate_prompt_tokens(messages, tools)
    both = estimate_prompt_tokens(messages, tools, schema)
    assert with_schema > base + 600
    assert both - with_tools == with_schema - base - 600


@pytest.mark.parametrize("fmt", [{"type": "text"}, None])
def test_plain_text_output_costs_nothing_extra(fmt: Any):
    body = {"model": "auto", "messages": user("x")}
    assert ChatRequest.from_body({**body, "response_format": fmt}).prompt_tokens == \
        ChatRequest.from_body(body).prompt_tokens
    responses = codex_turn("x")
    assert ChatRequest.from_body({**responses, "text": {"format": fmt}}, "responses").prompt_tokens == \
        ChatRequest.from_body(responses, "responses").prompt_tokens


def test_a_json_object_format_is_priced_like_a_small_schema():
    body = {"model": "auto", "messages": user("x")}
    assert ChatRequest.from_body({**body, "response_format": {"type": "json_object"}}).prompt_tokens > \
        ChatRequest.from_body(body).prompt_tokens


# --- the NFKC bound, per character ------------------------------------------------------------------------

@pytest.mark.parametrize("unit", ["\ufdfa", "e\u0301", "\uff21\u3300 ", "\u1100\u1161\u11a8", "a\u0308\u0301",
                                  "\u00bd\u2474\u33ff", "\u65e5\u672c\uc548"])
def test_a_text_is_bounded_by_its_whole_nfkc_form_and_by_its_own_bytes(unit: str):
    text = unit * 5000
    whole = len(unicodedata.normalize("NFKC", text).encode())
    per_char = sum(max(len(c.encode()), len(unicodedata.normalize("NFKC", c).encode())) for c in text)
    assert max(whole, len(text.encode())) <= text_bytes(text) <= 3 * per_char


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_text_is_bounded_by_its_nfkc_form(text: str):
    assert text_bytes(text) >= max(len(text.encode()), len(unicodedata.normalize("NFKC", text).encode()))


def test_the_bound_reads_a_text_without_compatibility_characters_exactly():
    text = "\u65e5\u672c\u8a9e \uc548\ub155 \u00e9 \u2026 caf\u00e9 " * 100
    assert text_bytes(text) == len(text.encode())


def test_no_composition_is_longer_in_utf8_than_its_two_parts():
    """What makes a cut safe: composing never lengthens the text."""
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        parts = unicodedata.decomposition(chr(code)).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            pair = "".join(chr(int(p, 16)) for p in parts)
            if unicodedata.normalize("NFC", pair) == chr(code):
                assert len(chr(code).encode()) <= len(pair.encode()), hex(code)
