"""Latency Ralex adds to the LiteLLM proxy, measured side by side in one run.

Method
------
One Postgres (testcontainers), one fake OpenRouter (its own process) and two LiteLLM proxies
pointed at the same fake:

* **A, plain**: ``litellm --config plain.yaml``, the config ``ralex.proxy.launch.litellm_config``
  generates, without ``litellm_settings.callbacks`` and ``general_settings.custom_auth`` (same
  model list, same master key, same timeouts): LiteLLM as it is, no Ralex.
* **B, Ralex**: ``ralex-proxy`` exactly as shipped (hooks, custom auth, ledger writer), with a daily
  limit of $1000 so nothing is refused.

Both get the same body: one step of a coding agent (an ~8 KB system prompt, seven tools, an earlier
tool round trip and a new task from ``bench/data``). After a warm-up (50 requests each), N
non-streaming chat completions go to each proxy, interleaved A, B, A, B, sequentially from one
keep-alive ``httpx.Client``; latency is measured at the client. Two series:

1. ``cheap`` on A and on B: the same upstream model; the difference is Ralex's hooks and auth.
2. ``cheap`` on A, ``auto`` on B: the same, plus task classification (every body is a new turn,
   so nothing is remembered from an earlier step; some tasks route to smart, whose fake reply is
   as fast as cheap's).

Added latency is B - A at p50 and p99 (and the median of the paired per-request differences).
The fake's own latency (direct requests, no proxy) is measured afterwards as a reference.

In-process, without HTTP: ``BudgetEngine.admit()`` + ``settle()`` (built as the hooks build it,
with a no-op ledger sink) over 10k such bodies, and ``ChatRequest.from_body``, ``policy.route``
and ``classify.classify`` alone.

Targets (printed next to the results, not asserted): added p50 <= 1 ms, added p99 <= 5 ms.

Run from the repo root, with the sandbox images (``set -a; . /tmp/sandbox.env; set +a``)::

    .venv/bin/python -m bench.overhead_bench [--requests 1000] [--warmup 50] [--decisions 10000]

Results: a table on stdout and ``bench/results/overhead.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.stack import (
    agent_body,
    elapsed_ms,
    environment,
    log_problems,
    start_fake,
    stop_process,
    summary,
    system_prompt,
    table,
    tasks,
    write_results,
)
from ralex.classify import classify
from ralex.config import load_config
from ralex.engine import BudgetEngine
from ralex.ledger.store import BudgetSettings
from ralex.policy import RouteInput, route
from ralex.pricing import Price, parse_models, routing_config, with_overrides
from ralex.proxy.launch import litellm_config
from ralex.proxy.settings import Clock, ProxySettings
from ralex.request import ChatRequest
from tests.fake_openrouter.app import default_catalog
from tests.integration.conftest import MASTER_KEY, Fake, free_port, proxy_env, start_postgres, start_proxy, wait_until

TARGET_P50_MS = 1.0
TARGET_P99_MS = 5.0


@dataclass
class Target:
    """One proxy under test."""

    name: str
    base_url: str
    log_path: Path
    samples: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)


# --- proxy A: plain LiteLLM ---------------------------------------------------------------------

def start_plain_litellm(fake: Fake, ralex_runtime: Path, work: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """LiteLLM with Ralex's generated config minus Ralex: no callbacks, no custom auth."""
    port = free_port()
    runtime = work / f"plain-{port}"
    runtime.mkdir(parents=True)
    env = proxy_env("postgresql://unused", fake, port, runtime)
    settings = ProxySettings(OPENROUTER_API_KEY=env["OPENROUTER_API_KEY"], OPENROUTER_API_BASE=fake.api_base,
                             LITELLM_MASTER_KEY=MASTER_KEY, RALEX_DATABASE_URL="postgresql://unused",
                             RALEX_UPSTREAM_TIMEOUT=env["RALEX_UPSTREAM_TIMEOUT"])
    prices = {m: Price(**p) for m, p in json.loads((ralex_runtime / "prices.json").read_text()).items()}
    config = litellm_config(load_config(), prices, settings)
    config["litellm_settings"].pop("callbacks")
    config["general_settings"].pop("custom_auth")
    config_path = runtime / "plain.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = runtime / "proxy.log"
    litellm = str(Path(sys.executable).parent / "litellm")
    process = subprocess.Popen([litellm, "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port),
                                "--num_workers", "1"], env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)

    def alive() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"plain litellm exited with {process.returncode}: {log_path.read_text()[-3000:]}")
        return httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).status_code == 200

    wait_until(alive, 90, interval=0.25, what="plain LiteLLM to answer /health/liveliness")
    return process, port, log_path


