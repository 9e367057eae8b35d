"""deploy/swarm.yaml on a real single-node Docker Swarm, and the two experiments run on it: one
implementation, used by the test (tests/swarm/test_swarm.py) and the benchmark (bench/replicas_bench.py).

The stack runs with tests/swarm/swarm.test.yaml (the fake OpenRouter as a service) and the proxy in
dnsrr mode: every request comes from a client container attached to the stack's backend network, which
resolves ``tasks.litellm`` to the replicas' addresses and spreads its requests over them
(tests/swarm/client.py). Postgres is read with psql inside its own task's container.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.integration.conftest import wait_until as poll
from tests.zones import far_from_midnight

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "deploy" / "swarm.yaml"
TEST_FILE = Path(__file__).with_name("swarm.test.yaml")
CLIENT = Path(__file__).with_name("client.py").read_text()
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
SECRETS = ("OPENROUTER_API_KEY", "LITELLM_MASTER_KEY", "RALEX_AGENT_KEY", "RALEX_DATABASE_URL",
           "RALEX_EXPORTER_DB_PASSWORD", "RALEX_EXPORTER_DATABASE_URL", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
PROMPT = "add a docstring to the Cache class " + "x" * 3_000  # ~3 KB: ~$0.0009 worst case on cheap at 1500 tokens
KEY_BUDGETS = (0.006, 0.008, 0.01, 0.012, 0.015)  # five clients; together more than the day's $0.05
GENERATION = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


class SwarmUnavailable(Exception):
    """No Docker engine (or no Swarm mode) here: the Swarm tests skip with this reason."""


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """:func:`tests.integration.conftest.wait_until`, polling every half second."""
    return poll(predicate, timeout, interval, what)


def docker(*args: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = True,
           cwd: Path = ROOT, stdin: str | None = None) -> str:
    result = subprocess.run(["docker", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            check=False, input=stdin)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ...: {result.stderr.strip()[-2000:]}")
    return result.stdout


def swarm_state() -> str:
    """The engine's Swarm state ('inactive', 'active', ...); SwarmUnavailable without an engine."""
    if shutil.which("docker") is None:
        raise SwarmUnavailable("no docker CLI on PATH")
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"], capture_output=True,
                                text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        raise SwarmUnavailable("the Docker engine does not answer") from None
    if result.returncode != 0:
        raise SwarmUnavailable(f"no Docker engine: {result.stderr.strip()[:200]}")
    return result.stdout.strip()


