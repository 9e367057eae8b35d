"""The Ralex project on disk: where compose.yaml lives, and its .env file."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ralex_ctl.errors import RalexError

REQUIRED: Final = ("OPENROUTER_API_KEY", "LITELLM_MASTER_KEY", "RALEX_AGENT_KEY", "POSTGRES_PASSWORD",
                   "RALEX_EXPORTER_DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


class ProjectNotFound(RalexError):
    pass


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def env_path(self) -> Path:
        return self.root / ".env"

    @property
    def example_path(self) -> Path:
        return self.root / ".env.example"

    def env(self) -> dict[str, str]:
        """The project's .env merged over the process environment's RALEX_*/image settings."""
        values = read_env(self.env_path) if self.env_path.exists() else {}
        return {**{k: v for k, v in os.environ.items() if k.startswith("RALEX_")}, **values}

    def setting(self, name: str, default: str = "") -> str:
        return self.env().get(name) or default

    def missing(self) -> list[str]:
        env = self.env()
        return [name for name in REQUIRED if not env.get(name)]

    @property
    def compose_project(self) -> str:
        return os.environ.get("COMPOSE_PROJECT_NAME", "ralex")


def find_project(start: Path | None = None) -> Project:
    """The folder holding Ralex's compose.yaml: $RALEX_HOME, else the current folder or a parent."""
    home = os.environ.get("RALEX_HOME")
    if home:
        root = Path(home).expanduser()
        if not (root / "compose.yaml").exists():
            raise ProjectNotFound(f"RALEX_HOME={home} has no compose.yaml; point it at your Ralex folder")
        return Project(root.resolve())
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        compose = folder / "compose.yaml"
        if compose.exists() and re.search(r"^name:\s*ralex\b", compose.read_text(), re.MULTILINE):
            return Project(folder)
    raise ProjectNotFound("no Ralex project here: run ralexctl inside the folder with Ralex's compose.yaml, "
                          "or set RALEX_HOME to it")


def read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        value = match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[match.group(1)] = value
    return values


def render_env(template: str, values: dict[str, str]) -> str:
    """The .env.example text with ``values`` filled in; comments and order are kept."""
    seen: set[str] = set()
    lines = []
    for line in template.splitlines():
        match = _LINE.match(line)
        if match and not line.lstrip().startswith("#") and match.group(1) in values:
            name = match.group(1)
            seen.add(name)
            lines.append(f"{name}={values[name]}")
        else:
            lines.append(line)
    extra = [f"{name}={value}" for name, value in values.items() if name not in seen]
    if extra:
        lines += ["", "# Added by ralexctl init", *extra]
    return "\n".join(lines) + "\n"
