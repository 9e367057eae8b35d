"""Latency Ralex adds to the LiteLLM proxy, measured side by side in one run.

Method
------
One Postgres (testcontainers), one fake OpenRouter (its own process) and three LiteLLM proxies
pointed at the same fake, all started with the same environment:

* **A, plain LiteLLM**: ``litellm --config plain.yaml``, the config ``ralex.proxy.launch.litellm_config``
  generates without ``litellm_settings.callbacks`` and ``general_settings.custom_auth`` (same model
  list, master key and timeouts): LiteLLM as it is, no Ralex.
* **B, Ralex**: ``ralex-proxy`` exactly as shipped (LiteLLM's app behind Ralex's gate, hooks, custom
  auth, every configured callback, journal and ledger writer), with a daily limit of $1000 so nothing
  is refused.
* **C, Ralex minus its hook**: B's generated config with only ``ralex.proxy.hooks.handler`` removed
  from the callbacks (custom auth and the other callbacks stay), started by ``litellm`` (so without
  the gate). B - C is the gate and the hook together; B - A is what a user pays compared with plain
  LiteLLM.

Every proxy gets the same body: one step of a coding agent (an ~8 KB system prompt, seven tools,
an earlier tool round trip and a new task from ``bench/data``). After a warm-up (50 requests each),
N non-streaming chat completions go to each proxy, interleaved A, B, C, then B, C, A, then C, A, B
(the order rotates so no proxy always follows the same neighbour, which may still be finishing its
previous request), sequentially from one keep-alive ``httpx.Client``; latency is measured at the
client. Two series:

1. ``cheap`` everywhere: the same upstream model; the difference is Ralex.
2. ``cheap`` on A and C, ``auto`` on B: the same plus task classification (every body is a new
   turn, so nothing is remembered from an earlier step).

Added latency is the difference of the percentiles (B - A, B - C) at p50 and p99, and the median of
the paired per-request differences. Latency alone hides work a proxy does after it has answered
(logging callbacks, settling, the ledger write), so each proxy's CPU time per request (its process
in /proc, over the measured requests) is reported too: that is what concurrent traffic would feel.
The fake's own latency (direct requests, no proxy) is measured afterwards as a floor.

In-process, without HTTP: ``BudgetEngine.admit()`` + ``settle()`` (built as the hooks build it,
with a no-op ledger sink) over 10k such bodies, one request in flight at a time; admission again
while 1,000 other requests hold budget; ``ChatRequest.from_body``, ``policy.route`` and
``classify.classify`` alone; and the CPU the ledger writer spends per row (one row per transaction,
into Postgres), the part of the hook's work that happens after the answer.

Targets (printed next to the results, not asserted): added p50 <= 1 ms, added p99 <= 5 ms.
The machine is shared with whatever else runs; interleaving spreads that noise over all proxies
alike, but compare the three within one run, not across runs.

Run from the repo root, with the sandbox images (``set -a; . /tmp/sandbox.env; set +a``)::

    .venv/bin/python -m bench.overhead_bench [--requests 1000] [--warmup 50] [--decisions 10000]

Results: tables on stdout and ``bench/results/overhead.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
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
from ralex.ledger.store import BudgetSettings, LedgerRow, connect, migrate
from ralex.ledger.writer import LedgerWriter
from ralex.policy import RouteInput, route
from ralex.pricing import Price, parse_models, routing_config, with_overrides
from ralex.proxy.launch import litellm_config
from ralex.proxy.settings import Clock, ProxySettings
from ralex.request import ChatRequest
from tests.fake_openrouter.app import default_catalog
from tests.integration.conftest import MASTER_KEY, Fake, free_port, proxy_env, start_postgres, start_proxy, wait_until

TARGET_P50_MS = 1.0
TARGET_P99_MS = 5.0
HOOK = "ralex.proxy.hooks.handler"


@dataclass
class Target:
    """One proxy under test and what it measured in the current series."""

    key: str
    label: str
    base_url: str
    pid: int
    samples: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    after: dict[str, list[float]] = field(default_factory=dict)
    cpu_ms_per_request: float | None = None
    """Latencies by the proxy that was asked just before (it may still be busy finishing its request)."""


# --- proxies A and C: LiteLLM started from a config we write ------------------------------------

def plain_config(fake: Fake, ralex_runtime: Path) -> dict[str, Any]:
    """A: Ralex's generated config (same prices as B) without callbacks and custom auth."""
    env = proxy_env("postgresql://unused", fake, 0, ralex_runtime)  # what B was started with
    settings = ProxySettings(OPENROUTER_API_KEY=env["OPENROUTER_API_KEY"], OPENROUTER_API_BASE=fake.api_base,
                             LITELLM_MASTER_KEY=MASTER_KEY, RALEX_DATABASE_URL=env["RALEX_DATABASE_URL"],
                             RALEX_UPSTREAM_TIMEOUT=env["RALEX_UPSTREAM_TIMEOUT"])
    prices = {m: Price(**p) for m, p in json.loads((ralex_runtime / "prices.json").read_text()).items()}
    config = litellm_config(load_config(), prices, settings)
    config["litellm_settings"].pop("callbacks", None)
    config["general_settings"].pop("custom_auth", None)
    return config


