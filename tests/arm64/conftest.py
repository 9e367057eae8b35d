"""The whole stack as linux/arm64 images on an x86 host, under qemu-user: Ralex's three images (and the
fake OpenRouter) built for arm64 from the same Dockerfiles, every other service an arm64 image, the
emulated CPU chosen per run with QEMU_CPU (tests/compose.arm64.yaml).

Needs the arm64 stand-ins and qemu registered by the sandbox script:
    ../shared/sandbox/prepare-docker.sh --arch arm64 > arm64.env
    RALEX_ARM64_ENV=arm64.env uv run --frozen pytest -m arm64
RALEX_ARM64_SCOPE=smoke runs the reduced set .ci/run runs. Without RALEX_ARM64_ENV these tests skip
(RALEX_REQUIRE_ARM64=1, as .ci/run sets, makes that a failure).
RALEX_ARM64_RESULTS=path writes the measurements (README, "Raspberry Pi") as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ralex_ctl.project import read_env
from tests.e2e.conftest import AGENT_UID, COPY, TYPO, Stack
from tests.integration.conftest import ROOT, free_port
from tests.zones import far_from_midnight

# The newest opencode-linux-arm64 this machine's npm registry serves; users' builds use the version
# pinned in the Dockerfile (RALEX_OPENCODE_VERSION unset).
OPENCODE_ARM64_VERSION = os.environ.get("RALEX_ARM64_OPENCODE_VERSION", "1.18.18")
# RALEX_ARM64_SCOPE=smoke (what .ci/run runs): the four images built, the money path on the Pi 4's
# CPU. full (the default): both CPUs, every service, a real OpenCode turn and memory per service.
SMOKE = os.environ.get("RALEX_ARM64_SCOPE", "full") == "smoke"
BUILT = ["litellm", "budget-exporter", "egress", "opencode", "fake-openrouter"]
SERVICES = (["postgres", "litellm", "budget-exporter", "prometheus", "fake-openrouter"] if SMOKE else
            ["postgres", "litellm", "budget-exporter", "prometheus", "alertmanager", "egress", "opencode",
             "fake-openrouter"])
PI = {"cortex-a72": "Raspberry Pi 4", "cortex-a76": "Raspberry Pi 5"}
CPUS = ["cortex-a72"] if SMOKE else list(PI)
# AT_HWCAP that qemu 7.2 reports for each model (sandbox README): proof the container runs that CPU
HWCAP = {"cortex-a72": 0x8FB, "cortex-a76": 0x119FFB}


def arm64_env() -> dict[str, str] | None:
    path = os.environ.get("RALEX_ARM64_ENV")
    if not path:
        return None
    env = read_env(Path(path))
    if env.get("DOCKER_DEFAULT_PLATFORM") != "linux/arm64":
        raise AssertionError(f"{path} is not the arm64 env file (no DOCKER_DEFAULT_PLATFORM=linux/arm64)")
    return env


class Results:
    """What the arm64 run measured, written to RALEX_ARM64_RESULTS (if set) after each change."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {"opencode_version": OPENCODE_ARM64_VERSION, "cpus": {},
                                     "scope": "smoke" if SMOKE else "full"}
        self.path = os.environ.get("RALEX_ARM64_RESULTS")

    def put(self, *keys: str, value: Any) -> None:
        node = self.data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        if self.path:
            Path(self.path).write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def results() -> Results:
    return Results()


def image_size(stack: Stack, image: str) -> int:
    return int(stack.docker("image", "inspect", "-f", "{{.Size}}", image).strip())


