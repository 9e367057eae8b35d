"""What the host machine can run, as plain data in and verdicts out: CPU architecture and userland,
CPU features the agent binary needs, memory, Docker's storage driver, and the memory profile the
stack gets on this much RAM. `ralexctl doctor` and `ralexctl init` gather the facts and call these.

One source of truth for the per-service memory limits: `PROFILES`. compose.yaml's defaults are the
`standard` profile (a unit test keeps them equal); `ralexctl init` writes the `small` profile into
.env on a board with less than `SMALL_BELOW` of RAM.
"""

from __future__ import annotations

import platform
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

GIB: Final = 1024**3
WARN_BELOW: Final = int(1.8 * GIB)  # a "2 GB" board reports about 1.8-1.9 GiB of MemTotal
SMALL_BELOW: Final = int(3.5 * GIB)  # up to a 2-3 GB board: the small profile
STORAGE_DRIVERS_OK: Final = ("overlay2", "overlayfs", "btrfs", "zfs")

# Per-service memory limits (Compose mem_limit) and the settings that go with them, by profile.
# The small profile is sized on each service's own memory measured on the arm64 stack after a real
# OpenCode turn (bench/results/arm64.json, README "Raspberry Pi"): every limit is at least 1.3x that
# (Postgres: plus its 128 MB of shared buffers), and what the services use together (~1.05 GB with
# Grafana) leaves a 2 GB Pi 4 ~0.4 GB beside the OS and Docker. A limit is a guard, not a reservation:
# a service that outgrows it is restarted alone (restart: unless-stopped), the board stays up.
PROFILES: Final[dict[str, dict[str, str]]] = {
    "standard": {
        "RALEX_MEM_PROXY": "1g",
        "RALEX_MEM_AGENT": "2g",
        "RALEX_MEM_POSTGRES": "512m",
        "RALEX_MEM_EXPORTER": "256m",
        "RALEX_MEM_PROMETHEUS": "512m",
        "RALEX_MEM_ALERTMANAGER": "128m",
        "RALEX_MEM_GRAFANA": "512m",
        "RALEX_MEM_EGRESS": "128m",
        "RALEX_METRICS_RETENTION": "30d",
        "RALEX_METRICS_RETENTION_SIZE": "1GB",
    },
    "small": {
        "RALEX_MEM_PROXY": "512m",
        "RALEX_MEM_AGENT": "640m",
        "RALEX_MEM_POSTGRES": "192m",
        "RALEX_MEM_EXPORTER": "96m",
        "RALEX_MEM_PROMETHEUS": "128m",
        "RALEX_MEM_ALERTMANAGER": "64m",
        "RALEX_MEM_GRAFANA": "192m",
        "RALEX_MEM_EGRESS": "64m",
        "RALEX_METRICS_RETENTION": "7d",
        "RALEX_METRICS_RETENTION_SIZE": "256MB",
    },
}


@dataclass(frozen=True)
class Verdict:
    """One doctor line: ok, or a problem with its fix; ``warn_only`` problems do not fail doctor."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warn_only: bool = False


def arch(machine: str, pointer_bits: int, docker_arch: str | None = None) -> Verdict:
    """The CPU and the userland. ``machine`` is the kernel's (uname -m), ``pointer_bits`` this Python's
    (a 32-bit Raspberry Pi OS on a 64-bit kernel says aarch64 with 32-bit pointers), ``docker_arch``
    the engine's (what its images must be)."""
    name = "CPU architecture"
    machine = machine.lower()
    fix_32 = ("OpenCode ships no 32-bit ARM build and Ralex's images are linux/arm64: install the 64-bit "
              "Raspberry Pi OS (or another aarch64 system) on a Pi 4 or Pi 5")
    if docker_arch and docker_arch.lower().startswith(("armv7", "armhf", "armv6", "arm/")):
        return Verdict(name, False, f"Docker runs {docker_arch} (32-bit ARM) images", fix_32)
    if machine in ("x86_64", "amd64"):
        return Verdict(name, True, "linux/amd64")
    if machine in ("aarch64", "arm64"):
        if pointer_bits == 32:
            return Verdict(name, False, "64-bit ARM CPU with a 32-bit userland", fix_32)
        return Verdict(name, True, "linux/arm64")
    if machine.startswith("arm"):
        return Verdict(name, False, f"{machine}: a 32-bit ARM system (e.g. 32-bit Raspberry Pi OS)", fix_32)
    return Verdict(name, False, f"{machine} is not supported", "use a linux/amd64 or linux/arm64 host")


