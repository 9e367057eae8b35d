"""Latency Ralex adds per API: chat completions, Anthropic ``/v1/messages``, OpenAI ``/v1/responses``.

Method: as ``bench.overhead_bench`` (read it first), with two proxies pointed at one fake OpenRouter:
**A**, plain LiteLLM with the config Ralex generates minus its callbacks and custom auth (so
``/v1/responses`` takes the same chat bridge), and **B**, ``ralex-proxy`` as shipped. The same coding
agent step (an ~8 KB system prompt, seven tools, an earlier tool round trip and a new task) is sent in
each API's own shape, model ``cheap``, non-streaming, ``max_tokens`` 1024, interleaved A/B with the
order alternating, sequentially from one keep-alive client. Added latency is B - A at p50 and p99,
and the median of paired differences; each proxy's CPU time per request comes from /proc.

Run from the repo root, with the sandbox images (``set -a; . /tmp/sandbox.env; set +a``)::

    .venv/bin/python -m bench.api_overhead_bench [--requests 300] [--warmup 30]

Results: a table on stdout and ``bench/results/api_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench.overhead_bench import Target, added, plain_config, process_cpu_seconds, start_litellm
from bench.stack import (
    agent_body,
    elapsed_ms,
    environment,
    start_backends,
    stop_process,
    summary,
    system_prompt,
    table,
    write_results,
)
from bench.stack import tasks as task_pool
from tests.integration.conftest import MASTER_KEY, start_proxy

PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}


def as_messages(body: dict[str, Any]) -> dict[str, Any]:
    """The chat body as Anthropic Messages (what Claude Code sends for the same step)."""
    system, *rest = body["messages"]
    messages: list[dict[str, Any]] = []
    for m in rest:
        if m["role"] == "assistant" and m.get("tool_calls"):
            messages.append({"role": "assistant", "content": [
                {"type": "tool_use", "id": c["id"], "name": c["function"]["name"],
                 "input": json.loads(c["function"]["arguments"])} for c in m["tool_calls"]]})
        elif m["role"] == "tool":
            messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": m["tool_call_id"],
                                                          "content": m["content"]}]})
        else:
            messages.append({"role": m["role"], "content": m["content"]})
    tools = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
              "input_schema": t["function"]["parameters"]} for t in body["tools"]]
    return {"model": body["model"], "max_tokens": 1024, "system": system["content"], "messages": messages,
            "tools": tools}


def as_responses(body: dict[str, Any]) -> dict[str, Any]:
    """The chat body as OpenAI Responses (what Codex sends for the same step)."""
    system, *rest = body["messages"]
    items: list[dict[str, Any]] = []
    for m in rest:
        if m["role"] == "assistant" and m.get("tool_calls"):
            items += [{"type": "function_call", "call_id": c["id"], "name": c["function"]["name"],
                       "arguments": c["function"]["arguments"]} for c in m["tool_calls"]]
        elif m["role"] == "tool":
            items.append({"type": "function_call_output", "call_id": m["tool_call_id"], "output": m["content"]})
        else:
            kind = "output_text" if m["role"] == "assistant" else "input_text"
            items.append({"type": "message", "role": m["role"], "content": [{"type": kind, "text": m["content"]}]})
    tools = [{"type": "function", "name": t["function"]["name"], "description": t["function"].get("description", ""),
              "parameters": t["function"]["parameters"]} for t in body["tools"]]
    return {"model": body["model"], "max_output_tokens": 1024, "instructions": system["content"], "input": items,
            "tools": tools}


def bodies(api: str, count: int, system: str, offset: int) -> list[bytes]:
    pool = task_pool()
    shape = {"chat": lambda b: {**b, "max_tokens": 1024}, "messages": as_messages, "responses": as_responses}[api]
    return [json.dumps(shape(agent_body(pool[i % len(pool)], "cheap", offset + i, system=system))).encode()
            for i in range(count)]


def series(client: httpx.Client, targets: list[Target], api: str, payloads: list[bytes], warmup: int) -> None:
    cpu_before: dict[str, float] = {}
    for i, payload in enumerate(payloads):
        if i == warmup:
            cpu_before = {t.key: process_cpu_seconds(t.pid) for t in targets}
        for target in targets if i % 2 == 0 else targets[::-1]:
            started = time.perf_counter()
            try:
                response = client.post(f"{target.base_url}{PATHS[api]}", content=payload)
            except httpx.HTTPError as exc:
                target.errors[type(exc).__name__] += 1
                continue
            took = elapsed_ms(started)
            if i < warmup:
                continue
            if response.status_code != 200:
                target.errors[f"HTTP {response.status_code}"] += 1
                continue
            target.samples.append(took)
    time.sleep(1.0)  # the last requests' logging and ledger work
    for target in targets:
        target.cpu_ms_per_request = (process_cpu_seconds(target.pid) - cpu_before[target.key]) * 1000 / max(
            1, len(target.samples) + sum(target.errors.values()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_overhead_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per proxy and API")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured requests per proxy before each API")
    args = parser.parse_args(argv)
    system = system_prompt()
    work = Path(tempfile.mkdtemp(prefix="ralex-api-overhead-"))
    results: dict[str, Any] = {"environment": environment(), "requests": args.requests, "warmup": args.warmup,
                               "apis": {}}
    try:
        with ExitStack() as stack:
            print("starting Postgres, the fake OpenRouter and two proxies ...", flush=True)
            pg, fake = start_backends(stack, work)
            ralex = start_proxy(pg.new_database(), fake, work)
            stack.callback(ralex.stop)
            ralex.set_limit(1000.0)
            process, port, _ = start_litellm("A", plain_config(fake, ralex.runtime), fake, ralex.dsn, work)
            stack.callback(stop_process, process)
            client = stack.enter_context(httpx.Client(timeout=30, headers={
                "Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}))
            for n, api in enumerate(PATHS):
                print(f"{api}: {args.warmup} warm-up + {args.requests} requests per proxy ...", flush=True)
                targets = [Target("A", "plain LiteLLM", f"http://127.0.0.1:{port}", process.pid),
                           Target("B", "ralex-proxy", f"http://127.0.0.1:{ralex.port}", ralex.process.pid)]
                series(client, targets, api, bodies(api, args.warmup + args.requests, system, n * 1_000_000),
                       args.warmup)
                a, b = targets
                results["apis"][api] = {
                    "A": {**summary(a.samples), "errors": dict(a.errors), "cpu_ms_per_request": a.cpu_ms_per_request},
                    "B": {**summary(b.samples), "errors": dict(b.errors), "cpu_ms_per_request": b.cpu_ms_per_request},
                    "added_B_minus_A": {**added(a, b), "cpu_ms_per_request": (b.cpu_ms_per_request or 0)
                                        - (a.cpu_ms_per_request or 0)},
                }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [[api, f"{r['A']['p50']:.1f}", f"{r['B']['p50']:.1f}", f"{r['added_B_minus_A']['p50_ms']:+.1f}",
             f"{r['added_B_minus_A']['p99_ms']:+.1f}", f"{r['added_B_minus_A']['paired_median_ms']:+.1f}",
             f"{r['added_B_minus_A']['cpu_ms_per_request']:+.1f}", sum(r["B"]["errors"].values())]
            for api, r in results["apis"].items()]
    print(table(["API", "A p50 ms", "B p50 ms", "added p50", "added p99", "paired median", "added CPU ms",
                 "B errors"], rows, "Ralex over plain LiteLLM, per API"))
    print(f"\nresults: {write_results('api_overhead', results)}")


if __name__ == "__main__":
    main()