# --- HTTP series --------------------------------------------------------------------------------

def encoded_bodies(count: int, model: str, system: str, offset: int) -> list[bytes]:
    pool = tasks()
    return [json.dumps(agent_body(pool[i % len(pool)], model, offset + i, system=system)).encode()
            for i in range(count)]


def post(client: httpx.Client, target: Target, content: bytes, record: bool) -> None:
    started = time.perf_counter()
    try:
        response = client.post(f"{target.base_url}/v1/chat/completions", content=content)
        response.read()
    except httpx.HTTPError as exc:
        target.errors[type(exc).__name__] += 1
        return
    took = elapsed_ms(started)
    if not record:
        return
    if response.status_code != 200:
        target.errors[f"HTTP {response.status_code}"] += 1
        return
    target.samples.append(took)
    target.routes[response.headers.get("x-ralex-route", "-")] += 1


def interleaved(client: httpx.Client, a: Target, b: Target, a_bodies: list[bytes], b_bodies: list[bytes],
                warmup: int) -> None:
    """Warm-up then the measured requests, A, B, A, B: both see the same conditions over time."""
    for i, (body_a, body_b) in enumerate(zip(a_bodies, b_bodies, strict=True)):
        post(client, a, body_a, record=i >= warmup)
        post(client, b, body_b, record=i >= warmup)


def upstream_alone(client: httpx.Client, fake: Fake, system: str, count: int) -> list[float]:
    """The fake's own latency (no proxy), as a floor for both proxies."""
    samples = []
    bodies = encoded_bodies(count, "google/gemini-2.5-flash-lite", system, offset=10_000_000)
    for body in bodies:
        started = time.perf_counter()
        response = client.post(f"{fake.api_base}/chat/completions", content=body,
                               headers={"Authorization": "Bearer sk-or-test-key"})
        if response.status_code == 200:
            samples.append(elapsed_ms(started))
    return samples


def compare(a: Target, b: Target) -> dict[str, Any]:
    sa, sb = summary(a.samples), summary(b.samples)
    paired = [y - x for x, y in zip(a.samples, b.samples, strict=False)]
    return {
        "A": {**sa, "errors": dict(a.errors)},
        "B": {**sb, "errors": dict(b.errors), "routes": dict(b.routes)},
        "added_p50_ms": sb["p50"] - sa["p50"],
        "added_p90_ms": sb["p90"] - sa["p90"],
        "added_p99_ms": sb["p99"] - sa["p99"],
        "added_mean_ms": sb["mean"] - sa["mean"],
        "paired_diff_median_ms": summary(paired)["p50"] if paired else None,
        "ratio_p50": sb["p50"] / sa["p50"] if sa["p50"] else None,
    }


# --- in-process decision cost ---------------------------------------------------------------------

def timed(fn: Callable[[int], Any], count: int) -> dict[str, float]:
    """Per-call time of ``fn(i)`` in microseconds (gc collected before, left enabled during)."""
    gc.collect()
    samples = []
    for i in range(count):
        started = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return summary(samples)