@pytest.fixture(scope="module")
def arm_stack(tmp_path_factory: pytest.TempPathFactory, results: Results) -> Iterator[Stack]:
    images = arm64_env()
    if images is None:
        if os.environ.get("RALEX_REQUIRE_ARM64") == "1":
            pytest.fail("RALEX_REQUIRE_ARM64=1 but RALEX_ARM64_ENV is not set (prepare-docker.sh --arch arm64)")
        pytest.skip("set RALEX_ARM64_ENV to the output of ../shared/sandbox/prepare-docker.sh --arch arm64")
    root = tmp_path_factory.mktemp("ralex-arm64")
    for name in [*COPY, "tests/compose.arm64.yaml"]:
        source, target = ROOT / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    workspace = root / "workspace"
    workspace.mkdir()
    (workspace / "hello.py").write_text(TYPO)
    for path in (workspace, workspace / "hello.py"):
        os.chown(path, AGENT_UID, AGENT_UID)
    machine = {
        **images,  # every RALEX_*_IMAGE an arm64 stand-in, DOCKER_DEFAULT_PLATFORM=linux/arm64
        "RALEX_PROXY_PORT": str(free_port()), "RALEX_PROMETHEUS_PORT": str(free_port()),
        "RALEX_GRAFANA_PORT": str(free_port()),
        "RALEX_LITELLM_IMAGE": "ralex.invalid/litellm:arm64-test",
        "RALEX_EXPORTER_IMAGE": "ralex.invalid/budget-exporter:arm64-test",
        "RALEX_OPENCODE_IMAGE": "ralex.invalid/opencode:arm64-test", "RALEX_OPENCODE_VERSION": OPENCODE_ARM64_VERSION,
        "RALEX_EGRESS_IMAGE": "ralex.invalid/egress:arm64-test",
    }
    process_env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("OPENROUTER_", "LITELLM_", "QEMU_")) and not k.endswith("_IMAGE")}
    process_env.update({"RALEX_HOME": str(root), "COMPOSE_PROJECT_NAME": f"ralex-arm64-{os.getpid()}",
                        "COMPOSE_FILE": "compose.yaml:tests/compose.fake.yaml:tests/compose.arm64.yaml",
                        "TZ": far_from_midnight(hours=10), **machine})  # no midnight in a long emulated run
    stack = Stack(root, workspace, {}, 0.0, process_env)
    # The README's path. init picks the memory profile by this host's RAM (standard here): under qemu
    # every process carries the emulator's code cache on top of its own memory, so the small profile's
    # limits (sized for the arm64 programs themselves, measured below) would count the emulator too.
    init = stack.ralexctl("init", "--openrouter-key", "sk-or-arm64-key", "--no-dashboard", "-y")
    assert init.returncode == 0, init.stderr
    stack.env = {**read_env(root / ".env"), **machine}
    # the fake's image is built FROM the arm64 python stand-in too (the tag differs from the e2e one)
    (root / "tests" / "compose.fake.yaml").write_text((root / "tests" / "compose.fake.yaml").read_text()
                                                      .replace("ralex.invalid/fake-openrouter:test",
                                                               "ralex.invalid/fake-openrouter:arm64-test"))
    started = time.monotonic()
    build = subprocess.run(["docker", "compose", "build", *BUILT], cwd=root, env=process_env, capture_output=True,
                           text=True, timeout=3600, check=False)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    results.put("build_seconds", value=round(time.monotonic() - started))
    for service, image in (("litellm", machine["RALEX_LITELLM_IMAGE"]),
                           ("budget-exporter", machine["RALEX_EXPORTER_IMAGE"]),
                           ("egress", machine["RALEX_EGRESS_IMAGE"]), ("opencode", machine["RALEX_OPENCODE_IMAGE"])):
        arch = stack.docker("image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", image).strip()
        assert arch == "linux/arm64", f"{image} is {arch}"
        results.put("image_bytes", service, value=image_size(stack, image))
    try:
        yield stack
    finally:
        logs = subprocess.run(["docker", "compose", "logs", "--tail", "80"], cwd=root, env=process_env,
                              capture_output=True, text=True, check=False)
        (tmp_path_factory.getbasetemp() / "arm64-stack.log").write_text(logs.stdout + logs.stderr)
        stack.ralexctl("down", "--volumes", "-y", timeout=600)
