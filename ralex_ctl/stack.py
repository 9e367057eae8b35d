"""The running stack: containers found through the Docker SDK by their Compose labels, and Compose
itself (run as `docker compose`, never re-implemented) for up, down and logs."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any, Final

import docker
import docker.errors
from docker.models.containers import Container

from ralex_ctl.errors import RalexError
from ralex_ctl.project import Project

SERVICES: Final = ("postgres", "litellm", "budget-exporter", "prometheus", "grafana", "opencode")


class DockerUnavailable(RalexError):
    pass


class StackNotRunning(RalexError):
    pass


class ContainerNotFound(RalexError):
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


def states(project: Project, engine: docker.DockerClient | None = None) -> list[ServiceState]:
    found = containers(project, engine)
    result = []
    for service in sorted({*SERVICES, *found}, key=lambda s: (s not in SERVICES, SERVICES.index(s)
                                                              if s in SERVICES else 0, s)):
        container = found.get(service)
        if container is None:
            result.append(ServiceState(service, "absent", "-", "", ""))
            continue
        health = (container.attrs.get("State", {}).get("Health") or {}).get("Status", "-")
        image = container.attrs.get("Config", {}).get("Image", "")
        result.append(ServiceState(service, container.status, health, image, _ports(container)))
    return result


def running(project: Project, service: str) -> Container:
    container = containers(project).get(service)
    if container is None:
        raise StackNotRunning(f"the {service} service is not created: run `ralexctl up`")
    if container.status != "running":
        raise StackNotRunning(f"the {service} service is {container.status}: run `ralexctl up`")
    return container


def compose_command(project: Project, *args: str) -> list[str]:
    if shutil.which("docker") is None:
        raise DockerUnavailable("the docker CLI is not installed; install Docker with the Compose v2 plugin")
    return ["docker", "compose", "--project-directory", str(project.root), *args]


def compose_version() -> str | None:
    try:
        out = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True,
                             timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
