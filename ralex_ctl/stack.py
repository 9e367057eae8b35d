"""The running stack: containers found through the Docker SDK by their Compose labels, and Compose
itself (run as `docker compose`, never re-implemented) for up, down and logs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import docker
import docker.errors
from docker.models.containers import Container

from ralex_ctl.errors import RalexError
from ralex_ctl.join import JOIN_SERVICES
from ralex_ctl.project import DASHBOARD_PROFILE, Project, normalize_project_name

SERVICES: Final = ("postgres", "litellm", "budget-exporter", "prometheus", "grafana", "egress", "opencode")
ORDER: Final = ("postgres", "litellm", "budget-exporter", "prometheus", "grafana", "relay", "egress", "opencode")
"""Rows in this order: a whole stack's SERVICES, or a joined folder's JOIN_SERVICES (relay, egress, opencode)."""


def expected_services(project: Project) -> tuple[str, ...]:
    """The services this folder runs: the agent's three when joined to a team server, else the whole stack
    (Grafana only with the dashboard on)."""
    if project.joined:
        return JOIN_SERVICES
    return tuple(s for s in SERVICES if s != "grafana" or project.dashboard)


class DockerUnavailable(RalexError):
    pass


class StackNotRunning(RalexError):
    pass


class ContainerNotFound(RalexError):
    pass


class ProjectNameTaken(RalexError):
    pass


@dataclass(frozen=True)
class ServiceState:
    service: str
    state: str
    health: str
    image: str
    ports: str

    @property
    def ok(self) -> bool:
        return self.state == "running" and self.health in ("healthy", "-")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def client() -> docker.DockerClient:
    try:
        engine = docker.from_env(timeout=10)
        engine.ping()
        return engine
    except docker.errors.DockerException as exc:
        raise DockerUnavailable(f"cannot reach the Docker engine ({str(exc).splitlines()[0][:160]}); start Docker "
                                "(or check DOCKER_HOST and that your user may use it)") from None


def containers(project: Project, engine: docker.DockerClient | None = None) -> dict[str, Container]:
    engine = engine or client()
    found = engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={project.compose_project}"})
    return {c.labels.get("com.docker.compose.service", c.name): c for c in found}


def _ports(container: Container) -> str:
    published = []
    for port, bindings in (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).items():
        for binding in bindings or []:
            published.append(f"{binding.get('HostIp') or '0.0.0.0'}:{binding.get('HostPort')}->{port}")
    return ", ".join(published)


def states(project: Project, engine: docker.DockerClient | None = None,
           found: dict[str, Container] | None = None) -> list[ServiceState]:
    found = containers(project, engine) if found is None else found
    wanted = expected_services(project)
    result = []
    for service in sorted({*wanted, *found}, key=lambda s: (s not in ORDER, ORDER.index(s) if s in ORDER else 0, s)):
        container = found.get(service)
        if container is None:
            result.append(ServiceState(service, "absent", "-", "", ""))
            continue
        health = (container.attrs.get("State", {}).get("Health") or {}).get("Status", "-")
        image = container.attrs.get("Config", {}).get("Image", "")
        result.append(ServiceState(service, container.status, health, image, _ports(container)))
    return result


def owner(project: Project, found: dict[str, Container]) -> Path | None:
    """The folder whose stack holds this Compose project name, when it is not this project's folder
    (two Ralex folders with the same project name would share, and replace, one set of containers)."""
    for container in found.values():
        folder = container.labels.get("com.docker.compose.project.working_dir")
        if folder and Path(folder).resolve() != project.root.resolve():
            return Path(folder)
    return None


def ensure_own(project: Project, found: dict[str, Container]) -> None:
    other = owner(project, found)
    if other is not None:
        name = project.compose_project
        raise ProjectNameTaken(
            f"the Compose project {name!r} is the stack in {other}; give this folder its own name: "
            f"COMPOSE_PROJECT_NAME={normalize_project_name(f'{name}-{project.root.name}')} in {project.env_path}")


def running(project: Project, service: str) -> Container:
    found = containers(project)
    ensure_own(project, found)
    container = found.get(service)
    if container is None:
        raise StackNotRunning(f"the {service} service is not created: run `ralexctl up`")
    if container.status != "running":
        raise StackNotRunning(f"the {service} service is {container.status}: run `ralexctl up`")
    return container


def compose_command(project: Project, *args: str) -> list[str]:
    """`docker compose` for this project: its folder and the project name ralexctl resolved (the same
    one Compose would), so status, up, down, logs and attach always address the same stack."""
    if shutil.which("docker") is None:
        raise DockerUnavailable("the docker CLI is not installed; install Docker with the Compose v2 plugin")
    profiles = [] if "COMPOSE_PROFILES" in project.env() else ["--profile", DASHBOARD_PROFILE]  # an older .env
    return ["docker", "compose", "--project-directory", str(project.root), "--project-name",
            project.compose_project, *profiles, *args]


def compose_env() -> dict[str, str]:
    """The environment for a Compose run whose output ralexctl reads: plain progress lines, no colours;
    and this machine's own public addresses, which the agent's egress proxy refuses (RALEX_HOST_ADDRESSES)."""
    from ralex_ctl.sandbox import host_addresses

    env = {**os.environ, "COMPOSE_PROGRESS": "plain", "BUILDKIT_PROGRESS": "plain", "COMPOSE_ANSI": "never"}
    env.setdefault("RALEX_HOST_ADDRESSES", " ".join(host_addresses()))
    return env


def compose_services(project: Project) -> list[str]:
    """The services of the project's compose files (COMPOSE_FILE, COMPOSE_PROFILES honoured)."""
    try:
        out = subprocess.run(compose_command(project, "config", "--services"), cwd=project.root, capture_output=True,
                             text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired, RalexError):
        return list(expected_services(project))
    found = out.stdout.split() if out.returncode == 0 else []
    return sorted(found, key=lambda s: (ORDER.index(s) if s in ORDER else len(ORDER), s)) or list(
        expected_services(project))


