"""The request allow-list: what a client may send, and how a refusal names the problem."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ralex.params import (
    DROPPED,
    FORWARDED,
    MAX_DEPTH,
    PARTS,
    REFUSED,
    RequestError,
    forwardable,
    forwardable_messages,
    forwardable_responses,
    nests_deeper_than,
    parse_body,
    refused_in,
)
from tests.unit.test_media import png


def data_url(raw: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(raw).decode()}"


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "fix the typo in hello.py"}], **extra}


def opencode_body() -> dict[str, Any]:
    """A tool step as OpenCode (Vercel AI SDK, OpenAI-compatible provider) sends it."""
    return {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "You are opencode, an interactive CLI tool that helps users with "
                                          "software engineering tasks."},
            {"role": "user", "content": [{"type": "text", "text": "fix the failing test in tests/test_cache.py"}]},
            {"role": "assistant", "content": "",
             "tool_calls": [{"id": "call_0", "type": "function",
                             "function": {"name": "read", "arguments": '{"filePath":"tests/test_cache.py"}'}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "def test_expiry():\n    assert cache.get('a')\n"},
        ],
        "tools": [
            {"type": "function", "function": {
                "name": "read", "description": "Reads a file from the local filesystem.",
                "parameters": {"type": "object", "properties": {"filePath": {"type": "string"}},
                               "required": ["filePath"], "additionalProperties": False,
                               "$schema": "http://json-schema.org/draft-07/schema#"}}},
            {"type": "function", "function": {
                "name": "bash", "description": "Runs a shell command.",
                "parameters": {"type": "object", "properties": {"command": {"type": "string"},
                                                                "timeout": {"type": "number"}},
                               "required": ["command"]}}},
        ],
        "tool_choice": "auto",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 32000,
        "temperature": 0,
        "top_p": 1,
    }


def test_an_opencode_tool_step_passes_unchanged():
    body = opencode_body()
    sent = copy.deepcopy(body)
    assert forwardable(body) == sent
    assert body == sent  # the caller's body is not modified either


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_every_refused_parameter_is_a_request_error_naming_it(name):
    with pytest.raises(RequestError, match=f"parameter '{re.escape(name)}' is not allowed: "):
        forwardable(chat(**{name: {"anything": True}}))


def test_a_refusal_says_why():
    with pytest.raises(RequestError, match="reasoning budgets are billed as extra output"):
        forwardable(chat(reasoning_effort="high"))
    with pytest.raises(RequestError, match="credentials and endpoints are the proxy's own"):
        forwardable(chat(api_base="http://attacker.example"))


def test_unknown_parameters_are_refused_by_name():
    with pytest.raises(RequestError, match="unknown parameter 'best_of'; Ralex forwards only model, messages, "):
        forwardable(chat(best_of=3))


def test_a_very_long_unknown_parameter_name_is_shortened():
    with pytest.raises(RequestError) as caught:
        forwardable(chat(**{"x" * 500: 1}))
    assert "'" + "x" * 37 + "...'" in str(caught.value)
    assert "x" * 41 not in str(caught.value)


@pytest.mark.parametrize("name", sorted(DROPPED))
def test_client_bookkeeping_is_dropped(name):
    assert forwardable(chat(**{name: {"session": "abc"}})) == chat()


@pytest.mark.parametrize(("name", "value", "words"), [
    ("temperature", "hot", "'temperature' must be a number, got a string"),
    ("temperature", True, "'temperature' must be a number, got a boolean"),
    ("tools", True, "'tools' must be a list of function tools, got a boolean"),
    ("tools", [{"type": "web_search"}], "tools[0] must be"),
    ("tools", [{"type": "function", "function": {"description": "no name"}}], "tools[0].function must be"),
    ("stream", "yes", "'stream' must be true or false, got a string"),
    ("stream_options", {"include_usage": True, "chunk_size": 1}, "'stream_options' may only hold include_usage"),
    ("n", 5, "'n' must be 1"),
    ("stop", 5, "'stop' must be a string or a list of up to 16 strings"),
    ("stop", ["a"] * 17, "'stop' must be a string or a list of up to 16 strings"),
    ("max_tokens", 0, "'max_tokens' must be a positive whole number"),
    ("max_tokens", 1.5, "'max_tokens' must be a whole number, got a number"),
    ("seed", "42", "'seed' must be a whole number, got a string"),
    ("tool_choice", "any", "'tool_choice' must be"),
    ("response_format", {"type": "xml"}, "'response_format' must be"),
    ("top_logprobs", 21, "'top_logprobs' must be between 0 and 20"),
])
def test_forwarded_parameters_of_the_wrong_type_are_refused_naming_the_field(name, value, words):
    with pytest.raises(RequestError, match=re.escape(words)):
        forwardable(chat(**{name: value}))


def test_a_null_forwarded_parameter_is_left_out():
    assert forwardable(chat(temperature=None, max_tokens=None)) == chat()


@pytest.mark.parametrize("name", sorted(FORWARDED))
def test_every_forwarded_parameter_is_kept_with_a_sensible_value(name):
    good = {"stream_options": {"include_usage": True}, "tools": opencode_body()["tools"], "tool_choice": "none",
            "response_format": {"type": "json_object"}, "stop": ["\n\n"], "stream": False,
            "parallel_tool_calls": True, "logprobs": False, "top_logprobs": 2, "n": 1}
    value = good.get(name, 1)
    assert forwardable(chat(**{name: value}))[name] == value


def message_body(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "system", "content": "be brief"}, *messages]}


@pytest.mark.parametrize(("message", "words"), [
    ({"role": "user", "content": 5}, "messages[1].content must be a string or a list of parts, got a number"),
    ({"role": "user", "content": [{"type": "text", "text": "see file"},
                                  {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA=="}}]},
     "messages[1].content[1] is a 'file' part; Ralex forwards text and image_url parts only"),
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]},
     "messages[1].content[0] is a 'input_audio' part"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
     "messages[1].content[0]: an image must be sent inline as a data: URL"),
    ({"role": "user", "content": [{"type": "text", "text": 7}]}, "messages[1].content[0].text must be a string"),
    ({"role": "user", "content": [{"type": "text", "text": "hi", "annotations": []}]},
     "messages[1].content[0] has unknown field 'annotations'"),
    ({"role": "function", "content": "42"}, "messages[1].role must be one of"),
    ({"role": "user", "content": "hi", "audio": {"id": "x"}}, "messages[1] has unknown field 'audio'"),
    ({"role": "assistant", "content": None, "tool_calls": "read"}, "messages[1].tool_calls must be a list"),
    ({"role": "tool", "content": "ok", "tool_call_id": 3}, "messages[1].tool_call_id must be a string"),
    ({"content": "no role"}, "messages[1] must be an object with a 'role'"),
])
def test_bad_messages_are_refused_naming_where(message, words):
    with pytest.raises(RequestError, match=re.escape(words)):
        forwardable(message_body(message))


def test_an_inline_image_and_cache_control_pass():
    body = message_body({"role": "user", "content": [
        {"type": "text", "text": "what is on this screenshot?", "cache_control": {"type": "ephemeral"}},
        {"type": "image_url", "image_url": {"url": data_url(png(64, 48))}}]})
    assert forwardable(body) == body


@pytest.mark.parametrize(("body", "words"), [
    ([], "the request body must be a JSON object, got a list"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no 'model'"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, "unknown model 'gpt-4o'"),
    ({"model": "auto", "messages": []}, "'messages' must be a non-empty list"),
])
def test_bodies_without_a_usable_model_or_messages_are_refused(body, words):
    with pytest.raises(RequestError, match=re.escape(words)):
        forwardable(body)


def test_refused_in_finds_a_refused_parameter_the_proxy_holds():
    assert refused_in({**chat(), "extra_body": {"provider": {"order": ["x"]}}}) == "extra_body"
    assert refused_in({**chat(), "api_base": "http://attacker.example"}) == "api_base"
    assert refused_in({**chat(), "reasoning_effort": "high"}) == "reasoning_effort"


def test_refused_in_ignores_empty_values_and_clean_bodies():
    assert refused_in(opencode_body()) is None
    assert refused_in({**chat(), "extra_body": {}, "fallbacks": [], "api_key": None}) is None


# --- the body: parsed once, bounded ------------------------------------------------------------------

def depth(value: Any) -> int:
    """Reference nesting depth: the body itself is level 1, a scalar level 0."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def nest(levels: int, inner: Any = 1) -> Any:
    """``inner`` inside ``levels`` alternating lists and objects."""
    for i in range(levels):
        inner = [inner] if i % 2 else {"k": inner}
    return inner