def decision_costs(count: int, system: str) -> dict[str, dict[str, float]]:
    config = load_config()
    prices = with_overrides(config, parse_models({"data": default_catalog()}))  # the fake's = OpenRouter's list
    routing = routing_config(config, prices)
    settings = BudgetSettings(1000.0, "UTC", config.budget.thresholds())

    def engine() -> BudgetEngine:  # as RalexHooks._start builds it, with a sink that drops rows
        return BudgetEngine(routing, settings, 0.0, clock=Clock(), sink=lambda row: None,
                            sticky_ttl=config.routing.sticky_turn_ttl_seconds)

    pool = tasks()
    bodies = {model: [agent_body(pool[i % len(pool)], model, i, system=system) for i in range(count)]
              for model in ("auto", "cheap")}
    results = {}
    for model in ("auto", "cheap"):
        eng = engine()

        def admit_settle(i: int, eng: BudgetEngine = eng, model: str = model) -> None:
            flight = eng.admit(bodies[model][i])
            d = flight.decision
            eng.settle(flight.key, d.worst_case / 2, cost_source="upstream", model=d.model, alias=d.alias,
                       prompt_tokens=flight.request.prompt_tokens, completion_tokens=50)

        results[f"admit+settle ({model})"] = timed(admit_settle, count)

    eng = engine()
    admitted = [eng.admit(body) for body in bodies["auto"][:count]]
    settle_us = timed(lambda i: eng.settle(admitted[i].key, 0.0001, cost_source="upstream"), count)
    eng = engine()
    results["admit alone (auto)"] = timed(lambda i: eng.admit(bodies["auto"][i]), count)
    results["settle alone"] = settle_us
    requests = [ChatRequest.from_body(body) for body in bodies["auto"]]
    results["ChatRequest.from_body"] = timed(lambda i: ChatRequest.from_body(bodies["auto"][i]), count)
    snapshot = engine().snapshot()
    inputs = [RouteInput(r.requested_alias, r.task, r.prompt_tokens, r.max_tokens, r.housekeeping)
              for r in requests]
    results["policy.route (auto)"] = timed(lambda i: route(inputs[i], snapshot, routing), count)
    results["classify.classify"] = timed(lambda i: classify(requests[i].task), count)
    return results