def without_hook(ralex_runtime: Path) -> dict[str, Any]:
    """C: the config ralex-proxy generated and runs, minus the Ralex hook."""
    config: dict[str, Any] = yaml.safe_load((ralex_runtime / "litellm.yaml").read_text())
    callbacks = [c for c in config["litellm_settings"].get("callbacks", []) if c != HOOK]
    config["litellm_settings"]["callbacks"] = callbacks
    return config


def start_litellm(name: str, config: dict[str, Any], fake: Fake, dsn: str,
                  work: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    runtime = work / f"{name}-{port}"
    runtime.mkdir(parents=True)
    config_path = runtime / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = runtime / "proxy.log"
    litellm = str(Path(sys.executable).parent / "litellm")
    process = subprocess.Popen([litellm, "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port),
                                "--num_workers", "1"], env=proxy_env(dsn, fake, port, runtime),
                               stdout=log_path.open("wb"), stderr=subprocess.STDOUT)

    def alive() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{name} litellm exited with {process.returncode}: {log_path.read_text()[-3000:]}")
        return httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).status_code == 200

    wait_until(alive, 90, interval=0.25, what=f"{name} LiteLLM to answer /health/liveliness")
    return process, port, log_path


# --- HTTP series --------------------------------------------------------------------------------

def encoded_bodies(count: int, model: str, system: str, offset: int) -> list[bytes]:
    pool = tasks()
    return [json.dumps(agent_body(pool[i % len(pool)], model, offset + i, system=system)).encode()
            for i in range(count)]


def post(client: httpx.Client, target: Target, content: bytes, record: bool, after: str = "") -> None:
    started = time.perf_counter()
    try:
        response = client.post(f"{target.base_url}/v1/chat/completions", content=content)
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
    target.after.setdefault(after, []).append(took)
    if "x-ralex-route" in response.headers:
        target.routes[response.headers["x-ralex-route"]] += 1
        reason = response.headers.get("x-ralex-reason", "")
        target.kinds["downgraded: does not fit" if "does not fit" in reason else "as intended"] += 1


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    family, total = {pid}, 0.0
    for _ in range(5):  # a few levels of children are plenty (litellm runs one worker in-process)
        family |= {p for p, (ppid, _) in stats.items() if ppid in family}
    for p in family:
        total += stats.get(p, (0, 0.0))[1]
    return total


