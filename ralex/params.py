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


def refused_in(data: Mapping[str, Any]) -> str | None:
    """The first refused parameter present in a request as the proxy holds it (defence in depth)."""
    return next((name for name in REFUSED if data.get(name) not in (None, {}, [])), None)
