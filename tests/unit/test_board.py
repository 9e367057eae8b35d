"""What `ralexctl doctor` says about a board, and the memory profiles' single source of truth."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ralex_ctl import board
from ralex_ctl.cli import app
from ralex_ctl.project import read_env

ROOT = Path(__file__).resolve().parents[2]
PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
PI5_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU part\t: 0xd0b
"""


@pytest.mark.parametrize(("machine", "bits", "docker", "ok", "words"), [
    ("x86_64", 64, "x86_64", True, "linux/amd64"),
    ("aarch64", 64, "aarch64", True, "linux/arm64"),
    ("aarch64", 32, None, False, "32-bit userland"),          # 32-bit Raspberry Pi OS on a 64-bit kernel
    ("armv7l", 32, "armv7l", False, "32-bit ARM"),
    ("aarch64", 64, "armv7l", False, "32-bit ARM"),           # a 64-bit shell, a 32-bit Docker
    ("riscv64", 64, None, False, "not supported"),
])
def test_architecture(machine: str, bits: int, docker: str | None, ok: bool, words: str):
    verdict = board.arch(machine, bits, docker)
    assert verdict.ok is ok
    assert words in verdict.detail
    if not ok and "arm" in (machine + (docker or "")).lower():
        assert "64-bit Raspberry Pi OS" in verdict.fix
        assert not verdict.warn_only


def test_a_pi4_cpu_is_a_warning_with_the_fix_and_a_pi5_is_fine():
    pi4 = board.cpu_features("aarch64", PI4_CPUINFO)
    assert (pi4.ok, pi4.warn_only) == (False, True)
    assert "LSE atomics" in pi4.detail
    assert "RALEX_OPENCODE_VERSION" in pi4.fix
    assert board.cpu_features("aarch64", PI5_CPUINFO).ok
    assert board.cpu_features("x86_64", "flags: sse").ok
    assert board.cpu_features("aarch64", "").ok  # nothing to read: not a failure


@pytest.mark.parametrize(("kib", "profile", "ok"), [
    (1_000_000, "small", False),    # a 1 GB board: below what the stack needs
    (1_890_000, "small", True),     # a "2 GB" Pi 4 reports about 1.8 GiB
    (3_880_000, "standard", True),  # 4 GB
    (8_000_000, "standard", True),
])
def test_memory_and_profile_by_ram(kib: int, profile: str, ok: bool):
    total = board.mem_total(f"MemTotal:       {kib} kB\nMemFree:  1 kB\n")
    assert total == kib * 1024
    assert board.profile_for(total) == profile
    verdict = board.memory(total)
    assert verdict.ok is ok
    assert verdict.warn_only or ok


def test_a_small_board_without_the_small_limits_in_env_is_told_how():
    total = 1_890_000 * 1024
    assert not board.memory(total, {}).ok
    assert "--profile small" in board.memory(total, {}).fix
    assert board.memory(total, dict(board.PROFILES["small"])).ok


def test_storage_driver():
    assert board.storage("overlay2").ok
    vfs = board.storage("vfs")
    assert (vfs.ok, vfs.warn_only) == (False, True)
    assert "overlay2" in vfs.fix


def test_compose_and_env_example_defaults_are_the_standard_profile():
    compose = (ROOT / "compose.yaml").read_text()
    defaults = dict(re.findall(r"\$\{(RALEX_[A-Z_]+):-([^}]+)\}", compose))
    example = read_env(ROOT / ".env.example")
    for name, value in board.PROFILES["standard"].items():
        assert defaults[name] == value, name
        assert example[name] == value, name
    assert set(board.PROFILES["small"]) == set(board.PROFILES["standard"])
    services = yaml.safe_load(compose)["services"]
    assert all("mem_limit" in s for s in services.values()), "every service has a memory limit"


def mib(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([mg])", value).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "g" else 1)


def test_the_small_profile_is_sized_on_the_arm64_measurement_and_fits_a_2gb_board():
    """Each limit is at least 1.3x what the service itself used on the arm64 stack after an OpenCode turn
    (the emulator's memory excluded), and the stack's measured total plus Grafana leaves a 2 GB Pi 4
    room for the OS and Docker."""
    measured = json.loads((ROOT / "bench" / "results" / "arm64.json").read_text())["cpus"]
    service_limit = {"litellm": "RALEX_MEM_PROXY", "opencode": "RALEX_MEM_AGENT", "postgres": "RALEX_MEM_POSTGRES",
                     "budget-exporter": "RALEX_MEM_EXPORTER", "prometheus": "RALEX_MEM_PROMETHEUS",
                     "alertmanager": "RALEX_MEM_ALERTMANAGER"}
    small = board.PROFILES["small"]
    total = 0.0
    for service, limit in service_limit.items():
        own = max(cpu["memory_bytes"][service]["arm64"] for cpu in measured.values()) / 1024**2
        total += own
        shared_buffers = 128 if service == "postgres" else 0
        assert mib(small[limit]) >= 1.3 * own + shared_buffers, (service, own, small[limit])
    grafana = 150  # an estimate: Grafana has no image offline, so it is not measured here
    board_ram, os_and_docker = 1.8 * 1024, 350  # a "2 GB" Pi 4's MemTotal; Raspberry Pi OS Lite + dockerd idle
    assert total + grafana <= board_ram - os_and_docker - 256, f"{total + grafana:.0f} MiB leaves no headroom"


def test_one_opencode_version_everywhere():
    """Compose, .env.example and the bake file leave the version to the lock (services/opencode/opencode.lock)."""
    assert re.search(r"^ARG OPENCODE_VERSION=$", (ROOT / "services" / "opencode" / "Dockerfile").read_text(), re.M)
    assert "${RALEX_OPENCODE_VERSION:-}" in (ROOT / "compose.yaml").read_text()
    assert read_env(ROOT / ".env.example")["RALEX_OPENCODE_VERSION"] == ""
    assert 'variable "OPENCODE_VERSION" { default = "" }' in (ROOT / "docker-bake.hcl").read_text()


def test_init_writes_the_profile_this_machine_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("compose.yaml", ".env.example"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    monkeypatch.chdir(tmp_path)
    for name in ("RALEX_HOME", "OPENROUTER_API_KEY", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "RALEX_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(board, "this_machine", lambda: ("aarch64", 64, PI4_CPUINFO, "MemTotal: 1890000 kB\n"))
    result = CliRunner().invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y"])
    assert result.exit_code == 0, result.output
    assert "small memory profile" in result.output
    env = read_env(tmp_path / ".env")
    assert {k: env[k] for k in board.PROFILES["small"]} == board.PROFILES["small"]
    again = CliRunner().invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y", "--force", "--profile", "big"])
    assert again.exit_code == 1
    assert "unknown profile 'big'; use --profile standard or --profile small" in str(again.exception)
