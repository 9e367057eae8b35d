"""Soak: memory of the proxy and of Prometheus under steady traffic full of unknown model names.

Why
---
Every model name a client sent used to reach LiteLLM, and LiteLLM's Prometheus metrics keep each
one as a label value for good: memory of the proxy and of Prometheus grew with every new name, and
the number of series with it. The proxy's gate now answers an unknown model with a 400 before
LiteLLM sees the request. This benchmark checks that, under load, over time.

Method
------
* Postgres (testcontainers), the fake OpenRouter in its own process and the real proxy
  (``ralex-proxy``, exactly as the integration tests start it), with a daily limit of $1000 so
  nothing is refused for budget.
* A real Prometheus (``RALEX_PROMETHEUS_IMAGE``, host network) scraping the proxy's metrics port
  (``RALEX_METRICS_PORT``: ``/metrics`` only, no key) every 5 s, as the shipped
  ``prometheus/prometheus.yml`` does (job ``litellm``). The benchmark reads ``/metrics`` itself on
  the proxy's port with ``LITELLM_MASTER_KEY``, as an operator does.
* Steady traffic at ``--rate`` requests/s from ``--threads`` client threads, with the agent key,
  for ``--minutes``: valid coding-agent steps (``cheap`` and ``auto``, some streamed), ``--bogus``
  distinct unknown model names (each sent once, spread evenly over the run: ``gpt-5-<uuid>``,
  ``openai/gpt-5-<uuid>``, ...) and a few other bad bodies (invalid JSON, no model, a model that is
  not a string, a refused parameter, a real OpenRouter id instead of an alias).
* Every ``--sample-seconds``: the proxy's RSS (VmRSS of its process and children, /proc), the
  Prometheus container's memory (its process's VmRSS and the cgroup's usage minus inactive file
  pages, as ``docker stats`` shows it), Prometheus's ``prometheus_tsdb_head_series``, the number of
  series in the proxy's ``/metrics`` and the load average.
* At the end: how many of the unknown names appear in the proxy's ``/metrics``, in Prometheus's
  series and in what the upstream received (all expected 0), and every status code seen.

* With ``--control``, the same plan again on a fresh proxy and Prometheus with the unknown names'
  slots left empty: what the valid traffic alone grows.

Figures: least-squares slope of each memory series over the steady part (after ``--warmup-minutes``),
in MiB per hour and in MiB per 1,000 unknown names sent (all growth charged to the names, an upper
bound), and with ``--control`` the difference of the two runs' slopes; head series at the start,
after the warm-up and at the end.
Nothing is asserted. The machine has 2 cores shared with other work: the load average is recorded
with every sample, read the slopes with it.

Run from the repo root, with the sandbox images (``set -a; . /tmp/sandbox.env; set +a``)::

    uv run --frozen python -m bench.soak_bench [--minutes 15] [--rate 10] [--bogus 5000] [--control]

Results: a table on stdout and ``bench/results/soak.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.stack import (
    agent_body,
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
from ralex.budget import CAP_PRESETS
from tests.integration.conftest import MASTER_KEY, free_port, start_postgres, start_proxy, wait_until

AGENT_KEY = "sk-ralex-test-agent"
SCRAPE_SECONDS = 5
BOGUS_PER_15_MINUTES = 5000
HI = [{"role": "user", "content": "hi"}]
CAPS = dict(CAP_PRESETS["agent"])  # the shipped caps: agent steps fit (the committed run used 0.05 / 0.50)
# What the issue measured before the gate, for 5,000 unknown names (proxy image, Prometheus).
BEFORE_THE_GATE = {"names": 5000, "litellm_mib": [383, 447], "prometheus_mib": [29, 77]}

BAD_BODIES: dict[str, bytes] = {
    "invalid JSON": b'{"model": "cheap", "messages": [',
    "no model": json.dumps({"messages": HI}).encode(),
    "model not a string": json.dumps({"model": 42, "messages": HI}).encode(),
    "refused parameter n=2": json.dumps({"model": "cheap", "messages": HI, "n": 2}).encode(),
    "OpenRouter id, not an alias": json.dumps({"model": "openai/gpt-4o", "messages": HI}).encode(),
    "messages not a list": json.dumps({"model": "cheap", "messages": "hi"}).encode(),
}
BOGUS_FORMS = ("gpt-5-{}", "openai/gpt-5-{}", "claude-opus-{}", "anthropic/claude-{}", "{}")


# --- traffic ---------------------------------------------------------------------------------------

@dataclass
class Planned:
    kind: str  # valid | bogus | bad
    detail: str  # alias (+ stream) | the unknown name | which bad body


def plan(total: int, bogus: int, bad_share: float, stream_share: float, seed: int) -> list[Planned]:
    """The whole run, in order: unknown names at evenly spread positions, bad bodies and valid steps
    (cheap or auto, some streamed) at random ones."""
    rng = random.Random(seed)
    bogus_at = {round(i * total / bogus) for i in range(bogus)} if bogus else set()
    bad_names = list(BAD_BODIES)
    out = []
    for i in range(total):
        if i in bogus_at:
            out.append(Planned("bogus", rng.choice(BOGUS_FORMS).format(uuid.uuid4())))
        elif rng.random() < bad_share:
            out.append(Planned("bad", rng.choice(bad_names)))
        else:
            alias = rng.choice(("cheap", "auto"))
            out.append(Planned("valid", f"{alias} stream" if rng.random() < stream_share else alias))
    return out


@dataclass
class Traffic:
    base_url: str
    items: list[Planned]
    rate: float
    system: str
    send_bogus: bool = True  # False: the unknown names' slots stay empty (the control run)
    started: float = 0.0
    next_index: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent_at: list[float] = field(default_factory=list)  # monotonic send time of each request, by index
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: {"valid": Counter(), "bogus": Counter(),
                                                                       "bad": Counter()})
    bad_statuses: dict[str, Counter[str]] = field(default_factory=dict)
    bogus_messages_ok: int = 0
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: {"valid": [], "bogus": [], "bad": []})
    routes: Counter[str] = field(default_factory=Counter)
    lag_s: list[float] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # examples: valid not 200, bad or unknown not 400

    def __post_init__(self) -> None:
        self.sent_at = [0.0] * len(self.items)
        self.pool = tasks()

    def take(self) -> int | None:
        with self.lock:
            if self.next_index >= len(self.items):
                return None
            self.next_index += 1
            return self.next_index - 1

    def body(self, i: int, item: Planned) -> bytes:
        if item.kind == "bogus":
            return json.dumps(agent_body(self.pool[i % len(self.pool)], item.detail, i, system=self.system)).encode()
        if item.kind == "bad":
            return BAD_BODIES[item.detail]
        alias, _, stream = item.detail.partition(" ")
        return json.dumps(agent_body(self.pool[i % len(self.pool)], alias, i, system=self.system,
                                     stream=bool(stream))).encode()

    def worker(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60, headers={
                "Authorization": f"Bearer {AGENT_KEY}", "Content-Type": "application/json"}) as client:
            while (i := self.take()) is not None:
                due = self.started + i / self.rate
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                item = self.items[i]
                if item.kind == "bogus" and not self.send_bogus:
                    continue
                content = self.body(i, item)
                now = time.monotonic()
                self.sent_at[i] = now
                status, text, route = self.send(client, item, content)
                took = (time.monotonic() - now) * 1000
                with self.lock:
                    self.lag_s.append(max(0.0, now - due))
                    self.statuses[item.kind][status] += 1
                    self.latency_ms[item.kind].append(took)
                    if item.kind == "bad":
                        self.bad_statuses.setdefault(item.detail, Counter())[status] += 1
                    if item.kind == "bogus" and status == "400" and "unknown model" in text:
                        self.bogus_messages_ok += 1
                    if route:
                        self.routes[f"{item.detail} -> {route}"] += 1
                    example = f"{item.kind} {item.detail}: {status} {text[:300]}"
                    if status.startswith("5") and len(self.server_errors) < 20:
                        self.server_errors.append(example)
                    if status != ("200" if item.kind == "valid" else "400") and len(self.unexpected) < 20:
                        self.unexpected.append(example)

    @staticmethod
    def send(client: httpx.Client, item: Planned, content: bytes) -> tuple[str, str, str]:
        try:
            if item.detail.endswith(" stream"):
                with client.stream("POST", "/v1/chat/completions", content=content) as response:
                    text = response.read().decode(errors="replace")
            else:
                response = client.post("/v1/chat/completions", content=content)
                text = response.text
        except httpx.HTTPError as exc:
            return type(exc).__name__, str(exc), ""
        return str(response.status_code), text, response.headers.get("x-ralex-route", "")

    def counts_until(self, moment: float) -> tuple[int, int]:
        """Requests and unknown names sent up to ``moment`` (monotonic)."""
        sent = [i for i, at in enumerate(self.sent_at) if 0 < at <= moment]
        return len(sent), sum(1 for i in sent if self.items[i].kind == "bogus")


# --- Prometheus ----------------------------------------------------------------------------------

@dataclass
class Prometheus:
    name: str
    port: int
    container_id: str
    pid: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def head_series(self) -> int | None:
        """``prometheus_tsdb_head_series``, from Prometheus's own metrics endpoint."""
        found = re.search(r"^prometheus_tsdb_head_series (\S+)$", httpx.get(f"{self.url}/metrics", timeout=10).text,
                          re.MULTILINE)
        return int(float(found.group(1))) if found else None


