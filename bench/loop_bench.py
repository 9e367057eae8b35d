"""How long small requests wait while the real proxy reads one large request body.

Why: the gate parses, checks and reads every model request body (``ralex.proxy.server.Gate._body``,
``read_body``). A body over ``OFF_LOOP_BYTES`` (128 KB) is read in a worker process
(``asyncio.to_thread``) so the event loop stays free for everyone else; but ``json.loads`` and most
of the reading are Python/C work under the GIL, so some blocking remains. ``bench.parse_bench``
measures that in process; this measures it end to end, through the real proxy, as the small
requests of other clients see it.

Method: Postgres (testcontainers), the fake OpenRouter in its own process and ``ralex-proxy`` as
shipped (``tests.integration.conftest.start_proxy``; daily limit raised so budget is not the reason
for a refusal, the shipped per-request caps and upstream timeout). Two load generators, each in its
own process with its own asyncio loop, send small requests on a fixed schedule for the whole run,
open loop: each request is sent at its scheduled arrival time whether or not the earlier ones were
answered, and its latency is measured from that scheduled arrival to its answer, so a stall counts
against every request that arrived during it (no coordinated omission; a generator that falls
behind sends the missed requests at once, still timed from their scheduled arrivals):

* ``liveliness``: ``GET /health/liveliness`` (no key, no model call) every ``--live-interval-ms``
  (10 ms);
* ``chat``: a tiny chat completion (model ``cheap``, "fix the typo in a.py", ``max_tokens`` 16, the
  agent key) every ``--chat-interval-ms``. Its default is 100 ms, not 10: a tiny chat costs the
  proxy ~25 ms of CPU (LiteLLM, the hooks, the ledger), so at 10 ms (100/s) the proxy is saturated
  on its own and latency grows without bound whatever else happens. A short saturation check at
  the end (``--saturation-seconds``, chat every 10 ms and nothing else) records that.

The large bodies are ``bench.parse_bench.build``'s families (``prose``, ``non-ascii``,
``agent-step``, ``unclosed-reminder`` by default) in each API's own shape (chat
``/v1/chat/completions``, Anthropic ``/v1/messages``, OpenAI ``/v1/responses``), model ``cheap``, at
1, 8 and 32 MB (the gate's limit is ``32 << 20`` bytes; the largest body is kept just under it, and
every body's exact size is recorded). Each is sent alone, from the main process, ``--repeats``
times; the shipped caps refuse most large prompts with 402 after reading them (still the whole
parse and read), and each answer's status is recorded. Before them, one 1 KB request per API,
recorded apart (``first_calls``): a route's first request may cost more than later ones (LiteLLM
loaded ``/v1/messages`` on its first request, blocking its loop ~1.5 s, until the proxy loaded it
at start), and that is not a large body's doing. Windows, by
the small requests' scheduled arrival: **idle** (``--idle-seconds`` at the start and again at the
end, no large body), **during** (from sending the large body until its answer has been read) and
**after** (the ``--settle`` seconds after that answer: work the proxy does once it has answered,
such as logging). Per window: p50/p99/max of each small kind, and the large request's own latency.

The machine is shared by the proxy, the fake, Postgres and the generators (see ``cpus`` in the
environment block): compare the windows of one run, not runs on different machines.

Run from the repo root, with the sandbox images (``set -a; . /tmp/sandbox.env; set +a``)::

    .venv/bin/python -m bench.loop_bench [--sizes 1,8,32] [--apis chat,messages,responses]
        [--families prose,non-ascii,agent-step,unclosed-reminder] [--repeats 3]

A quick run: ``--sizes 1 --families prose --repeats 1 --idle-seconds 3``.

Results: tables on stdout and ``bench/results/loop.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench.overhead_bench import process_cpu_seconds
from bench.parse_bench import build
from bench.stack import environment, log_problems, percentile, start_backends, table, write_results
from ralex.body import OFF_LOOP_BYTES
from tests.integration.conftest import start_proxy

MB = 1 << 20
LIMIT = 32 << 20  # the gate's body limit (RALEX_MAX_BODY_BYTES): a larger body is answered 413 unread
NEAR = 64 << 10  # the largest bodies are this close under the limit
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}
FAMILIES = ("prose", "non-ascii", "agent-step", "unclosed-reminder")
AGENT_KEY = "sk-ralex-test-agent"  # proxy_env's RALEX_AGENT_KEY
TINY = {"model": "cheap", "messages": [{"role": "user", "content": "fix the typo in a.py"}], "max_tokens": 16}
KINDS = ("liveliness", "chat")
KEEP_ALIVE_S = 2.0  # a connection idle longer is not reused (uvicorn closes idle ones after 5 s)


# --- the small requests: open loop, in their own process ------------------------------------------------

def _generate(kind: str, port: int, interval: float, stop: Any, ready: Any, out: str) -> None:
    """A load generator's process: ``kind`` every ``interval`` s until ``stop`` is set; writes
    ``[arrival, answered, status]`` per request (``time.monotonic()``, shared by all processes) to ``out``."""
    asyncio.run(_generate_async(kind, port, interval, stop, ready, out))


def _request(kind: str) -> bytes:
    if kind == "liveliness":
        return b"GET /health/liveliness HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = json.dumps(TINY).encode()
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {AGENT_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[str, bool]:
    """One HTTP/1.1 request on an open connection: the status, and whether the connection may be reused."""
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    status = head.split(" ", 2)[1]
    length = re.search(r"\r\ncontent-length:\s*(\d+)", head)
    if length:
        await reader.readexactly(int(length.group(1)))
    elif "\r\ntransfer-encoding: chunked" in head:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    else:
        await reader.read()
        return status, False
    return status, "\r\nconnection: close" not in head


async def _generate_async(kind: str, port: int, interval: float, stop: Any, ready: Any, out: str) -> None:
    """Open loop on raw HTTP/1.1 keep-alive connections (an HTTP client library costs more CPU per request
    than the proxy spends on a liveliness probe, and on two cores that shows up as the proxy's latency)."""
    records: list[tuple[float, float, str]] = []
    request = _request(kind)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []  # keep-alive, last used at

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        try:
            status, reuse = await asyncio.wait_for(_exchange(reader, writer, request), 300)
        except BaseException:
            writer.close()
            raise
        if reuse:
            idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return status

    async def one(arrival: float) -> None:
        status = ""
        while idle and not status:  # a kept connection, unless the server has closed it meanwhile
            reader, writer, used = idle.pop()
            if time.monotonic() - used > KEEP_ALIVE_S:
                writer.close()
                continue
            try:
                status = await exchange(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    status = type(exc).__name__  # cut off mid-answer: a failure, not a stale connection
            except (OSError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
                status = type(exc).__name__
        if not status:
            try:
                status = await exchange(*await asyncio.open_connection("127.0.0.1", port))
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
                status = type(exc).__name__
        records.append((arrival, time.monotonic(), status))

    await one(time.monotonic())  # connect once before the schedule starts
    records.clear()
    ready.set()
    tasks: set[asyncio.Task[None]] = set()
    arrival = time.monotonic()
    while not stop.is_set():
        arrival += interval
        delay = arrival - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(arrival))  # sent at (or, if this loop was late, timed from) arrival
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=120)
    Path(out).write_text(json.dumps(records))


class Load:
    """One load generator process."""

    def __init__(self, kind: str, port: int, interval_ms: float, work: Path) -> None:
        ctx = multiprocessing.get_context("spawn")  # a clean interpreter: no threads or sockets inherited
        self.kind = kind
        self.interval_ms = interval_ms
        self.out = work / f"load-{kind}-{interval_ms:g}.json"
        self.stop_event = ctx.Event()
        ready = ctx.Event()
        self.process = ctx.Process(target=_generate, args=(kind, port, interval_ms / 1000, self.stop_event,
                                                            ready, str(self.out)), daemon=True)
        self.process.start()
        if not ready.wait(120):
            raise RuntimeError(f"the {kind} load generator did not start")

    def finish(self) -> list[tuple[float, float, str]]:
        self.stop_event.set()
        self.process.join(180)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
        if not self.out.exists():
            raise RuntimeError(f"the {self.kind} load generator wrote no results (exit {self.process.exitcode})")
        return [(float(a), float(b), str(c)) for a, b, c in json.loads(self.out.read_text())]


# --- windows and statistics ---------------------------------------------------------------------------

def window(records: Sequence[tuple[float, float, str]], spans: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Small requests that arrived (as scheduled) within any of ``spans``: latency ms and statuses."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    for arrival, answered, status in records:
        if any(start <= arrival < end for start, end in spans):
            latencies.append((answered - arrival) * 1000)
            statuses[status] += 1
    return {"n": len(latencies), "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies) if latencies else None,
            "not_200": len(latencies) - statuses["200"], "statuses": dict(statuses)}


def fitted(family: str, api: str, target: int, model: str) -> bytes:
    """``build``'s body of ``family`` in ``api``'s shape at about ``target`` bytes, as sent (UTF-8 JSON,
    ``model`` set). At the gate's limit: within ``NEAR`` bytes under it, never at or over it (413)."""
    if target < LIMIT:
        body, _ = build(family, api, target)
        return json.dumps({**body, "model": model}, ensure_ascii=False).encode()
    aim = LIMIT - NEAR // 2
    asked = aim
    for _ in range(8):
        body, _ = build(family, api, asked)
        raw = json.dumps({**body, "model": model}, ensure_ascii=False).encode()
        if LIMIT - NEAR <= len(raw) < LIMIT:
            return raw
        asked += aim - len(raw)  # build lands within 2% of what it is asked: ask for the difference
    raise RuntimeError(f"could not fit {family}/{api} within {NEAR} bytes under {LIMIT} bytes")


def _ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:,.1f}"


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


# --- main ---------------------------------------------------------------------------------------------

def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sizes = [int(float(s) * MB) for s in args.sizes.split(",") if s]
    apis = [a for a in args.apis.split(",") if a]
    families = [f for f in args.families.split(",") if f]
    cases: list[dict[str, Any]] = []
    with ExitStack() as stack:
        print("starting Postgres, the fake OpenRouter and the proxy ...", flush=True)
        pg, fake = start_backends(stack, work)
        proxy = start_proxy(pg.new_database(), fake, work, RALEX_DAILY_BUDGET=str(args.daily_limit),
                            RALEX_UPSTREAM_TIMEOUT="120")
        stack.callback(proxy.stop)
        proxy.set_limit(args.daily_limit)
        base_url = f"http://127.0.0.1:{proxy.port}"
        budget = proxy.budget()
        client = stack.enter_context(httpx.Client(base_url=base_url, timeout=args.timeout, headers={
            "Authorization": f"Bearer {AGENT_KEY}", "Content-Type": "application/json"}))
        warm = client.post("/v1/chat/completions", content=json.dumps(TINY).encode())
        print(f"tiny chat: HTTP {warm.status_code}; starting the load generators ...", flush=True)
        loads = [Load("liveliness", proxy.port, args.live_interval_ms, work),
                 Load("chat", proxy.port, args.chat_interval_ms, work)]
        try:
            time.sleep(1.0)  # the schedules settle
            print(f"idle for {args.idle_seconds:g} s ...", flush=True)
            cpu0, t0 = process_cpu_seconds(proxy.process.pid), time.monotonic()
            time.sleep(args.idle_seconds)
            t1 = time.monotonic()
            idle_cpu = (process_cpu_seconds(proxy.process.pid) - cpu0) / (t1 - t0)
            idle_spans = [(t0, t1)]
            first_calls = []
            for api in apis:  # a route's first request may cost more: not a large body's doing
                small, _ = build("prose", api, 1024)
                time.sleep(0.5)
                started = time.monotonic()
                response = client.post(PATHS[api], content=json.dumps({**small, "model": args.model}).encode())
                answered = time.monotonic()
                first_calls.append({"api": api, "status": str(response.status_code),
                                    "large_ms": (answered - started) * 1000, "during": (started, answered)})
                print(f"  first {api} request (1 KB): HTTP {response.status_code}, "
                      f"{(answered - started) * 1000:.1f} ms", flush=True)
                time.sleep(args.settle)
            for size in sizes:
                for api in apis:
                    for family in families:
                        raw = fitted(family, api, size, args.model)
                        if len(raw) > 2 * size:  # agent-step's own prompt and tools are larger than this size
                            continue
                        case: dict[str, Any] = {"api": api, "family": family, "target_mb": size / MB,
                                                "body_bytes": len(raw), "off_loop": len(raw) > OFF_LOOP_BYTES,
                                                "runs": []}
                        for _ in range(args.repeats):
                            time.sleep(0.5)  # building the body is done; the machine settles
                            started = time.monotonic()
                            try:
                                response = client.post(PATHS[api], content=raw)
                                status, answer = str(response.status_code), response.text[:300]
                            except httpx.HTTPError as exc:
                                status, answer = type(exc).__name__, str(exc)[:300]
                            answered = time.monotonic()
                            time.sleep(args.settle)
                            run_ = {"status": status, "large_ms": (answered - started) * 1000,
                                    "during": (started, answered), "after": (answered, answered + args.settle)}
                            if status != "200":
                                run_["answer"] = answer
                            case["runs"].append(run_)
                            print(f"  {api:<9} {family:<18} {len(raw) / MB:6.2f} MB  HTTP {status:<4} "
                                  f"large {run_['large_ms']:9.1f} ms", flush=True)
                        cases.append(case)
                        del raw
            print(f"idle again for {args.idle_seconds:g} s ...", flush=True)
            t2 = time.monotonic()
            time.sleep(args.idle_seconds)
            idle_spans.append((t2, time.monotonic()))
        finally:
            records = {load.kind: load.finish() for load in loads}
        saturation = None
        if args.saturation_seconds > 0:
            print(f"saturation check: a tiny chat every 10 ms for {args.saturation_seconds:g} s, nothing else ...",
                  flush=True)
            time.sleep(2.0)
            load = Load("chat", proxy.port, 10, work)
            s0 = time.monotonic()
            time.sleep(args.saturation_seconds)
            s1 = time.monotonic()
            done = load.finish()
            ok = [r for r in done if r[2] == "200"]
            saturation = {"interval_ms": 10, "seconds": args.saturation_seconds,
                          **window(done, [(s0, s1)]),
                          "answered_per_s": len(ok) / max(1e-9, max((r[1] for r in ok), default=s0) - s0)}
        time.sleep(1.0)
        budget_end = proxy.budget()
        problems = log_problems(proxy.log_path)
    idle = {kind: window(records[kind], idle_spans) for kind in KINDS}
    for call in first_calls:
        span = call.pop("during")
        call.update({kind: window(records[kind], [span]) for kind in KINDS})
    for case in cases:
        case["large_ms"] = {"min": min(r["large_ms"] for r in case["runs"]),
                            "median": percentile([r["large_ms"] for r in case["runs"]], 50),
                            "max": max(r["large_ms"] for r in case["runs"])}
        case["statuses"] = dict(Counter(r["status"] for r in case["runs"]))
        case["during"] = {kind: window(records[kind], [r["during"] for r in case["runs"]]) for kind in KINDS}
        case["after"] = {kind: window(records[kind], [r["after"] for r in case["runs"]]) for kind in KINDS}
        for r in case["runs"]:
            del r["during"], r["after"]
    return {"cases": cases, "idle": idle, "first_calls": first_calls, "idle_proxy_cpu_share": idle_cpu,
            "saturation_check": saturation,
            "budget_start": {k: budget[k] for k in ("limit", "spent", "prices")},
            "budget_end": {k: budget_end[k] for k in ("limit", "spent", "ledger")},
            "proxy_log": problems}


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The worst large bodies (largest size): small p99 and max during them against idle."""
    largest = max((c["target_mb"] for c in result["cases"]), default=None)
    out: dict[str, Any] = {"largest_target_mb": largest}
    for kind in KINDS:
        idle = result["idle"][kind]
        at_max = [c for c in result["cases"] if c["target_mb"] == largest and c["during"][kind]["n"]]
        if not at_max:
            continue
        by_p99 = max(at_max, key=lambda c: c["during"][kind]["p99_ms"])
        by_max = max(at_max, key=lambda c: c["during"][kind]["max_ms"])
        out[kind] = {
            "idle_p99_ms": idle["p99_ms"], "idle_max_ms": idle["max_ms"],
            "worst_p99": {"api": by_p99["api"], "family": by_p99["family"], "body_bytes": by_p99["body_bytes"],
                          "statuses": by_p99["statuses"], "large_ms_median": by_p99["large_ms"]["median"],
                          "p99_ms": by_p99["during"][kind]["p99_ms"], "max_ms": by_p99["during"][kind]["max_ms"],
                          "p99_over_idle_p99": _ratio(by_p99["during"][kind]["p99_ms"], idle["p99_ms"]),
                          "max_over_idle_max": _ratio(by_p99["during"][kind]["max_ms"], idle["max_ms"])},
            "worst_max": {"api": by_max["api"], "family": by_max["family"], "body_bytes": by_max["body_bytes"],
                          "statuses": by_max["statuses"], "large_ms_median": by_max["large_ms"]["median"],
                          "p99_ms": by_max["during"][kind]["p99_ms"], "max_ms": by_max["during"][kind]["max_ms"],
                          "p99_over_idle_p99": _ratio(by_max["during"][kind]["p99_ms"], idle["p99_ms"]),
                          "max_over_idle_max": _ratio(by_max["during"][kind]["max_ms"], idle["max_ms"])},
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loop_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,8,32", help="large body sizes in MB (32 = just under the limit)")
    parser.add_argument("--apis", default=",".join(PATHS))
    parser.add_argument("--families", default=",".join(FAMILIES), help="bench.parse_bench families")
    parser.add_argument("--model", default="cheap", help="the large bodies' model")
    parser.add_argument("--repeats", type=int, default=3, help="times each large body is sent")
    parser.add_argument("--live-interval-ms", type=float, default=10.0)
    parser.add_argument("--chat-interval-ms", type=float, default=100.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle window, at the start and the end")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after each large answer (the 'after' "
                                                                   "window) before the next body")
    parser.add_argument("--saturation-seconds", type=float, default=3.0, help="chat every 10 ms alone (0: skip)")
    parser.add_argument("--daily-limit", type=float, default=1000.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="the large request's timeout, seconds")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ralex-loop-"))
    started = time.monotonic()
    try:
        result = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(result)
    results = {
        "environment": {**environment(), "loadavg_end": list(os.getloadavg())},
        "settings": {"sizes_mb": args.sizes, "apis": args.apis, "families": args.families, "model": args.model,
                     "repeats": args.repeats, "live_interval_ms": args.live_interval_ms,
                     "chat_interval_ms": args.chat_interval_ms, "idle_seconds": args.idle_seconds,
                     "settle_s": args.settle, "daily_limit_usd": args.daily_limit, "off_loop_bytes": OFF_LOOP_BYTES,
                     "body_limit_bytes": LIMIT, "tiny_chat": TINY, "run_seconds": round(time.monotonic() - started)},
        "summary": summary,
        **result,
    }
    idle = result["idle"]
    print()
    print(table(["window", "live n", "live p50", "live p99", "live max", "chat n", "chat p50", "chat p99",
                 "chat max"],
                [["idle", idle["liveliness"]["n"], _ms(idle["liveliness"]["p50_ms"]), _ms(idle["liveliness"]["p99_ms"]),
                  _ms(idle["liveliness"]["max_ms"]), idle["chat"]["n"], _ms(idle["chat"]["p50_ms"]),
                  _ms(idle["chat"]["p99_ms"]), _ms(idle["chat"]["max_ms"])]],
                f"idle (proxy CPU {result['idle_proxy_cpu_share']:.0%} of a core), ms from scheduled arrival"))
    print()
    print(table(["API", "status", "ms", "live n", "live p50", "live p99", "live max", "chat n", "chat max"],
                [[c["api"], c["status"], _ms(c["large_ms"]), c["liveliness"]["n"], _ms(c["liveliness"]["p50_ms"]),
                  _ms(c["liveliness"]["p99_ms"]), _ms(c["liveliness"]["max_ms"]), c["chat"]["n"],
                  _ms(c["chat"]["max_ms"])] for c in result["first_calls"]],
                "each API's first request (1 KB body), before any large body"))
    for part in ("during", "after"):
        rows = []
        for c in result["cases"]:
            live, chat = c[part]["liveliness"], c[part]["chat"]
            rows.append([f"{c['api']} {c['family']}", f"{c['body_bytes'] / MB:.2f}",
                         ",".join(f"{s}x{n}" for s, n in c["statuses"].items()), _ms(c["large_ms"]["median"]),
                         live["n"], _ms(live["p50_ms"]), _ms(live["p99_ms"]), _ms(live["max_ms"]),
                         chat["n"], _ms(chat["p50_ms"]), _ms(chat["p99_ms"]), _ms(chat["max_ms"])])
        title = ("small requests that arrived while a large body was sent and answered" if part == "during" else
                 f"small requests that arrived in the {args.settle:g} s after the large answer")
        print()
        print(table(["API family", "MB", "status", "large ms", "live n", "live p50", "live p99", "live max",
                     "chat n", "chat p50", "chat p99", "chat max"], rows, title))
    print()
    for kind in KINDS:
        if kind in summary:
            w = summary[kind]["worst_p99"]
            print(f"worst {summary['largest_target_mb']:g} MB body for {kind}: {w['api']} {w['family']} "
                  f"({w['body_bytes']:,} bytes, {w['statuses']}): p99 {_ms(w['p99_ms'])} ms "
                  f"({w['p99_over_idle_p99']:.1f}x idle), max {_ms(w['max_ms'])} ms "
                  f"({w['max_over_idle_max']:.1f}x idle)")
    if result["saturation_check"]:
        s = result["saturation_check"]
        print(f"saturation check, tiny chat every 10 ms alone: n {s['n']}, p50 {_ms(s['p50_ms'])} ms, "
              f"p99 {_ms(s['p99_ms'])} ms, answered {s['answered_per_s']:.0f}/s")
    print(f"proxy log: {result['proxy_log']['lines']} problem lines, "
          f"{result['proxy_log']['refusals_logged_as_error']} refusals logged as errors")
    print(f"\nresults: {write_results('loop', results)}")


if __name__ == "__main__":
    main()
