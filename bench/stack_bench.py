"""Whole-stack figures, side by side in one run, on warm images:

- `docker compose up -d --wait` to all healthy, then `ralexctl up` to all healthy (after a down);
- idle memory of each service (docker stats) and the total, after the stack settles;
- image sizes (the proxy image against the ~1.5 GB official LiteLLM image);
- `ralexctl status` wall time (median of 10 runs).

It runs on a copy of the project with generated secrets and the fake OpenRouter in the upstream's
place (no Grafana offline: it is listed as not measured). Needs the images built once
(`docker compose build`, or a test run).

    python -m bench.stack_bench [--settle 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import docker

from tests.e2e.conftest import COPY, SERVICES, ralexctl_path
from tests.integration.conftest import ROOT, free_port

RESULTS = Path(__file__).resolve().parent / "results"


def run(cmd: list[str], root: Path, env: dict[str, str], timeout: float = 900) -> float:
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.monotonic() - started


def memory(project: str) -> dict[str, float]:
    engine = docker.from_env()
    usage = {}
    for container in engine.containers.list(filters={"label": f"com.docker.compose.project={project}"}):
        stats = container.stats(stream=False)
        mem = stats.get("memory_stats", {})
        cache = mem.get("stats", {}).get("inactive_file", 0)
        usage[container.labels["com.docker.compose.service"]] = (mem.get("usage", 0) - cache) / 2**20
    return usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds idle before reading memory")
    args = parser.parse_args()
    import shutil

    root = Path(tempfile.mkdtemp(prefix="ralex-stack-bench-"))
    for name in COPY:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, root / name)
    project = f"ralex-bench-{os.getpid()}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "LITELLM_"))},
           "RALEX_HOME": str(root), "COMPOSE_FILE": "compose.yaml:tests/compose.fake.yaml",
           "COMPOSE_PROJECT_NAME": project}
    run([ralexctl_path(), "init", "--openrouter-key", "sk-or-bench", "-y", "--workspace", str(root / "ws")], root, env)
    with (root / ".env").open("a") as f:
        f.write("".join(f"{k}={v}\n" for k, v in {
            "RALEX_PROXY_PORT": free_port(), "RALEX_PROMETHEUS_PORT": free_port(), "RALEX_GRAFANA_PORT": free_port(),
            "RALEX_LITELLM_IMAGE": "ralex.invalid/litellm:test",
            "RALEX_EXPORTER_IMAGE": "ralex.invalid/budget-exporter:test",
            "RALEX_OPENCODE_IMAGE": "ralex.invalid/opencode:test",
            "RALEX_EGRESS_IMAGE": "ralex.invalid/egress:test",
            "RALEX_CONFIG_FILE": "./tests/e2e/ralex.yaml"}.items()))
    results: dict[str, object] = {"services": SERVICES}
    try:
        run(["docker", "compose", "build", "litellm", "budget-exporter", "egress", "opencode", "fake-openrouter"],
            root, env,
            timeout=1800)
        run(["docker", "compose", "up", "-d", "--wait", *SERVICES], root, env)  # first start: volumes, migrations
        run(["docker", "compose", "down"], root, env)
        compose_s = run(["docker", "compose", "up", "-d", "--wait", *SERVICES], root, env)
        run(["docker", "compose", "down"], root, env)
        ralexctl_s = run([ralexctl_path(), "up", *SERVICES], root, env)
        time.sleep(args.settle)
        mem = memory(project)
        status_times = [run([ralexctl_path(), "status"], root, env) for _ in range(10)]
        engine = docker.from_env()
        sizes = {name: engine.images.get(f"ralex/{name}:test").attrs["Size"] / 1e6
                 for name in ("litellm", "budget-exporter", "opencode")}
        results.update({
            "compose_up_wait_s": compose_s, "ralexctl_up_s": ralexctl_s, "idle_memory_mib": mem,
            "idle_memory_total_mib": sum(mem.values()), "image_mb": sizes,
            "ralexctl_status_median_s": statistics.median(status_times), "ralexctl_status_max_s": max(status_times),
            "not_measured": ["grafana (no image offline)"],
        })
    finally:
        subprocess.run(["docker", "compose", "down", "--volumes"], cwd=root, env=env, capture_output=True, check=False)
    print(f"compose up --wait to healthy: {results['compose_up_wait_s']:.1f} s   "
          f"ralexctl up: {results['ralexctl_up_s']:.1f} s   (target <= 30 s)")
    print("idle memory (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(mem.items()))
          + f"; total {results['idle_memory_total_mib']:.0f} (target <= 1229 MiB)")
    print("images (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in sizes.items()) + " (proxy target <= 600)")
    print(f"ralexctl status: median {results['ralexctl_status_median_s']:.2f} s (target <= 1 s)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stack.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