def interleaved(client: httpx.Client, targets: list[tuple[Target, list[bytes]]], warmup: int) -> None:
    """Warm-up, then the measured requests in turn, all proxies within the same moments.

    The order rotates every cycle (A B C, B C A, C A B, ...): a proxy keeps working for a few ms after
    it answered (logging callbacks, cost, ledger), and that steals CPU from whichever proxy comes
    next. With a fixed order that cost would always land on the same neighbour.
    """
    previous = ""
    cpu_before: dict[str, float] = {}
    for i in range(len(targets[0][1])):
        if i == warmup:
            cpu_before = {t.key: process_cpu_seconds(t.pid) for t, _ in targets}
        shift = i % len(targets)
        for target, bodies in targets[shift:] + targets[:shift]:
            post(client, target, bodies[i], record=i >= warmup, after=previous)
            previous = target.key
    time.sleep(1.0)  # let the last requests' logging and ledger work finish
    for target, _ in targets:
        target.cpu_ms_per_request = (process_cpu_seconds(target.pid) - cpu_before[target.key]) * 1000 / max(
            1, len(target.samples) + sum(target.errors.values()))


def upstream_alone(client: httpx.Client, fake: Fake, system: str, count: int) -> list[float]:
    """The fake's own latency (no proxy): the floor under every proxy."""
    samples = []
    for body in encoded_bodies(count, "google/gemini-2.5-flash-lite", system, offset=10_000_000):
        started = time.perf_counter()
        response = client.post(f"{fake.api_base}/chat/completions", content=body,
                               headers={"Authorization": "Bearer sk-or-test-key"})
        if response.status_code == 200:
            samples.append(elapsed_ms(started))
    return samples


def added(base: Target, ralex: Target) -> dict[str, Any]:
    """What ``ralex`` adds over ``base``: differences of percentiles and of paired requests."""
    sa, sb = summary(base.samples), summary(ralex.samples)
    paired = [b - a for a, b in zip(base.samples, ralex.samples, strict=False)]
    return {
        "p50_ms": sb["p50"] - sa["p50"],
        "p90_ms": sb["p90"] - sa["p90"],
        "p99_ms": sb["p99"] - sa["p99"],
        "mean_ms": sb["mean"] - sa["mean"],
        "paired_median_ms": summary(paired)["p50"] if paired else None,
        "ratio_p50": sb["p50"] / sa["p50"] if sa["p50"] else None,
    }


