"""Package installs in the agent's box: cold, warm and without the cache volume.

Why: the agent container has no network and a read-only root. Its HTTP(S) leaves through the egress
proxy (``HTTPS_PROXY=http://127.0.0.1:3128``, relayed by the image's entrypoint with socat to the
egress proxy's Unix socket, where Squid allows the package indexes in ``RALEX_AGENT_NETWORK=packages``
mode), and its package caches live under ``/home/ralex/.cache``, which compose puts on a named volume
(``agent-cache``). This measures what that volume is worth, and what the whole path costs.

Method: the egress proxy runs as compose runs it (``services/egress/Dockerfile``: read-only root,
its tmpfs, 128 MiB memory limit, no capabilities, ``RALEX_AGENT_NETWORK=packages``) on Docker's
default bridge, its socket in a host directory. Each install is one
``docker run --rm --network none --read-only -u 1000:1000`` of the agent image with that directory
mounted read-only on ``/run/ralex/egress``, tmpfs on ``/tmp`` and ``~/.local/state``, a fresh
workspace directory (owned by uid 1000) on ``/workspace``, and the compose agent's hardening
(``--init``, ``--cap-drop ALL``, ``no-new-privileges``, 2 GiB memory limit). Toolchains:

* ``python`` (agent image on the Python base): ``python3 -m venv .venv && .venv/bin/pip install
  pytest==8.3.4 six==1.17.0 requests==2.32.3`` (their dependencies unpinned: whatever the index
  serves that day; the installed versions are recorded);
* ``node`` (agent image on the Node base): ``npm ci`` of a small project (express 4.21.2, lodash,
  chalk 4, commander, dayjs; about 80 packages) whose ``package-lock.json`` is made on the host at the
  start of the run (``npm install --package-lock-only``; needs npm on the host).

Cache conditions, on the same images:

* ``cold``: a new, empty named volume on ``/home/ralex/.cache`` (the first install ever; a new
  volume for every repeat). The entrypoint first copies the image's seeded npm cache (OpenCode's
  plugin, ~32 MB) into the empty cache: that is part of the cost, seen in ``start_s``;
* ``warm``: the same volume again, right after its cold run (a fresh venv or ``node_modules``);
* ``no_volume``: a tmpfs on ``/home/ralex/.cache`` (what every install costs without the volume,
  seeding included).

Per run: ``wall_s``, the whole ``docker run`` as the host sees it (the figure compared);
``command_s``, the install command alone, timed inside the container (``steps_s``: venv and pip
install apart); ``start_s``, from ``docker run`` to the command's start (container start plus the
entrypoint: seeding and the relays); the bytes the egress container received on its network
interface (``egress_rx_bytes``: TLS and TCP included, so slightly more than the packages) and the
connections it logged (Squid logs one line per CONNECT tunnel, not per request). The order of
``no_volume`` and ``cold`` alternates between repeats, and one unrecorded install per toolchain
(``no_volume``) runs first, so neither condition is the first to fetch the files from anywhere
upstream of this machine. After the runs: the egress container's memory (``docker stats``) and its
peak (cgroup), each cache's size after a cold install, and the caching headers (Cache-Control, ETag,
...) of one index page, one wheel and one npm tarball as they reach the box: pip's HTTP cache keeps
only answers that say they may be cached, npm's cache keeps every tarball.

Run from the repo root with the agent and egress images built (``--build`` builds them from the
stand-in or official base images in ``RALEX_PYTHON_IMAGE`` / ``RALEX_NODE_IMAGE``)::

    set -a; . /tmp/rx/bench-sandbox.env; set +a
    python -m bench.install_bench [--repeats 3] [--toolchains python,node] [--build]

Only the standard library is used: any ``python3`` runs it. Needs Docker, npm on the host and a
network that reaches PyPI and the npm registry. Containers and volumes it makes are named
``ralex-bench-...`` and removed at the end; images are kept.

Results: a table on stdout and ``bench/results/install.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PREFIX = "ralex-bench-"
UID = 1000
CONDITIONS = ("cold", "warm", "no_volume")
PIP_PACKAGES = ("pytest==8.3.4", "six==1.17.0", "requests==2.32.3")
NODE_DEPENDENCIES = {"express": "4.21.2", "lodash": "4.17.21", "chalk": "4.1.2", "commander": "12.1.0",
                     "dayjs": "1.11.13"}
# Each install's steps, timed one by one inside the container.
STEPS = {
    "python": {"venv": "python3 -m venv .venv", "pip_install": ".venv/bin/pip install " + " ".join(PIP_PACKAGES)},
    "node": {"npm_ci": "npm ci"},
}
COMMANDS = {toolchain: " && ".join(steps.values()) for toolchain, steps in STEPS.items()}
# Fetched once through the egress proxy after the runs: do the registries' answers say they may be cached?
PROBES = {
    "pypi_simple_page": "https://pypi.org/simple/six/",
    "pypi_wheel": "https://files.pythonhosted.org/packages/b7/ce/149a00dd41f10bc29e5921b496af8b574d8413afcd5e30dfa0ed46c2cc5e"
                  "/six-1.17.0-py2.py3-none-any.whl",
    "npm_tarball": "https://registry.npmjs.org/express/-/express-4.21.2.tgz",
}
CACHE_HEADERS = ("cache-control", "expires", "etag", "last-modified", "age", "x-cache-status")
SOCKET_DIR = "/run/ralex/egress"
CACHE = "/home/ralex/.cache"
# One line per request the egress proxy logged (services/egress/egress.py, AccessLog).
ACCESS = re.compile(r"^\d\d:\d\d:\d\d (\S+)\s+(\S+) (\S+):(\d+) ")
MARK = "RALEX_BENCH"


# --- docker helpers ----------------------------------------------------------------------------

def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return done


def build_images(images: dict[str, str]) -> None:
    """The agent images on the Python and Node bases and the egress image, from this checkout."""
    node = os.environ.get("RALEX_NODE_IMAGE", "node:22-bookworm-slim")
    python = os.environ.get("RALEX_PYTHON_IMAGE", "python:3.11-slim-bookworm")
    env = dict(os.environ)
    if subprocess.run(["docker", "buildx", "version"], capture_output=True, check=False).returncode != 0:
        env["DOCKER_BUILDKIT"] = "0"  # no buildx here: the classic builder builds these Dockerfiles too
    builds = [
        (images["node"], "services/opencode/Dockerfile", {"NODE_IMAGE": node, "AGENT_BASE_IMAGE": node}),
        (images["python"], "services/opencode/Dockerfile", {"NODE_IMAGE": node, "AGENT_BASE_IMAGE": python}),
        (images["egress"], "services/egress/Dockerfile", {"PYTHON_IMAGE": python}),
    ]
    for tag, dockerfile, build_args in builds:
        print(f"building {tag} ...", flush=True)
        args = [f"--build-arg={k}={v}" for k, v in build_args.items()]
        done = subprocess.run(["docker", "build", "-q", "-f", dockerfile, *args, "-t", tag, "."], cwd=ROOT,
                              env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"building {tag} failed:\n{(done.stderr or done.stdout)[-3000:]}")


def own(path: Path, image: str) -> None:
    """Give a host directory to the agent's uid (a chown from a container when we are not root)."""
    try:
        for item in [path, *path.rglob("*")]:
            os.chown(item, UID, UID)
    except PermissionError:
        docker("run", "--rm", "--network", "none", "-u", "0", "--entrypoint", "chown", "-v", f"{path}:/w",
               image, "-R", f"{UID}:{UID}", "/w")


