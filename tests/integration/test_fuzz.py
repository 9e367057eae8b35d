"""Fuzz the agent's side of the proxy: random bytes and JSON, and valid bodies with one thing
broken. No answer is a 5xx, and nothing refused is ever charged or forwarded."""

from __future__ import annotations

import base64
import copy
import json
import math
import random
import string
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ralex.params import DROPPED, FORWARDED, MAX_DEPTH, REFUSED
from tests.integration.conftest import Fake, Proxy, wait_until

pytestmark = pytest.mark.integration
AGENT = {"Authorization": "Bearer sk-ralex-test-agent", "Content-Type": "application/json"}
BASE: dict[str, Any] = {
    "model": "cheap", "max_tokens": 64, "temperature": 0.2,
    "messages": [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": [{"type": "text", "text": "fix the typo in hello.py"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{\"path\": \"hello.py\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "print('helo')"},
    ],
    "tools": [{"type": "function", "function": {"name": "read", "description": "read a file",
                                                "parameters": {"type": "object", "properties": {}}}}],
    "tool_choice": "auto",
}


def random_scalar(rng: random.Random) -> Any:
    return rng.choice([
        None, True, False, 0, -1, 1, 2**63, -(2**70), 1e308, -0.5, float(rng.randint(0, 5)),
        "", "auto", "cheap", "x" * rng.randint(0, 300), "".join(rng.choices(string.printable, k=20)),
        "\u0000\u202e\ufdfa😀中文", [], {}, [None], {"": None},
    ])


def random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return random_scalar(rng)
    if roll < 0.75:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice([*FORWARDED, *REFUSED, *DROPPED, "model", "messages", "role", "content", "type", "x"]):
            random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def random_body(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.3:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
    if roll < 0.4:
        text = json.dumps(random_json(rng))
        cut = rng.randint(0, len(text))
        return text[:cut].encode()
    return json.dumps(random_json(rng)).encode()


def mutate(rng: random.Random) -> bytes:
    body = copy.deepcopy(BASE)
    target: Any = body
    path: list[Any] = []
    for _ in range(rng.randint(0, 4)):  # walk somewhere into the body
        if isinstance(target, dict) and target:
            key = rng.choice(list(target))
        elif isinstance(target, list) and target:
            key = rng.randrange(len(target))
        else:
            break
        path.append(key)
        target = target[key]
    action = rng.random()
    if not path:
        body[rng.choice([*FORWARDED, *REFUSED, *DROPPED, "model", "messages", "zz"])] = random_json(rng)
    else:
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        if action < 0.6:
            parent[path[-1]] = random_json(rng)
        elif action < 0.8 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[rng.choice(["extra_body", "api_key", "cache_control", "type", "image_url", "n", "x"])] = \
                random_json(rng)
    if rng.random() < 0.2:
        body["stream"] = True
    return json.dumps(body).encode()


def test_fuzzed_bodies_never_get_a_5xx_and_refused_ones_cost_nothing(live: Proxy, upstream: Fake):
    started = datetime.now(UTC)
    rng = random.Random(7)
    bodies = [random_body(rng) for _ in range(1000)] + [mutate(rng) for _ in range(1000)]
    url = f"{live.url}v1/chat/completions"
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda b: client.post(url, content=b, headers=AGENT), bodies))
    statuses = [r.status_code for r in responses]
    server_errors = [(b[:200], r.status_code, r.text[:200]) for b, r in zip(bodies, responses, strict=True)
                     if r.status_code >= 500]
    assert server_errors == []
    for response in responses:
        if response.status_code != 200:
            assert response.json()["error"]["message"], response.text
    served = [r for r in responses if r.status_code == 200]
    assert len(served) > 100, f"only {len(served)} of the mostly-valid bodies were served: {set(statuses)}"
    wait_until(lambda: live.budget()["in_flight"] == 0, 60, what="all holds settled")
    assert len(upstream.requests()) == len(served)
    ids = {r.headers["x-ralex-request-id"] for r in served}
    wait_until(lambda: len(live.ledger("status <> 'refused'")) >= len(ids), 30, what="the served rows")
    charged = live.ledger("cost_usd > 0 AND ts >= %s", (started,))
    assert {str(row["request_id"]) for row in charged} <= ids
    billed = sum(r["billed_cost"] for r in upstream.requests())
    assert sum(float(row["cost_usd"]) for row in charged) == pytest.approx(billed)