def start_prometheus(image: str, metrics_port: int, work: Path) -> Prometheus:
    """Prometheus scraping the proxy's metrics port (``RALEX_METRICS_PORT``), as the shipped config does."""
    config_dir = work / "prometheus"
    config_dir.mkdir()
    config_dir.chmod(0o755)
    (config_dir / "prometheus.yml").write_text(
        "# Soak: the proxy's own metrics, scraped as the shipped prometheus.yml does (its metrics port:\n"
        "# /metrics only, no key; on the proxy's port /metrics needs LITELLM_MASTER_KEY).\n"
        f"global:\n  scrape_interval: {SCRAPE_SECONDS}s\n  evaluation_interval: {SCRAPE_SECONDS}s\n"
        "scrape_configs:\n  - job_name: litellm\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: [\"127.0.0.1:{metrics_port}\"]\n")
    (config_dir / "prometheus.yml").chmod(0o644)
    port = free_port()
    name = f"ralex-soak-prometheus-{os.getpid()}"
    container_id = subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "host",
         "-v", f"{config_dir / 'prometheus.yml'}:/etc/prometheus/prometheus.yml:ro", image,
         "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
         f"--web.listen-address=127.0.0.1:{port}"],
        capture_output=True, text=True, check=True).stdout.strip()
    pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", container_id],
                             capture_output=True, text=True, check=True).stdout)
    prom = Prometheus(name, port, container_id, pid)
    wait_until(lambda: httpx.get(f"{prom.url}/-/ready", timeout=2).status_code == 200, 60, interval=0.5,
               what="Prometheus to be ready")
    wait_until(lambda: [r for r in prom.query('up{job="litellm"}') if r["value"][1] == "1"], 60, interval=1,
               what="Prometheus to scrape the proxy")
    return prom