def nested_text(levels: int, inner: str = "1") -> bytes:
    """The JSON text of :func:`nest`, written without recursion (json.dumps would hit its own limit)."""
    opening = "".join("[" if i % 2 else '{"k":' for i in reversed(range(levels)))
    closing = "".join("]" if i % 2 else "}" for i in range(levels))
    return (opening + inner + closing).encode()


TRICKY = st.text(st.sampled_from(list('[]{}"\\,:ab \n\u00e9\U0001f600')) | st.characters(blacklist_categories=("Cs",)),
                 max_size=30)
"""Strings full of what a bracket scan could be fooled by: brackets, quotes and backslashes."""
SCALARS = (st.none() | st.booleans() | st.integers() | TRICKY
           | st.floats(allow_nan=False, allow_infinity=False))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TRICKY, inner, max_size=4), max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(value=JSON, limit=st.integers(0, 12), indent=st.sampled_from([None, 1]))
def test_the_depth_scan_agrees_with_the_parsed_value(value: Any, limit: int, indent: int | None):
    raw = json.dumps(value, indent=indent, ensure_ascii=bool(limit % 2)).encode()
    assert nests_deeper_than(raw, limit) == (depth(value) > limit)


@settings(max_examples=200, deadline=None)
@given(value=JSON, extra=st.integers(0, 3000))
def test_any_json_up_to_the_limit_parses_and_anything_deeper_is_a_400_naming_the_limit(value: Any, extra: int):
    raw = nested_text(extra, json.dumps(value))
    if extra + depth(value) <= MAX_DEPTH:
        assert parse_body(raw) == nest(extra, value)
    else:
        with pytest.raises(RequestError, match=f"more than {MAX_DEPTH} levels deep; Ralex accepts at most "
                                               f"{MAX_DEPTH}"):
            parse_body(raw)


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 960, 1_100, 100_000])
def test_deep_nesting_is_a_request_error_never_a_recursion_error(levels: int):
    for raw in (b"[" * levels + b"]" * levels, b'{"a":' * levels + b"1" + b"}" * levels,
                b"[" * levels):  # unclosed too
        with pytest.raises(RequestError, match="levels deep"):
            parse_body(raw)


