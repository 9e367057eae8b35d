"""A faithful, deterministic fake of the OpenRouter HTTP API (models, key, chat completions, generations).

Wire shapes follow OpenRouter's docs: string per-token prices in ``/api/v1/models``, ``usage.cost`` in
every completion (and in the last SSE chunk of a stream), ``: OPENROUTER PROCESSING`` SSE comments,
``{"error": {"code", "message", "metadata"}}`` errors and ``/api/v1/generation?id=`` records. Billing follows
the real service: a generation the provider produced is billed even if the client never sees it (a timed-out
request, a cancelled stream), an upstream error status bills nothing. A ``/_fake/*`` control API scripts
replies, injects faults and changes settings; nothing there exists on the real service.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from tests.fake_openrouter.media import MediaCount, count_media

Json = dict[str, Any]

KEY_PREFIX = "sk-or-"
PROCESSING_COMMENT = ": OPENROUTER PROCESSING\n\n"
TOOL_MARKER = re.compile(r"\[\[tool:([A-Za-z0-9_.\-]+)\s*(\{.*?\})?\s*\]\]", re.DOTALL)
PROVIDERS = {"google": "Google", "anthropic": "Anthropic", "openai": "OpenAI"}
# finish_reason -> the provider's own reason, as OpenRouter reports it in native_finish_reason.
NATIVE_FINISH = {
    "Google": {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"},
    "Anthropic": {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"},
}


# id, display name, prompt $/token, completion $/token, context length (OpenRouter list prices)
DEFAULT_MODELS = [
    ("google/gemini-2.5-flash-lite", "Google: Gemini 2.5 Flash Lite", "0.0000001", "0.0000004", 1048576),
    ("google/gemini-2.5-flash", "Google: Gemini 2.5 Flash", "0.0000003", "0.0000025", 1048576),
    ("anthropic/claude-sonnet-4.5", "Anthropic: Claude Sonnet 4.5", "0.000003", "0.000015", 1000000),
    ("openai/gpt-4o-mini", "OpenAI: GPT-4o-mini", "0.00000015", "0.0000006", 128000),
]


def catalog_entry(model_id: str, name: str, prompt: str, completion: str, context_length: int) -> Json:
    """One model in OpenRouter's ``/api/v1/models`` shape."""
    zero = ("request", "image", "web_search", "internal_reasoning", "input_cache_read", "input_cache_write")
    return {
        "id": model_id,
        "canonical_slug": model_id,
        "hugging_face_id": "",
        "name": name,
        "created": 1750000000,
        "description": f"{name} (fake OpenRouter catalog entry).",
        "context_length": context_length,
        "architecture": {
            "modality": "text+image->text",
            "input_modalities": ["text", "image"],
            "output_modalities": ["text"],
            "tokenizer": "Other",
            "instruct_type": None,
        },
        "pricing": {"prompt": prompt, "completion": completion, **dict.fromkeys(zero, "0")},
        "top_provider": {
            "context_length": context_length,
            "max_completion_tokens": 65536,
            "is_moderated": False,
        },
        "per_request_limits": None,
        "supported_parameters": ["max_tokens", "temperature", "tools", "tool_choice", "stop", "top_p"],
    }


def default_catalog() -> list[Json]:
    """A fresh copy of the default catalog."""
    return [catalog_entry(*row) for row in DEFAULT_MODELS]


def provider_of(model_id: str) -> str:
    """The upstream provider name OpenRouter reports for a model id ("google/..." -> "Google")."""
    prefix = model_id.split("/")[0]
    return PROVIDERS.get(prefix, prefix.title())


class Fault(BaseModel):
    """A scripted failure; ``times`` counts down (null = every matching request until cleared)."""

    kind: Literal["status", "timeout", "slow", "midstream_error"]
    status: int = 503
    message: str | None = None
    code: int | str = "server_error"  # midstream_error's error.code (OpenRouter sends str or number)
    seconds: float = 30.0
    chunk_delay: float = 0.2
    after_chunks: int = 2
    times: int | None = 1
    model: str | None = None


class ScriptedToolCall(BaseModel):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ScriptedReply(BaseModel):
    """A queued reply; consumed by the next request (for ``model``, if set)."""

    content: str | None = None
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)
    model: str | None = None
    requires_tools: bool = False
    """Only a request that offers tools takes this reply (an agent's title call does not)."""


class FaultsBody(BaseModel):
    faults: list[Fault]


class ScriptBody(BaseModel):
    replies: list[ScriptedReply]


