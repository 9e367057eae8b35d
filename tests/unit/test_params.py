"""The request allow-list: what a client may send, and how a refusal names the problem."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from ralex.params import DROPPED, FORWARDED, REFUSED, RequestError, forwardable, refused_in


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
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]})
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