def remove_tree(path: Path, image: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():  # files the container's uid wrote, and we may not delete them
        docker("run", "--rm", "--network", "none", "-u", "0", "--entrypoint", "rm", "-v", f"{path.parent}:/p",
               image, "-rf", f"/p/{path.name}", check=False)


class Egress:
    """The egress proxy container (packages mode) and its counters."""

    def __init__(self, image: str, sockets: Path, sandbox: Path, name: str) -> None:
        self.name = name
        docker("run", "-d", "--name", name, "--init", "--read-only", "--memory", "128m",
               "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
               "-e", "RALEX_AGENT_NETWORK=packages",
               "--tmpfs", "/run/ralex-egress:size=8m,mode=0700,uid=13,gid=13", "--tmpfs", "/tmp:size=16m,mode=1777",
               "-v", f"{sandbox}:/etc/ralex/sandbox:ro", "-v", f"{sockets}:{SOCKET_DIR}", image)
        self.id = docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
        deadline = time.monotonic() + 30
        while not (sockets / "proxy.sock").exists() or "network packages" not in self.log():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the egress proxy did not start:\n{self.log()[-3000:]}")
            if docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
                raise RuntimeError(f"the egress proxy exited:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        self.seen = len(self.access())

    def log(self) -> str:
        done = docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def access(self) -> list[tuple[str, str, str]]:
        """(verdict, method, host) of every request the proxy logged so far (its stdout)."""
        found = []
        for line in docker("logs", self.name, check=False).stdout.splitlines():
            match = ACCESS.match(line.strip())
            if match:
                found.append((match[1], match[2], match[3]))
        return found

    def rx_bytes(self) -> int:
        return int(docker("exec", self.name, "cat", "/sys/class/net/eth0/statistics/rx_bytes").stdout)

    def new_access(self) -> list[tuple[str, str, str]]:
        """Requests logged since the last call (Squid logs a tunnel when it closes: wait until quiet)."""
        lines = self.access()
        for _ in range(10):
            time.sleep(0.3)
            again = self.access()
            if len(again) == len(lines):
                break
            lines = again
        new, self.seen = lines[self.seen:], len(lines)
        return new

    def memory(self) -> dict[str, Any]:
        stats = json.loads(docker("stats", "--no-stream", "--format", "{{json .}}", self.name).stdout)
        out: dict[str, Any] = {"docker_stats": stats.get("MemUsage"), "mib": parse_mib(stats.get("MemUsage", ""))}
        for path in (Path(f"/sys/fs/cgroup/memory/docker/{self.id}/memory.max_usage_in_bytes"),
                     Path(f"/sys/fs/cgroup/system.slice/docker-{self.id}.scope/memory.peak")):
            with contextlib.suppress(OSError, ValueError):
                out["peak_mib_cgroup"] = round(int(path.read_text()) / (1 << 20), 1)
                out["peak_source"] = str(path).replace(self.id, "<id>")
                break
        return out


def parse_mib(usage: str) -> float | None:
    """'28.07MiB / 128MiB' -> 28.07."""
    match = re.match(r"\s*([\d.]+)\s*([KMG]i?B|B)", usage)
    if not match:
        return None
    scale = {"B": 1 / (1 << 20), "KiB": 1 / 1024, "KB": 1 / 1024, "MiB": 1, "MB": 1, "GiB": 1024, "GB": 1024}
    return round(float(match[1]) * scale[match[2]], 2)


# --- the projects ------------------------------------------------------------------------------

def node_project(where: Path) -> dict[str, Any]:
    """package.json and a package-lock.json made by the host's npm (with resolved URLs, as usual)."""
    where.mkdir(parents=True)
    package = {"name": "ralex-install-bench", "version": "1.0.0", "private": True, "dependencies": NODE_DEPENDENCIES}
    (where / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    done = subprocess.run(["npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund",
                           "--omit-lockfile-registry-resolved=false", "--registry=https://registry.npmjs.org/"],
                          cwd=where, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise SystemExit(f"npm install --package-lock-only failed:\n{done.stderr[-3000:]}")
    lock = json.loads((where / "package-lock.json").read_text())
    packages = [key for key in lock.get("packages", {}) if key]
    npm = subprocess.run(["npm", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"dependencies": NODE_DEPENDENCIES, "lock_packages": len(packages), "lockfile_version":
            lock.get("lockfileVersion"), "lock_sha256": hashlib.sha256((where / "package-lock.json").read_bytes())
            .hexdigest()[:16], "lock_made_by_host_npm": npm}


# --- one install -------------------------------------------------------------------------------

class Runner:
    def __init__(self, images: dict[str, str], egress: Egress, sockets: Path, work: Path,
                 node_dir: Path) -> None:
        self.images, self.egress, self.sockets, self.work, self.node_dir = images, egress, sockets, work, node_dir
        self.current: str | None = None

    def install(self, toolchain: str, volume: str | None) -> dict[str, Any]:
        """One install in a fresh workspace; cache on ``volume`` or, when None, on a tmpfs."""
        image = self.images[toolchain]
        workspace = self.work / f"ws-{uuid.uuid4().hex[:8]}"
        if toolchain == "node":
            shutil.copytree(self.node_dir, workspace)
        else:
            workspace.mkdir()
        own(workspace, image)
        cache = (["-v", f"{volume}:{CACHE}"] if volume else
                 ["--tmpfs", f"{CACHE}:exec,uid={UID},gid={UID},mode=0700"])
        steps = list(STEPS[toolchain].items())
        script = "rc=0; t0=$(date +%s%N); " + "".join(
            f"if [ $rc = 0 ]; then {{ {step}; }} >>/tmp/install.log 2>&1 || rc=$?; fi; t{i}=$(date +%s%N); "
            for i, (_, step) in enumerate(steps, 1))
        script += (f'tail -n 40 /tmp/install.log; echo "{MARK} $rc ' + " ".join(f"$t{i}" for i in range(len(steps) + 1))
                   + '"; exit $rc')
        self.current = f"{PREFIX}agent-{uuid.uuid4().hex[:8]}"
        command = ["docker", "run", "--rm", "--name", self.current, "--init", "--network", "none", "--read-only",
                   "-u", f"{UID}:{UID}", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
                   "--memory", "2g", "-v", f"{self.sockets}:{SOCKET_DIR}:ro",
                   "--tmpfs", "/tmp:exec,size=1g,mode=1777",
                   "--tmpfs", f"/home/ralex/.local/state:size=64m,mode=0700,uid={UID},gid={UID}",
                   "-v", f"{workspace}:/workspace", *cache, image, "sh", "-c", script]
        rx_before = self.egress.rx_bytes()
        started_ns = time.time_ns()
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
        wall = time.perf_counter() - started
        self.current = None
        rx = self.egress.rx_bytes() - rx_before
        access = self.egress.new_access()
        remove_tree(workspace, image)
        run: dict[str, Any] = {"wall_s": round(wall, 3), "exit": done.returncode, "egress_rx_bytes": rx,
                               "connections": len(access),
                               "hosts": dict(Counter(host for _, _, host in access)),
                               "verdicts": dict(Counter(verdict for verdict, _, _ in access))}
        mark = re.search(rf"^{MARK} \d+((?: \d+)+)$", done.stdout, re.M)
        if mark:
            stamps = [int(x) for x in mark[1].split()]
            run["command_s"] = round((stamps[-1] - stamps[0]) / 1e9, 3)
            run["start_s"] = round((stamps[0] - started_ns) / 1e9, 3)
            if len(steps) > 1:
                run["steps_s"] = {name: round((stamps[i + 1] - stamps[i]) / 1e9, 3)
                                  for i, (name, _) in enumerate(steps)}
        if done.returncode != 0 or not mark:
            run["output_tail"] = (done.stdout + done.stderr)[-3000:]
        run["summary_line"] = summary_line(done.stdout)
        return run


def summary_line(output: str) -> str:
    """pip's 'Successfully installed ...' or npm's 'added N packages ...'."""
    for line in reversed(output.splitlines()):
        if line.startswith(("Successfully installed", "added ")):
            return line.strip()
    return ""


def cache_sizes(volume: str, image: str) -> dict[str, int]:
    """Bytes in each top-level directory of a cache volume."""
    done = docker("run", "--rm", "--network", "none", "-u", f"{UID}:{UID}", "--entrypoint", "sh",
                  "-v", f"{volume}:/c:ro", image, "-c", "cd /c && du -sb -- * 2>/dev/null", check=False)
    sizes = {}
    for line in done.stdout.splitlines():
        size, _, name = line.partition("\t")
        if size.isdigit():
            sizes[name] = int(size)
    return sizes


# --- statistics and output ---------------------------------------------------------------------

def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r["exit"] == 0]
    out: dict[str, Any] = {"n": len(runs), "failed": len(runs) - len(ok)}
    for key in ("wall_s", "command_s", "start_s"):
        values = [r[key] for r in ok if key in r]
        if values:
            out[key] = {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values)}
    steps = [r["steps_s"] for r in ok if "steps_s" in r]
    if steps:
        out["steps_s_median"] = {name: round(statistics.median(s[name] for s in steps), 3) for name in steps[0]}
    if ok:
        out["egress_rx_mib_median"] = round(statistics.median(r["egress_rx_bytes"] for r in ok) / (1 << 20), 2)
        out["connections_median"] = statistics.median(r["connections"] for r in ok)
    out["runs"] = list(runs)
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *(line(r) for r in cells[1:])])


def machine() -> dict[str, Any]:
    info = docker("info", "--format", "{{.ServerVersion}}|{{.NCPU}}|{{.MemTotal}}|{{.Driver}}|{{.CgroupVersion}}",
                  check=False).stdout.strip().split("|")
    out: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    if len(info) == 5:
        out.update(docker_server=info[0], docker_cpus=int(info[1]), memory_gib=round(int(info[2]) / (1 << 30), 1),
                   storage_driver=info[3], cgroup_version=info[4])
    return out


def toolchain_versions(images: dict[str, str], toolchains: Sequence[str]) -> dict[str, str]:
    probes = {"python": "python3 --version; python3 -m venv /tmp/v >/dev/null && /tmp/v/bin/pip --version",
              "node": "echo node $(node --version) npm $(npm --version)"}
    out = {}
    for toolchain in toolchains:
        done = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", images[toolchain], "-c",
                      probes[toolchain], check=False)
        out[toolchain] = " ".join(done.stdout.split())
    return out