# --- the three APIs with the shapes that once got a 5xx or slipped past the checks -----------------------

def data_png(width: int, height: int) -> str:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
           + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    return "data:image/png;base64," + base64.b64encode(raw).decode()


SMALL, HUGE, REMOTE = data_png(40, 30), data_png(60_000, 60_000), "http://169.254.169.254/latest/meta-data/x.png"
API_BASES: dict[str, dict[str, Any]] = {
    "chat": BASE,
    "messages": {
        "model": "cheap", "max_tokens": 64, "temperature": 0.2,
        "system": [{"type": "text", "text": "You are a coding agent."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "fix the typo in hello.py"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": SMALL.split(",")[1]}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read",
                                               "input": {"path": "hello.py"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "print('helo')"}]}]}],
        "tools": [{"name": "read", "description": "read a file",
                   "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
    },
    "responses": {
        "model": "cheap", "max_output_tokens": 64, "temperature": 0.2, "store": False,
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix hello.py"},
                                                            {"type": "input_image", "image_url": SMALL}]},
            {"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{\"path\": \"hello.py\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": [
                {"type": "input_text", "text": "print('helo')"}, {"type": "input_image", "image_url": SMALL}]}],
        "tools": [{"type": "function", "name": "read", "parameters": {"type": "object", "properties": {}}}],
    },
}
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses",
         "count_tokens": "/v1/messages/count_tokens"}


def bad_parts(api: str) -> list[Any]:
    """Parts an API's table must refuse (or, the last, accept): remote, huge, untyped, non-text text."""
    if api == "chat":
        images = [{"type": "image_url", "image_url": {"url": u}} for u in (REMOTE, HUGE, SMALL)]
        other = [{"type": "text", "text": 5}, {"type": "file", "file": {"file_data": SMALL}}]
    elif api == "messages":
        images = [{"type": "image", "source": {"type": "url", "url": REMOTE}},
                  {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                               "data": HUGE.split(",")[1]}},
                  {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%%"}},
                  {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                               "data": SMALL.split(",")[1]}}]
        other = [{"type": "text", "text": ["x"]}, {"type": "document", "source": {}}, {"type": "thinking"}]
    else:
        images = [{"type": "input_image", "image_url": u} for u in (REMOTE, HUGE, {"url": SMALL}, SMALL)]
        other = [{"type": "input_text", "text": None}, {"type": "input_file", "file_data": SMALL},
                 {"type": "input_image", "file_id": "f-1"}]
    return [*other, *images, {"text": "no type"}, "bare", None, 3]