def stop_prometheus(prom: Prometheus) -> str:
    logs = subprocess.run(["docker", "logs", "--tail", "200", prom.container_id], capture_output=True,
                          text=True, check=False)
    subprocess.run(["docker", "rm", "-f", "-v", prom.container_id], capture_output=True, check=False)
    return logs.stdout + logs.stderr


# --- memory ----------------------------------------------------------------------------------------

def status_kib(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def family(pid: int) -> set[int]:
    """A process and its descendants."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found = {pid}
    for _ in range(5):
        found |= {p for p, ppid in parents.items() if ppid in found}
    return found


def rss_mib(pid: int) -> dict[str, float]:
    pids = family(pid)
    return {"rss_mib": sum(status_kib(p, "VmRSS") for p in pids) / 1024,
            "rss_anon_mib": sum(status_kib(p, "RssAnon") for p in pids) / 1024, "processes": len(pids)}


def container_memory_mib(container_id: str) -> dict[str, float | None]:
    """The container cgroup's usage and usage minus inactive file pages (what ``docker stats`` shows)."""
    for base in (Path(f"/sys/fs/cgroup/memory/docker/{container_id}"),  # cgroup v1, cgroupfs driver
                 Path(f"/sys/fs/cgroup/docker/{container_id}"),  # cgroup v2, cgroupfs driver
                 Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope")):  # cgroup v2, systemd
        try:
            if (base / "memory.usage_in_bytes").exists():
                usage = int((base / "memory.usage_in_bytes").read_text())
                inactive_key = "total_inactive_file"
            else:
                usage = int((base / "memory.current").read_text())
                inactive_key = "inactive_file"
            stats = dict(line.split() for line in (base / "memory.stat").read_text().splitlines())
        except (OSError, ValueError):
            continue
        return {"usage_mib": usage / 2**20, "usage_no_cache_mib": (usage - int(stats.get(inactive_key, 0))) / 2**20}
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container_id],
                         capture_output=True, text=True, check=False).stdout.split("/")[0].strip()
    found = re.match(r"([\d.]+)\s*([KMG]i?B)", out)
    if not found:
        return {"usage_mib": None, "usage_no_cache_mib": None}
    scale = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "kB": 1 / 1048.576, "MB": 1 / 1.048576, "GB": 953.67}
    return {"usage_mib": None, "usage_no_cache_mib": float(found.group(1)) * scale.get(found.group(2), 1)}