def series_result(targets: dict[str, Target], seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {"seconds": round(seconds, 1)}
    for key, t in targets.items():
        result[key] = {"label": t.label, **summary(t.samples), "errors": dict(t.errors),
                       "proxy_cpu_ms_per_request": t.cpu_ms_per_request,
                       "p50_by_previous_proxy": {k: summary(v)["p50"] for k, v in sorted(t.after.items())}}
        if t.routes:
            result[key]["routes"] = dict(t.routes)
            result[key]["routing"] = dict(t.kinds)
    result["added_B_minus_A"] = added(targets["A"], targets["B"])
    result["added_B_minus_C"] = added(targets["C"], targets["B"])
    for pair, base in (("added_B_minus_A", "A"), ("added_B_minus_C", "C")):
        b, a = targets["B"].cpu_ms_per_request, targets[base].cpu_ms_per_request
        result[pair]["cpu_ms_per_request"] = b - a if a is not None and b is not None else None
    return result


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


def admit_then_settle(engine: BudgetEngine, bodies: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each body admitted then settled at once (one request in flight, as in sequential traffic);
    microseconds per call of admit, settle and both."""
    gc.collect()
    times: dict[str, list[float]] = {"admit": [], "settle": [], "both": []}
    for body in bodies:
        t0 = time.perf_counter_ns()
        flight = engine.admit(body)
        t1 = time.perf_counter_ns()
        d = flight.decision
        engine.settle(flight.key, d.worst_case / 2, cost_source="upstream", model=d.model, alias=d.alias,
                      prompt_tokens=flight.request.prompt_tokens, completion_tokens=50)
        t2 = time.perf_counter_ns()
        times["admit"].append((t1 - t0) / 1000)
        times["settle"].append((t2 - t1) / 1000)
        times["both"].append((t2 - t0) / 1000)
    return times


def decision_costs(count: int, system: str,
                   in_flight: int) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Timings of the engine and its parts; also how ``auto`` routed these bodies (intent -> alias)."""
    config = load_config()
    prices = with_overrides(config, parse_models({"data": default_catalog()}))  # the fake's = OpenRouter's list
    routing = routing_config(config, prices)
    settings = BudgetSettings(1000.0, "UTC", config.budget.thresholds())
    routed: Counter[str] = Counter()

    def engine() -> BudgetEngine:  # as RalexHooks._start builds it, with a sink that drops rows
        return BudgetEngine(routing, settings, 0.0, clock=Clock(), sink=count_route,
                            sticky_ttl=config.routing.sticky_turn_ttl_seconds)

    def count_route(row: LedgerRow) -> None:
        note = ", wanted smart: does not fit" if "does not fit" in row.reason else ""
        routed[f"{row.alias_requested} -> {row.alias_routed}{note}"] += 1

    pool = tasks()
    bodies = {model: [agent_body(pool[i % len(pool)], model, i, system=system) for i in range(count)]
              for model in ("auto", "cheap")}
    results = {}
    for model in ("auto", "cheap"):
        times = admit_then_settle(engine(), bodies[model])
        results[f"admit+settle ({model})"] = summary(times["both"])
        results[f"  admit ({model})"] = summary(times["admit"])
        results[f"  settle ({model})"] = summary(times["settle"])
    busy = engine()
    for i in range(in_flight):  # holds that stay: admission sums every hold of the day
        busy.admit(agent_body("fix the typo in README.md", "cheap", 10_000_000 + i, system=system))
    held = admit_then_settle(busy, bodies["auto"][: max(1, count // 10)])
    results[f"admit (auto), {in_flight} others in flight"] = summary(held["admit"])
    requests = [ChatRequest.from_body(body) for body in bodies["auto"]]
    results["ChatRequest.from_body"] = timed(lambda i: ChatRequest.from_body(bodies["auto"][i]), count)
    snapshot = engine().snapshot()
    inputs = [RouteInput(r.requested_alias, r.task, r.prompt_tokens, r.max_tokens, r.housekeeping)
              for r in requests]
    results["policy.route (auto)"] = timed(lambda i: route(inputs[i], snapshot, routing), count)
    results["classify.classify"] = timed(lambda i: classify(requests[i].task), count)
    return results, {k: v for k, v in sorted(routed.items()) if k.startswith("auto")}


def ledger_write_cost(dsn: str, count: int) -> dict[str, float]:
    """The hook's ledger writer, one row per transaction (as under sequential traffic): CPU and wall
    time per row in this process. Rows are real ones from admit + settle, into a fresh database."""
    with connect(dsn, autocommit=True) as conn:
        migrate(conn)
    config = load_config()
    rows: list[LedgerRow] = []
    engine = BudgetEngine(routing_config(config, with_overrides(config, parse_models({"data": default_catalog()}))),
                          BudgetSettings(1000.0, "UTC", config.budget.thresholds()), 0.0, clock=Clock(),
                          sink=rows.append)
    system = system_prompt()
    for i in range(count):
        flight = engine.admit(agent_body("add a docstring to the Cache class", "auto", i, system=system))
        engine.settle(flight.key, 0.0004, cost_source="upstream", model=flight.decision.model,
                      alias=flight.decision.alias, prompt_tokens=3000, completion_tokens=20)

    async def write_all() -> tuple[float, float]:
        writer = LedgerWriter(dsn)
        writer.start()
        cpu, wall = time.process_time(), time.perf_counter()
        for row in rows:
            writer.submit(row)
            await writer.drain()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await writer.stop()
        return cpu, wall

    cpu, wall = asyncio.run(write_all())
    return {"rows": count, "cpu_us_per_row": cpu / count * 1e6, "wall_us_per_row": wall / count * 1e6}


# --- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per proxy and series")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests per proxy before each series")
    parser.add_argument("--decisions", type=int, default=10_000, help="bodies for the in-process timings")
    parser.add_argument("--reference", type=int, default=300, help="direct requests to the fake (no proxy)")
    parser.add_argument("--ledger-rows", type=int, default=1000, help="rows for the ledger write timing")
    parser.add_argument("--in-flight", type=int, default=1000,
                        help="holds in flight for the admission-under-load timing")
    parser.add_argument("--keep-logs", action="store_true", help="keep the proxies' logs and configs")
    args = parser.parse_args(argv)

    system = system_prompt()
    work = Path(tempfile.mkdtemp(prefix="ralex-overhead-"))
    results: dict[str, Any] = {"environment": environment(), "requests": args.requests, "warmup": args.warmup,
                               "body": {"system_prompt_bytes": len(system.encode()), "tools": 7, "messages": 6},
                               "targets": {"added_p50_ms": TARGET_P50_MS, "added_p99_ms": TARGET_P99_MS}}
    logs: dict[str, Path] = {"fake": work / "fake.log"}
    try:
        with ExitStack() as stack:
            print("starting Postgres, the fake OpenRouter and three proxies ...", flush=True)
            pg = start_postgres()
            stack.callback(pg.container.stop)
            fake_process, fake = start_fake(logs["fake"])
            stack.callback(stop_process, fake_process)
            ralex = start_proxy(pg.new_database(), fake, work)
            stack.callback(ralex.stop)
            logs["B"] = ralex.log_path
            ralex.set_limit(1000.0)  # ledger.store.update_settings, then waits until the proxy applied it
            configs = {"A": plain_config(fake, ralex.runtime), "C": without_hook(ralex.runtime)}
            ports, pids = {}, {"B": ralex.process.pid}  # ralex-proxy execs litellm: same pid
            for key, config in configs.items():
                process, ports[key], logs[key] = start_litellm(key, config, fake, ralex.dsn, work)
                stack.callback(stop_process, process)
                pids[key] = process.pid
            results["proxies"] = {
                "A": {"label": "plain LiteLLM", "callbacks": [], "custom_auth": None},
                "B": {"label": "ralex-proxy", **_auth_and_callbacks(ralex.runtime / "litellm.yaml")},
                "C": {"label": "ralex-proxy config minus the Ralex hook",
                      "callbacks": configs["C"]["litellm_settings"]["callbacks"],
                      "custom_auth": configs["C"]["general_settings"].get("custom_auth")},
            }
            urls = {"A": f"http://127.0.0.1:{ports['A']}", "B": f"http://127.0.0.1:{ralex.port}",
                    "C": f"http://127.0.0.1:{ports['C']}"}

            client = stack.enter_context(httpx.Client(timeout=30, headers={
                "Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}))
            total = args.warmup + args.requests
            results["http"] = {}
            for label, b_model, offset in (("cheap everywhere", "cheap", 0), ("auto on B", "auto", 1_000_000)):
                print(f"series '{label}': {args.warmup} warm-up + {args.requests} requests per proxy ...", flush=True)
                cheap = encoded_bodies(total, "cheap", system, offset)
                targets = {key: Target(key, results["proxies"][key]["label"], url, pids[key])
                           for key, url in urls.items()}
                started = time.monotonic()
                interleaved(client, [(targets["A"], cheap),
                                     (targets["B"], encoded_bodies(total, b_model, system, offset)),
                                     (targets["C"], cheap)], args.warmup)
                results["http"][label] = series_result(targets, time.monotonic() - started)
            print(f"floor: {args.reference} requests straight to the fake ...", flush=True)
            results["upstream_alone"] = summary(upstream_alone(client, fake, system, args.reference))
            budget = ralex.budget()
            results["ralex_budget_after"] = {k: budget.get(k) for k in ("limit", "spent", "in_flight", "ledger")}
            print(f"ledger writes: {args.ledger_rows} rows, one per transaction ...", flush=True)
            results["ledger_write"] = ledger_write_cost(pg.new_database(), args.ledger_rows)

        print(f"in-process decision cost over {args.decisions} bodies ...", flush=True)
        results["in_process_us"], results["in_process_auto_routing"] = decision_costs(args.decisions, system,
                                                                                      args.in_flight)
        results["log_problems"] = {name: log_problems(path) for name, path in logs.items()}
        if args.keep_logs:
            results["logs"] = {name: str(path) for name, path in logs.items()}
    finally:
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)

    report(results)
    path = write_results("overhead", results)
    print(f"\nresults: {path}")


def _auth_and_callbacks(config_path: Path) -> dict[str, Any]:
    config = yaml.safe_load(config_path.read_text())
    return {"callbacks": config["litellm_settings"].get("callbacks", []),
            "custom_auth": config["general_settings"].get("custom_auth")}


# --- output -------------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def verdict(value: float, target: float) -> str:
    return f"<= {target:g}: {'met' if value <= target else 'MISSED'}"


def report(results: dict[str, Any]) -> None:
    rows = []
    for label, s in results["http"].items():
        for key in ("A", "B", "C"):
            st = s[key]
            rows.append([f"{label} | {key} {st['label']}", st["n"], fmt(st["p50"]), fmt(st["p90"]), fmt(st["p99"]),
                         fmt(st["mean"]), fmt(st["proxy_cpu_ms_per_request"]), sum(st["errors"].values())])
    ref = results["upstream_alone"]
    rows.append(["floor: fake OpenRouter, no proxy", ref["n"], fmt(ref["p50"]), fmt(ref["p90"]), fmt(ref["p99"]),
                 fmt(ref["mean"]), "-", "-"])
    print()
    print(table(["client latency, ms", "n", "p50", "p90", "p99", "mean", "proxy CPU/req", "errors"], rows,
                title=f"HTTP, non-streaming, interleaved A/B/C, {results['requests']} requests each "
                      f"({results['environment']['cpus']} CPUs)"))

    rows = []
    for label, s in results["http"].items():
        for pair, what in (("added_B_minus_A", "B - A (Ralex vs plain LiteLLM)"),
                           ("added_B_minus_C", "B - C (the Ralex hook alone)")):
            d = s[pair]
            rows.append([f"{label} | {what}", signed(d["p50_ms"]), verdict(d["p50_ms"], TARGET_P50_MS),
                         signed(d["p99_ms"]), verdict(d["p99_ms"], TARGET_P99_MS), signed(d["mean_ms"]),
                         signed(d["paired_median_ms"]), fmt(d["ratio_p50"], 3), signed(d["cpu_ms_per_request"])])
    print()
    print(table(["added latency, ms", "p50", "target", "p99", "target", "mean", "paired median", "p50 ratio",
                 "proxy CPU/req"], rows))
    b = results["http"]["auto on B"]["B"]
    print(f"auto on B routed: {b.get('routes', {})}; {b.get('routing', {})}")

    rows = [[name, fmt(s["p50"], 1), fmt(s["p90"], 1), fmt(s["p99"], 1), fmt(s["mean"], 1), fmt(s["max"], 0)]
            for name, s in results["in_process_us"].items()]
    print()
    print(table(["in-process, us per call", "p50", "p90", "p99", "mean", "max"], rows,
                title=f"Decision cost without HTTP ({results['body']['system_prompt_bytes']} B system prompt, "
                      "7 tools, 6 messages)"))
    print(f"auto decisions: {results['in_process_auto_routing']}")
    w = results["ledger_write"]
    print(f"ledger writer, one row per transaction: {w['cpu_us_per_row']:.0f} us CPU, "
          f"{w['wall_us_per_row']:.0f} us wall per row ({w['rows']} rows)")
    problems = {name: found for name, found in results["log_problems"].items() if found["lines"]}
    if problems:
        print("\nlines that look like problems in the logs:")
        for name, found in problems.items():
            print(f"  {name}: {found['lines']} (first: {found['first'][0][:220]})")


if __name__ == "__main__":
    main()