def content_lists(value: Any) -> list[list[Any]]:
    """Every list of parts in a body (message content, tool results, function call outputs, system)."""
    found: list[list[Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("content", "output", "system") and isinstance(item, list):
                found.append(item)
            found += content_lists(item)
    elif isinstance(value, list):
        for item in value:
            found += content_lists(item)
    return found


def scalar_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in scalar_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in scalar_paths(v, (*path, i))]
    return [path]


def at(body: Any, path: tuple[Any, ...]) -> tuple[Any, Any]:
    """The container holding ``path``'s last step, and that step."""
    for key in path[:-1]:
        body = body[key]
    return body, path[-1]


def deep_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def api_body(rng: random.Random, api: str) -> bytes:
    shape = "messages" if api == "count_tokens" else api
    body = copy.deepcopy(API_BASES[shape])
    roll = rng.random()
    if roll < 0.15:  # a part from the table's refusals (or a good one) wherever content lives
        target = rng.choice(content_lists(body))
        part = copy.deepcopy(rng.choice(bad_parts(shape)))
        if target and rng.random() < 0.5:
            target[rng.randrange(len(target))] = part
        else:
            target.append(part)
    elif roll < 0.3:  # nesting around the limit (and where it once crashed), anywhere in the body
        levels = rng.choice([rng.randint(MAX_DEPTH - 12, MAX_DEPTH + 4), rng.randint(900, 1_200), 20_000])
        parent, key = at(body, rng.choice(scalar_paths(body)))
        parent[key] = "@@deep@@"
        openers = [rng.choice(("[", '{"k":')) for _ in range(levels)]
        closers = "".join("]" if o == "[" else "}" for o in reversed(openers))
        return json.dumps(body).replace('"@@deep@@"', "".join(openers) + "1" + closers, 1).encode()
    elif roll < 0.45:  # a non-finite number where a number (or anything) goes
        token = rng.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
        if rng.random() < 0.6:
            body[rng.choice(["temperature", "top_p"])] = "@@num@@"
        else:
            parent, key = at(body, rng.choice(scalar_paths(body)))
            parent[key] = "@@num@@"
        return json.dumps(body).replace('"@@num@@"', token, 1).encode()
    elif roll < 0.7:  # anything in a random place
        path = rng.choice(scalar_paths(body))
        parent, key = at(body, path[:rng.randint(1, len(path))])
        parent[key] = random_json(rng)
    else:  # what a client may well send: deep tool schemas up to the limit, inline images, plain steps
        variant = rng.random()
        if variant < 0.4:
            tool = body["tools"][0]
            field = "input_schema" if shape == "messages" else "parameters"
            (tool.get("function", tool))[field] = deep_schema(rng.randint(1, MAX_DEPTH - 8))
        elif variant < 0.7:
            rng.choice(content_lists(body)).append(copy.deepcopy(bad_parts(shape)[-5]))  # the good image
    if rng.random() < 0.2 and api != "count_tokens":
        body["stream"] = True
    return json.dumps(body).encode()


def all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    return True


def received_images(value: Any) -> list[str]:
    """Every image URL in what the upstream received."""
    if isinstance(value, dict):
        url = value.get("url") if value.get("type") == "image_url" or "url" in value else None
        found = [url] if isinstance(url, str) else []
        return found + [u for item in value.values() for u in received_images(item)]
    if isinstance(value, list):
        return [u for item in value for u in received_images(item)]
    return []


def test_fuzzed_bodies_of_every_api_never_get_a_5xx_nor_reach_the_upstream_unchecked(live: Proxy, upstream: Fake):
    started = datetime.now(UTC)
    rng = random.Random(16)
    sent = [(api, api_body(rng, api)) for api in (*API_BASES, "count_tokens") for _ in range(250)]
    base = live.url.rstrip("/")
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda s: client.post(f"{base}{PATHS[s[0]]}", content=s[1], headers=AGENT), sent))
    server_errors = [(api, raw[:200], r.status_code, r.text[:300])
                     for (api, raw), r in zip(sent, responses, strict=True) if r.status_code >= 500]
    assert server_errors == []
    for (api, _), response in zip(sent, responses, strict=True):
        if response.status_code != 200:
            payload = response.json()
            assert payload["error"]["message"], response.text
            if api in ("messages", "count_tokens"):
                assert payload["type"] == "error", response.text
    served = [r for (api, _), r in zip(sent, responses, strict=True) if r.status_code == 200 and api != "count_tokens"]
    statuses = {api: sorted({r.status_code for (a, _), r in zip(sent, responses, strict=True) if a == api})
                for api in PATHS}
    assert len(served) > 150, statuses
    wait_until(lambda: live.budget()["in_flight"] == 0, 60, what="all holds settled")
    received = upstream.requests()
    assert len(received) == len(served)
    for request in received:
        assert all_finite(request["body"])
        for url in received_images(request["body"]):
            assert url.startswith("data:image/"), url[:80]
            assert url != HUGE
    ids = {r.headers["x-ralex-request-id"] for r in served}
    wait_until(lambda: len(live.ledger("status <> 'refused' AND ts >= %s", (started,))) >= len(ids), 30,
               what="the served rows")
    charged = live.ledger("cost_usd > 0 AND ts >= %s", (started,))
    assert {str(row["request_id"]) for row in charged} <= ids
    assert sum(float(row["cost_usd"]) for row in charged) == pytest.approx(sum(r["billed_cost"] for r in received))