GROWTH_KEYS = ("proxy_rss_mib", "proxy_rss_anon_mib", "prometheus_rss_mib", "prometheus_container_usage_no_cache_mib")


def proxy_metrics(proxy_url: str) -> str:
    """The proxy's ``/metrics`` on its own port, with the master key (as an operator reads it)."""
    response = httpx.get(f"{proxy_url}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
    response.raise_for_status()
    return response.text


def metric_series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def sample(t0: float, proxy_pid: int, proxy_url: str, prom: Prometheus, traffic: Traffic) -> dict[str, Any]:
    now = time.monotonic()
    proxy = rss_mib(proxy_pid)
    try:
        series: int | None = metric_series(proxy_metrics(proxy_url))
    except httpx.HTTPError:
        series = None
    try:
        head = prom.head_series()
    except httpx.HTTPError:
        head = None
    requests, bogus = traffic.counts_until(now)
    return {
        "t_s": round(now - t0, 2),
        "requests_sent": requests,
        "bogus_sent": bogus,
        "proxy_rss_mib": round(proxy["rss_mib"], 2),
        "proxy_rss_anon_mib": round(proxy["rss_anon_mib"], 2),
        "proxy_processes": proxy["processes"],
        "prometheus_rss_mib": round(status_kib(prom.pid, "VmRSS") / 1024, 2),
        **{f"prometheus_container_{k}": (round(v, 2) if v is not None else None)
           for k, v in container_memory_mib(prom.container_id).items()},
        "prometheus_head_series": head,
        "proxy_metrics_series": series,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


# --- statistics --------------------------------------------------------------------------------------

def regression(xs: list[float], ys: list[float]) -> dict[str, float | None]:
    """Least-squares slope, intercept and r² of ys over xs."""
    n = len(xs)
    if n < 3:
        return {"slope": None, "intercept": None, "r2": None, "n": n}
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0:
        return {"slope": None, "intercept": None, "r2": None, "n": n}
    slope = sxy / sxx
    return {"slope": slope, "intercept": my - slope * mx, "r2": (sxy * sxy / (sxx * syy)) if syy else None, "n": n}


def growth(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    points = [s for s in samples if s.get(key) is not None]
    if len(points) < 3:
        return {"samples": len(points)}
    by_hour = regression([s["t_s"] / 3600 for s in points], [s[key] for s in points])
    by_bogus = regression([s["bogus_sent"] / 1000 for s in points], [s[key] for s in points])
    values = [s[key] for s in points]
    return {
        "samples": len(points),
        "first_mib": values[0], "last_mib": values[-1], "min_mib": min(values), "max_mib": max(values),
        "slope_mib_per_hour": by_hour["slope"], "r2": by_hour["r2"],
        "slope_mib_per_1000_bogus": by_bogus["slope"],
    }


# --- main --------------------------------------------------------------------------------------------

def run_soak(pg: Any, items: list[Planned], args: argparse.Namespace, *, image: str, system: str, warmup: float,
             send_bogus: bool, work: Path) -> dict[str, Any]:
    """One soak on a fresh fake OpenRouter, proxy (new database) and Prometheus."""
    work.mkdir(parents=True)
    logs: dict[str, Path] = {"fake": work / "fake.log"}
    samples: list[dict[str, Any]] = []
    prom_log = ""
    result: dict[str, Any] = {}
    with ExitStack() as stack:
        fake_process, fake = start_fake(logs["fake"])
        stack.callback(stop_process, fake_process)
        metrics_port = free_port()
        proxy = start_proxy(pg.new_database(), fake, work, RALEX_METRICS_PORT=str(metrics_port))
        stack.callback(proxy.stop)
        logs["proxy"] = proxy.log_path
        proxy.set_limit(1000.0, caps=CAPS)  # nothing refused for budget
        base = proxy.url.rstrip("/")
        proxy_metrics(base)  # the key works: fail now, not with empty samples at the end
        prom = start_prometheus(image, metrics_port, work)

        def stop_prom() -> None:
            nonlocal prom_log
            prom_log = stop_prometheus(prom)

        stack.callback(stop_prom)

        traffic = Traffic(base, items, args.rate, system, send_bogus=send_bogus)
        t0 = time.monotonic()
        samples.append(sample(t0, proxy.process.pid, base, prom, traffic))
        traffic.started = time.monotonic()
        threads = [threading.Thread(target=traffic.worker, daemon=True) for _ in range(args.threads)]
        for thread in threads:
            thread.start()
        sent = sum(1 for p in items if send_bogus or p.kind != "bogus")
        unknown = sum(1 for p in items if send_bogus and p.kind == "bogus")
        print(f"{sent} requests over {args.minutes:g} min ({unknown} unknown names), a sample every "
              f"{args.sample_seconds:g} s ...", flush=True)
        next_sample = t0 + args.sample_seconds
        while any(t.is_alive() for t in threads):
            time.sleep(max(0.0, min(next_sample - time.monotonic(), 1.0)))
            if time.monotonic() >= next_sample:
                s = sample(t0, proxy.process.pid, base, prom, traffic)
                samples.append(s)
                next_sample += args.sample_seconds
                if len(samples) % 6 == 0:
                    print(f"  {s['t_s']:6.0f} s  sent {s['requests_sent']:5d} ({s['bogus_sent']} unknown)  "
                          f"proxy {s['proxy_rss_mib']:.0f} MiB  prometheus {s['prometheus_rss_mib']:.0f} MiB  "
                          f"head series {s['prometheus_head_series']}  load {s['loadavg'][0]}", flush=True)
        load_s = time.monotonic() - traffic.started
        time.sleep(SCRAPE_SECONDS + 2)  # one more scrape after the last request
        samples.append(sample(t0, proxy.process.pid, base, prom, traffic))

        metrics = proxy_metrics(base)
        names = [p.detail for p in items if p.kind == "bogus"]
        ids = [re.search(r"[0-9a-f-]{36}", n).group(0) for n in names]  # type: ignore[union-attr]
        series_json = httpx.get(f"{prom.url}/api/v1/series", params={"match[]": '{job="litellm"}'},
                                timeout=30).text
        upstream_models = Counter(r.get("model") for r in fake.requests())
        upstream_text = json.dumps(list(upstream_models))
        head_end = prom.head_series()
        tsdb = httpx.get(f"{prom.url}/api/v1/status/tsdb", timeout=10).json()["data"]["headStats"]
        scrape_up = prom.query('up{job="litellm"}')
        budget = proxy.budget()

        warm = [s for s in samples if s["t_s"] >= warmup]
        warm_end = warm[0] if warm else samples[-1]
        result.update({
            "unknown_names_sent": send_bogus,
            "load_seconds": round(load_s, 1),
            "achieved_rate_per_s": round(sum(sum(c.values()) for c in traffic.statuses.values()) / load_s, 2),
            "client_lag_s": summary(traffic.lag_s),
            "statuses": {k: dict(sorted(v.items())) for k, v in traffic.statuses.items()},
            "bad_body_statuses": {k: dict(v) for k, v in sorted(traffic.bad_statuses.items())},
            "bogus_400_naming_unknown_model": traffic.bogus_messages_ok,
            "server_errors_5xx": sum(n for c in traffic.statuses.values() for s, n in c.items()
                                     if s.startswith("5")),
            "transport_errors": sum(n for c in traffic.statuses.values() for s, n in c.items()
                                    if not s.isdigit()),
            "server_error_examples": traffic.server_errors,
            "unexpected_status_examples": traffic.unexpected,
            "routes": dict(sorted(traffic.routes.items())),
            "latency_ms": {k: summary(v) for k, v in traffic.latency_ms.items()},
            "bogus_names_in_proxy_metrics": sum(1 for i in ids if i in metrics),
            "bogus_names_in_prometheus_series": sum(1 for i in ids if i in series_json),
            "bogus_names_sent_upstream": sum(1 for i in ids if i in upstream_text),
            "upstream_models": dict(upstream_models),
            "proxy_metrics_series": {"start": samples[0]["proxy_metrics_series"],
                                     "after_warmup": warm_end["proxy_metrics_series"],
                                     "end": metric_series(metrics), "bytes_end": len(metrics)},
            "prometheus_head_series": {"start": samples[0]["prometheus_head_series"],
                                       "after_warmup": warm_end["prometheus_head_series"],
                                       "end": head_end, "max": max((s["prometheus_head_series"] or 0)
                                                                   for s in samples)},
            "prometheus_tsdb_head_stats_end": tsdb,
            "prometheus_target_up_end": [r["value"][1] for r in scrape_up],
            "ralex_budget_after": {k: budget.get(k) for k in ("limit", "spent", "in_flight", "ledger")},
            "growth_steady": {key: growth(warm, key) for key in GROWTH_KEYS},
            "loadavg_1m": summary([s["loadavg"][0] for s in samples]),
        })
    result["log_problems"] = {name: log_problems(path) for name, path in logs.items()}
    result["prometheus_log_errors"] = [line for line in prom_log.splitlines()
                                       if "level=error" in line or "level=warn" in line][:20]
    result["samples"] = samples
    if args.keep_logs:
        result["logs"] = {name: str(path) for name, path in logs.items()}
    return result


def attributable(soak: dict[str, Any], control: dict[str, Any], bogus: int) -> dict[str, Any]:
    """Slope of the soak minus the control's (same valid traffic, no unknown names), per hour and per
    1,000 names (at the soak's rate of unknown names)."""
    out: dict[str, Any] = {}
    for key in GROWTH_KEYS:
        a = soak["growth_steady"][key].get("slope_mib_per_hour")
        b = control["growth_steady"][key].get("slope_mib_per_hour")
        if a is None or b is None:
            out[key] = None
            continue
        per_hour = a - b
        names_per_hour = bogus / (soak["load_seconds"] / 3600)  # spread evenly over the run
        out[key] = {"mib_per_hour": per_hour,
                    "mib_per_1000_names": per_hour / (names_per_hour / 1000) if names_per_hour else None}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="length of the traffic")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second, all kinds")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--bogus", type=int, default=None,
                        help=f"distinct unknown model names over the run (default {BOGUS_PER_15_MINUTES} "
                             "per 15 minutes)")
    parser.add_argument("--bad-share", type=float, default=0.03, help="share of other bad bodies")
    parser.add_argument("--stream-share", type=float, default=0.2, help="share of valid requests streamed")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup-minutes", type=float, default=2.0,
                        help="left out of the slopes (at most a quarter of the run)")
    parser.add_argument("--control", action="store_true",
                        help="then the same traffic again on a fresh proxy and Prometheus, without the unknown "
                             "names (their slots stay empty): the growth valid traffic alone causes")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-logs", action="store_true", help="keep the proxy's and the fake's logs")
    args = parser.parse_args(argv)

    image = os.environ.get("RALEX_PROMETHEUS_IMAGE", "prom/prometheus:v2.55.1")
    duration = args.minutes * 60
    total = round(duration * args.rate)
    bogus = min(args.bogus if args.bogus is not None else round(BOGUS_PER_15_MINUTES * args.minutes / 15),
                int(total * 0.8))
    warmup = min(args.warmup_minutes * 60, duration / 4)
    system = system_prompt()
    items = plan(total, bogus, args.bad_share, args.stream_share, args.seed)
    results: dict[str, Any] = {
        "environment": {**environment(), "prometheus_image": image, "loadavg_before": list(os.getloadavg()),
                        "note": "2 cores shared with other work (other test runs and builds may run at the "
                                "same time); the load average is recorded with every sample"},
        "settings": {"minutes": args.minutes, "rate_per_s": args.rate, "threads": args.threads,
                     "requests_planned": total, "bogus_names": bogus,
                     "planned": dict(Counter(p.kind for p in items)),
                     "bad_share": args.bad_share, "stream_share": args.stream_share,
                     "sample_seconds": args.sample_seconds, "warmup_s": warmup,
                     "scrape_interval_s": SCRAPE_SECONDS, "key": "agent key", "daily_limit_usd": 1000.0,
                     "caps_usd": CAPS, "control": args.control},
        "notes": [
            "slopes are least squares over the samples after the warm-up; MiB per 1,000 names is the same "
            "fit against the unknown names sent so far, so it charges all growth to them (an upper bound: "
            "valid traffic grows the proxy's heap too, and Prometheus's head grows with the samples of its "
            "fixed series until it compacts); with --control, the same valid traffic without the names is "
            "measured on a fresh proxy and the difference of the slopes is what the names cost",
            "Prometheus RSS is its process's VmRSS (file-mapped pages included); the container figure is the "
            "cgroup's usage minus inactive file pages, as docker stats shows it",
        ],
        "before_the_gate": {**BEFORE_THE_GATE, "note": "figures from the issue: every unknown name became a "
                                                       "permanent label in LiteLLM's metrics"},
    }
    work = Path(tempfile.mkdtemp(prefix="ralex-soak-"))
    try:
        print("starting Postgres ...", flush=True)
        pg = start_postgres()
        try:
            print("soak: the fake OpenRouter, the proxy and Prometheus ...", flush=True)
            results.update(run_soak(pg, items, args, image=image, system=system, warmup=warmup, send_bogus=True,
                                    work=work / "soak"))
            if args.control:
                print("control, the same traffic without the unknown names: a fresh proxy and Prometheus ...",
                      flush=True)
                control = run_soak(pg, items, args, image=image, system=system, warmup=warmup,
                                   send_bogus=False, work=work / "control")
                results["control_without_unknown_names"] = control
                results["attributable_to_unknown_names"] = attributable(results, control, bogus)
        finally:
            pg.container.stop()
    finally:
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)

    report(results)
    path = write_results("soak", results)
    print(f"\nresults: {path}")


