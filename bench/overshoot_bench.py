"""Budget overshoot under a burst: 50 concurrent requests when only $0.01 is left.

Method
------
One Postgres (testcontainers), the fake OpenRouter (its own process) and ``ralex-proxy`` exactly as
shipped. Each round:

1. the fake is reset and today's limit is set to spent + $0.01 (``ledger.store.update_settings``;
   the round starts once ``/ralex/budget`` shows the new limit);
2. the fake gets a ``slow`` fault for every request (0.3 s between chunks, or that much per chunk up
   front when not streaming), so every admitted request is still in flight when the last one
   arrives;
3. 50 threads, released together by a barrier, each send one ``auto`` chat completion: a coding
   agent's step of about 12 KB (system prompt, tools, a tool round trip, a new task) with
   ``max_tokens`` 1500; a sampler polls ``/ralex/budget`` meanwhile (most requests and dollars held
   at once);
4. once ``/ralex/budget`` shows no request in flight and the ledger writer has caught up, the
   round reads the proxy's spend, the ledger rows of the served requests and what the fake
   billed.

Reported per round: limit, spent, overshoot = max(0, spent - limit), the largest hold of a served
request (ledger ``reserved_usd``) and overshoot / that hold, served (200) vs refused (402) vs other,
and two cross-checks: what the fake billed against what the proxy settled, and the overshoot counted
with the fake's bill. The rounds repeat for non-streaming requests, streaming requests that ask for
usage (``stream_options.include_usage``) and streaming requests that do not.

Target (printed, not asserted): overshoot <= one request's worst-case cost (ratio <= 1).

Run from the repo root, with the sandbox images (``set -a; . /tmp/sandbox.env; set +a``)::

    .venv/bin/python -m bench.overshoot_bench [--rounds 5] [--concurrency 50] [--remaining 0.01]

Results: tables on stdout and ``bench/results/overshoot.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from bench.stack import (
    TOOLS,
    agent_body,
    environment,
    log_problems,
    start_fake,
    stop_process,
    system_prompt,
    table,
    write_results,
)
from tests.integration.conftest import MASTER_KEY, Fake, Proxy, start_postgres, start_proxy, wait_until

VARIANTS: dict[str, dict[str, Any]] = {
    "non-streaming": {},
    "streaming, include_usage": {"stream": True, "stream_options": {"include_usage": True}},
    "streaming, no usage asked": {"stream": True},
}
TASK = "add a docstring to the Cache class and explain the eviction order in it"


@dataclass
class Reply:
    status: int
    request_id: str | None
    seconds: float
    done: bool = False  # streaming: the [DONE] line arrived
    usage_cost: float | None = None  # what the client saw in usage.cost
    error: str = ""


def body_for(nonce: int, prompt_bytes: int, max_tokens: int, extra: dict[str, Any]) -> dict[str, Any]:
    """An agent step of about ``prompt_bytes`` (the system prompt fills what the rest leaves)."""
    rest = agent_body(TASK, "auto", nonce, system="")
    rest_bytes = sum(len(str(m.get("content") or "").encode()) for m in rest["messages"]) + len(json.dumps(TOOLS))
    body = agent_body(TASK, "auto", nonce, system=system_prompt(max(0, prompt_bytes - rest_bytes)),
                      max_tokens=max_tokens)
    return {**body, **extra}


def send(client: httpx.Client, body: dict[str, Any], start: threading.Barrier) -> Reply:
    start.wait()
    began = time.perf_counter()
    try:
        if not body.get("stream"):
            response = client.post("/v1/chat/completions", json=body)
            cost = (response.json().get("usage") or {}).get("cost") if response.status_code == 200 else None
            return Reply(response.status_code, response.headers.get("x-ralex-request-id"),
                         time.perf_counter() - began, usage_cost=cost,
                         error="" if response.status_code in (200, 402) else response.text[:300])
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            reply = Reply(response.status_code, response.headers.get("x-ralex-request-id"), 0.0)
            if response.status_code != 200:
                response.read()
                reply.error = "" if response.status_code == 402 else response.text[:300]
            for line in response.iter_lines() if response.status_code == 200 else ():
                if line == "data: [DONE]":
                    reply.done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    if chunk.get("error"):
                        reply.error = json.dumps(chunk["error"])[:300]
                    if (chunk.get("usage") or {}).get("cost") is not None:
                        reply.usage_cost = chunk["usage"]["cost"]
            reply.seconds = time.perf_counter() - began
            return reply
    except httpx.HTTPError as exc:
        return Reply(0, None, time.perf_counter() - began, error=f"{type(exc).__name__}: {exc}")


class Sampler(threading.Thread):
    """Polls /ralex/budget: the most requests and dollars held at once during the burst."""

    def __init__(self, proxy: Proxy) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{proxy.port}", timeout=10,
                                   headers={"Authorization": f"Bearer {MASTER_KEY}"})
        self.stop = threading.Event()
        self.max_in_flight = 0
        self.max_reserved = 0.0
        self.min_remaining = float("inf")

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                b = self.client.get("/ralex/budget").json()
            except (httpx.HTTPError, ValueError):
                continue
            self.max_in_flight = max(self.max_in_flight, b["in_flight"])
            self.max_reserved = max(self.max_reserved, b["reserved"])
            self.min_remaining = min(self.min_remaining, b["remaining"])
            self.stop.wait(0.02)


def ledger_rows(proxy: Proxy, request_ids: list[str]) -> list[dict[str, Any]]:
    if not request_ids:
        return []
    with psycopg.connect(proxy.dsn, row_factory=dict_row) as conn:
        return conn.execute("SELECT request_id, status, reserved_usd, cost_usd, cost_source, max_tokens,"
                            " prompt_tokens, completion_tokens, alias_routed, tier FROM ledger"
                            " WHERE request_id = ANY(%s::uuid[])", (request_ids,)).fetchall()


def run_round(proxy: Proxy, fake: Fake, args: argparse.Namespace, extra: dict[str, Any],
              nonce: int) -> dict[str, Any]:
    fake.reset()
    proxy.set_remaining(args.remaining)
    before = proxy.budget()
    limit, spent_before = before["limit"], before["spent"]
    fake.faults({"kind": "slow", "chunk_delay": args.chunk_delay, "times": None})
    bodies = [body_for(nonce + i, args.prompt_bytes, args.max_tokens, extra) for i in range(args.concurrency)]
    sampler = Sampler(proxy)
    sampler.start()
    start = threading.Barrier(args.concurrency)
    limits = httpx.Limits(max_connections=args.concurrency + 5, max_keepalive_connections=args.concurrency)
    with httpx.Client(base_url=f"http://127.0.0.1:{proxy.port}", timeout=120, limits=limits,
                      headers={"Authorization": f"Bearer {MASTER_KEY}"}) as client, \
            ThreadPoolExecutor(args.concurrency) as pool:
        began = time.perf_counter()
        replies = list(pool.map(lambda body: send(client, body, start), bodies))
        burst_seconds = time.perf_counter() - began
    wait_until(lambda: proxy.budget()["in_flight"] == 0, 60, interval=0.1, what="every hold to settle")
    wait_until(lambda: proxy.budget()["ledger"]["pending"] == 0, 30, interval=0.1, what="the ledger writer")
    sampler.stop.set()
    sampler.join(5)
    after = proxy.budget()
    billed = fake.client.get("/_fake/usage").json()
    fake.reset()  # drop the slow fault

    served = [r for r in replies if r.status == 200]
    served_ids = [r.request_id for r in served if r.request_id]
    rows = wait_until(lambda: (found := ledger_rows(proxy, served_ids)) and len(found) == len(served_ids) and found,
                      15, interval=0.2, what="ledger rows of the served requests") if served_ids else []
    spent = after["spent"]
    worst = max((float(r["reserved_usd"]) for r in rows), default=0.0)
    overshoot = max(0.0, spent - limit)
    overshoot_billed = max(0.0, spent_before + billed["cost"] - limit)
    statuses: dict[str, int] = {}
    for r in replies:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    return {
        "limit": limit,
        "spent_before": spent_before,
        "spent": spent,
        "round_spend": spent - spent_before,
        "budget_used": (spent - spent_before) / (limit - spent_before) if limit > spent_before else None,
        "overshoot": overshoot,
        "worst_hold": worst,
        "overshoot_over_worst": overshoot / worst if worst else None,
        "served": len(served),
        "refused": statuses.get("402", 0),
        "other": {k: v for k, v in statuses.items() if k not in ("200", "402")},
        "errors": sorted({r.error for r in replies if r.error})[:5],
        "served_without_request_id": sum(1 for r in served if not r.request_id),
        "streams_without_done": sum(1 for r in served if extra.get("stream") and not r.done),
        "upstream_billed": billed["cost"],
        "upstream_requests": billed["requests"],
        "ledger_cost": sum(float(r["cost_usd"]) for r in rows),
        "ledger_cost_sources": _count(str(r["cost_source"]) for r in rows),
        "ledger_statuses": _count(str(r["status"]) for r in rows),
        "client_usage_cost": sum(r.usage_cost or 0.0 for r in served),
        "overshoot_by_upstream_bill": overshoot_billed,
        "max_in_flight": sampler.max_in_flight,
        "max_reserved": sampler.max_reserved,
        "min_remaining": sampler.min_remaining,
        "max_tokens_granted": sorted({r["max_tokens"] for r in rows}),
        "tiers": _count(str(r["tier"]) for r in rows),
        "routed": _count(str(r["alias_routed"]) for r in rows),
        "burst_seconds": round(burst_seconds, 2),
        "slowest_reply_seconds": round(max(r.seconds for r in replies), 2),
    }


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [r["overshoot_over_worst"] or 0.0 for r in rounds]
    return {
        "rounds": len(rounds),
        "max_overshoot": max(r["overshoot"] for r in rounds),
        "max_overshoot_over_worst": max(ratios),
        "max_overshoot_by_upstream_bill": max(r["overshoot_by_upstream_bill"] for r in rounds),
        "served": sum(r["served"] for r in rounds),
        "refused": sum(r["refused"] for r in rounds),
        "other": sum(sum(r["other"].values()) for r in rounds),
        "billed_minus_settled": sum(r["upstream_billed"] - r["round_spend"] for r in rounds),
        "target_met": all(r["overshoot"] <= r["worst_hold"] + 1e-12 for r in rounds)
        and all(r["overshoot_by_upstream_bill"] <= r["worst_hold"] + 1e-12 for r in rounds),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overshoot_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant")
    parser.add_argument("--concurrency", type=int, default=50, help="requests fired together")
    parser.add_argument("--remaining", type=float, default=0.01, help="dollars left at the start of a round")
    parser.add_argument("--prompt-bytes", type=int, default=12_000, help="size of each request's prompt")
    parser.add_argument("--max-tokens", type=int, default=1500, help="max_tokens each request asks for")
    parser.add_argument("--chunk-delay", type=float, default=0.3, help="the fake's delay per chunk, seconds")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--keep-logs", action="store_true", help="keep the proxy's log")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ralex-overshoot-"))
    results: dict[str, Any] = {"environment": environment(), "settings": {k: v for k, v in vars(args).items()
                                                                          if k != "keep_logs"},
                               "target": "overshoot <= the largest hold of one served request", "variants": {}}
    logs: dict[str, Path] = {"fake": work / "fake.log"}
    try:
        with ExitStack() as stack:
            print("starting Postgres, the fake OpenRouter and ralex-proxy ...", flush=True)
            pg = start_postgres()
            stack.callback(pg.container.stop)
            fake_process, fake = start_fake(logs["fake"])
            stack.callback(stop_process, fake_process)
            proxy = start_proxy(pg.new_database(), fake, work, RALEX_UPSTREAM_TIMEOUT="60")
            stack.callback(proxy.stop)
            logs["ralex-proxy"] = proxy.log_path
            proxy.budget()  # starts the engine
            for v, name in enumerate(args.variants):
                rounds = []
                for n in range(args.rounds):
                    print(f"{name}: round {n + 1}/{args.rounds} ...", flush=True)
                    rounds.append(run_round(proxy, fake, args, VARIANTS[name], nonce=(v * 1000 + n) * 1000))
                results["variants"][name] = {"rounds": rounds, "summary": summarize(rounds)}
            final = proxy.budget()
            with psycopg.connect(proxy.dsn) as conn:
                row = conn.execute("SELECT spent_usd FROM daily_totals WHERE budget_day = %s",
                                   (final["day"],)).fetchone()
            results["final"] = {"proxy_spent": final["spent"], "ledger_daily_total": float(row[0]) if row else None,
                                "ledger": final["ledger"]}
        results["log_problems"] = {name: log_problems(path) for name, path in logs.items()}
        if args.keep_logs:
            results["logs"] = {name: str(path) for name, path in logs.items()}
    finally:
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)

    report(results)
    path = write_results("overshoot", results)
    print(f"\nresults: {path}")


def usd(value: float) -> str:
    return f"{round(value, 9) + 0.0:.6f}"  # no "-0.000000"


def report(results: dict[str, Any]) -> None:
    s = results["settings"]
    rows = []
    for name, variant in results["variants"].items():
        for n, r in enumerate(variant["rounds"], 1):
            ratio = r["overshoot_over_worst"]
            used = "-" if r["budget_used"] is None else f"{r['budget_used']:.0%}"
            rows.append([f"{name} #{n}", usd(r["limit"]), usd(r["spent"]), used, usd(r["overshoot"]),
                         usd(r["worst_hold"]), "-" if ratio is None else f"{ratio:.2f}", r["served"], r["refused"],
                         sum(r["other"].values()), r["max_in_flight"], usd(r["upstream_billed"]),
                         usd(r["round_spend"]), usd(r["overshoot_by_upstream_bill"])])
    print()
    print(table(["variant, round", "limit $", "spent $", "used", "overshoot $", "worst hold $", "ratio", "served",
                 "402",
                 "other", "max in flight", "fake billed $", "settled $", "overshoot by bill $"], rows,
                title=f"{s['concurrency']} concurrent auto requests, ${s['remaining']} left, ~{s['prompt_bytes']} B "
                      f"prompt, max_tokens {s['max_tokens']}, upstream {s['chunk_delay']} s/chunk"))
    rows = []
    for name, variant in results["variants"].items():
        m = variant["summary"]
        rows.append([name, m["rounds"], usd(m["max_overshoot"]), f"{m['max_overshoot_over_worst']:.2f}",
                     usd(m["max_overshoot_by_upstream_bill"]), m["served"], m["refused"], m["other"],
                     usd(m["billed_minus_settled"]), "met" if m["target_met"] else "MISSED"])
    print()
    print(table(["variant", "rounds", "max overshoot $", "max ratio", "max by bill $", "served", "402", "other",
                 "billed - settled $", "target: overshoot <= 1 hold"], rows))
    notes = []
    for name, variant in results["variants"].items():
        for n, r in enumerate(variant["rounds"], 1):
            if r["errors"]:
                notes.append(f"{name} #{n}: errors {r['errors']}")
            if r["streams_without_done"] or r["served_without_request_id"]:
                notes.append(f"{name} #{n}: {r['streams_without_done']} streams without [DONE], "
                             f"{r['served_without_request_id']} served without x-ralex-request-id")
            if set(r["ledger_cost_sources"]) - {"upstream"}:
                notes.append(f"{name} #{n}: ledger cost sources {r['ledger_cost_sources']}")
    first = next(iter(results["variants"].values()))["rounds"][0]
    notes.append(f"holds: tier {first['tiers']}, routed {first['routed']}, max_tokens granted "
                 f"{first['max_tokens_granted']} (asked {s['max_tokens']})")
    f = results["final"]
    notes.append(f"end: proxy spent {usd(f['proxy_spent'])}, ledger daily total "
                 f"{usd(f['ledger_daily_total'] or 0.0)}, ledger writer {f['ledger']}")
    for name, found in results["log_problems"].items():
        if found["refusals_logged_as_error"]:
            notes.append(f"{name} log: {found['refusals_logged_as_error']} refusals (402) logged at ERROR level")
        if found["lines"]:
            notes.append(f"{name} log: {found['lines']} other line(s) that look like problems, first: "
                         f"{found['first'][0][:200]}")
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
