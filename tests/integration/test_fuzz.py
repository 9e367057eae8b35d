"""Fuzz the agent's side of the proxy: random bytes and JSON, and valid bodies with one thing
broken. No answer is a 5xx, and nothing refused is ever charged or forwarded."""

from __future__ import annotations

import copy
import json
import random
import string
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ralex.params import DROPPED, FORWARDED, REFUSED
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