# --- output ------------------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


LABELS = {"proxy_rss_mib": "proxy RSS", "proxy_rss_anon_mib": "proxy RSS, anonymous",
          "prometheus_rss_mib": "Prometheus RSS",
          "prometheus_container_usage_no_cache_mib": "Prometheus container (docker stats)"}


def report(results: dict[str, Any]) -> None:
    st = results["settings"]
    before = results["before_the_gate"]
    runs = {"soak": results}
    if "control_without_unknown_names" in results:
        runs["control, no unknown names"] = results["control_without_unknown_names"]
    rows = []
    for run, r in runs.items():
        for key, label in LABELS.items():
            g = r["growth_steady"][key]
            rows.append([f"{run} | {label}", g.get("samples", 0), fmt(g.get("first_mib")), fmt(g.get("last_mib")),
                         fmt(g.get("slope_mib_per_hour"), 2), fmt(g.get("slope_mib_per_1000_bogus"), 2),
                         fmt(g.get("r2"), 2)])
    for key, label in LABELS.items():
        d = (results.get("attributable_to_unknown_names") or {}).get(key)
        if d:
            rows.append([f"soak - control | {label}", "", "", "", fmt(d["mib_per_hour"], 2),
                         fmt(d["mib_per_1000_names"], 2), ""])
    print()
    print(table(["memory, steady part", "samples", "first MiB", "last MiB", "MiB/hour", "MiB/1000 names", "r2"],
                rows, title=f"Soak: {results['load_seconds']:.0f} s at {results['achieved_rate_per_s']} req/s, "
                            f"{st['bogus_names']} unknown model names, warm-up {st['warmup_s']:.0f} s left out "
                            f"({results['environment']['cpus']} CPUs shared, load 1m median "
                            f"{results['loadavg_1m']['p50']:.2f}, max {results['loadavg_1m']['max']:.2f})"))
    n = before["names"]
    print(f"before the gate (issue): LiteLLM {before['litellm_mib'][0]} -> {before['litellm_mib'][1]} MiB "
          f"({(before['litellm_mib'][1] - before['litellm_mib'][0]) / n * 1000:.1f} MiB/1000 names), Prometheus "
          f"{before['prometheus_mib'][0]} -> {before['prometheus_mib'][1]} MiB "
          f"({(before['prometheus_mib'][1] - before['prometheus_mib'][0]) / n * 1000:.1f} MiB/1000 names)")
    for run, r in runs.items():
        h, m = r["prometheus_head_series"], r["proxy_metrics_series"]
        print(f"\n{run}: Prometheus head series: start {h['start']}, after warm-up {h['after_warmup']}, "
              f"end {h['end']} (max {h['max']}); proxy /metrics series: start {m['start']}, after warm-up "
              f"{m['after_warmup']}, end {m['end']}")
        print(f"  unknown names in the proxy's /metrics: {r['bogus_names_in_proxy_metrics']}, in Prometheus: "
              f"{r['bogus_names_in_prometheus_series']}, sent upstream: {r['bogus_names_sent_upstream']} "
              f"(of {st['bogus_names']}{' sent' if r['unknown_names_sent'] else ', none sent'})")
        print(f"  statuses: {r['statuses']}; 5xx: {r['server_errors_5xx']}, transport errors: "
              f"{r['transport_errors']}; 400s naming the unknown model: {r['bogus_400_naming_unknown_model']}")
        print(f"  bad bodies: {r['bad_body_statuses']}")
        lat = r["latency_ms"]
        print("  client latency p50/p99 ms: " + ", ".join(
            f"{k} {v['p50']:.1f}/{v['p99']:.1f}" for k, v in lat.items() if v["n"])
              + f"; load 1m median {r['loadavg_1m']['p50']:.2f}")
        problems = {name: found for name, found in r["log_problems"].items() if found["lines"]}
        for name, found in problems.items():
            print(f"  problems in the {name} log: {found['lines']} (first: {found['first'][0][:220]})")


if __name__ == "__main__":
    main()