def extra_cas(image: str) -> list[str]:
    done = docker("run", "--rm", "--network", "none", "--entrypoint", "ls", image, "/usr/local/share/ca-certificates",
                  check=False)
    return done.stdout.split()


def probe_headers(image: str, sockets: Path) -> dict[str, Any]:
    """Caching headers of one index page, one wheel and one npm tarball, fetched through the egress proxy."""
    out: dict[str, Any] = {}
    for name, url in PROBES.items():
        done = docker("run", "--rm", "--init", "--network", "none", "--read-only", "-u", f"{UID}:{UID}",
                      "-v", f"{sockets}:{SOCKET_DIR}:ro", "--tmpfs", "/tmp:exec,mode=1777",
                      "--tmpfs", f"{CACHE}:exec,uid={UID},gid={UID},mode=0700", image,
                      "curl", "-sS", "--max-time", "60", "-o", "/dev/null", "-D", "-", url, check=False)
        headers: dict[str, str] = {}
        names: list[str] = []
        status = ""
        for line in done.stdout.splitlines():
            if line.startswith("HTTP/"):
                status, headers, names = line.strip(), {}, []  # the last answer: the CONNECT's own 200 comes first
                continue
            key, sep, value = line.partition(":")
            if sep:
                names.append(key.strip().lower())
                if key.strip().lower() in CACHE_HEADERS:
                    headers.setdefault(key.strip().lower(), value.strip())
        out[name] = {"url": url, "status": status, "caching_headers": headers, "header_names": names,
                     "exit": done.returncode}
        if done.returncode:
            out[name]["error"] = done.stderr.strip()[-500:]
    return out