def cpu_features(machine: str, cpuinfo: str) -> Verdict:
    """ARMv8.1 LSE atomics (``atomics`` in /proc/cpuinfo): a Pi 5 (Cortex-A76) has them, a Pi 4
    (Cortex-A72) and a Pi 3 / Zero 2 (Cortex-A53) do not. Some OpenCode releases (their Bun runtime)
    were built to need them and die with "illegal hardware instruction" on a Pi 4; the pinned
    version runs on an emulated Cortex-A72 (README, "Raspberry Pi")."""
    name = "CPU features"
    if machine.lower() not in ("aarch64", "arm64"):
        return Verdict(name, True, "not an ARM board: nothing to check")
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "features":
            flags |= set(value.split())
    if not flags:
        return Verdict(name, True, "/proc/cpuinfo lists no features; not checked")
    if "atomics" in flags:
        return Verdict(name, True, "ARMv8.1+ (LSE atomics): Pi 5 class")
    return Verdict(name, False, "ARMv8.0 without LSE atomics (Pi 4 / Pi 3 class)",
                   "the pinned OpenCode runs here; if the agent exits with 'illegal hardware instruction', "
                   "pin a version that does with RALEX_OPENCODE_VERSION in .env and `ralexctl up --build`",
                   warn_only=True)


def mem_total(meminfo: str) -> int | None:
    """MemTotal from /proc/meminfo, in bytes."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) >= 2 and parts[1].isdigit() else None
    return None


def profile_for(total: int | None) -> str:
    """The memory profile for a machine with ``total`` bytes of RAM (unknown: standard)."""
    return "small" if total is not None and total < SMALL_BELOW else "standard"


def memory(total: int | None, env: dict[str, str] | None = None) -> Verdict:
    """RAM against what the stack needs, and whether .env carries the profile this RAM calls for."""
    name = "memory"
    if total is None:
        return Verdict(name, True, "unknown (no /proc/meminfo)")
    gib = total / GIB
    wanted = profile_for(total)
    detail = f"{gib:.1f} GiB; profile {wanted}"
    if total < WARN_BELOW:
        return Verdict(name, False, f"{gib:.1f} GiB: below the 2 GB Ralex needs for the stack and the agent",
                       "use a board with 2 GB or more (a 4 GB Pi 4 or Pi 5 has room to spare)", warn_only=True)
    if env is not None and wanted == "small":
        off = [k for k, v in PROFILES["small"].items() if k.startswith("RALEX_MEM_") and env.get(k) != v]
        if off:
            return Verdict(name, False, f"{detail}, but .env has no small-board memory limits ({', '.join(off)})",
                           "ralexctl init --force --profile small (or copy the small values from .env.example)",
                           warn_only=True)
    return Verdict(name, True, detail)


def storage(driver: str | None) -> Verdict:
    """Docker's storage driver: overlay2 (or a copy-on-write file system) keeps image layers shared;
    vfs copies every layer in full and fills an SD card."""
    name = "Docker storage driver"
    if not driver:
        return Verdict(name, True, "unknown")
    if driver in STORAGE_DRIVERS_OK:
        return Verdict(name, True, driver)
    return Verdict(name, False, f"{driver}: every image layer is a full copy (several GB for Ralex's images)",
                   'set "storage-driver": "overlay2" in /etc/docker/daemon.json and restart Docker', warn_only=True)


def this_machine() -> tuple[str, int, str, str]:
    """(uname -m, pointer bits, /proc/cpuinfo, /proc/meminfo) of the machine ralexctl runs on."""
    def read(path: str) -> str:
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return ""

    return platform.machine(), struct.calcsize("P") * 8, read("/proc/cpuinfo"), read("/proc/meminfo")
