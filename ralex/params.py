"""What a client may send in a chat completion: an allow-list, checked before anything is forwarded.

The agent holds a proxy key and runs any command, so the request body is hostile input. Every
top-level parameter is one of:

- **forwarded**, after its type is checked: it cannot raise the bill beyond what the hold covers
  (the prompt is bounded from above, the output by ``max_tokens``, which Ralex sets);
- **dropped**: client bookkeeping that costs nothing and would only grow metric labels;
- **refused** with a 400 that names it: anything else, in particular every parameter that can
  raise the bill (``n`` above 1, reasoning budgets, OpenRouter's model lists and provider routing,
  plugins) or redirect the call (credentials, base URLs, ``extra_body``).

Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from ralex.media import REMOTE_IMAGE

ALIASES: Final = ("auto", "cheap", "smart", "yolo")
"""The model names a client may ask for (the one list; the policy imports it)."""


class RequestError(ValueError):
    """The request body cannot be served; the message says what is wrong and how to fix it."""


def _number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"'{name}' must be a number, got {_kind(value)}")


def _integer(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{name}' must be a whole number, got {_kind(value)}")


def _positive(name: str, value: Any) -> None:
    _integer(name, value)
    if value <= 0:
        raise RequestError(f"'{name}' must be a positive whole number, got {value!r}")


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise RequestError(f"'{name}' must be true or false, got {_kind(value)}")


def _stop(name: str, value: Any) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value) or len(value) > 16:
        raise RequestError(f"'{name}' must be a string or a list of up to 16 strings")


def _n(name: str, value: Any) -> None:
    _integer(name, value)
    if value != 1:
        raise RequestError("'n' must be 1: Ralex holds the budget for one answer per request; "
                           "send several requests instead")


def _stream_options(name: str, value: Any) -> None:
    if not isinstance(value, Mapping) or set(value) - {"include_usage"}:
        raise RequestError("'stream_options' may only hold include_usage (true or false)")
    if "include_usage" in value:
        _boolean("stream_options.include_usage", value["include_usage"])


def _tools(name: str, value: Any) -> None:
    if not isinstance(value, list):
        raise RequestError(f"'tools' must be a list of function tools, got {_kind(value)}")
    for i, tool in enumerate(value):
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            raise RequestError(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{...}}}}; "
                               "Ralex forwards function tools only (server-side tools are billed apart)")
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise RequestError(f"tools[{i}].function must be an object with a 'name'")
        if "parameters" in function and not isinstance(function["parameters"], Mapping):
            raise RequestError(f"tools[{i}].function.parameters must be a JSON schema object")
        if "description" in function and not isinstance(function["description"], str):
            raise RequestError(f"tools[{i}].function.description must be a string")


def _tool_choice(name: str, value: Any) -> None:
    if value in ("none", "auto", "required"):
        return
    if (isinstance(value, Mapping) and value.get("type") == "function"
            and isinstance(value.get("function"), Mapping) and isinstance(value["function"].get("name"), str)):
        return
    raise RequestError("'tool_choice' must be \"none\", \"auto\", \"required\" or "
                       "{\"type\": \"function\", \"function\": {\"name\": ...}}")


def _response_format(name: str, value: Any) -> None:
    if not isinstance(value, Mapping) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise RequestError("'response_format' must be {\"type\": \"text\" | \"json_object\" | \"json_schema\", ...}")


def _top_logprobs(name: str, value: Any) -> None:
    _integer(name, value)
    if not 0 <= value <= 20:
        raise RequestError("'top_logprobs' must be between 0 and 20")


Check = Callable[[str, Any], None]

FORWARDED: Final[Mapping[str, Check]] = {
    "max_tokens": _positive,
    "max_completion_tokens": _positive,
    "stream": _boolean,
    "stream_options": _stream_options,
    "temperature": _number,
    "top_p": _number,
    "top_k": _integer,
    "min_p": _number,
    "top_a": _number,
    "frequency_penalty": _number,
    "presence_penalty": _number,
    "repetition_penalty": _number,
    "seed": _integer,
    "stop": _stop,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _boolean,
    "response_format": _response_format,
    "logprobs": _boolean,
    "top_logprobs": _top_logprobs,
    "n": _n,
}
"""Parameters forwarded once checked (``model`` and ``messages`` are checked on their own)."""

DROPPED: Final = frozenset({"user", "metadata", "store", "usage", "prompt_cache_key", "safety_identifier"})
"""Client bookkeeping: costs nothing, and ``user``/``metadata`` would become LiteLLM labels and tags."""

_CREDENTIALS: Final = "credentials and endpoints are the proxy's own; the agent cannot choose them"
_REASONING: Final = ("reasoning budgets are billed as extra output that the hold does not cover; "
                     "ask for 'smart' instead")
_ROUTING: Final = "the model is chosen by Ralex from its aliases (auto, cheap, smart, yolo)"
REFUSED: Final[Mapping[str, str]] = {
    "extra_body": "extra_body would be merged into the upstream request unchecked",
    "extra_headers": "extra headers would reach the upstream unchecked",
    "extra_query": "extra query parameters would reach the upstream unchecked",
    "api_key": _CREDENTIALS, "api_base": _CREDENTIALS, "base_url": _CREDENTIALS, "api_version": _CREDENTIALS,
    "custom_llm_provider": _CREDENTIALS, "organization": _CREDENTIALS, "user_config": _CREDENTIALS,
    "model_list": _CREDENTIALS, "aws_access_key_id": _CREDENTIALS, "vertex_credentials": _CREDENTIALS,
    "models": _ROUTING, "route": _ROUTING, "provider": _ROUTING, "transforms": _ROUTING,
    "fallbacks": _ROUTING, "context_window_fallbacks": _ROUTING, "mock_response": _ROUTING,
    "reasoning": _REASONING, "reasoning_effort": _REASONING, "thinking": _REASONING,
    "include_reasoning": _REASONING, "verbosity": _REASONING,
    "plugins": "OpenRouter plugins (web search, file parsing) are billed apart from tokens",
    "web_search_options": "web search is billed apart from tokens",
    "prediction": "predicted outputs bill rejected prediction tokens as output",
    "modalities": "Ralex serves text answers only", "audio": "Ralex serves text answers only",
    "service_tier": "a service tier can raise the price per token",
    "functions": "use 'tools' instead", "function_call": "use 'tool_choice' instead",
}
"""Refused parameters with the reason given to the client."""

MESSAGE_KEYS: Final = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "refusal",
                                 "reasoning", "reasoning_content", "cache_control"})
ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool"})
PART_KEYS: Final = {"text": frozenset({"type", "text", "cache_control"}),
                    "image_url": frozenset({"type", "image_url", "cache_control"})}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def check_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise RequestError("the request has no 'model'; use one of Ralex's aliases: " + ", ".join(ALIASES))
    if not isinstance(model, str):
        raise RequestError(f"'model' must be a string, got {_kind(model)}")
    if model not in ALIASES:
        shown = model if len(model) <= 60 else model[:57] + "..."
        raise RequestError(f"unknown model {shown!r}; use one of: {', '.join(ALIASES)} (auto lets Ralex choose)")
    return model


def check_messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise RequestError("the request has no 'messages'; send a chat completion with a messages list")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise RequestError(f"messages[{i}] must be an object with a 'role'")
        if not isinstance(message["role"], str) or message["role"] not in ROLES:
            raise RequestError(f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}")
        unknown = sorted(str(k) for k in set(message) - MESSAGE_KEYS)
        if unknown:
            raise RequestError(f"messages[{i}] has unknown field '{unknown[0]}'; a message may hold "
                               + ", ".join(sorted(MESSAGE_KEYS)))
        _check_content(f"messages[{i}].content", message.get("content"))
        calls = message.get("tool_calls")
        if calls is not None and (not isinstance(calls, list) or not all(
                isinstance(c, Mapping) and isinstance(c.get("function"), Mapping) for c in calls)):
            raise RequestError(f"messages[{i}].tool_calls must be a list of {{id, type, function}} objects")
        for key in ("name", "tool_call_id"):
            if key in message and not isinstance(message[key], str):
                raise RequestError(f"messages[{i}].{key} must be a string")
    return messages


def _check_content(where: str, content: Any) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of parts, got {_kind(content)}")
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if not isinstance(kind, str) or kind not in PART_KEYS:
            shown = kind if isinstance(kind, str) else _kind(part)
            raise RequestError(f"{where}[{j}] is a {shown!r} part; Ralex forwards text and image_url parts only")
        unknown = sorted(set(part) - PART_KEYS[kind])
        if unknown:
            raise RequestError(f"{where}[{j}] has unknown field '{unknown[0]}'")
        if kind == "text" and not isinstance(part.get("text"), str):
            raise RequestError(f"{where}[{j}].text must be a string")
        if kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if not isinstance(url, str):
                raise RequestError(f"{where}[{j}].image_url must be {{\"url\": \"data:image/...;base64,...\"}}")
            if not url.startswith("data:"):
                raise RequestError(f"{where}[{j}]: {REMOTE_IMAGE}")


def forwardable(body: object) -> dict[str, Any]:
    """The body Ralex may forward: checked, with bookkeeping dropped; raises :class:`RequestError`.

    Checks the client's own body, before the proxy adds anything to it.
    """
    if not isinstance(body, Mapping):
        raise RequestError(f"the request body must be a JSON object, got {_kind(body)}")
    check_model(body)
    check_messages(body)
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name in ("model", "messages"):
            out[name] = value
        elif name in DROPPED:
            continue
        elif name in REFUSED:
            raise RequestError(f"parameter '{name}' is not allowed: {REFUSED[name]}")
        elif (check := FORWARDED.get(name)) is not None:
            if value is not None:
                check(name, value)
                out[name] = value
        else:
            shown = name if len(name) <= 40 else name[:37] + "..."
            raise RequestError(f"unknown parameter '{shown}'; Ralex forwards only "
                               f"model, messages, {', '.join(FORWARDED)}")
    return out


def refused_in(data: Mapping[str, Any], refused: Mapping[str, str] = REFUSED) -> str | None:
    """The first refused parameter present in a request as the proxy holds it (defence in depth)."""
    return next((name for name in refused if data.get(name) not in (None, {}, [])), None)


# --- the other APIs coding agents speak -------------------------------------------------------------
# LiteLLM translates both to an OpenRouter chat completion (/v1/responses through its chat bridge,
# set on every deployment); the allow-lists below keep what that translation turns into budgeted
# chat parameters. "Neutralized" fields are what a real client sends by default that would raise the
# bill (thinking, reasoning effort, a web search tool): they are removed, and the answer says so in
# ``x-ralex-dropped``, so Claude Code and Codex work unchanged without costing more than the hold.

APIS: Final = ("chat", "messages", "responses")
"""The request shapes Ralex serves: OpenAI chat completions, Anthropic Messages, OpenAI Responses."""

_SERVER_STATE: Final = "server-side state grows the prompt beyond what the request shows, so the hold cannot bound it"
_TOOL_CALLS: Final = "server-side tool calls are billed apart from tokens"
REFUSED_ELSEWHERE: Final[Mapping[str, str]] = {
    **REFUSED,
    "n": "Ralex holds the budget for one answer per request; send several requests instead",
    "max_completion_tokens": "the output cap is Ralex's own (max_tokens / max_output_tokens)",
    "use_chat_completions_api": "the upstream API is the proxy's own choice",
    "previous_response_id": _SERVER_STATE, "conversation": _SERVER_STATE, "prompt": _SERVER_STATE,
    "background": "background responses run unwatched, after the request that held their budget",
    "max_tool_calls": _TOOL_CALLS, "mcp_servers": _TOOL_CALLS, "container": _TOOL_CALLS,
    "truncation": "the proxy does not let the upstream rewrite the conversation",
    "top_logprobs": "log probabilities are not served on this API",
}
"""Refused on /v1/messages and /v1/responses, with the reason given to the client."""


def _text(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise RequestError(f"'{name}' must be a string, got {_kind(value)}")


def _object(name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RequestError(f"'{name}' must be an object, got {_kind(value)}")
    return value


def _list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise RequestError(f"'{name}' must be a list, got {_kind(value)}")
    return value


def _data_image(where: str, url: Any) -> None:
    if not isinstance(url, str):
        raise RequestError(f"{where} must be a data URL (\"data:image/...;base64,...\")")
    if not url.startswith("data:"):
        raise RequestError(f"{where}: {REMOTE_IMAGE}")


ANTHROPIC_BLOCKS: Final = frozenset({"text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking"})


def _anthropic_blocks(where: str, content: Any, allowed: frozenset[str] = ANTHROPIC_BLOCKS) -> None:
    if isinstance(content, str):
        return
    for j, block in enumerate(_list(where, content)):
        kind = block.get("type") if isinstance(block, Mapping) else None
        if not isinstance(kind, str) or kind not in allowed:
            shown = kind if isinstance(kind, str) else _kind(block)
            raise RequestError(f"{where}[{j}] is a {shown!r} block; Ralex forwards "
                               + ", ".join(sorted(allowed)) + " blocks only")
        if kind == "text":
            _text(f"{where}[{j}].text", block.get("text"))
        elif kind == "image":
            source = _object(f"{where}[{j}].source", block.get("source"))
            if source.get("type") != "base64" or not isinstance(source.get("data"), str):
                raise RequestError(f"{where}[{j}].source must be {{\"type\": \"base64\", \"media_type\", \"data\"}}: "
                                   f"{REMOTE_IMAGE}")
        elif kind == "tool_use":
            _text(f"{where}[{j}].name", block.get("name"))
        elif kind == "tool_result":
            _anthropic_blocks(f"{where}[{j}].content", block.get("content", ""), frozenset({"text", "image"}))


def check_anthropic_system(name: str, value: Any) -> None:
    _anthropic_blocks("system", value, frozenset({"text"}))


def check_anthropic_tools(name: str, value: Any) -> None:
    for i, tool in enumerate(_list("tools", value)):
        tool = _object(f"tools[{i}]", tool)
        kind = tool.get("type", "custom")
        if kind != "custom":
            raise RequestError(f"tools[{i}] is the server tool {kind!r}: {_TOOL_CALLS}; "
                               "Ralex forwards client tools {name, description, input_schema} only")
        _text(f"tools[{i}].name", tool.get("name"))
        if "input_schema" in tool:
            _object(f"tools[{i}].input_schema", tool["input_schema"])


def _anthropic_tool_choice(name: str, value: Any) -> None:
    choice = _object("tool_choice", value)
    if choice.get("type") not in ("auto", "any", "none", "tool"):
        raise RequestError("'tool_choice' must be {\"type\": \"auto\" | \"any\" | \"none\" | \"tool\", ...}")


MESSAGES_FORWARDED: Final[Mapping[str, Check]] = {
    "max_tokens": _positive, "stream": _boolean, "temperature": _number, "top_p": _number, "top_k": _integer,
    "stop_sequences": _stop, "system": check_anthropic_system, "tools": check_anthropic_tools,
    "tool_choice": _anthropic_tool_choice,
}
"""/v1/messages parameters forwarded once checked (``model`` and ``messages`` on their own)."""
MESSAGES_DROPPED: Final = frozenset({"metadata"})
MESSAGES_NEUTRALIZED: Final = frozenset({"thinking", "output_config", "context_management"})
"""Claude Code sends these by default; LiteLLM would turn thinking and effort into reasoning_effort."""
ANTHROPIC_ROLES: Final = frozenset({"user", "assistant", "system"})


def check_anthropic_messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ANTHROPIC_ROLES:
            raise RequestError(f"messages[{i}] must be an object with a role: " + ", ".join(sorted(ANTHROPIC_ROLES)))
        unknown = sorted(str(k) for k in set(message) - {"role", "content"})
        if unknown:
            raise RequestError(f"messages[{i}] has unknown field '{unknown[0]}'; a message holds role and content")
        _anthropic_blocks(f"messages[{i}].content", message.get("content"))
    return messages


RESPONSES_ITEMS: Final = frozenset({"message", "function_call", "function_call_output", "reasoning"})
RESPONSES_ROLES: Final = frozenset({"user", "assistant", "system", "developer"})
RESPONSES_PARTS: Final = frozenset({"input_text", "output_text", "refusal", "input_image"})


def check_responses_input(body: Mapping[str, Any]) -> None:
    value = body.get("input")
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not value:
        raise RequestError("'input' must be a string or a non-empty list of input items")
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, Mapping):
            raise RequestError(f"{where} must be an object")
        kind = item.get("type", "message")
        if kind not in RESPONSES_ITEMS:
            raise RequestError(f"{where} is a {kind!r} item; Ralex forwards " + ", ".join(sorted(RESPONSES_ITEMS))
                               + " items only")
        if kind == "message":
            if item.get("role") not in RESPONSES_ROLES:
                raise RequestError(f"{where}.role must be one of " + ", ".join(sorted(RESPONSES_ROLES)))
            content = item.get("content")
            if isinstance(content, str):
                continue
            for j, part in enumerate(_list(f"{where}.content", content)):
                part_kind = part.get("type") if isinstance(part, Mapping) else None
                if part_kind not in RESPONSES_PARTS:
                    raise RequestError(f"{where}.content[{j}] is a {part_kind!r} part; Ralex forwards "
                                       + ", ".join(sorted(RESPONSES_PARTS)) + " parts only")
                if part_kind == "input_image":
                    _data_image(f"{where}.content[{j}].image_url", part.get("image_url"))
        elif kind in ("function_call", "function_call_output"):
            _text(f"{where}.call_id", item.get("call_id"))


def _responses_tools(name: str, value: Any) -> None:
    for i, tool in enumerate(_list("tools", value)):
        tool = _object(f"tools[{i}]", tool)
        kind = tool.get("type")
        if kind == "function":
            _text(f"tools[{i}].name", tool.get("name"))
        elif kind == "namespace":
            inner = _list(f"tools[{i}].tools", tool.get("tools"))
            if not all(isinstance(t, Mapping) and t.get("type") == "function" for t in inner):
                raise RequestError(f"tools[{i}] is a namespace of non-function tools: {_TOOL_CALLS}")
        elif kind not in WEB_SEARCH_TOOLS:
            raise RequestError(f"tools[{i}] is a {kind!r} tool: {_TOOL_CALLS}; Ralex forwards function tools only")


WEB_SEARCH_TOOLS: Final = frozenset({"web_search", "web_search_preview"})
"""Codex offers web search by default; Ralex removes the tool (and says so) rather than refuse Codex."""


def _responses_tool_choice(name: str, value: Any) -> None:
    if value in ("none", "auto", "required"):
        return
    if isinstance(value, Mapping) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return
    raise RequestError("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\"}")


def _store(name: str, value: Any) -> None:
    if value is not False:
        raise RequestError(f"'store' must be false: {_SERVER_STATE}")


def _text_options(name: str, value: Any) -> None:
    extra = sorted(str(k) for k in set(_object("text", value)) - {"format"})
    if extra:
        raise RequestError(f"parameter 'text.{extra[0]}' is not allowed: Ralex forwards text.format only "
                           "(verbosity is billed as extra output)")


RESPONSES_FORWARDED: Final[Mapping[str, Check]] = {
    "instructions": _text, "max_output_tokens": _positive, "stream": _boolean,
    "temperature": _number, "top_p": _number, "tools": _responses_tools, "tool_choice": _responses_tool_choice,
    "parallel_tool_calls": _boolean, "text": _text_options,
}
"""/v1/responses parameters forwarded once checked (``input`` is checked on its own)."""
RESPONSES_DROPPED: Final = frozenset({"store", "include", "prompt_cache_key", "client_metadata", "metadata", "user",
                                      "safety_identifier"})
RESPONSES_NEUTRALIZED: Final = frozenset({"reasoning"})
"""Codex sends a reasoning effort by default; the bridge would forward it as reasoning_effort."""


def _forwardable_api(body: object, forwarded: Mapping[str, Check], dropped: frozenset[str],
                     neutralized: frozenset[str], content: str) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(body, Mapping):
        raise RequestError(f"the request body must be a JSON object, got {_kind(body)}")
    check_model(body)
    out: dict[str, Any] = {}
    removed: list[str] = []
    for name, value in body.items():
        if name in ("model", content):
            out[name] = value
        elif name in neutralized:
            removed.append(name)
        elif name == "store":
            _store(name, value)
        elif name in dropped:
            continue
        elif name in REFUSED_ELSEWHERE:
            raise RequestError(f"parameter '{name}' is not allowed: {REFUSED_ELSEWHERE[name]}")
        elif (check := forwarded.get(name)) is not None:
            if value is not None:
                check(name, value)
                out[name] = value
        else:
            shown = name if len(name) <= 40 else name[:37] + "..."
            raise RequestError(f"unknown parameter '{shown}'; Ralex forwards only model, {content}, "
                               f"{', '.join(k for k in forwarded if k != content)}")
    return out, removed


def forwardable_messages(body: object) -> tuple[dict[str, Any], list[str]]:
    """An Anthropic Messages body Ralex may forward, and the neutralized fields it removed."""
    out, removed = _forwardable_api(body, MESSAGES_FORWARDED, MESSAGES_DROPPED, MESSAGES_NEUTRALIZED, "messages")
    check_anthropic_messages(out)
    return out, removed


def forwardable_responses(body: object) -> tuple[dict[str, Any], list[str]]:
    """An OpenAI Responses body Ralex may forward, and the neutralized fields or tools it removed."""
    out, removed = _forwardable_api(body, RESPONSES_FORWARDED, RESPONSES_DROPPED, RESPONSES_NEUTRALIZED, "input")
    if "input" not in out:
        raise RequestError("the request has no 'input'; send a string or a list of input items")
    check_responses_input(out)
    tools = out.get("tools")
    if tools:
        kept = [t for t in tools if t.get("type") not in WEB_SEARCH_TOOLS]
        if len(kept) != len(tools):
            removed.append("tools.web_search")
            out["tools"] = kept
        if not kept:
            del out["tools"]
            out.pop("tool_choice", None)
    return out, removed