# --- main ---------------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per proxy and series")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests per proxy before each series")
    parser.add_argument("--decisions", type=int, default=10_000, help="bodies for the in-process timings")
    parser.add_argument("--reference", type=int, default=300, help="direct requests to the fake (no proxy)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the proxies' logs and configs")
    args = parser.parse_args(argv)

    system = system_prompt()
    work = Path(tempfile.mkdtemp(prefix="ralex-overhead-"))
    results: dict[str, Any] = {"environment": environment(), "requests": args.requests, "warmup": args.warmup,
                               "body": {"system_prompt_bytes": len(system.encode()), "tools": 7, "messages": 6},
                               "targets": {"added_p50_ms": TARGET_P50_MS, "added_p99_ms": TARGET_P99_MS}}
    logs: dict[str, Path] = {}
    with ExitStack() as stack:
        print("starting Postgres, the fake OpenRouter and both proxies ...", flush=True)
        pg = start_postgres()
        stack.callback(pg.container.stop)
        fake_process, fake = start_fake(work / "fake.log")
        stack.callback(stop_process, fake_process)
        logs["fake"] = work / "fake.log"
        ralex = start_proxy(pg.new_database(), fake, work)
        stack.callback(ralex.stop)
        logs["B ralex-proxy"] = ralex.log_path
        ralex.set_limit(1000.0)  # ledger.store.update_settings, then waits until the proxy applied it
        plain_process, plain_port, plain_log = start_plain_litellm(fake, ralex.runtime, work)
        stack.callback(stop_process, plain_process)
        logs["A plain litellm"] = plain_log

        client = stack.enter_context(httpx.Client(timeout=30, headers={
            "Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}))
        total = args.warmup + args.requests
        series: dict[str, dict[str, Any]] = {}
        for label, b_model, offset in (("cheap vs cheap", "cheap", 0), ("cheap vs auto", "auto", 1_000_000)):
            print(f"series '{label}': {args.warmup} warm-up + {args.requests} requests per proxy ...", flush=True)
            a = Target("A plain", f"http://127.0.0.1:{plain_port}", plain_log)
            b = Target("B ralex", f"http://127.0.0.1:{ralex.port}", ralex.log_path)
            started = time.monotonic()
            interleaved(client, a, b, encoded_bodies(total, "cheap", system, offset),
                        encoded_bodies(total, b_model, system, offset), args.warmup)
            series[label] = {**compare(a, b), "seconds": round(time.monotonic() - started, 1)}
        results["http"] = series
        print(f"reference: {args.reference} requests straight to the fake ...", flush=True)
        results["upstream_alone"] = summary(upstream_alone(client, fake, system, args.reference))
        budget = ralex.budget()
        results["ralex_budget_after"] = {k: budget[k] for k in ("limit", "spent", "in_flight", "ledger")}

    print(f"in-process decision cost over {args.decisions} bodies ...", flush=True)
    results["in_process_us"] = decision_costs(args.decisions, system)
    results["log_problems"] = {name: log_problems(path) for name, path in logs.items()}
    if args.keep_logs:
        results["logs"] = {name: str(path) for name, path in logs.items()}
    else:
        shutil.rmtree(work, ignore_errors=True)

    report(results)
    path = write_results("overhead", results)
    print(f"\nresults: {path}")


def report(results: dict[str, Any]) -> None:
    rows = []
    for label, s in results["http"].items():
        for side in ("A", "B"):
            st = s[side]
            errors = sum(st["errors"].values())
            rows.append([f"{label}: {side} {'plain litellm' if side == 'A' else 'ralex-proxy'}", st["n"],
                         fmt(st["p50"]), fmt(st["p90"]), fmt(st["p99"]), fmt(st["mean"]), errors])
    ref = results["upstream_alone"]
    rows.append(["reference: fake OpenRouter direct", ref["n"], fmt(ref["p50"]), fmt(ref["p90"]), fmt(ref["p99"]),
                 fmt(ref["mean"]), "-"])
    print()
    print(table(["latency at the client (ms)", "n", "p50", "p90", "p99", "mean", "errors"], rows,
                title=f"HTTP, non-streaming, interleaved A/B ({results['environment']['cpus']} CPUs)"))

    rows = []
    for label, s in results["http"].items():
        rows.append([label, fmt(s["added_p50_ms"]), f"<= {TARGET_P50_MS:g} {verdict(s['added_p50_ms'], TARGET_P50_MS)}",
                     fmt(s["added_p99_ms"]), f"<= {TARGET_P99_MS:g} {verdict(s['added_p99_ms'], TARGET_P99_MS)}",
                     fmt(s["added_mean_ms"]), fmt(s["paired_diff_median_ms"]), fmt(s["ratio_p50"], 3)])
    print()
    print(table(["added by Ralex (B - A, ms)", "p50", "target", "p99", "target", "mean", "paired median",
                 "B/A p50"], rows))
    routes = results["http"]["cheap vs auto"]["B"].get("routes", {})
    print(f"auto routed: {', '.join(f'{k} {v}' for k, v in sorted(routes.items()))}")

    rows = [[name, fmt(s["p50"], 1), fmt(s["p90"], 1), fmt(s["p99"], 1), fmt(s["mean"], 1), fmt(s["max"], 0)]
            for name, s in results["in_process_us"].items()]
    print()
    print(table(["in-process (us per call)", "p50", "p90", "p99", "mean", "max"], rows,
                title=f"Decision cost, no HTTP ({results['body']['system_prompt_bytes']} B system prompt, tools)"))
    problems = {name: lines for name, lines in results["log_problems"].items() if lines}
    if problems:
        print("\nproblems in the logs:")
        for name, lines in problems.items():
            print(f"  {name}: {len(lines)} line(s), first: {lines[0][:200]}")


if __name__ == "__main__":
    main()
