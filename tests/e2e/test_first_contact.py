"""Two Ralex folders on one machine, as a user sets them up: `ralexctl init` with its defaults, the
project name, compose files and ports in each folder's .env (nothing in the shell), then `ralexctl up`.
Each stack is shown and managed on its own. Only postgres, litellm and the fake OpenRouter run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ralex_ctl.project import read_env
from tests.e2e.conftest import COPY, ralexctl_path
from tests.integration.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e

SERVICES = ["postgres", "litellm", "fake-openrouter"]


def ralexctl(folder: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """ralexctl run inside ``folder`` with no Compose or Ralex settings in the shell but the image names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "OPENROUTER_", "LITELLM_"))
           and k != "RALEX_HOME" and not (k.startswith("RALEX_") and not k.endswith("_IMAGE"))}
    env.pop("RALEX_LITELLM_IMAGE", None)
    return subprocess.run([ralexctl_path(), *args], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def status(folder: Path) -> dict[str, object]:
    result = ralexctl(folder, "status", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    made = []
    try:
        for label in ("a", "b"):
            root = tmp_path_factory.mktemp(f"ralex-{label}")
            for name in COPY:
                target = root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if (ROOT / name).is_dir():
                    shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(ROOT / name, target)
            made.append(root)
            init = ralexctl(root, "init", "--openrouter-key", "sk-or-first-contact", "-y")
            assert init.returncode == 0, init.stderr
            assert "docker compose config accepts it" in init.stdout
            assert read_env(root / ".env")["RALEX_WORKSPACE"] == "./workspace"
            with (root / ".env").open("a") as env:  # what a user with two stacks writes in each folder
                env.write(f"COMPOSE_PROJECT_NAME=ralex-fc-{label}-{os.getpid()}\n"
                          "COMPOSE_FILE=compose.yaml:tests/compose.fake.yaml\n"
                          f"RALEX_PROXY_PORT={free_port()}\nRALEX_PROMETHEUS_PORT={free_port()}\n"
                          f"RALEX_GRAFANA_PORT={free_port()}\nRALEX_LITELLM_IMAGE=ralex.invalid/litellm:first-contact\n")
        yield made
    finally:
        for root in made:
            ralexctl(root, "down", "--volumes", "-y", timeout=300)


def test_two_folders_are_two_stacks_shown_and_managed_on_their_own(folders: list[Path]):
    a, b = folders
    for root in folders:
        up = ralexctl(root, "up", *SERVICES)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "\x1b[" not in up.stdout  # not a terminal: plain lines
        assert "litellm: ready" in up.stdout
        assert f"(Compose project {read_env(root / '.env')['COMPOSE_PROJECT_NAME']})" in up.stdout

    first, second = status(a), status(b)
    for data, root in ((first, a), (second, b)):
        project = data["project"]
        assert isinstance(project, dict)
        assert project["name"] == read_env(root / ".env")["COMPOSE_PROJECT_NAME"]
        assert project["name_from"] == ".env"
        states = {s["service"]: s for s in data["services"]}  # type: ignore[attr-defined]
        assert all(states[s]["ok"] for s in SERVICES), states
        assert states["opencode"]["state"] == "absent"
        assert data["urls"]["proxy"] == f"http://127.0.0.1:{read_env(root / '.env')['RALEX_PROXY_PORT']}/v1"  # type: ignore[index]

    assert ralexctl(a, "budget", "set", "7").returncode == 0  # through a's proxy, on a's port
    assert status(a)["budget"]["limit"] == 7.0  # type: ignore[index]
    assert status(b)["budget"]["limit"] == 5.0  # type: ignore[index]

    logs = ralexctl(b, "logs", "litellm", "--tail", "5", timeout=60)
    assert logs.returncode == 0, logs.stderr

    down = ralexctl(a, "down")
    assert down.returncode == 0, down.stderr
    assert {s["service"]: s["state"] for s in status(a)["services"]}["litellm"] == "absent"  # type: ignore[attr-defined]
    assert {s["service"]: s["ok"] for s in status(b)["services"]}["litellm"]  # type: ignore[attr-defined]