def compose_config_error(project: Project) -> str | None:
    """What `docker compose config -q` (run as a user would, in the project folder) says is wrong with
    the project and its .env; None when it accepts them. DockerUnavailable when Compose is missing."""
    if compose_version() is None:
        raise DockerUnavailable("Docker Compose v2 is not available")
    out = subprocess.run(["docker", "compose", "--project-directory", str(project.root), "config", "-q"],
                         cwd=project.root, capture_output=True, text=True, timeout=60, check=False)
    if out.returncode == 0:
        return None
    lines = [line.strip() for line in (out.stderr or out.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {out.returncode}"


def compose_version() -> str | None:
    try:
        out = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True,
                             timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# --- `compose up` progress ---------------------------------------------------------------------

# BuildKit's plain lines: `#12 [litellm build 6/9] COPY ralex /src/ralex` (the stage is optional).
_BUILD_STEP = re.compile(r"^#\d+ \[(?P<service>[^\s\]]+)(?: (?P<stage>[^\s\]]+))? (?P<step>\d+)/(?P<steps>\d+)\] "
                         r"(?P<what>.+)$")
_BUILD_OTHER = re.compile(r"^#\d+ \[(?P<service>[^\s\]]+)(?: internal)?\] ")
_EVENT = re.compile(r"^\s*(?:(?P<kind>Container|Network|Volume)\s+)?(?P<id>\S+)\s+(?P<status>[A-Z][a-z]+)\b"
                    r"(?P<rest>.*)$")
_CONTAINER_FAILED = re.compile(r"^(?:dependency failed to start: )?container (?P<id>\S+) "
                               r"(?P<why>is unhealthy|exited.*)$")
_SERVICE_EVENTS: Final = {"Pulling": "pulling", "Pulled": "pulled", "Building": "building", "Built": "built"}
_CONTAINER_EVENTS: Final = {"Creating": "creating", "Created": "created", "Recreate": "creating",
                            "Recreated": "created", "Starting": "starting", "Started": "started",
                            "Running": "started", "Healthy": "ready", "Error": "failed",
                            "Exited": "failed", "Unhealthy": "failed"}


@dataclass
class ServiceProgress:
    """One service during `ralexctl up`; times are seconds since up began."""

    service: str
    phase: str = "waiting"  # waiting pulling pulled building built creating created starting started ready failed
    detail: str = ""
    build_began: float | None = None
    build_seconds: float | None = None
    ready_at: float | None = None

    def line(self) -> str:
        return f"{self.service}: {self.phase}" + (f" ({self.detail})" if self.detail else "")


class UpProgress:
    """Per-service progress of `docker compose up --wait`, read from Compose's plain progress lines
    (build steps, container events) and from the containers' health while it waits."""

    def __init__(self, project_name: str, services: list[str]) -> None:
        self.project_name = project_name
        self.services = {s: ServiceProgress(s) for s in services}

    def _service(self, name: str) -> ServiceProgress:
        if name not in self.services:  # a dependency Compose starts too; rows stay in the stack's order
            self.services[name] = ServiceProgress(name)
            order = sorted(self.services, key=lambda s: (ORDER.index(s) if s in ORDER else len(ORDER), s))
            self.services = {s: self.services[s] for s in order}
        return self.services[name]

    def _container_service(self, container: str) -> str | None:
        prefix = f"{self.project_name}-"
        if not container.startswith(prefix):
            return None
        return re.sub(r"-\d+$", "", container[len(prefix):])

    def _set(self, name: str, phase: str, detail: str, at: float) -> str | None:
        s = self._service(name)
        if s.phase == "ready" and phase != "failed":
            return None  # --wait prints Waiting/Healthy again for every dependency
        if phase == "building" and s.build_began is None:
            s.build_began = at
        if phase in ("built", "creating", "created", "starting", "started", "ready", "failed") \
                and s.build_began is not None and s.build_seconds is None:
            s.build_seconds = at - s.build_began
        if phase == "ready":
            s.ready_at = at
        if (s.phase, s.detail) == (phase, detail):
            return None
        s.phase, s.detail = phase, detail
        return s.line()

    def feed(self, line: str, at: float) -> str | None:
        """Take one line of Compose's output; a plain-text change for the log, or None."""
        line = line.rstrip()
        if match := _BUILD_STEP.match(line):
            what = " ".join(match["what"].split())
            what = what if len(what) <= 60 else what[:59] + "…"
            stage = f"{match['stage']} " if match["stage"] else ""
            return self._set(match["service"], "building", f"{stage}step {match['step']}/{match['steps']}: {what}",
                             at)
        if (match := _BUILD_OTHER.match(line)) and match["service"] in self.services:
            s = self.services[match["service"]]
            return self._set(s.service, "building", s.detail if s.phase == "building" else "", at)
        if match := _CONTAINER_FAILED.match(line.strip()):
            name = self._container_service(match["id"])
            return self._set(name, "failed", match["why"], at) if name else None
        match = _EVENT.match(line)
        if not match:
            return None
        if match["kind"] == "Container":
            name = self._container_service(match["id"])
            phase = _CONTAINER_EVENTS.get(match["status"])
            if name is None or phase is None:
                return None
            return self._set(name, phase, match["rest"].strip() if phase == "failed" else "", at)
        if match["kind"] is None and match["id"] in self.services and match["status"] in _SERVICE_EVENTS:
            return self._set(match["id"], _SERVICE_EVENTS[match["status"]], "", at)
        return None

    def observe(self, states: list[ServiceState], at: float) -> list[str]:
        """Health while Compose waits: `started (health: starting)`, unhealthy, exited."""
        changes = []
        for state in states:
            s = self.services.get(state.service)
            if s is None or s.phase not in ("started", "starting"):
                continue
            if state.state == "running" and state.health not in ("-", "healthy"):
                change = self._set(s.service, "started", f"health: {state.health}", at)
            elif state.state in ("exited", "dead"):
                change = self._set(s.service, "failed", state.state, at)
            else:
                continue
            if change:
                changes.append(change)
        return changes
