"""What a client may send in a chat completion: an allow-list, checked before anything is forwarded.

The agent holds a proxy key and runs any command, so the request body is hostile input. Every
top-level parameter is one of:

- **forwarded**, after its type is checked: it cannot raise the bill beyond what the hold covers
  (the prompt is bounded from above, the output by ``max_tokens``, which Ralex sets);
- **dropped**: client bookkeeping that costs nothing and would only grow metric labels;
- **refused** with a 400 that names it: anything else, in particular every parameter that can
  raise the bill (``n`` above 1, reasoning budgets, OpenRouter's model lists and provider routing,
  plugins) or redirect the call (credentials, base URLs, ``extra_body``).

The body itself is read once, by :func:`parse_body`: UTF-8, then JSON no deeper than
:data:`MAX_DEPTH` and without NaN or Infinity (which Python's json would accept). Every content part
of every API is checked by one table per API (:data:`PARTS`): text parts hold strings, image parts
are inline data URLs sized by :mod:`ralex.media`, wherever the API lets content appear.

Pure functions; no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ralex.media import REMOTE_IMAGE, ImageError, data_url_image_size

ALIASES: Final = ("auto", "cheap", "smart", "yolo")
"""The model names a client may ask for (the one list; the policy imports it)."""


class RequestError(ValueError):
    """The request body cannot be served; the message says what is wrong and how to fix it."""


# --- the body: parsed once, bounded -----------------------------------------------------------------

MAX_DEPTH: Final = 64
"""How deep objects and lists may nest in a request body (the body itself is level 1). Coding agents
stay far below it: a tool schema of OpenCode, Claude Code or Codex sits 4-5 levels down and nests
about 10 more; 64 leaves room for deep MCP schemas while every walker after the gate (LiteLLM's
schema rewrites, Ralex's own bound) stays far from Python's recursion limit."""

_BRACKETS: Final = bytes.maketrans(b"[{]}", b"(())")
_NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in b'[]{}"')
_RUNS: Final = re.compile(rb"\(+|\)+")


def nests_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether the JSON text ``raw`` nests objects and lists more than ``limit`` deep.

    Linear, and in C but for one step per run of brackets: escaped backslashes and quotes are
    removed, then everything but brackets and quotes; a pair of adjacent quotes goes too (a string
    without brackets, or two strings with none between them), every other quote left then starts or
    ends a string, and the running depth of the brackets outside strings is followed. Text with no
    more than ``limit`` opening brackets is answered at once. (For text that is not JSON the answer is
    about its brackets; the parse then names the real problem.)
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    structure = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    brackets = b"".join(structure.split(b'"')[::2]).translate(_BRACKETS)
    if b"(" * (limit + 1) in brackets:
        return True
    brackets = brackets.replace(b"()", b"")  # the innermost pairs: one level less, far fewer runs
    limit -= 1
    depth = 0
    for run in _RUNS.finditer(brackets):
        if brackets[run.start()] == 0x28:  # "("
            depth += run.end() - run.start()
            if depth > limit:
                return True
        else:
            depth -= run.end() - run.start()
    return False


def _no_constant(name: str) -> Any:
    raise RequestError(f"the request body holds {name}, which is not a JSON number (JSON has no NaN or Infinity); "
                       "send a finite number, or leave the field out")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise RequestError(f"the number {shown} in the request body is too large to be a finite number; "
                           "send a finite number")
    return value


def parse_body(raw: bytes, *, what: str = "a JSON object", max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of a request body, read once: UTF-8, nested at most ``max_depth`` deep, every
    number finite. Raises :class:`RequestError` naming the problem (``what``: what to send instead)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the request body is not valid UTF-8 (byte {exc.start}); send JSON in UTF-8") from None
    deep = (f"the request body nests objects and lists more than {max_depth} levels deep; Ralex accepts at most "
            f"{max_depth} (a deep tool schema can share its parts through $defs and $ref instead)")
    if nests_deeper_than(raw, max_depth):
        raise RequestError(deep)
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise RequestError(deep) from None
    except RequestError:
        raise
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            raise RequestError("the request body holds a number with more than 4300 digits; send a shorter "
                               "number") from None
        raise RequestError(f"the request body is not valid JSON ({exc}); send {what}") from None


# --- parameters ----------------------------------------------------------------------------------------

def _number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"'{name}' must be a number, got {_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(f"'{name}' must be a finite number, got {value}")


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


# --- content: one table of part kinds per API -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Part:
    """A kind of content part an API may carry, and what Ralex checks in it before forwarding it.

    ``places``: where it may appear (a message, a system prompt, a tool result, a function call's
    output); ``text``: the field holding its text, which must be a string; ``image``: reads its image as a
    URL, which must be an inline data URL of an image :mod:`ralex.media` can size; ``strings``: other
    fields that must be strings; ``nested``: (field, place) of content it holds itself; ``fields``: every
    field it may hold (None: not restricted).
    """

    places: frozenset[str]
    text: str | None = None
    image: Callable[[str, Mapping[str, Any]], object] | None = None
    strings: tuple[str, ...] = ()
    nested: tuple[str, str] | None = None
    fields: frozenset[str] | None = None


def _chat_image(where: str, part: Mapping[str, Any]) -> object:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str):
        raise RequestError(f"{where}.image_url must be {{\"url\": \"data:image/...;base64,...\"}}")
    return url


def _anthropic_image(where: str, part: Mapping[str, Any]) -> object:
    source = _object(f"{where}.source", part.get("source"))
    if source.get("type") != "base64" or not isinstance(source.get("data"), str):
        raise RequestError(f"{where}.source must be {{\"type\": \"base64\", \"media_type\", \"data\"}}: {REMOTE_IMAGE}")
    _text(f"{where}.source.media_type", source.get("media_type"))
    return f"data:{source['media_type']};base64,{source['data']}"


def _responses_image(where: str, part: Mapping[str, Any]) -> object:
    if part.get("image_url") is None and part.get("file_id") is not None:
        raise RequestError(f"{where}.file_id names an uploaded file: {_SERVER_STATE}; send the image as "
                           "image_url \"data:image/...;base64,...\"")
    url = part.get("image_url")
    if not isinstance(url, str):
        raise RequestError(f"{where}.image_url must be a data URL (\"data:image/...;base64,...\"), got {_kind(url)}")
    return url


_MESSAGE: Final = frozenset({"message"})
_ANTHROPIC_TEXT: Final = frozenset({"message", "system", "tool_result"})
_ANTHROPIC_IMAGE: Final = frozenset({"message", "tool_result"})
_RESPONSES_INPUT: Final = frozenset({"message", "function_call_output"})
PARTS: Final[Mapping[str, Mapping[str, Part]]] = {
    "chat": {  # messages[].content of every role
        "text": Part(_MESSAGE, text="text", fields=frozenset({"type", "text", "cache_control"})),
        "image_url": Part(_MESSAGE, image=_chat_image, fields=frozenset({"type", "image_url", "cache_control"})),
    },
    "messages": {  # messages[].content, system, and a tool_result's own content
        "text": Part(_ANTHROPIC_TEXT, text="text"),
        "image": Part(_ANTHROPIC_IMAGE, image=_anthropic_image),
        "tool_use": Part(_MESSAGE, strings=("name",)),
        "tool_result": Part(_MESSAGE, nested=("content", "tool_result")),
        "thinking": Part(_MESSAGE, text="thinking"),
        "redacted_thinking": Part(_MESSAGE, strings=("data",)),
    },
    "responses": {  # input[] messages' content and function_call_output.output
        "input_text": Part(_RESPONSES_INPUT, text="text"),
        "output_text": Part(_MESSAGE, text="text"),
        "refusal": Part(_MESSAGE, text="refusal"),
        "input_image": Part(_RESPONSES_INPUT, image=_responses_image),
    },
}
"""Every content part Ralex forwards, per API (:data:`APIS`), and where it may appear; anything else
is refused with a 400 naming it (and why, for the kinds in :data:`REFUSED_PARTS`)."""

_FILES: Final = ("files and documents are parsed by the provider and billed apart from tokens, so the hold cannot "
                 "bound them; send their text")
_AUDIO: Final = "audio is billed apart from text tokens; send a transcript"
REFUSED_PARTS: Final[Mapping[str, str]] = {
    "file": _FILES, "input_file": _FILES, "document": _FILES, "input_audio": _AUDIO, "audio": _AUDIO,
    "server_tool_use": "server-side tool calls are billed apart from tokens",
    "web_search_tool_result": "server-side tool calls are billed apart from tokens",
}
"""Part kinds some client may send, with the reason they are not forwarded."""


def _listing(kinds: list[str]) -> str:
    return kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]


def check_content(api: str, place: str, where: str, content: Any) -> None:
    """Check one place holding content (a string, or a list of parts) against ``api``'s part table."""
    if isinstance(content, str) or (content is None and api == "chat"):
        return
    table = PARTS[api]
    noun = "block" if api == "messages" else "part"
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of {noun}s, got {_kind(content)}")
    allowed = [kind for kind, rule in table.items() if place in rule.places]
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if not isinstance(part, Mapping) or not isinstance(kind, str):
            got = _kind(part) if not isinstance(part, Mapping) else f"a 'type' of {_kind(kind)}"
            raise RequestError(f"{at} must be a {noun} object with a 'type' ({_listing(allowed)}), got {got}")
        rule = table.get(kind)
        if rule is None or place not in rule.places:
            why = f" ({REFUSED_PARTS[kind]})" if kind in REFUSED_PARTS else ""
            raise RequestError(f"{at} is a {kind!r} {noun}; Ralex forwards {_listing(allowed)} {noun}s only{why}")
        if rule.fields is not None:
            unknown = sorted(str(k) for k in set(part) - rule.fields)
            if unknown:
                raise RequestError(f"{at} has unknown field '{unknown[0]}'")
        if rule.text is not None and not isinstance(part.get(rule.text), str):
            raise RequestError(f"{at}.{rule.text} must be a string, got {_kind(part.get(rule.text))}")
        for field in rule.strings:
            _text(f"{at}.{field}", part.get(field))
        if rule.image is not None:
            check_image(f"{at}", rule.image(at, part))
        if rule.nested is not None:
            field, inner = rule.nested
            check_content(api, inner, f"{at}.{field}", part.get(field, ""))


def check_image(where: str, url: object) -> None:
    """The one image check: an inline data URL (the upstream would fetch any address it names) of an
    image whose pixel size :mod:`ralex.media` can read and accepts."""
    if not isinstance(url, str):
        raise RequestError(f"{where} must be a data URL (\"data:image/...;base64,...\"), got {_kind(url)}")
    try:
        data_url_image_size(url)
    except ImageError as exc:
        raise RequestError(f"{where}: {exc}") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _one_of(value: Any, choices: frozenset[str]) -> bool:
    """``value in choices`` for any JSON value (a list or an object is never one of them)."""
    return isinstance(value, str) and value in choices


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
        check_content("chat", "message", f"messages[{i}].content", message.get("content"))
        calls = message.get("tool_calls")
        if calls is not None and (not isinstance(calls, list) or not all(
                isinstance(c, Mapping) and isinstance(c.get("function"), Mapping) for c in calls)):
            raise RequestError(f"messages[{i}].tool_calls must be a list of {{id, type, function}} objects")
        for key in ("name", "tool_call_id"):
            if key in message and not isinstance(message[key], str):
                raise RequestError(f"messages[{i}].{key} must be a string")
    return messages


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


def check_anthropic_system(name: str, value: Any) -> None:
    check_content("messages", "system", "system", value)


def check_anthropic_tools(name: str, value: Any) -> None:
    for i, tool in enumerate(_list("tools", value)):
        tool = _object(f"tools[{i}]", tool)
        kind = tool.get("type", "custom")
        if kind != "custom":
            raise RequestError(f"tools[{i}] is the server tool {kind!r}: {_TOOL_CALLS}; "
                               "Ralex forwards client tools {name, description, input_schema} only")
        _function_tool(f"tools[{i}]", tool, "input_schema")


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
        if not isinstance(message, Mapping) or not _one_of(message.get("role"), ANTHROPIC_ROLES):
            raise RequestError(f"messages[{i}] must be an object with a role: " + ", ".join(sorted(ANTHROPIC_ROLES)))
        unknown = sorted(str(k) for k in set(message) - {"role", "content"})
        if unknown:
            raise RequestError(f"messages[{i}] has unknown field '{unknown[0]}'; a message holds role and content")
        check_content("messages", "message", f"messages[{i}].content", message.get("content"))
    return messages


RESPONSES_ITEMS: Final = frozenset({"message", "function_call", "function_call_output", "reasoning"})
RESPONSES_ROLES: Final = frozenset({"user", "assistant", "system", "developer"})


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
        if not _one_of(kind, RESPONSES_ITEMS):
            shown = kind if isinstance(kind, str) else _kind(kind)
            raise RequestError(f"{where} is a {shown!r} item; Ralex forwards " + ", ".join(sorted(RESPONSES_ITEMS))
                               + " items only")
        if kind == "message":
            if not _one_of(item.get("role"), RESPONSES_ROLES):
                raise RequestError(f"{where}.role must be one of " + ", ".join(sorted(RESPONSES_ROLES)))
            check_content("responses", "message", f"{where}.content", _present(f"{where}.content", item))
        elif kind == "function_call":
            for field in ("call_id", "name", "arguments"):
                _text(f"{where}.{field}", item.get(field))
        elif kind == "function_call_output":
            _text(f"{where}.call_id", item.get("call_id"))
            check_content("responses", "function_call_output", f"{where}.output", _present(f"{where}.output", item))


def _present(where: str, item: Mapping[str, Any]) -> Any:
    field = where.rsplit(".", 1)[-1]
    if item.get(field) is None:
        raise RequestError(f"{where} is missing; send a string or a list of parts")
    return item[field]


def _function_tool(where: str, tool: Mapping[str, Any], schema: str = "parameters") -> str:
    """A client tool's name, once its name, description and schema have the types the upstream needs."""
    _text(f"{where}.name", tool.get("name"))
    if tool.get("description") is not None:
        _text(f"{where}.description", tool["description"])
    if tool.get(schema) is not None:
        _object(f"{where}.{schema}", tool[schema])
    return str(tool["name"])


def _responses_tools(name: str, value: Any) -> None:
    functions: set[str] = set()
    namespaced: set[str] = set()
    for i, tool in enumerate(_list("tools", value)):
        tool = _object(f"tools[{i}]", tool)
        kind = tool.get("type")
        if kind == "function":
            functions.add(_function_tool(f"tools[{i}]", tool))
        elif kind == "namespace":
            _text(f"tools[{i}].name", tool.get("name"))
            inner = _list(f"tools[{i}].tools", tool.get("tools"))
            if not all(isinstance(t, Mapping) and t.get("type") == "function" for t in inner):
                raise RequestError(f"tools[{i}] is a namespace of non-function tools: {_TOOL_CALLS}")
            for j, member in enumerate(inner):
                namespaced.add(f"{tool['name']}__{_function_tool(f'tools[{i}].tools[{j}]', member)}")
        elif not _one_of(kind, WEB_SEARCH_TOOLS):
            shown = kind if isinstance(kind, str) else _kind(kind)
            raise RequestError(f"tools[{i}] is a {shown!r} tool: {_TOOL_CALLS}; Ralex forwards function tools only")
    if clash := sorted(functions & namespaced):
        raise RequestError(f"tool name {clash[0]!r} is both a function and a namespace's function (namespace__name); "
                           "rename one")


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