CancelBilling = Literal["partial", "full"]


class GenerationDelay(BaseModel):
    """How long a billed generation stays invisible to ``GET /api/v1/generation`` (404 meanwhile)."""

    lookups: int = Field(0, ge=0)
    """The first ``lookups`` lookups of each generation answer 404."""
    seconds: float = Field(0.0, ge=0)
    """Lookups within ``seconds`` of the generation being billed answer 404."""


class SettingsBody(BaseModel):
    """``POST /_fake/settings``: only the fields given change."""

    cancel_billing: CancelBilling | None = None
    generation_delay: GenerationDelay | None = None


@dataclass
class Generation:
    """A billed generation: its ``/api/v1/generation`` data, when it was billed, lookups so far."""

    data: Json
    billed_at: float
    lookups: int = 0


@dataclass
class FakeState:
    """Everything the fake knows: catalog, queued faults and replies, settings, recorded requests, billing."""

    catalog: list[Json] = field(default_factory=default_catalog)
    faults: list[Fault] = field(default_factory=list)
    scripts: list[ScriptedReply] = field(default_factory=list)
    requests: list[Json] = field(default_factory=list)
    usage_cost: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cancel_billing: CancelBilling = "full"
    """What a stream cancelled by the client bills: ``"full"`` (the provider finishes the generation anyway,
    as most do) or ``"partial"`` (the provider stops: prompt + the completion tokens sent so far)."""
    generation_delay: GenerationDelay = field(default_factory=GenerationDelay)
    generations: dict[str, Generation] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._initial_settings = self.settings()

    def settings(self) -> Json:
        return {"cancel_billing": self.cancel_billing, "generation_delay": self.generation_delay.model_dump()}

    def apply_settings(self, settings: SettingsBody) -> None:
        if settings.cancel_billing is not None:
            self.cancel_billing = settings.cancel_billing
        if settings.generation_delay is not None:
            self.generation_delay = settings.generation_delay

    def reset(self) -> None:
        """Forget faults, scripts, recorded requests, generations and usage; settings go back to their
        initial values (the catalog stays)."""
        self.faults.clear()
        self.scripts.clear()
        self.requests.clear()
        self.generations.clear()
        self.usage_cost, self.prompt_tokens, self.completion_tokens = 0.0, 0, 0
        self.apply_settings(SettingsBody.model_validate(self._initial_settings))

    def record_generation(self, data: Json) -> None:
        """Bill a generation: add it to the totals and make it (eventually) visible to lookups."""
        self.usage_cost = round(self.usage_cost + data["total_cost"], 12)
        self.prompt_tokens += data["tokens_prompt"]
        self.completion_tokens += data["tokens_completion"]
        self.generations[data["id"]] = Generation(data, time.monotonic())

    def visible_generation(self, generation_id: str) -> Json | None:
        """The generation's data, unless it does not exist or ``generation_delay`` still hides it."""
        generation = self.generations.get(generation_id)
        if generation is None:
            return None
        generation.lookups += 1
        delay = self.generation_delay
        if generation.lookups <= delay.lookups or time.monotonic() - generation.billed_at < delay.seconds:
            return None
        return generation.data

    def model(self, model_id: str) -> Json | None:
        return next((m for m in self.catalog if m["id"] == model_id), None)

    def take_fault(self, kind: str, model: str) -> Fault | None:
        """Consume one use of the first fault of ``kind`` that applies to ``model``."""
        for fault in self.faults:
            if fault.kind == kind and fault.model in (None, model):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def take_script(self, model: str, has_tools: bool = True) -> ScriptedReply | None:
        for reply in self.scripts:
            if reply.model in (None, model) and (has_tools or not reply.requires_tools):
                self.scripts.remove(reply)
                return reply
        return None


def error_body(code: int | str, message: str, metadata: Json | None = None) -> Json:
    error: Json = {"code": code, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    return {"error": error}


def error_response(status: int, message: str, metadata: Json | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, metadata), status_code=status)


def check_key(request: Request) -> JSONResponse | None:
    """OpenRouter's 401s: no bearer token at all, or a key it does not know."""
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return error_response(401, "No auth credentials found")
    if not key.strip().startswith(KEY_PREFIX):
        return error_response(401, "User not found.")
    return None