def seed_size(image: str) -> dict[str, int]:
    done = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                  "du -sb /home/ralex/.npm/_cacache | cut -f1; find /home/ralex/.npm/_cacache -type f | wc -l",
                  check=False)
    numbers = [int(x) for x in done.stdout.split() if x.isdigit()]
    return {"bytes": numbers[0], "files": numbers[1]} if len(numbers) == 2 else {}


def notes(results: dict[str, Any], toolchains: Sequence[str]) -> list[str]:
    """What the figures mean, from what this run saw."""
    out = []

    def median(toolchain: str, condition: str, key: str = "wall_s") -> float:
        return results[toolchain][condition].get(key, {}).get("median", float("nan"))

    for toolchain in toolchains:
        cold, warm, bare = (median(toolchain, c) for c in CONDITIONS)
        rx = {c: results[toolchain][c].get("egress_rx_mib_median") for c in CONDITIONS}
        conns = {c: results[toolchain][c].get("connections_median") for c in CONDITIONS}
        out.append(f"{toolchain}: median wall cold {cold:.2f} s, warm {warm:.2f} s, no_volume {bare:.2f} s; "
                   f"egress traffic cold {rx['cold']} MiB / {conns['cold']} connections, warm {rx['warm']} MiB / "
                   f"{conns['warm']}, no_volume {rx['no_volume']} MiB / {conns['no_volume']}.")
    if "python" in toolchains:
        pip_bytes = [size.get("pip", 0) for size in results["python"]["cache_bytes_after_cold"]]
        wheel = results.get("registry_cache_headers", {}).get("pypi_wheel", {})
        if not any(pip_bytes):
            out.append("python: pip wrote nothing to its cache (no ~/.cache/pip after a cold install), so warm "
                       "downloads everything again and costs what cold does. The cause is the index this machine "
                       "reaches, not the volume: its files come without Cache-Control, Expires, ETag or "
                       f"Last-Modified (a wheel's answer here has only {wheel.get('header_names')}; see "
                       "registry_cache_headers), and pip's HTTP cache (cachecontrol) stores only answers that say "
                       "they may be cached. pypi.org's files do say so (a long max-age), so against the real index "
                       "the wheels of a warm install would come from the volume; not measured here. Index pages are "
                       "revalidated on every install either way (pip asks with max-age=0).")
        else:
            out.append(f"python: pip's cache after a cold install: {statistics.median(pip_bytes) / (1 << 20):.1f} MiB.")
        steps = results["python"]["cold"].get("steps_s_median", {})
        if steps:
            out.append(f"python: of the cold install, creating the venv (ensurepip, offline) takes "
                       f"{steps['venv']:.2f} s and pip install {steps['pip_install']:.2f} s (medians).")
    if "node" in toolchains:
        packages = results["node"].get("project", {}).get("lock_packages")
        warm = results["node"]["warm"].get("connections_median")
        out.append(f"node: {packages} packages in the lock, {results['node']['cold'].get('connections_median')} "
                   "CONNECT tunnels logged on a cold npm ci (Squid logs tunnels, not requests); a warm npm ci "
                   "(NPM_CONFIG_PREFER_OFFLINE=true, integrity from the lock) made "
                   + ("no request at all." if warm == 0 else f"{warm} connections."))
    seed = results.get("npm_seed_in_image", {})
    estimates = {t: results[t].get("seeding_s_estimate") for t in toolchains}
    starts = {t: {c: median(t, c, "start_s") for c in CONDITIONS} for t in toolchains}
    out.append(f"The entrypoint copies the image's seeded npm cache ({seed.get('bytes', 0) / (1 << 20):.1f} MiB, "
               f"{seed.get('files')} files) into an empty ~/.cache on the first start (cold, and every no_volume run); "
               f"start_s of cold minus warm estimates that copy at {estimates} s. Median start_s (docker run to the "
               f"command's start: container start, seeding, relays): {starts}.")
    dirs = sorted({d for t in toolchains for size in results[t]["cache_bytes_after_cold"] for d in size})
    out.append(f"Directories in the cache volume after a cold install: {dirs} (cache_bytes_after_cold; npm's "
               "includes the seed; a new named volume also gets the image's own ~/.cache content, Docker's copy-up).")
    memory = results.get("egress_memory", {})
    out.append(f"Egress memory (limit 128 MiB as in compose): idle {memory.get('idle_at_start', {}).get('mib')} MiB, "
               f"after the runs {memory.get('after_runs', {}).get('mib')} MiB (docker stats, page cache excluded); "
               f"peak {memory.get('after_runs', {}).get('peak_mib_cgroup')} MiB from the cgroup, page cache included.")
    failed = sum(results[t][c]["failed"] for t in toolchains for c in CONDITIONS)
    extra_cas = {t: results[t].get("extra_ca_certificates") for t in toolchains}
    out.append("TLS: Ralex's egress only tunnels (CONNECT), so pip and npm check the registries' certificates "
               "themselves against the agent image's CA store; no Ralex CA is involved. Extra CAs in the images "
               f"(/usr/local/share/ca-certificates, e.g. a TLS-intercepting host's, as the stand-in bases carry): "
               f"{extra_cas}. Failed installs in this run: {failed}.")
    out.append("Absolute times depend on this machine's route to the registries; compare conditions within one run. "
               "Python's transitive dependencies are not pinned: the versions installed are in each run's "
               "summary_line.")
    out.append("Beyond the brief's docker run: the agent runs with compose's hardening (--init, --cap-drop ALL, "
               "no-new-privileges, 2 GiB memory, /tmp 1 GiB) and the egress container as compose runs it.")
    return out