def test_exactly_the_limit_parses_and_brackets_inside_strings_do_not_count():
    assert depth(parse_body(nested_text(MAX_DEPTH))) == MAX_DEPTH
    text = '["' + "[" * 10_000 + '\\"' + "{" * 10_000 + '\\\\"]'
    assert parse_body(text.encode()) == ["[" * 10_000 + '"' + "{" * 10_000 + "\\"]


def test_a_huge_string_parses_and_is_scanned_in_linear_time():
    text = "x" * (8 << 20) + '\\"[{' * 1000
    assert parse_body(json.dumps([text]).encode()) == [text]


@settings(max_examples=200, deadline=None)
@given(value=st.recursive(SCALARS | st.sampled_from([math.nan, math.inf, -math.inf]),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
                          max_leaves=20))
def test_nan_and_infinity_anywhere_are_a_400(value: Any):
    raw = json.dumps(value).encode()  # Python writes NaN, Infinity and -Infinity
    finite = True
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        finite = False
    if finite:
        assert parse_body(raw) == value
    else:
        with pytest.raises(RequestError, match=r"(NaN|Infinity), which is not a JSON number"):
            parse_body(raw)


@pytest.mark.parametrize(("raw", "words"), [
    (b'{"temperature": NaN}', "holds NaN, which is not a JSON number"),
    (b'{"top_p": Infinity}', "holds Infinity"),
    (b'{"x": [1, -Infinity]}', "holds -Infinity"),
    (b'{"temperature": 1e400}', "the number 1e400 in the request body is too large"),
    (b'{"seed": -' + b"9" * 5000 + b"}", "a number with more than 4300 digits"),
    (b"\xff{}", "not valid UTF-8 (byte 0)"),
    (b'{"a": 1', "not valid JSON"),
    (b"", "not valid JSON"),
])
def test_what_json_would_take_but_no_upstream_can_is_a_request_error(raw: bytes, words: str):
    with pytest.raises(RequestError, match=re.escape(words)):
        parse_body(raw)