def text_parts(content: Any) -> list[str]:
    """The text of a message ``content``: a string, or the ``text`` parts of a list."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def text_of(content: Any) -> str:
    return " ".join(text_parts(content))


def tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def prompt_tokens(body: Json, media: MediaCount | None = None) -> int:
    """ceil((content chars + compact tools JSON chars) / 4) + 4 per message + non-text part tokens."""
    chars = sum(len(part) for m in body["messages"] for part in text_parts(m.get("content")))
    if body.get("tools"):
        chars += len(json.dumps(body["tools"], separators=(",", ":")))
    media = media if media is not None else count_media(body["messages"])
    return tokens(chars) + 4 * len(body["messages"]) + media.tokens


def max_tokens_of(body: Json) -> int | None:
    limits = [body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None]
    return min(limits) if limits else None


def validate(body: Any) -> str | None:
    """The 400 message OpenRouter would give for this body, if any."""
    if not isinstance(body, dict):
        return "Invalid request body: expected a JSON object"
    if not body.get("model"):
        return "No models provided"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 'Input required: specify "prompt" or "messages"'
    if not all(isinstance(m, dict) and m.get("role") for m in messages):
        return "Invalid messages: every message needs a role"
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return f"{key} must be a positive integer"
    return None


@dataclass
class Reply:
    """What the fake model says: text and/or tool calls (``arguments`` as JSON strings)."""

    content: str
    tool_calls: list[Json]
    finish_reason: str = "stop"


def decide_reply(body: Json, script: ScriptedReply | None) -> Reply:
    """Deterministic reply: a scripted one, a ``[[tool:NAME {args}]]`` call, "Done." or an echo."""
    messages = body["messages"]
    tools_allowed = bool(body.get("tools")) and body.get("tool_choice") != "none"
    last_user = next((text_of(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")
    calls: list[tuple[str, str]] = []
    if script is not None and script.tool_calls and tools_allowed:
        calls = [
            (c.name, c.arguments if isinstance(c.arguments, str) else json.dumps(c.arguments))
            for c in script.tool_calls
        ]
    elif script is None and tools_allowed and messages[-1]["role"] == "user":
        calls = [(name, args or "{}") for name, args in TOOL_MARKER.findall(last_user)]
    if script is not None and script.content is not None:
        content = script.content
    elif calls:
        content = ""
    elif messages[-1]["role"] == "tool":
        content = "Done."
    else:
        content = "OK: " + last_user[:40]
    tool_calls = [
        {"id": f"call_{secrets.token_hex(12)}", "type": "function", "function": {"name": n, "arguments": a}}
        for n, a in calls
    ]
    return Reply(content, tool_calls, "tool_calls" if tool_calls else "stop")


def truncate(reply: Reply, limit: int | None) -> Reply:
    """Cut the reply so its completion tokens never exceed ``limit`` (finish_reason "length")."""
    if limit is None or completion_tokens(reply) <= limit:
        return reply
    budget = limit * 4
    content = reply.content[:budget]
    budget -= len(content)
    calls: list[Json] = []
    for call in reply.tool_calls:
        if budget <= 0:
            break
        args = call["function"]["arguments"][:budget]
        budget -= len(args)
        calls.append({**call, "function": {**call["function"], "arguments": args}})
    return Reply(content, calls, "length")


def completion_tokens(reply: Reply) -> int:
    return tokens(len(reply.content) + sum(len(c["function"]["arguments"]) for c in reply.tool_calls))


def make_usage(model: Json, prompt: int, completion: int, images: int = 0) -> Json:
    """OpenRouter's usage object; ``cost`` is tokens x the catalog's per-token prices (+ per request, per
    input image)."""
    pricing = model["pricing"]
    cost = (
        Decimal(pricing["prompt"]) * prompt
        + Decimal(pricing["completion"]) * completion
        + Decimal(pricing.get("request", "0"))
        + Decimal(pricing.get("image", "0")) * images
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": float(cost),
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
        "cost_details": {"upstream_inference_cost": None},
    }


def sse(payload: Json | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def content_pieces(text: str) -> list[str]:
    """A few words per streamed chunk; the pieces concatenate back to ``text``."""
    return re.findall(r"(?:\S+\s*){1,3}|\s+", text)


def stream_deltas(reply: Reply) -> list[Json]:
    """The ``delta`` of every content-bearing chunk, the role chunk first."""
    deltas: list[Json] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": piece} for piece in content_pieces(reply.content)]
    for index, call in enumerate(reply.tool_calls):
        fn = call["function"]
        head = {"index": index, "id": call["id"], "type": "function"}
        deltas.append({"tool_calls": [{**head, "function": {"name": fn["name"], "arguments": ""}}]})
        args = fn["arguments"]
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": args[i : i + 16]}}]}
            for i in range(0, len(args), 16)
        ]
    return deltas


def delta_chars(delta: Json) -> int:
    """The completion characters a stream delta carries (content and tool-call arguments)."""
    calls = delta.get("tool_calls") or []
    return len(delta.get("content") or "") + sum(len(c["function"].get("arguments", "")) for c in calls)


class Completion:
    """One chat completion being answered, as JSON or as an SSE stream, and the generation it bills."""

    def __init__(self, state: FakeState, body: Json, reply: Reply, model: Json, record: Json,
                 started: float, headers: Any = None) -> None:
        self.state, self.body, self.reply, self.model, self.record = state, body, reply, model, record
        self.id = f"gen-{int(time.time())}-{secrets.token_urlsafe(15)}"
        self.upstream_id = f"chatcmpl-{uuid.uuid4()}"
        self.created = int(time.time())
        self.created_at = datetime.now(UTC).isoformat()
        self.started = started
        self.first_output: float | None = None
        self.headers = dict(headers or {})
        self.streamed = bool(body.get("stream"))
        self.provider = provider_of(model["id"])
        self.media = count_media(body["messages"])
        self.usage = make_usage(model, prompt_tokens(body, self.media), completion_tokens(reply), self.media.images)
        self.billed: Json | None = None
        record["generation_id"] = self.id

    def native_finish(self, reason: str) -> str:
        return NATIVE_FINISH.get(self.provider, {}).get(reason, reason)

    def mark_output(self) -> None:
        if self.first_output is None:
            self.first_output = time.monotonic()

    def bill(self, completion: int, finish_reason: str | None, cancelled: bool = False) -> None:
        """Bill the generation once: the prompt and ``completion`` tokens, in OpenRouter's generation shape."""
        if self.billed is not None:
            return
        prompt = self.usage["prompt_tokens"]
        cost = make_usage(self.model, prompt, completion, self.media.images)["cost"]
        now = time.monotonic()
        latency = round(((self.first_output or now) - self.started) * 1000)
        headers = {k.lower(): v for k, v in self.headers.items()}
        referer = headers.get("http-referer") or headers.get("referer")
        self.billed = {
            "id": self.id,
            "upstream_id": self.upstream_id,
            "total_cost": cost,
            "cache_discount": None,
            "upstream_inference_cost": None,
            "created_at": self.created_at,
            "model": self.model["id"],
            "app_id": None,
            "streamed": self.streamed,
            "cancelled": cancelled,
            "provider_name": self.provider,
            "latency": latency,
            "moderation_latency": None,
            "generation_time": round((now - self.started) * 1000),
            "finish_reason": finish_reason,
            "native_finish_reason": self.native_finish(finish_reason) if finish_reason else None,
            "tokens_prompt": prompt,
            "tokens_completion": completion,
            "native_tokens_prompt": prompt,
            "native_tokens_completion": completion,
            "native_tokens_completion_images": 0,
            "native_tokens_reasoning": 0,
            "native_tokens_cached": 0,
            "num_media_prompt": self.media.media,
            "num_input_audio_prompt": self.media.audio,
            "num_media_completion": 0,
            "num_search_results": 0,
            "num_fetches": 0,
            "origin": referer or "",
            "usage": cost,
            "is_byok": False,
            "external_user": self.body.get("user") if isinstance(self.body.get("user"), str) else None,
            "api_type": "completions",
            "router": None,
            "http_referer": referer,
            "user_agent": headers.get("user-agent"),
            "provider_responses": [{"status": 200, "provider_name": self.provider}],
            "preset_id": None,
            "service_tier": None,
            "data_region": "global",
            "web_search_engine": None,
        }
        self.state.record_generation(self.billed)
        self.record["billed_cost"] = cost
        self.record["cancelled"] = cancelled

    def bill_full(self) -> None:
        self.bill(self.usage["completion_tokens"], self.reply.finish_reason)

    def bill_cancelled(self, delivered_chars: int) -> None:
        """The client went away: bill per ``cancel_billing`` (full reply, or only what was sent)."""
        if self.state.cancel_billing == "full":
            self.bill(self.usage["completion_tokens"], self.reply.finish_reason, cancelled=True)
        else:
            self.bill(tokens(delivered_chars), None, cancelled=True)

    def envelope(self, obj: str, choices: list[Json]) -> Json:
        return {
            "id": self.id,
            "provider": self.provider,
            "model": self.model["id"],
            "object": obj,
            "created": self.created,
            "choices": choices,
            "system_fingerprint": None,
        }

    def json(self) -> Json:
        message: Json = {
            "role": "assistant",
            "content": self.reply.content,
            "refusal": None,
            "reasoning": None,
        }
        if self.reply.tool_calls:
            message["tool_calls"] = self.reply.tool_calls
        choice = {
            "logprobs": None,
            "finish_reason": self.reply.finish_reason,
            "native_finish_reason": self.native_finish(self.reply.finish_reason),
            "index": 0,
            "message": message,
        }
        self.mark_output()
        self.bill_full()
        return {**self.envelope("chat.completion", [choice]), "usage": self.usage}

    def chunk(self, delta: Json, finish_reason: str | None = None) -> Json:
        native = self.native_finish(finish_reason) if finish_reason else None
        choice = {
            "index": 0,
            "delta": delta,
            "finish_reason": finish_reason,
            "native_finish_reason": native,
            "logprobs": None,
        }
        return self.envelope("chat.completion.chunk", [choice])

    async def stream(self, chunk_delay: float, fail_after: Fault | None) -> AsyncIterator[str]:
        """Comment, role/content/tool-call chunks, finish chunk, usage chunk, ``[DONE]``.

        Bills when the reply is complete, when a mid-stream error cuts it (the chunks sent so far) or, if the
        client goes away first, per ``cancel_billing``.
        """
        delivered = 0  # completion characters in chunks the client has taken
        try:
            yield PROCESSING_COMMENT
            deltas = stream_deltas(self.reply)
            chunks = [(self.chunk(d), delta_chars(d)) for d in deltas]
            chunks.append((self.chunk({}, self.reply.finish_reason), 0))
            for sent, (chunk, chars) in enumerate(chunks):
                if fail_after is not None and sent >= min(fail_after.after_chunks, len(chunks) - 1):
                    message = fail_after.message or "Provider disconnected unexpectedly"
                    error = error_body(fail_after.code, message, {"provider_name": self.provider})
                    self.bill(tokens(delivered), "error")
                    yield sse({**self.chunk({"content": ""}, "error"), **error})
                    return
                if sent and chunk_delay:
                    await asyncio.sleep(chunk_delay)
                self.mark_output()
                yield sse(chunk)
                delivered += chars
            self.bill_full()
            yield sse({**self.envelope("chat.completion.chunk", []), "usage": self.usage})
            yield sse("[DONE]")
        finally:
            if self.billed is None:
                self.bill_cancelled(delivered)


