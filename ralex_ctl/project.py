"""The Ralex project on disk: where compose.yaml lives, its .env file, and the Compose settings
(project name, compose files, ports) resolved the way Docker Compose resolves them."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ralex_ctl.errors import RalexError
from ralex_ctl.join import JOIN_REQUIRED, is_joined

DASHBOARD_PROFILE: Final = "dashboard"
REQUIRED: Final = ("OPENROUTER_API_KEY", "LITELLM_MASTER_KEY", "RALEX_AGENT_KEY", "POSTGRES_PASSWORD",
                   "RALEX_EXPORTER_DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
# Compose's default files, in its order of preference, and their override files.
COMPOSE_FILES: Final = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
_TOP_NAME = re.compile(r"^name:[ \t]*(.*?)[ \t]*(?:#.*)?$", re.MULTILINE)
_VALID_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


class ProjectNotFound(RalexError):
    pass


class BadComposeSetting(RalexError):
    pass


class BadEnvValue(RalexError):
    pass


@dataclass(frozen=True)
class ComposeSettings:
    """What `docker compose` run in the project folder would use."""

    project_name: str
    name_from: str  # "environment", ".env", "name: in <file>" or "folder"
    files: tuple[Path, ...]
    profiles: tuple[str, ...]


def resolve_compose(root: Path, environ: Mapping[str, str], dotenv: Mapping[str, str]) -> ComposeSettings:
    """Compose's own rules: a variable set in the shell (even empty) wins over the project's .env;
    COMPOSE_FILE is split on COMPOSE_PATH_SEPARATOR (default ':') and read relative to the folder
    Compose runs in (ralexctl runs it in the project folder); the project name is COMPOSE_PROJECT_NAME
    if not empty, else the last `name:` in those files, else the folder's name, both normalised to
    lowercase letters, digits, '-' and '_'."""

    def lookup(name: str) -> tuple[str, str]:
        if name in environ:
            return environ[name], "environment"
        return dotenv.get(name, ""), ".env"

    separator = lookup("COMPOSE_PATH_SEPARATOR")[0] or os.pathsep
    listed = lookup("COMPOSE_FILE")[0]
    if listed:
        files = tuple(path if path.is_absolute() else root / path
                      for path in (Path(p).expanduser() for p in listed.split(separator) if p))
    else:
        first = next((root / n for n in COMPOSE_FILES if (root / n).exists()), root / COMPOSE_FILES[0])
        override = first.with_name(first.name.replace("compose.", "compose.override.", 1))
        files = (first, override) if override.exists() else (first,)
    profiles = tuple(p.strip() for p in lookup("COMPOSE_PROFILES")[0].split(",") if p.strip())

    name, source = lookup("COMPOSE_PROJECT_NAME")
    if name:
        if not _VALID_NAME.match(name):
            where = "in your shell" if source == "environment" else f"in {root / '.env'}"
            raise BadComposeSetting(f"COMPOSE_PROJECT_NAME={name!r} {where} is not a valid Compose project name; "
                                    "use lowercase letters, digits, '-' and '_', starting with a letter or digit")
        return ComposeSettings(name, source, files, profiles)
    variables = {**dotenv, **environ}
    for path in reversed(files):
        try:
            match = _TOP_NAME.search(path.read_text())
        except OSError:
            continue
        declared = normalize_project_name(interpolate(match.group(1).strip("'\""), variables)) if match else ""
        if declared:
            return ComposeSettings(declared, f"name: in {path.name}", files, profiles)
    return ComposeSettings(normalize_project_name(root.name), "folder", files, profiles)


def normalize_project_name(name: str) -> str:
    """Compose's normalisation of a project name taken from a file or a folder."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("_-")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """`${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$VAR` as Compose expands them (no nesting)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        operator, default = match.group(2), match.group(3) or ""
        current = variables.get(name)
        if operator == ":-" and not current:
            return default
        if operator == "-" and current is None:
            return default
        return current or ""

    return _VARIABLE.sub(value, text.replace("$$", "\0")).replace("\0", "$")


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def env_path(self) -> Path:
        return self.root / ".env"

    @property
    def example_path(self) -> Path:
        return self.root / ".env.example"

    def dotenv(self) -> dict[str, str]:
        return read_env(self.env_path) if self.env_path.exists() else {}

    def env(self) -> dict[str, str]:
        """The variables Compose interpolates compose.yaml with: the shell's environment over .env."""
        return {**self.dotenv(), **os.environ}

    def setting(self, name: str, default: str = "") -> str:
        return self.env().get(name) or default

    @property
    def dashboard(self) -> bool:
        """Whether the Grafana dashboard runs: its Compose profile is on (COMPOSE_PROFILES from the shell or
        .env). An .env from before the profile has no COMPOSE_PROFILES: the dashboard ran then, so it does."""
        profiles = self.env().get("COMPOSE_PROFILES")
        return profiles is None or DASHBOARD_PROFILE in (p.strip() for p in profiles.split(","))

    @property
    def joined(self) -> bool:
        """Whether this folder runs only the agent, against a team server (`ralexctl init --join`)."""
        return is_joined(self.env())

    def missing(self) -> list[str]:
        env = self.env()
        return [name for name in (JOIN_REQUIRED if is_joined(env) else REQUIRED) if not env.get(name)]

    @property
    def compose(self) -> ComposeSettings:
        return resolve_compose(self.root, os.environ, self.dotenv())

    @property
    def compose_project(self) -> str:
        return self.compose.project_name


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
    return read_env_text(path.read_text())