def images(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Every image the stack runs: the RALEX_*_IMAGE variables set here (the sandbox's stand-ins), Ralex's
    own under tags of their own (built here), and Grafana left out (no image offline: 0 replicas)."""
    source = os.environ if environ is None else environ
    chosen = {k: v for k, v in source.items() if k.startswith("RALEX_") and k.endswith("_IMAGE")}
    chosen.setdefault("RALEX_LITELLM_IMAGE", "ralex.invalid/litellm:swarm-test")
    chosen.setdefault("RALEX_EXPORTER_IMAGE", "ralex.invalid/budget-exporter:swarm-test")
    chosen.setdefault("RALEX_FAKE_OPENROUTER_IMAGE", "ralex.invalid/fake-openrouter:swarm-test")
    return chosen


def build_images(chosen: dict[str, str]) -> None:
    """`docker compose build litellm budget-exporter` (compose.yaml's recipes) and the fake's image."""
    env = {**os.environ, **chosen, "COMPOSE_PROJECT_NAME": "ralex-swarm-build",
           # compose.yaml refuses to load without its secrets; nothing here starts a container
           **{k: "sk-build-only" for k in ("OPENROUTER_API_KEY", "LITELLM_MASTER_KEY", "RALEX_AGENT_KEY",
                                           "RALEX_EXPORTER_DB_PASSWORD", "POSTGRES_PASSWORD",
                                           "GRAFANA_ADMIN_PASSWORD")}}
    docker("compose", "-f", "compose.yaml", "build", "litellm", "budget-exporter", env=env, timeout=1800)
    docker("build", "-q", "-f", "tests/fake_openrouter/Dockerfile", "-t", chosen["RALEX_FAKE_OPENROUTER_IMAGE"],
           "--build-arg", f"PYTHON_IMAGE={chosen.get('RALEX_PYTHON_IMAGE', 'python:3.11-slim-bookworm')}", ".",
           env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=1800)


@dataclass
class Swarm:
    """One deployed stack: its name, its secrets and the client container on its backend network."""

    name: str
    env: dict[str, str]
    master: str
    replicas: int
    created_swarm: bool = False
    client_id: str = ""
    secret_names: list[str] = field(default_factory=list)

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def up(cls, name: str, chosen: dict[str, str], replicas: int = 3, build: bool = True) -> Swarm:
        state = swarm_state()
        created = False
        if state != "active":
            docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=60)
            created = True
        master = f"sk-{secrets.token_hex(16)}"
        pg_password, reader_password = secrets.token_hex(16), secrets.token_hex(16)
        prefix = f"{name}_"
        env = {**os.environ, **chosen, "RALEX_SECRET_PREFIX": prefix, "RALEX_PROXY_REPLICAS": str(replicas),
               "RALEX_PROXY_ENDPOINT_MODE": "dnsrr", "RALEX_PROXY_PUBLISH_MODE": "host", "RALEX_PROXY_PORT": "0",
               "RALEX_GRAFANA_REPLICAS": "0", "RALEX_TIMEZONE": far_from_midnight(),
               "OPENROUTER_API_BASE": "http://fake-openrouter:8080/api/v1"}
        swarm = cls(name, env, master, replicas, created)
        try:
            if build:
                build_images(chosen)
            values = {
                "OPENROUTER_API_KEY": "sk-or-swarm-test", "LITELLM_MASTER_KEY": master,
                "RALEX_AGENT_KEY": f"sk-{secrets.token_hex(16)}", "POSTGRES_PASSWORD": pg_password,
                "RALEX_DATABASE_URL": f"postgresql://ralex:{pg_password}@postgres:5432/ralex",
                "RALEX_EXPORTER_DB_PASSWORD": reader_password,
                "RALEX_EXPORTER_DATABASE_URL": f"postgresql://ralex_reader:{reader_password}@postgres:5432/ralex",
                "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(12)}
            for secret in SECRETS:
                swarm.create_secret(prefix + secret, values[secret])
            docker("stack", "deploy", "-c", str(STACK_FILE), "-c", str(TEST_FILE), name, env=env, timeout=300)
            swarm.wait_healthy("litellm", replicas, 300)
            swarm.client_id = docker("run", "-d", "--rm", "--network", f"{name}_backend", "--entrypoint", "sleep",
                                     "--label", f"ralex.swarm.test={name}", chosen["RALEX_LITELLM_IMAGE"],
                                     "infinity").strip()
            wait_until(lambda: len(swarm.proxy_urls()) == replicas, 60, "tasks.litellm to list every replica")
            wait_until(lambda: swarm.call("GET", "http://fake-openrouter:8080/api/v1/models")["status"] == 200, 60,
                       "the fake OpenRouter")
        except BaseException:
            swarm.down()
            raise
        return swarm

    def create_secret(self, name: str, value: str) -> None:
        subprocess.run(["docker", "secret", "rm", name], capture_output=True, check=False)
        result = subprocess.run(["docker", "secret", "create", name, "-"], input=value, capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0, result.stderr
        self.secret_names.append(name)

    def down(self) -> None:
        """Remove the client, the stack, its networks, volumes and secrets; leave the swarm if we made it."""
        if self.client_id:
            docker("rm", "-f", self.client_id, check=False)
        docker("stack", "rm", self.name, check=False, timeout=120)
        label = f"label=com.docker.stack.namespace={self.name}"
        try:
            wait_until(lambda: not docker("ps", "-aq", "--filter", label).split(), 120, "the stack's containers")
            wait_until(lambda: not docker("network", "ls", "-q", "--filter", label).split(), 120,
                       "the stack's networks")
        finally:
            volumes = docker("volume", "ls", "-q", "--filter", label, check=False).split()
            if volumes:
                docker("volume", "rm", "-f", *volumes, check=False)
            for secret in self.secret_names:
                docker("secret", "rm", secret, check=False)
            if self.created_swarm:
                docker("swarm", "leave", "--force", check=False, timeout=60)

    # --- looking at tasks ----------------------------------------------------------------------

    def containers(self, service: str, *filters: str) -> list[str]:
        args = ["ps", "-q", "--filter", f"label=com.docker.swarm.service.name={self.name}_{service}"]
        for f in filters:
            args += ["--filter", f]
        return docker(*args).split()

    def wait_healthy(self, service: str, count: int, timeout: float) -> list[str]:
        return list(wait_until(lambda: (found := self.containers(service, "health=healthy")) and
                               len(found) >= count and found, timeout, f"{count} healthy {service} tasks", 1.0))

    def replica_of(self, container: str) -> dict[str, str]:
        """A proxy task's container: its replica name (RALEX_REPLICA_ID as Swarm filled it in) and address."""
        info = json.loads(docker("inspect", container))[0]
        env = dict(v.split("=", 1) for v in info["Config"]["Env"])
        network = info["NetworkSettings"]["Networks"][f"{self.name}_backend"]
        return {"container": container, "replica": env["RALEX_REPLICA_ID"], "ip": network["IPAddress"]}

    def task_states(self, service: str) -> list[str]:
        return docker("service", "ps", f"{self.name}_{service}", "--format", "{{.CurrentState}}").splitlines()

    # --- inside the stack --------------------------------------------------------------------

    def client(self, request: dict[str, Any], timeout: float = 300) -> Any:
        out = docker("exec", "-i", self.client_id, "python3", "-c", CLIENT, timeout=timeout, stdin=json.dumps(request))
        return json.loads(out.strip().splitlines()[-1])

    def call(self, method: str, url: str, body: Any = None, master: bool = True) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.master}"} if master else {}
        return dict(self.client({"op": "call", "method": method, "url": url, "json": body, "headers": headers}))

    def proxy_urls(self) -> list[str]:
        return [f"http://{ip}:4000" for ip in self.client({"op": "resolve", "name": "tasks.litellm"})]

    def budget(self, url: str) -> dict[str, Any]:
        answer = self.call("GET", f"{url}/ralex/budget")
        assert answer["status"] == 200, answer
        return dict(answer["body"])

    def fake(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.call(method, f"http://fake-openrouter:8080{path}", body, master=False)
        assert answer["status"] == 200, answer
        return answer["body"]

    def sql(self, query: str) -> str:
        [postgres] = self.containers("postgres")
        return docker("exec", postgres, "psql", "-U", "ralex", "-d", "ralex", "-tAc", query).strip()

    def set_remaining(self, remaining: float) -> float:
        """Today's limit at spent + ``remaining``, through one replica; returns the limit once every replica has it."""
        urls = self.proxy_urls()
        limit = round(self.budget(urls[0])["spent"] + remaining, 6)
        answer = self.call("PUT", f"{urls[0]}/ralex/budget", {"daily_limit": limit, "by": "swarm-test"})
        assert answer["status"] == 200, answer
        wait_until(lambda: all(abs(self.budget(u)["limit"] - limit) < 1e-9 for u in urls), 20,
                   "every replica to apply the limit")
        return limit

    def settled(self, timeout: float = 90) -> None:
        """Nothing in flight or waiting to be written on any replica, and no hold left in Postgres."""
        def quiet() -> bool:
            views = [self.budget(u) for u in self.proxy_urls()]
            return all(v["in_flight"] == 0 and v["ledger"]["pending"] == 0 for v in views)

        wait_until(quiet, timeout, "every replica settled and written")
        wait_until(lambda: self.sql("SELECT count(*) FROM reservation") == "0", 30, "no reservation left in Postgres")

    def day_spent(self, day: str) -> Decimal:
        return Decimal(self.sql(f"SELECT coalesce(sum(cost_usd), 0) FROM ledger WHERE budget_day = '{day}'"))

    def prometheus_targets(self, job: str) -> list[dict[str, Any]]:
        answer = self.call("GET", "http://prometheus:9090/api/v1/targets?state=active", master=False)
        assert answer["status"] == 200, answer
        return [t for t in answer["body"]["data"]["activeTargets"] if t["labels"].get("job") == job]


# --- the experiments --------------------------------------------------------------------------

def burst(swarm: Swarm, requests: int = 200, remaining: float = 0.05) -> dict[str, Any]:
    """Five client keys with small sub-budgets, $``remaining`` left in the day, the upstream slowed, then
    ``requests`` non-streaming requests at once from the five keys, spread over every replica."""
    urls = swarm.proxy_urls()
    replica_of = {u: swarm.budget(u)["replica"] for u in urls}
    tag = secrets.token_hex(3)
    keys: dict[str, str] = {}
    for i, budget in enumerate(KEY_BUDGETS):
        name = f"client-{i + 1}-{tag}"
        answer = swarm.call("POST", f"{urls[0]}/ralex/keys", {"name": name, "budget": budget})
        assert answer["status"] == 200, answer
        keys[name] = answer["body"]["key"]
    wait_until(lambda: all(set(keys) <= {k["name"] for k in swarm.call("GET", f"{u}/ralex/keys")["body"]["keys"]}
                           for u in urls), 20, "the keys on every replica")
    limit = swarm.set_remaining(remaining)
    day = swarm.budget(urls[0])["day"]
    spent_before = swarm.day_spent(day)
    swarm.fake("POST", "/_fake/reset")
    swarm.fake("POST", "/_fake/faults", {"faults": [{"kind": "slow", "chunk_delay": 0.3, "times": None}]})
    names = list(keys)
    plan = [{"url": f"{urls[i % len(urls)]}/v1/chat/completions", "key": keys[names[i % len(names)]],
             "body": {"model": "cheap", "max_tokens": 1500, "messages": [{"role": "user", "content": PROMPT}]}}
            for i in range(requests)]
    started = time.monotonic()
    replies = swarm.client({"op": "burst", "requests": plan}, timeout=600)
    seconds = time.monotonic() - started
    swarm.settled()
    swarm.fake("POST", "/_fake/faults", {"faults": []})
    spent = swarm.day_spent(day)
    by_key = {name: Decimal(swarm.sql(f"SELECT coalesce(sum(cost_usd), 0) FROM ledger WHERE budget_day = '{day}'"
                                      f" AND key_name = '{name}'")) for name in keys}
    billed = sum((Decimal(str(r["billed_cost"])) for r in swarm.fake("GET", "/_fake/requests")["requests"]),
                 Decimal(0))
    per_replica: dict[str, Counter[int]] = {replica_of[u]: Counter() for u in urls}
    per_key: dict[str, Counter[int]] = {name: Counter() for name in keys}
    for i, (request, reply) in enumerate(zip(plan, replies, strict=True)):
        per_replica[replica_of[request["url"].rsplit("/v1/", 1)[0]]][reply["status"]] += 1
        per_key[names[i % len(names)]][reply["status"]] += 1
    refusals = [r["message"] for r in replies if r["status"] == 402]
    budgets = dict(zip(names, KEY_BUDGETS, strict=True))
    over = [float(spent - Decimal(str(limit)))] + [float(by_key[n] - Decimal(str(budgets[n]))) for n in names]
    return {
        "requests": requests, "seconds": round(seconds, 2), "limit_usd": limit, "remaining_usd": remaining,
        "day_spent_usd": float(spent), "billed_usd": float(billed), "ledger_usd": float(spent - spent_before),
        "statuses": dict(Counter(str(r["status"]) for r in replies)),
        "per_replica": {name: {"served": c[200], "refused": c[402], "other": sum(c.values()) - c[200] - c[402]}
                        for name, c in sorted(per_replica.items())},
        "per_key": {name: {"budget_usd": budgets[name], "spent_usd": float(by_key[name]), "served": c[200],
                           "refused": c[402]} for name, c in per_key.items()},
        "overshoot_raw_usd": max(over), "overshoot_usd": max(0.0, max(over)),
        "refusals_day": sum(m.startswith("Daily budget") for m in refusals),
        "refusals_key": sum(m.startswith("Key ") for m in refusals),
        "refusals_without_fix": [m for m in refusals if "Raise it with: ralexctl " not in m][:3],
    }


def kill(swarm: Swarm, seconds: float = 9, kill_after: float = 3, concurrency: int = 12) -> dict[str, Any]:
    """Streams on every replica; one task's container is killed (SIGKILL) mid-traffic. Measures how long
    the survivors take to recover it, then compares the fake's bill with the ledger once all is settled."""
    swarm.settled()
    urls = swarm.proxy_urls()
    swarm.set_remaining(2.0)
    day = swarm.budget(urls[0])["day"]
    swarm.fake("POST", "/_fake/reset")
    swarm.fake("POST", "/_fake/faults", {"faults": [{"kind": "slow", "chunk_delay": 0.2, "times": None}]})
    before = swarm.day_spent(day)
    started_at = swarm.sql("SELECT now()")
    tasks = [swarm.replica_of(c) for c in swarm.containers("litellm")]
    victim = max(tasks, key=lambda t: t["replica"])
    process = subprocess.Popen(
        ["docker", "exec", swarm.client_id, "python3", "-c", CLIENT, json.dumps({
            "op": "stream", "urls": [f"{u}/v1/chat/completions" for u in urls], "key": swarm.master,
            "seconds": seconds, "concurrency": concurrency,
            "body": {"model": "cheap", "max_tokens": 300, "messages": [{"role": "user", "content": "write a test"}]}})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert json.loads(process.stdout.readline()) == {"started": True}
    time.sleep(kill_after)
    docker("kill", victim["container"])
    killed = time.monotonic()
    gone: list[float] = []

    def watch() -> None:  # the victim's row leaves proxy_replica when a survivor has settled what it left
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not gone:
            row = swarm.sql(f"SELECT started_at < '{started_at}' FROM proxy_replica WHERE id = '{victim['replica']}'")
            if row != "t":  # gone, or back with a new start (the restarted task's own)
                gone.append(time.monotonic() - killed)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out, err = process.communicate(timeout=seconds + 120)
    watcher.join()
    assert process.returncode == 0, err[-2000:]
    codes: dict[str, list[int]] = json.loads(out.strip().splitlines()[-1])
    assert gone, f"{victim['replica']} was never recovered"
    # Swarm restarts the task in the same slot, so under the same name
    wait_until(lambda: len(found := swarm.containers("litellm", "health=healthy")) >= swarm.replicas and
               victim["container"] not in found, 240, "Swarm to restart the killed task", 2.0)
    restarted = next(t for c in swarm.containers("litellm") if (t := swarm.replica_of(c))["replica"] ==
                     victim["replica"])
    wait_until(lambda: len(swarm.proxy_urls()) == swarm.replicas, 60, "tasks.litellm to list the restarted task")
    serves = swarm.call("POST", f"http://{restarted['ip']}:4000/v1/chat/completions", {
        "model": "cheap", "max_tokens": 50, "messages": [{"role": "user", "content": "fix the typo"}]})
    swarm.settled()
    requests = swarm.fake("GET", "/_fake/requests")["requests"]
    billed = sum((Decimal(str(r["billed_cost"])) for r in requests), Decimal(0))
    spent = swarm.day_spent(day) - before
    generations = [r["generation_id"] for r in requests if r.get("generation_id")]
    assert all(GENERATION.fullmatch(g) for g in generations)
    values = ",".join(f"('{g}')" for g in generations) or "(NULL)"
    missing = int(swarm.sql(f"SELECT count(*) FROM (VALUES {values}) AS v(g) WHERE g IS NOT NULL AND NOT EXISTS "
                            "(SELECT 1 FROM ledger WHERE generation_id = v.g)"))
    held_rows, held_usd = swarm.sql(
        f"SELECT count(*), coalesce(sum(cost_usd), 0) FROM ledger WHERE budget_day = '{day}' AND status = "
        f"'interrupted' AND generation_id IS NULL AND recorded_at > '{started_at}'").split("|")
    by_url = dict(zip(urls, [swarm.budget(u)["replica"] if u != f"http://{victim['ip']}:4000" else victim["replica"]
                             for u in urls], strict=True))
    return {
        "seconds": seconds, "concurrency": concurrency, "killed": victim["replica"],
        "recovery_seconds": round(gone[0], 2),
        "streams": {by_url.get(u.rsplit("/v1/", 1)[0], u): dict(Counter(str(c) for c in cs))
                    for u, cs in codes.items()},
        "billed_usd": float(billed), "ledger_usd": float(spent), "billed_minus_ledger_usd": float(billed - spent),
        "ledger_minus_billed_usd": float(spent - billed), "hold_charged_rows": int(held_rows),
        "hold_charged_usd": float(held_usd), "generations_without_row": missing,
        "replica_rows_left": int(swarm.sql(f"SELECT count(*) FROM reservation WHERE replica = '{victim['replica']}'")),
        "restarted_serves": serves["status"],
    }