class GenerationStream(StreamingResponse):
    """A streaming response that closes its generator as soon as the client is gone, so a cancelled
    stream is billed right away (not whenever the generator is garbage-collected)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


def redact(headers: Any) -> Json:
    return {k: ("[redacted]" if k.lower() == "authorization" else v) for k, v in headers.items()}


def create_app(state: FakeState | None = None) -> FastAPI:
    """The fake OpenRouter as an ASGI app; pass a ``FakeState`` to share or pre-seed it."""
    app = FastAPI(title="Fake OpenRouter", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.fake = fake = state if state is not None else FakeState()

    @app.get("/api/v1/models")
    async def list_models() -> Json:
        return {"data": fake.catalog}

    @app.get("/api/v1/key")
    @app.get("/api/v1/auth/key")
    async def key_info(request: Request) -> Any:
        if (denied := check_key(request)) is not None:
            return denied
        key = request.headers["authorization"].partition(" ")[2].strip()
        usage = fake.usage_cost
        return {
            "data": {
                "label": f"{key[:12]}...{key[-3:]}",
                "limit": None,
                "limit_reset": None,
                "limit_remaining": None,
                "include_byok_in_limit": False,
                "usage": usage,
                "usage_daily": usage,
                "usage_weekly": usage,
                "usage_monthly": usage,
                "byok_usage": 0,
                "byok_usage_daily": 0,
                "byok_usage_weekly": 0,
                "byok_usage_monthly": 0,
                "is_free_tier": False,
                "is_provisioning_key": False,
                "rate_limit": {"requests": 1000, "interval": "10s", "note": "This field is deprecated."},
            }
        }

    @app.post("/api/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        started = time.monotonic()
        record: Json = {
            "path": request.url.path,
            "authorized": check_key(request) is None,
            "headers": redact(request.headers),
            "body": body if body is not None else raw.decode(errors="replace"),
            "model": body.get("model") if isinstance(body, dict) else None,
            "max_tokens": max_tokens_of(body) if isinstance(body, dict) else None,
            "stream": bool(body.get("stream")) if isinstance(body, dict) else False,
            "status": 200,
            "generation_id": None,
            "billed_cost": 0.0,
            "cancelled": False,
        }
        fake.requests.append(record)
        response = await answer(request, body, record, started)
        record["status"] = response.status_code
        return response

    async def answer(request: Request, body: Any, record: Json, started: float) -> JSONResponse | StreamingResponse:
        if (denied := check_key(request)) is not None:
            return denied
        if body is None:
            return error_response(400, "Invalid JSON in request body")
        if (problem := validate(body)) is not None:
            return error_response(400, problem, {"provider_name": None})
        model_id, streaming = str(body["model"]), bool(body.get("stream"))
        if (model := fake.model(model_id)) is None:
            return error_response(400, f"{model_id} is not a valid model ID", {"provider_name": None})
        if (fault := fake.take_fault("status", model_id)) is not None:
            message = fault.message or "Provider returned error"
            return error_response(fault.status, message, {"provider_name": provider_of(model_id)})
        timeout = fake.take_fault("timeout", model_id)
        if timeout is not None:
            await asyncio.sleep(timeout.seconds)
        slow = fake.take_fault("slow", model_id)
        fail = fake.take_fault("midstream_error", model_id) if streaming else None
        reply = truncate(decide_reply(body, fake.take_script(model_id, bool(body.get("tools")))), max_tokens_of(body))
        completion = Completion(fake, body, reply, model, record, started, request.headers)
        delay = slow.chunk_delay if slow is not None else 0.0
        if not streaming and delay:
            await asyncio.sleep(delay * (len(stream_deltas(reply)) + 1))
        if (timeout is not None or (delay and not streaming)) and await request.is_disconnected():
            # The provider generated the answer although nobody is left to read it: OpenRouter bills it.
            if streaming:
                completion.bill_cancelled(0)
            else:
                completion.bill_full()
            return JSONResponse(error_body(499, "Client closed request"), status_code=499)
        if streaming:
            headers = {
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "X-Generation-Id": completion.id,
            }
            return GenerationStream(completion.stream(delay, fail), media_type="text/event-stream", headers=headers)
        return JSONResponse(completion.json(), headers={"X-Generation-Id": completion.id})

    @app.get("/api/v1/generation")
    async def get_generation(request: Request, generation_id: str | None = Query(None, alias="id")) -> Any:
        if (denied := check_key(request)) is not None:
            return denied
        if not generation_id:
            return error_response(400, "Missing generation id: pass ?id=gen-...")
        if (data := fake.visible_generation(generation_id)) is None:
            return error_response(404, "Generation not found")
        return {"data": data}

    @app.post("/_fake/faults")
    async def add_faults(payload: FaultsBody) -> Json:
        fake.faults.extend(payload.faults)
        return {"faults": [f.model_dump() for f in fake.faults]}

    @app.get("/_fake/faults")
    async def list_faults() -> Json:
        return {"faults": [f.model_dump() for f in fake.faults]}

    @app.delete("/_fake/faults")
    async def clear_faults() -> Json:
        fake.faults.clear()
        return {"faults": []}

    @app.post("/_fake/script")
    async def add_script(payload: ScriptBody) -> Json:
        fake.scripts.extend(payload.replies)
        return {"queued": len(fake.scripts)}

    @app.delete("/_fake/script")
    async def clear_script() -> Json:
        fake.scripts.clear()
        return {"queued": 0}

    @app.post("/_fake/reset")
    async def reset() -> Json:
        fake.reset()
        return {"ok": True}

    @app.get("/_fake/requests")
    async def recorded_requests() -> Json:
        return {"requests": fake.requests}

    @app.get("/_fake/usage")
    async def usage_totals() -> Json:
        return {
            "cost": fake.usage_cost,
            "prompt_tokens": fake.prompt_tokens,
            "completion_tokens": fake.completion_tokens,
            "requests": len(fake.requests),
            "generations": len(fake.generations),
        }

    @app.get("/_fake/generations")
    async def billed_generations() -> Json:
        return {"generations": [g.data for g in fake.generations.values()]}

    @app.get("/_fake/settings")
    async def get_settings() -> Json:
        return fake.settings()

    @app.post("/_fake/settings")
    async def set_settings(payload: SettingsBody) -> Json:
        fake.apply_settings(payload)
        return fake.settings()

    return app