def read_env_text(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
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


_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./:@+,=%~^-]*$")


def env_value(name: str, value: str) -> str:
    """``value`` as .env text that Compose (and read_env) read back unchanged: as it is when it is
    plain, else in single quotes (no interpolation); refused when nothing can hold it."""
    if _PLAIN_VALUE.match(value):
        return value
    if any(c in value for c in "\n\r\0'"):
        raise BadEnvValue(f"{name} cannot hold {value!r} in .env (a line break, NUL or single quote); "
                          "choose a value without them")
    return f"'{value}'"


def compose_path(name: str, path: str) -> str:
    """A folder for a bind mount, as Compose needs it in .env: absolute as given, relative as `./...`
    (a bare `workspace` would be a named volume to Compose, not a folder)."""
    path = os.path.expanduser(path.strip())
    if not path:
        raise BadEnvValue(f"{name} is empty; give a folder such as ./workspace")
    if ":" in path:
        raise BadEnvValue(f"{name}={path} has a ':', which Compose reads as the end of a volume's source; "
                          "choose a folder whose path has none")
    if path.startswith(("/", "./", "../")) or path in (".", ".."):
        return path
    return f"./{path}"


def update_env(text: str, changes: Mapping[str, str], heading: str) -> str:
    """.env text with ``changes`` applied: a variable's line is replaced in place (an empty value
    clears it), one that is not there yet is added at the end under ``heading`` (a comment)."""
    lines = text.splitlines()
    seen = set()
    for i, line in enumerate(lines):
        match = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if match and match.group(1) in changes:
            name = match.group(1)
            lines[i] = f"{name}={env_value(name, changes[name])}"
            seen.add(name)
    extra = [f"{name}={env_value(name, value)}" for name, value in changes.items() if name not in seen and value]
    if extra:
        lines += ["", heading, *extra]
    return "\n".join(lines) + "\n"


def replace_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file atomically (a reader sees the old or the new content, never a part)."""
    temporary = path.with_name(f".{path.name}.ralexctl-tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def render_env(template: str, values: dict[str, str]) -> str:
    """The .env.example text with ``values`` filled in; comments and order are kept."""
    seen: set[str] = set()
    lines = []
    for line in template.splitlines():
        match = _LINE.match(line)
        if match and not line.lstrip().startswith("#") and match.group(1) in values:
            name = match.group(1)
            seen.add(name)
            lines.append(f"{name}={env_value(name, values[name])}")
        else:
            lines.append(line)
    extra = [f"{name}={env_value(name, value)}" for name, value in values.items() if name not in seen]
    if extra:
        lines += ["", "# Added by ralexctl init", *extra]
    return "\n".join(lines) + "\n"
