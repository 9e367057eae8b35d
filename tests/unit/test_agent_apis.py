"""Anthropic Messages and OpenAI Responses bodies: the allow-lists and the one prompt bound.

Bodies are shaped like the recorded requests of Claude Code 2.1.332 and Codex 0.171.0 (same fields,
shorter text). The bound is checked against LiteLLM's own translation of each body to the chat
completion OpenRouter receives: every text byte of it must be inside Ralex's bound.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of LiteLLM's price list

import pytest
from fastapi import HTTPException
from hypothesis import given, settings
from hypothesis import strategies as st
from litellm.llms.anthropic.pass_through.adapters.transformation import LiteLLMAnthropicMessagesAdapter
from litellm.responses.litellm_completion_transformation.transformation import LiteLLMCompletionResponsesConfig

from ralex.media import data_url_image_size, image_tokens_bound
from ralex.params import RequestError, forwardable_messages, forwardable_responses
from ralex.proxy.hooks import CALL_APIS, handler
from ralex.request import ChatRequest, chat_view, estimate_prompt_tokens
from tests.unit.test_media import png

SCHEMA = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}


def claude_code_turn(task: str = "create hello.txt containing hi") -> dict[str, Any]:
    return {
        "model": "auto", "max_tokens": 32000, "stream": True,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332"},
                   {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                    "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>As you answer, use this context</system-reminder>"},
            {"type": "text", "text": task, "cache_control": {"type": "ephemeral"}}]}],
        "tools": [{"name": "Write", "description": "Writes a file", "input_schema": SCHEMA},
                  {"name": "DeferredToolPlaceholder", "description": "later", "input_schema": SCHEMA,
                   "defer_loading": True}],
        "metadata": {"user_id": '{"device_id":"d","session_id":"s"}'},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
    }


def claude_code_tool_step() -> dict[str, Any]:
    body = claude_code_turn()
    body["messages"] += [
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should write the file.", "signature": "c2ln"},
            {"type": "tool_use", "id": "toolu_1", "name": "Write",
             "input": {"file_path": "/w/hello.txt", "content": "hi"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "File created successfully"},
            {"type": "text", "text": "<system-reminder>the file changed</system-reminder>"}]},
    ]
    return body


def codex_turn(task: str = "create hello.txt containing hi") -> dict[str, Any]:
    return {
        "model": "auto", "stream": True, "tool_choice": "auto", "parallel_tool_calls": True, "store": False,
        "reasoning": {"effort": "low", "summary": "auto"}, "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "019a", "client_metadata": {"session_id": "s", "turn_id": "t"},
        "input": [{"type": "message", "role": "developer",
                   "content": [{"type": "input_text", "text": "<permissions instructions>"}]},
                  {"type": "message", "role": "user", "content": [{"type": "input_text", "text": task}]}],
        "tools": [{"type": "function", "name": "exec_command", "description": "Runs a command", "strict": False,
                   "parameters": SCHEMA},
                  {"type": "namespace", "name": "multi_agent_v1", "description": "agents", "tools": [
                      {"type": "function", "name": "spawn_agent", "description": "spawn", "strict": False,
                       "parameters": SCHEMA}]},
                  {"type": "web_search", "external_web_access": False}],
    }


def codex_tool_step() -> dict[str, Any]:
    body = codex_turn()
    body["input"] += [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "writing"}], "encrypted_content": "ZW5j"},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "exec_command",
         "arguments": '{"command":"printf hi > hello.txt"}', "status": "completed"},
        {"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": "exit 0"},
    ]
    return body


# --- allow-lists -------------------------------------------------------------------------------------

def test_claude_code_body_passes_with_its_bill_raisers_removed_and_named():
    clean, dropped = forwardable_messages(claude_code_tool_step())
    assert dropped == ["thinking", "context_management", "output_config"]
    assert set(clean) == {"model", "max_tokens", "stream", "system", "messages", "tools"}


def test_codex_body_passes_with_reasoning_and_web_search_removed_and_named():
    clean, dropped = forwardable_responses(codex_tool_step())
    assert dropped == ["reasoning", "tools.web_search"]
    assert set(clean) == {"model", "stream", "tool_choice", "parallel_tool_calls", "input", "tools"}
    assert [t["type"] for t in clean["tools"]] == ["function", "namespace"]


@pytest.mark.parametrize(("change", "named"), [
    ({"n": 2}, "'n'"),
    ({"reasoning_effort": "high"}, "reasoning_effort"),
    ({"extra_body": {}}, "extra_body"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"mcp_servers": []}, "mcp_servers"),
    ({"max_completion_tokens": 5}, "max_completion_tokens"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "web_search_20250305"),
    ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "bash_20250124"),
    ({"model": "claude-opus-4"}, "claude-opus-4"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "document"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x"}}]}]},
     "base64"),
])
def test_messages_refusals_name_the_field(change: dict[str, Any], named: str):
    with pytest.raises(RequestError, match=named):
        forwardable_messages({**claude_code_turn(), **change})


@pytest.mark.parametrize(("change", "named"), [
    ({"use_chat_completions_api": False}, "use_chat_completions_api"),
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"background": True}, "background"),
    ({"max_tool_calls": 9}, "max_tool_calls"),
    ({"service_tier": "flex"}, "service_tier"),
    ({"store": True}, "store"),
    ({"text": {"verbosity": "high"}}, "text.verbosity"),
    ({"tools": [{"type": "file_search"}]}, "file_search"),
    ({"tools": [{"type": "namespace", "name": "n", "tools": [{"type": "web_search"}]}]}, "namespace"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "item_reference"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input_file"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/a.png"}]}]},
     "data:"),
])
def test_responses_refusals_name_the_field(change: dict[str, Any], named: str):
    with pytest.raises(RequestError, match=named):
        forwardable_responses({**codex_turn(), **change})


# --- routing inputs ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("turn", "step", "api"), [(claude_code_turn, claude_code_tool_step, "messages"),
                                                   (codex_turn, codex_tool_step, "responses")])
def test_a_tool_step_keeps_the_turn_and_the_task_is_the_users_text(turn: Any, step: Any, api: str):
    first = ChatRequest.from_body(turn(), api)
    later = ChatRequest.from_body(step(), api)
    assert first.task == later.task == "create hello.txt containing hi"
    assert first.turn == later.turn
    assert ChatRequest.from_body(turn("now delete it"), api).turn != first.turn
    assert not first.housekeeping
    assert later.prompt_tokens > first.prompt_tokens


def test_output_cap_is_read_from_each_apis_own_field():
    assert ChatRequest.from_body(claude_code_turn(), "messages").max_tokens == 32000
    assert ChatRequest.from_body({**codex_turn(), "max_output_tokens": 777}, "responses").max_tokens == 777
    assert ChatRequest.from_body(codex_turn(), "responses").max_tokens is None


def test_a_housekeeping_system_prompt_is_recognised_in_both_shapes():
    title = "You are a title generator. Generate a short title for this conversation."
    assert ChatRequest.from_body({**claude_code_turn(), "system": title}, "messages").housekeeping
    assert ChatRequest.from_body({**codex_turn(), "instructions": title}, "responses").housekeeping


# --- the bound holds every byte OpenRouter receives --------------------------------------------------

def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def received_bound(chat: dict[str, Any]) -> int:
    """Text bytes of every string in the translated messages and tools; images at their pixel bound."""
    total = 0
    for text in _strings([chat.get("messages"), chat.get("tools")]):
        if text.startswith("data:image/"):
            total += image_tokens_bound(*data_url_image_size(text))
        else:
            total += len(text.encode("utf-8", "surrogatepass"))
    return total


def litellm_messages(body: dict[str, Any]) -> dict[str, Any]:
    clean, _ = forwardable_messages(copy.deepcopy(body))
    translated, _ = LiteLLMAnthropicMessagesAdapter().translate_anthropic_to_openai(clean)
    return dict(translated)


def litellm_responses(body: dict[str, Any]) -> dict[str, Any]:
    clean, _ = forwardable_responses(copy.deepcopy(body))
    params = {k: v for k, v in clean.items() if k not in ("model", "input")}
    return LiteLLMCompletionResponsesConfig.transform_responses_api_request_to_chat_completion_request(
        model="openrouter/x", input=clean["input"], responses_api_request=params, custom_llm_provider="openrouter")


def bound(body: dict[str, Any], api: str) -> int:
    view = chat_view(body, api)
    return estimate_prompt_tokens(view["messages"], view.get("tools"))


IMAGE = base64.b64encode(png(640, 480)).decode()


@pytest.mark.parametrize("body", [claude_code_turn(), claude_code_tool_step(), {
    **claude_code_turn(), "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE}},
        {"type": "text", "text": "what is in this picture? 日本語 ﷺ"}]}]}], ids=["turn", "tool-step", "image"])
def test_messages_bound_holds_what_litellm_sends(body: dict[str, Any]):
    assert bound(body, "messages") >= received_bound(litellm_messages(body))


@pytest.mark.parametrize("body", [codex_turn(), codex_tool_step(), {
    **codex_turn(), "instructions": "be terse ﷺ", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": f"data:image/png;base64,{IMAGE}"},
        {"type": "input_text", "text": "what is this? 日本語"}]}]}], ids=["turn", "tool-step", "image"])
def test_responses_bound_holds_what_litellm_sends(body: dict[str, Any]):
    assert bound(body, "responses") >= received_bound(litellm_responses(body))


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=60, deadline=None)
@given(user=TEXT, system=TEXT, tool_input=TEXT, result=TEXT)
def test_messages_bound_holds_for_any_text(user: str, system: str, tool_input: str, result: str):
    body = claude_code_tool_step()
    body["system"] = system or "s"
    body["messages"][0]["content"][1]["text"] = user
    body["messages"][1]["content"][1]["input"] = {"content": tool_input}
    body["messages"][2]["content"][0]["content"] = [{"type": "text", "text": result}]
    assert bound(body, "messages") >= received_bound(litellm_messages(body))


@settings(max_examples=60, deadline=None)
@given(user=TEXT, developer=TEXT, arguments=TEXT, output=TEXT)
def test_responses_bound_holds_for_any_text(user: str, developer: str, arguments: str, output: str):
    body = codex_tool_step()
    body["input"][0]["content"][0]["text"] = developer
    body["input"][1]["content"] = user
    body["input"][3]["arguments"] = json.dumps({"command": arguments}, ensure_ascii=False)
    body["input"][4]["output"] = output
    assert bound(body, "responses") >= received_bound(litellm_responses(body))


# --- the hook admits the three APIs' call types and refuses every other -----------------------------

@pytest.mark.parametrize("call_type", ["aembedding", "atext_completion", "aimage_generation", "arealtime",
                                       "aspeech", "acreate_batch", "moderation", "pass_through_endpoint", None])
def test_any_other_call_type_is_a_400_before_anything_is_held(call_type: Any):
    assert set(CALL_APIS) == {"completion", "acompletion", "anthropic_messages", "aresponses"}
    with pytest.raises(HTTPException) as refused:
        asyncio.run(handler.async_pre_call_hook(None, None, {"model": "auto", "input": "hi"}, call_type))
    assert refused.value.status_code == 400
    assert "/v1/messages" in refused.value.detail