@contextlib.contextmanager
def cleanup(runner_box: list[Runner], volumes: list[str], egress_name: str) -> Iterator[None]:
    try:
        yield
    finally:
        for runner in runner_box:
            if runner.current:
                docker("rm", "-f", runner.current, check=False)
        docker("rm", "-f", egress_name, check=False)
        for volume in volumes:
            docker("volume", "rm", "-f", volume, check=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each condition (default 3)")
    parser.add_argument("--toolchains", default="python,node", help="python,node (default both)")
    parser.add_argument("--python-image", default="ralex-bench/agent-python")
    parser.add_argument("--node-image", default="ralex-bench/agent-node")
    parser.add_argument("--egress-image", default="ralex-bench/egress")
    parser.add_argument("--build", action="store_true", help="build the three images first (tags as above)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the unrecorded first install per toolchain")
    parser.add_argument("--output", type=Path, default=RESULTS / "install.json", help="results file")
    args = parser.parse_args(argv)
    toolchains = [t for t in args.toolchains.split(",") if t]
    if unknown := set(toolchains) - set(COMMANDS):
        parser.error(f"unknown toolchain(s): {', '.join(sorted(unknown))}")
    images = {"python": args.python_image, "node": args.node_image, "egress": args.egress_image}
    if args.build:
        build_images(images)
    for tag in (images["egress"], *(images[t] for t in toolchains)):
        if docker("image", "inspect", tag, check=False).returncode != 0:
            raise SystemExit(f"image {tag} is missing: build it (--build) or name another")

    token = uuid.uuid4().hex[:6]
    egress_name = f"{PREFIX}egress-{token}"
    volumes: list[str] = []
    runner_box: list[Runner] = []
    results: dict[str, Any] = {"machine": machine(), "date": datetime.now(UTC).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="ralex-install-bench-") as tmp, cleanup(runner_box, volumes, egress_name):
        work = Path(tmp)
        sockets, sandbox = work / "egress-socket", work / "sandbox"
        sockets.mkdir()
        sandbox.mkdir()
        sockets.chmod(0o777)
        sandbox.chmod(0o755)
        project = node_project(work / "node-project") if "node" in toolchains else {}
        egress = Egress(images["egress"], sockets, sandbox, egress_name)
        runner = Runner(images, egress, sockets, work, work / "node-project")
        runner_box.append(runner)
        memory_idle = egress.memory()
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {t: {c: [] for c in CONDITIONS} for t in toolchains}
        sizes: dict[str, list[dict[str, int]]] = {t: [] for t in toolchains}
        first: dict[str, dict[str, Any]] = {}
        if not args.no_warmup:
            for toolchain in toolchains:
                print(f"{toolchain}: unrecorded first install (no_volume) ...", flush=True)
                first[toolchain] = runner.install(toolchain, None)
        for rep in range(args.repeats):
            for toolchain in toolchains:
                volume = f"{PREFIX}cache-{toolchain}-{token}-{rep}"
                docker("volume", "create", volume)
                volumes.append(volume)
                order = ["no_volume", "cold", "warm"] if rep % 2 else ["cold", "warm", "no_volume"]
                for condition in order:
                    run = runner.install(toolchain, None if condition == "no_volume" else volume)
                    runs[toolchain][condition].append(run)
                    if condition == "cold":
                        sizes[toolchain].append(cache_sizes(volume, images[toolchain]))
                    print(f"[{rep + 1}/{args.repeats}] {toolchain:<6} {condition:<9} wall {run['wall_s']:7.2f} s  "
                          f"command {run.get('command_s', float('nan')):7.2f} s  start {run.get('start_s', 0):5.2f} s"
                          f"  rx {run['egress_rx_bytes'] / (1 << 20):6.2f} MiB  conns {run['connections']:3d}  "
                          f"exit {run['exit']}", flush=True)
                docker("volume", "rm", "-f", volume, check=False)
                volumes.remove(volume)
        memory_after = egress.memory()
        versions = toolchain_versions(images, toolchains)
        cas = {t: extra_cas(images[t]) for t in toolchains}
        seed = seed_size(images[toolchains[0]])
        headers = probe_headers(images[toolchains[0]], sockets)
        egress_log_problems = [line for line in egress.log().splitlines()
                               if re.search(r"ERROR|FATAL|WARNING(?!: BCP 177)|denied|not_listed", line)][:20]

    for toolchain in toolchains:
        block: dict[str, Any] = {c: aggregate(runs[toolchain][c]) for c in CONDITIONS}
        block["command"] = COMMANDS[toolchain]
        block["image"] = images[toolchain]
        block["versions"] = versions.get(toolchain, "")
        block["extra_ca_certificates"] = cas[toolchain]
        block["cache_bytes_after_cold"] = sizes[toolchain]
        if first:
            block["unrecorded_first_install"] = first[toolchain]
        cold, warm = block["cold"].get("start_s"), block["warm"].get("start_s")
        if cold and warm:
            block["seeding_s_estimate"] = round(cold["median"] - warm["median"], 3)
        if toolchain == "node":
            block["project"] = project
        results[toolchain] = block
    results["egress_memory_mib"] = memory_after["mib"]
    results["egress_memory"] = {"idle_at_start": memory_idle, "after_runs": memory_after}
    results["npm_seed_in_image"] = seed
    results["egress_log_problems"] = egress_log_problems
    results["method"] = __doc__
    results["registry_cache_headers"] = headers
    results["notes"] = notes(results, toolchains)

    rows = []
    for toolchain in toolchains:
        for condition in CONDITIONS:
            agg = results[toolchain][condition]
            wall, start, cmd = agg.get("wall_s"), agg.get("start_s"), agg.get("command_s")
            rows.append([f"{toolchain} {condition}", f"{wall['median']:.2f}" if wall else "-",
                         f"{wall['min']:.2f}-{wall['max']:.2f}" if wall else "-",
                         f"{cmd['median']:.2f}" if cmd else "-", f"{start['median']:.2f}" if start else "-",
                         agg.get("egress_rx_mib_median", "-"), agg.get("connections_median", "-"),
                         f"{agg['n'] - agg['failed']}/{agg['n']}"])
    print()
    print(table(["install", "wall p50 s", "min-max s", "command s", "start s", "rx MiB", "conns", "ok"], rows))
    print(f"egress memory: idle {memory_idle['mib']} MiB, after the runs {memory_after['mib']} MiB, "
          f"peak {memory_after.get('peak_mib_cgroup', '?')} MiB")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.output}")
    if any(results[t][c]["failed"] for t in toolchains for c in CONDITIONS):
        sys.exit(1)


if __name__ == "__main__":
    main()
