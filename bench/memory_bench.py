"""Memory: does the proxy's RSS level off under steady valid traffic, and if not, what grows?

Why
---
The soak's control run (``bench/soak_bench.py --control``: valid traffic only) saw the proxy's RSS grow
41-47 MiB/h over 15 minutes. Fifteen minutes cannot tell a slow warm-up from a leak; this benchmark
runs long enough to tell, and can look inside the process while it runs.

Method
------
* Postgres (testcontainers), the fake OpenRouter in its own process and the real proxy (``ralex-proxy``,
  as the integration tests start it), a daily limit of $1000 so nothing is refused for budget.
* The soak's control plan: valid coding-agent steps (``cheap`` and ``auto``, ``--stream-share``
  streamed) with a few bad bodies (``--bad-share``), at ``--rate`` requests/s from ``--threads``
  threads, for ``--minutes``. No Prometheus (the soak showed it does not change the proxy's memory).
* Every ``--sample-seconds``: the proxy's RSS and anonymous RSS (/proc), the series in its
  ``/metrics``, requests sent so far, the load average. Samples also go to ``samples.jsonl`` in the
  work directory as they are taken, so a cut run still has its figures.
* ``--probe-seconds N`` puts ``bench/memprobe`` on the proxy's ``PYTHONPATH``: its ``sitecustomize``
  writes every N s live objects by type, the lengths of suspected structures (LiteLLM's callback
  lists and caches, Ralex's turn memory, billed prefixes, holds, tasks), containers over
  ``--probe-big`` items, the collector's statistics, and on request the chain of references that keeps
  objects of ``--probe-types`` alive and, with ``--tracemalloc FRAMES``, a tracemalloc snapshot;
  ``--analyse DIR`` compares the first and last record (the probe pauses the proxy for seconds: never
  use its runs for the slope). Read tracemalloc's per-line figures with care: tuples, lists and dicts
  on CPython's free lists still count as allocated where they were first made.
* ``--turns-max N`` (an experiment) caps the engine's turn memory at N entries once the proxy has
  started, to see how much of the growth it is.

Figures: the least-squares slope of RSS over the samples after ``--warmup-minutes``, in MiB per hour
and in KiB per 1,000 requests, the RSS at the end of the warm-up and at the end, and the slope of the
last half of the steady part (levelling off shows as a smaller second slope). Nothing is asserted; the
machine has 2 cores shared with other work, the load average is recorded with every sample.

Run from the repo root, with the sandbox images (``set -a; . /tmp/sandbox.env; set +a``)::

    uv run --frozen python -m bench.memory_bench --minutes 65 --rate 5 --label after
    uv run --frozen python -m bench.memory_bench --minutes 12 --probe-seconds 120 --tracemalloc 10 --label probe

Results: ``bench/results/memory.json`` (one entry per ``--label``, earlier labels kept).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.soak_bench import CAPS, Traffic, growth, metric_series, plan, proxy_metrics, regression, rss_mib
from bench.stack import RESULTS, ROOT, environment, log_problems, start_fake, stop_process, summary, system_prompt
from tests.integration.conftest import start_postgres, start_proxy

PROBE = ROOT / "bench" / "memprobe"


def heap_parts(pid: int) -> dict[str, float]:
    """Where the proxy's resident memory is, from /proc/PID/smaps: the C heap (glibc's main arena, what
    Python hands to malloc: blocks over 512 bytes), the other threads' malloc arenas (64 MiB reservations)
    and the remaining anonymous mappings (pymalloc's arenas, large blocks)."""
    heap = arenas = anon = 0
    size, name = 0, ""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                parts = line.split()
                if parts and not parts[0].endswith(":") and "-" in parts[0]:
                    start, end = parts[0].split("-")
                    size, name = int(end, 16) - int(start, 16), (parts[5] if len(parts) > 5 else "")
                elif parts and parts[0] == "Rss:":
                    if name == "[heap]":
                        heap += int(parts[1])
                    elif not name:
                        if size >= 60 << 20:
                            arenas += int(parts[1])
                        else:
                            anon += int(parts[1])
    except OSError:
        return {}
    return {"c_heap_mib": round(heap / 1024, 2), "thread_arenas_mib": round(arenas / 1024, 2),
            "other_anon_mib": round(anon / 1024, 2)}


def sample(t0: float, pid: int, base: str, traffic: Traffic) -> dict[str, Any]:
    now = time.monotonic()
    rss = rss_mib(pid)
    try:
        series: int | None = metric_series(proxy_metrics(base))
    except Exception:
        series = None
    requests, _ = traffic.counts_until(now)
    return {"t_s": round(now - t0, 1), "requests_sent": requests, "proxy_rss_mib": round(rss["rss_mib"], 2),
            "proxy_rss_anon_mib": round(rss["rss_anon_mib"], 2), **heap_parts(pid), "proxy_metrics_series": series,
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def steady_figures(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    warm = [s for s in samples if s["t_s"] >= warmup_s]
    out: dict[str, Any] = {"warmup_s": warmup_s, "samples_steady": len(warm)}
    if len(warm) < 3:
        return out
    for key in ("proxy_rss_mib", "proxy_rss_anon_mib", "c_heap_mib", "thread_arenas_mib", "other_anon_mib"):
        if any(s.get(key) is None for s in warm):
            continue
        g = growth([{**s, "bogus_sent": 0} for s in warm], key)
        per_request = regression([s["requests_sent"] / 1000 for s in warm], [s[key] for s in warm])
        half = warm[len(warm) // 2:]
        second = regression([s["t_s"] / 3600 for s in half], [s[key] for s in half])
        out[key] = {"at_warmup_end_mib": warm[0][key], "end_mib": warm[-1][key], "max_mib": g["max_mib"],
                    "slope_mib_per_hour": g["slope_mib_per_hour"], "r2": g["r2"],
                    "slope_kib_per_1000_requests": (per_request["slope"] or 0) * 1024,
                    "slope_second_half_mib_per_hour": second["slope"]}
    return out


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    items = plan(round(args.minutes * 60 * args.rate), 0, args.bad_share, args.stream_share, args.seed)
    samples: list[dict[str, Any]] = []
    logs: dict[str, Path] = {"fake": work / "fake.log"}
    extra: dict[str, str] = {}
    if args.probe_seconds:
        extra.update(PYTHONPATH=os.pathsep.join(filter(None, (str(PROBE), os.environ.get("PYTHONPATH")))),
                     RALEX_MEMPROBE_DIR=str(work / "probe"),
                     RALEX_MEMPROBE_SECONDS=str(args.probe_seconds), RALEX_MEMPROBE_KEYS=args.probe_keys,
                     RALEX_MEMPROBE_TYPES=args.probe_types, RALEX_MEMPROBE_LINES=args.probe_lines,
                     RALEX_MEMPROBE_BIG=str(args.probe_big))
        if args.tracemalloc:
            extra["RALEX_MEMPROBE_TRACEMALLOC"] = str(args.tracemalloc)
    if args.turns_max:
        extra.update(PYTHONPATH=os.pathsep.join(filter(None, (str(PROBE), os.environ.get("PYTHONPATH")))),
                     RALEX_MEMPROBE_TURNS_MAX=str(args.turns_max))
    result: dict[str, Any] = {}
    with ExitStack() as stack:
        print("starting Postgres, the fake OpenRouter and the proxy ...", flush=True)
        pg = start_postgres()
        stack.callback(pg.container.stop)
        fake_process, fake = start_fake(logs["fake"])
        stack.callback(stop_process, fake_process)
        proxy = start_proxy(pg.new_database(), fake, work, **extra)
        stack.callback(proxy.stop)
        logs["proxy"] = proxy.log_path
        proxy.set_limit(1000.0, caps=CAPS)
        base = proxy.url.rstrip("/")
        traffic = Traffic(base, items, args.rate, system_prompt(), send_bogus=False)
        t0 = time.monotonic()
        samples.append(sample(t0, proxy.process.pid, base, traffic))
        traffic.started = time.monotonic()
        threads = [threading.Thread(target=traffic.worker, daemon=True) for _ in range(args.threads)]
        for thread in threads:
            thread.start()
        print(f"{len(items)} requests over {args.minutes:g} min, a sample every {args.sample_seconds:g} s; "
              f"samples in {work / 'samples.jsonl'}", flush=True)
        next_sample = t0 + args.sample_seconds
        with (work / "samples.jsonl").open("a") as out:
            out.write(json.dumps(samples[0]) + "\n")
            while any(t.is_alive() for t in threads):
                time.sleep(max(0.0, min(next_sample - time.monotonic(), 1.0)))
                if time.monotonic() >= next_sample:
                    s = sample(t0, proxy.process.pid, base, traffic)
                    samples.append(s)
                    out.write(json.dumps(s) + "\n")
                    out.flush()
                    next_sample += args.sample_seconds
                    print(f"  {s['t_s']:6.0f} s  sent {s['requests_sent']:6d}  RSS {s['proxy_rss_mib']:.1f} MiB  "
                          f"series {s['proxy_metrics_series']}  load {s['loadavg'][0]}", flush=True)
        load_s = time.monotonic() - traffic.started
        samples.append(sample(t0, proxy.process.pid, base, traffic))
        budget = proxy.budget()
        result.update({
            "load_seconds": round(load_s, 1),
            "achieved_rate_per_s": round(sum(sum(c.values()) for c in traffic.statuses.values()) / load_s, 2),
            "statuses": {k: dict(sorted(v.items())) for k, v in traffic.statuses.items() if v},
            "unexpected_status_examples": traffic.unexpected,
            "latency_ms": {k: summary(v) for k, v in traffic.latency_ms.items() if v},
            "routes": dict(sorted(traffic.routes.items())),
            "ralex_budget_after": {k: budget.get(k) for k in ("spent", "in_flight", "ledger")},
        })
    result["steady"] = steady_figures(samples, min(args.warmup_minutes * 60, args.minutes * 60 / 4))
    result["loadavg_1m"] = summary([s["loadavg"][0] for s in samples])
    result["log_problems"] = {name: log_problems(path) for name, path in logs.items()}
    result["samples"] = samples
    return result


# --- the probe's files -----------------------------------------------------------------------------------

def _big_grown(first: list[dict[str, Any]], last: list[dict[str, Any]], top: int) -> list[str]:
    """The large containers of the last record, by growth since the first (a new one grew from 0)."""
    before = {b["id"]: b["len"] for b in first}
    grown = sorted(last, key=lambda b: b["len"] - before.get(b["id"], 0), reverse=True)
    return [f"{b['len'] - before.get(b['id'], 0):+d} -> {b['len']}  {b['type']}  {b['owner']}" for b in grown[:top]]


def analyse(directory: Path, top: int = 25) -> dict[str, Any]:
    """Compare the probe's first and last records: object counts by type, lengths, tracemalloc by line."""
    counts = sorted(directory.glob("counts-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if len(counts) < 2:
        return {"error": f"fewer than two probe records in {directory}"}
    first, last = (json.loads(p.read_text()) for p in (counts[0], counts[-1]))
    hours = (last["t"] - first["t"]) / 3600
    types = Counter({k: v - first["types"].get(k, 0) for k, v in last["types"].items()})
    out: dict[str, Any] = {
        "records": [counts[0].name, counts[-1].name], "hours_between": round(hours, 3),
        "objects": [first["objects"], last["objects"]], "tasks": [first["tasks"], last["tasks"]],
        "lengths": {k: [first["lengths"].get(k), v] for k, v in last["lengths"].items()},
        "types_grown": dict(types.most_common(top)),
        "big_grown": _big_grown(first.get("big", []), last.get("big", []), top),
    }
    snaps = [directory / p.name.replace("counts-", "trace-").replace(".json", ".snap") for p in (counts[0], counts[-1])]
    if all(p.exists() for p in snaps):
        a, b = (tracemalloc.Snapshot.load(str(p)) for p in snaps)
        skip = [tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
        a, b = a.filter_traces(skip), b.filter_traces(skip)
        out["traced_mib"] = [first.get("traced_mib"), last.get("traced_mib")]
        out["by_line"] = [f"{s.size_diff / 1024:+.0f} KiB {s.count_diff:+d} blocks  {s.traceback[0]}"
                          for s in b.compare_to(a, "lineno")[:top]]
        out["by_traceback"] = [{"kib": round(s.size_diff / 1024), "blocks": s.count_diff,
                                "traceback": [str(f) for f in s.traceback][-10:]}
                               for s in b.compare_to(a, "traceback")[:top]]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=65.0)
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--bad-share", type=float, default=0.03)
    parser.add_argument("--stream-share", type=float, default=0.2)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--warmup-minutes", type=float, default=10.0, help="left out of the slopes")
    parser.add_argument("--probe-seconds", type=float, default=0.0, help="probe the proxy every N s (0: off)")
    parser.add_argument("--probe-big", type=int, default=200,
                        help="with the probe: list containers holding at least this many items")
    parser.add_argument("--probe-keys", default="user_api_key_hash",
                        help="with the probe: count live dicts holding these keys (comma-separated) and show what "
                             "keeps the oldest alive")
    parser.add_argument("--probe-types", default="litellm.litellm_core_utils.streaming_handler.CustomStreamWrapper",
                        help="with the probe: count live objects of these types (module.qualname, comma-separated) "
                             "and show the chain of references that keeps the oldest alive")
    parser.add_argument("--probe-lines", default="",
                        help="with --tracemalloc: which containers hold objects allocated at these lines "
                             "(file.py:123, comma-separated)")
    parser.add_argument("--tracemalloc", type=int, default=0, help="with the probe: frames traced (0: off)")
    parser.add_argument("--turns-max", type=int, default=0,
                        help="experiment: cap the engine's turn memory at this many entries (0: as shipped, 10,000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--label", default="run", help="the entry in bench/results/memory.json")
    parser.add_argument("--note", default="", help="what this run is (before/after which change)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, probe files)")
    parser.add_argument("--analyse", type=Path, help="only compare the probe files in this directory")
    args = parser.parse_args(argv)
    if args.analyse:
        print(json.dumps(analyse(args.analyse), indent=2))
        return
    work = Path(tempfile.mkdtemp(prefix="ralex-memory-"))
    print(f"work directory: {work}", flush=True)
    started = environment() | {"loadavg_before": list(os.getloadavg())}
    try:
        result = run(args, work)
        if args.probe_seconds:
            result["probe"] = analyse(work / "probe")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    settings = {k: getattr(args, k) for k in ("minutes", "rate", "threads", "bad_share", "stream_share",
                                              "sample_seconds", "warmup_minutes", "probe_seconds", "tracemalloc",
                                              "turns_max", "seed")}
    path = RESULTS / "memory.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored.setdefault("runs", {})[args.label] = {"note": args.note, "environment": started, "settings": settings,
                                                 **result}
    path.write_text(json.dumps(stored, indent=2, default=str) + "\n")
    steady = result["steady"].get("proxy_rss_mib", {})
    print(f"\n{args.label}: RSS {steady.get('at_warmup_end_mib')} MiB after the warm-up -> {steady.get('end_mib')} MiB "
          f"at the end; slope {steady.get('slope_mib_per_hour')} MiB/h (second half "
          f"{steady.get('slope_second_half_mib_per_hour')}), load 1m median {result['loadavg_1m']['p50']:.2f}\n"
          f"results: {path}")


if __name__ == "__main__":
    main()