def test_a_non_finite_number_in_a_forwarded_parameter_is_refused_too():
    with pytest.raises(RequestError, match="'temperature' must be a finite number"):
        forwardable(chat(temperature=math.inf))


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300) | st.text(st.sampled_from(list('[]{}"\\,:1 aNI-e.')), max_size=300).map(str.encode))
def test_any_bytes_parse_or_are_a_request_error(raw: bytes):
    try:
        parse_body(raw)
    except RequestError as exc:
        message = str(exc)
        assert message.startswith("the request body ") or message.startswith("the number ")


# --- content: one table of part kinds per API, used at every place content appears --------------------

PLACES: dict[tuple[str, str], Any] = {
    ("chat", "message"): lambda parts: {"model": "auto", "messages": [{"role": "user", "content": parts}]},
    ("messages", "message"): lambda parts: {"model": "auto", "max_tokens": 50,
                                            "messages": [{"role": "user", "content": parts}]},
    ("messages", "system"): lambda parts: {"model": "auto", "max_tokens": 50, "system": parts,
                                           "messages": [{"role": "user", "content": "hi"}]},
    ("messages", "tool_result"): lambda parts: {"model": "auto", "max_tokens": 50, "messages": [
        {"role": "user", "content": "read a.py"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": parts}]}]},
    ("responses", "message"): lambda parts: {"model": "auto", "input": [
        {"type": "message", "role": "user", "content": parts}]},
    ("responses", "function_call_output"): lambda parts: {"model": "auto", "input": [
        {"type": "message", "role": "user", "content": "read a.py"},
        {"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": parts}]},
}
"""Every place each API lets content appear, as a body holding ``parts`` there."""
CHECKS = {"chat": forwardable, "messages": lambda b: forwardable_messages(b)[0],
          "responses": lambda b: forwardable_responses(b)[0]}
IMAGE = png(64, 48)


def image_part(api: str, url: str) -> dict[str, Any]:
    """An image part of ``api`` showing ``url`` (a data URL, or a remote address)."""
    if api == "chat":
        return {"type": "image_url", "image_url": {"url": url}}
    if api == "responses":
        return {"type": "input_image", "image_url": url}
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        return {"type": "image", "source": {"type": "base64", "media_type": header[5:].removesuffix(";base64"),
                                            "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "chat": {"text": {"type": "text", "text": "hi"}, "image_url": image_part("chat", data_url(IMAGE))},
    "messages": {"text": {"type": "text", "text": "hi"}, "image": image_part("messages", data_url(IMAGE)),
                 "tool_use": {"type": "tool_use", "id": "t2", "name": "read", "input": {"path": "a.py"}},
                 "tool_result": {"type": "tool_result", "tool_use_id": "t2", "content": "ok"},
                 "thinking": {"type": "thinking", "thinking": "hmm", "signature": "c2ln"},
                 "redacted_thinking": {"type": "redacted_thinking", "data": "ZW5j"}},
    "responses": {"input_text": {"type": "input_text", "text": "hi"},
                  "output_text": {"type": "output_text", "text": "done", "annotations": []},
                  "refusal": {"type": "refusal", "refusal": "no"},
                  "input_image": image_part("responses", data_url(IMAGE))},
}
"""A valid part of each kind in :data:`PARTS`."""


def test_every_part_kind_has_an_example_and_every_place_a_body():
    assert {api: set(kinds) for api, kinds in EXAMPLES.items()} == {api: set(kinds) for api, kinds in PARTS.items()}
    assert {place for api, kinds in PARTS.items() for rule in kinds.values() for place in rule.places} >= {
        place for _, place in PLACES}
    assert {(api, place) for api, kinds in PARTS.items() for rule in kinds.values() for place in rule.places} \
        == set(PLACES)


@pytest.mark.parametrize(("api", "place"), sorted(PLACES))
def test_each_place_takes_exactly_the_kinds_its_table_allows(api: str, place: str):
    for kind, part in EXAMPLES[api].items():
        body = PLACES[api, place]([copy.deepcopy(part)])
        if place in PARTS[api][kind].places:
            CHECKS[api](body)
        else:
            with pytest.raises(RequestError, match=f"is a '{kind}' "):
                CHECKS[api](body)


TEXT_FIELDS = [(api, place, kind, rule.text) for (api, place) in sorted(PLACES)
               for kind, rule in PARTS[api].items() if place in rule.places and rule.text]


@pytest.mark.parametrize(("api", "place", "kind", "field"), TEXT_FIELDS)
@pytest.mark.parametrize("value", [7, None, ["hi"], {"text": "hi"}, True])
def test_a_text_part_with_text_that_is_not_a_string_is_refused_naming_where(api, place, kind, field, value):
    part = {**EXAMPLES[api][kind], field: value}
    with pytest.raises(RequestError, match=re.escape(f"[0].{field} must be a string")):
        CHECKS[api](PLACES[api, place]([part]))


IMAGE_PLACES = [(api, place) for (api, place) in sorted(PLACES)
                if any(place in rule.places and rule.image for rule in PARTS[api].values())]


def test_images_may_appear_wherever_a_client_sends_them():
    assert IMAGE_PLACES == [("chat", "message"), ("messages", "message"), ("messages", "tool_result"),
                            ("responses", "function_call_output"), ("responses", "message")]


@pytest.mark.parametrize(("api", "place"), IMAGE_PLACES)
@pytest.mark.parametrize(("url", "words"), [
    ("https://attacker.example/cat.png", "an image must be sent inline as a data: URL"),
    ("http://169.254.169.254/latest/meta-data", "an image must be sent inline as a data: URL"),
    (data_url(png(60_000, 60_000, pixels=False)), "the image is 60000x60000; Ralex accepts images up to 50 "
                                                  "megapixels"),
    (data_url(b"not an image at all"), "cannot read the image's size"),
    ("data:image/png,rawbytes", "must be base64 encoded"),
    (data_url(IMAGE, "text/html"), "must name an image type"),
])
def test_every_image_goes_through_the_same_checks_wherever_it_is(api: str, place: str, url: str, words: str):
    if api == "messages" and url.startswith("data:") and ";base64," not in url:
        words = "cannot read the image's size"  # an Anthropic image is base64 by its shape
    body = PLACES[api, place]([{"type": EXAMPLES[api]["text" if api != "responses" else "input_text"]["type"],
                                "text": "what is this?"}, image_part(api, url)])
    with pytest.raises(RequestError, match=re.escape(words)) as refused:
        CHECKS[api](body)
    assert "[1]" in str(refused.value)  # names the part


@pytest.mark.parametrize(("api", "place"), IMAGE_PLACES)
def test_a_sized_inline_image_passes_wherever_it_is(api: str, place: str):
    body = PLACES[api, place]([image_part(api, data_url(png(600, 400)))])
    assert CHECKS[api](copy.deepcopy(body)) == body or api != "chat"


@pytest.mark.parametrize(("api", "place", "part", "words"), [
    ("responses", "function_call_output", {"type": "input_file", "file_data": "data:application/pdf;base64,AA=="},
     "is a 'input_file' part; Ralex forwards input_text and input_image parts only (files and documents"),
    ("responses", "message", {"type": "input_image", "file_id": "file_123"}, "names an uploaded file"),
    ("responses", "message", {"type": "input_image"}, "image_url must be a data URL"),
    ("chat", "message", {"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}},
     "(audio is billed apart from text tokens"),
    ("messages", "message", {"type": "document", "source": {"type": "base64", "data": "AA=="}},
     "is a 'document' block"),
    ("messages", "tool_result", {"type": "tool_result", "tool_use_id": "t", "content": "x"},
     "is a 'tool_result' block; Ralex forwards text and image blocks only"),
    ("messages", "system", {"type": "image", "source": {}}, "Ralex forwards text blocks only"),
    ("messages", "message", {"type": "tool_use", "id": "t", "name": 3, "input": {}}, "[0].name' must be a string"),
    ("messages", "message", {"text": "no type"}, "must be a block object with a 'type'"),
    ("responses", "message", "just a string", "must be a part object with a 'type'"),
])
def test_parts_that_are_not_forwarded_are_refused_naming_what_and_why(api, place, part, words):
    with pytest.raises(RequestError, match=re.escape(words)):
        CHECKS[api](PLACES[api, place]([part]))


@pytest.mark.parametrize(("item", "words"), [
    ({"type": "function_call_output", "call_id": "c1"}, "input[2].output is missing"),
    ({"type": "function_call_output", "call_id": "c1", "output": 5}, "input[2].output must be a string or a list"),
    ({"type": "function_call", "call_id": "c2", "name": "read", "arguments": {"path": "a"}},
     "'input[2].arguments' must be a string"),
    ({"type": "message", "role": "user"}, "input[2].content is missing"),
])
def test_responses_items_hold_what_their_kind_needs(item: dict[str, Any], words: str):
    body = PLACES["responses", "function_call_output"]("ok")
    body["input"][2] = item
    with pytest.raises(RequestError, match=re.escape(words)):
        forwardable_responses(body)


def test_content_as_a_plain_string_passes_everywhere():
    for (api, _), build in PLACES.items():
        CHECKS[api](build("plain text"))


BASES = {
    "chat": PLACES["chat", "message"]([EXAMPLES["chat"]["text"], EXAMPLES["chat"]["image_url"]]),
    "messages": {**PLACES["messages", "tool_result"]([EXAMPLES["messages"]["image"]]),
                 "system": [EXAMPLES["messages"]["text"]],
                 "tools": [{"name": "read", "input_schema": {"type": "object"}}], "tool_choice": {"type": "auto"}},
    "responses": {**PLACES["responses", "function_call_output"]([EXAMPLES["responses"]["input_image"]]),
                  "tools": [{"type": "function", "name": "read", "parameters": {}}], "tool_choice": "auto"},
}


def containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every object and list in ``value`` (the body itself is ())."""
    found = [path] if isinstance(value, dict | list) else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    return found + [p for k, v in items for p in containers(v, (*path, k))]


def mutate(data: st.DataObject, body: Any, api: str, keys: tuple[str, ...]) -> None:
    """Put 1-3 drawn values (any JSON, or a valid example of ``api``) somewhere in ``body``: under an existing
    or one of ``keys`` in an object, over an item of a list, or appended to it."""
    for _ in range(data.draw(st.integers(1, 3))):
        parent = body
        for key in data.draw(st.sampled_from(containers(body))):
            parent = parent[key]
        value = copy.deepcopy(data.draw(JSON | st.sampled_from(list(EXAMPLES[api].values()))))
        if isinstance(parent, dict):
            parent[data.draw(st.sampled_from([*parent, *keys]))] = value
        elif parent and data.draw(st.booleans()):
            parent[data.draw(st.integers(0, len(parent) - 1))] = value
        else:
            parent.append(value)


@settings(max_examples=600, deadline=None)
@given(api=st.sampled_from(sorted(BASES)), data=st.data())
def test_any_value_anywhere_in_a_body_is_served_or_a_request_error_never_a_crash(api: str, data: st.DataObject):
    body = copy.deepcopy(BASES[api])
    CHECKS[api](copy.deepcopy(body))  # the base is served
    mutate(data, body, api, ("type", "text", "content", "role", "x"))
    with contextlib.suppress(RequestError):  # anything else (a TypeError, a KeyError) fails the test
        CHECKS[api](body)
