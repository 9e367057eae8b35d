"""`ralexctl connect TOOL`: a client key and the few lines that point a coding agent at Ralex.

Claude Code speaks Anthropic's ``/v1/messages``, Codex CLI OpenAI's ``/v1/responses`` and Aider chat
completions; the proxy serves all three through the same budget. What each tool needs is a pure
function of the proxy's address and the key (:func:`connection`), printed by the command.

Each tool's key is kept in the project folder (``connect-keys.json``, mode 0600, :class:`KeyStore`), so
re-running reuses it while the proxy still holds it active; ``--rotate`` makes a new one and revokes the old.

With ``--write`` the settings go where the tool reads them instead (:func:`merged`, :func:`write_settings`):
Codex's ``config.toml`` (a ``[model_providers.ralex]`` table, plus the ``ralex`` profile file that
``codex -p ralex`` layers on top), Claude Code's ``settings.json`` ``env`` and Aider's ``.aider.conf.yml``.
Other content is kept, the old file is copied to ``NAME.bak-ralex`` and re-running replaces Ralex's
part. The key is written only to that file (mode 0600); the terminal shows it masked.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from ralex.keys import ClientKeyError, check_name
from ralex_ctl.errors import RalexError
from ralex_ctl.join import check_key, target_of
from ralex_ctl.keys import _budget, _client, _name, allows_text
from ralex_ctl.project import find_project, replace_file
from ralex_ctl.proxy_api import ProxyClient
from ralex_ctl.textout import safe_line

TOOLS: Final = ("claude-code", "codex", "aider")
notes = Console(stderr=True, soft_wrap=True, emoji=False)
"""Notes go to stderr, so ``eval "$(ralexctl connect aider)"`` sets the variables."""


TASK: Final = "fix the typo in hello.py"
CONTEXT_WINDOW: Final = 200_000
"""The tokens a request may hold: smart's (anthropic/claude-sonnet-4.5), the smallest window ``auto`` may route to.
Told to the clients so they compact in time instead of assuming a window of their own for an unknown model."""
CLAUDE_RUN: Final = f'claude --permission-mode acceptEdits -p "{TASK}"'
"""``-p`` alone may not edit files; ``acceptEdits`` lets Claude Code edit without asking (commands still ask)."""
CODEX_EXEC: Final = "codex exec --sandbox workspace-write"
"""``codex exec`` defaults to a read-only sandbox; ``workspace-write`` lets it write in the working folder."""
CODEX_NOTES: Final = ("# outside a git repository add --skip-git-repo-check",)


@dataclass(frozen=True)
class Connection:
    """What a tool needs: environment variables, files (path -> text to put there) and how to start it."""

    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    run: str = ""
    notes: tuple[str, ...] = ()
    """Comment lines printed above ``run``."""


def connection(tool: str, base: str, key: str) -> Connection:
    """The settings that point ``tool`` at the proxy at ``base`` (``http://host:port``) with ``key``."""
    base = base.rstrip("/")
    if tool == "claude-code":
        return Connection(env={
            "ANTHROPIC_BASE_URL": base, "ANTHROPIC_AUTH_TOKEN": key,
            "ANTHROPIC_MODEL": "auto", "ANTHROPIC_DEFAULT_SONNET_MODEL": "auto",
            "ANTHROPIC_DEFAULT_OPUS_MODEL": "smart", "ANTHROPIC_DEFAULT_HAIKU_MODEL": "cheap",
            "CLAUDE_CODE_SUBAGENT_MODEL": "cheap", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(CONTEXT_WINDOW),
        }, run=CLAUDE_RUN)
    if tool == "codex":
        config = (f'model = "auto"\nmodel_provider = "ralex"\nmodel_context_window = {CONTEXT_WINDOW}\n\n'
                  f'[model_providers.ralex]\nname = "Ralex"\nbase_url = "{base}/v1"\nenv_key = "RALEX_API_KEY"\n'
                  'wire_api = "responses"\n')
        return Connection(env={"RALEX_API_KEY": key}, files={"~/.codex/config.toml": config},
                          run=f'{CODEX_EXEC} "{TASK}"', notes=CODEX_NOTES)
    if tool == "aider":
        return Connection(env={"OPENAI_API_BASE": f"{base}/v1", "OPENAI_API_KEY": key},
                          run="aider --model openai/auto --weak-model openai/cheap", notes=AIDER_NOTES)
    raise RalexError(f"unknown tool {tool!r}; use one of: {', '.join(TOOLS)}")


AIDER_METADATA: Final = ".aider.model.metadata.json"
AIDER_NOTES: Final = (f"# Aider warns of an unknown context window unless ~/{AIDER_METADATA} knows the models: "
                      "ralexctl connect aider --write writes it",)
AIDER_MODELS: Final = {f"openai/{alias}": {
    "max_input_tokens": CONTEXT_WINDOW, "max_output_tokens": 8192, "input_cost_per_token": 0,
    "output_cost_per_token": 0, "litellm_provider": "openai", "mode": "chat",
} for alias in ("auto", "cheap", "smart", "yolo")}
"""What Aider reads from ~/.aider.model.metadata.json so it knows Ralex's models (no "Unknown context window"
warning). No price: Ralex picks the model per request, so Aider cannot know one; `ralexctl status` does."""


def aider_metadata(path: Path, existing: str | None) -> str:
    """``existing`` (Aider's model metadata, other models kept) with Ralex's entries added or replaced."""
    try:
        data: Any = json.loads(existing) if existing and existing.strip() else {}
    except json.JSONDecodeError as exc:
        raise _rerun("aider", path, f"is not plain JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _rerun("aider", path, "is not a JSON object of model: metadata")
    return json.dumps({**data, **AIDER_MODELS}, indent=2) + "\n"


def render(conn: Connection) -> str:
    lines = [f"export {name}={value}" for name, value in conn.env.items()]
    for path, text in conn.files.items():
        lines += ["", f"# in {path}:", text.rstrip("\n")]
    if conn.run:
        lines += ["", *conn.notes, f"# then: {conn.run}"]
    return "\n".join(lines) + "\n"


# --- --write: the settings in the tool's own file ------------------------------------------------

BACKUP_SUFFIX: Final = ".bak-ralex"
BEGIN: Final = "# >>> ralex: written by `ralexctl connect {tool} --write`; re-running replaces this block"
END: Final = "# <<< ralex"
MARKED: Final = re.compile(r"^# >>> ralex:.*?^# <<< ralex[^\n]*\n?", re.M | re.S)
CODEX_TABLE: Final = re.compile(r'^[ \t]*\[\s*(model_providers|profiles)\s*\.\s*"?ralex"?\s*[].]', re.M)
AIDER_KEYS: Final = ("model", "weak-model", "openai-api-base", "openai-api-key")
PLACEHOLDER: Final = "sk-ralex-" + "x" * 43
"""Stands in for the key while the existing file is checked, before any key is created."""


def settings_file(tool: str) -> Path:
    """Where ``tool`` reads its settings (``$HOME`` honoured, and ``$CODEX_HOME``/``$CLAUDE_CONFIG_DIR``)."""
    if tool == "codex":
        return Path(os.environ.get("CODEX_HOME") or os.path.expanduser("~/.codex")) / "config.toml"
    if tool == "claude-code":
        return Path(os.environ.get("CLAUDE_CONFIG_DIR") or os.path.expanduser("~/.claude")) / "settings.json"
    if tool == "aider":
        return Path(os.path.expanduser("~/.aider.conf.yml"))
    raise RalexError(f"unknown tool {tool!r}; use one of: {', '.join(TOOLS)}")


def _rerun(tool: str, path: Path, what: str) -> RalexError:
    return RalexError(f"{path} {what}; fix it or move it away, then re-run: ralexctl connect {tool} --write")


def _without_tables(text: str, pattern: re.Pattern[str]) -> str:
    """``text`` without the TOML tables whose header matches ``pattern`` (each up to the next header)."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if re.match(r"[ \t]*\[", line):
            skipping = bool(pattern.match(line))
        if not skipping:
            out.append(line)
    return "".join(out)


def _without_keys(text: str, keys: tuple[str, ...]) -> str:
    """YAML ``text`` without the top-level ``keys`` (and the indented or ``-`` lines that continue them)."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if line.startswith("#"):
            skipping = False
        elif line.strip() and line[0] not in " \t-":  # a top-level key
            skipping = any(re.match(rf"{re.escape(k)}\s*:", line) for k in keys)
        if not skipping:
            out.append(line)
    return "".join(out)


def _appended(text: str, tool: str, block: str) -> str:
    kept = MARKED.sub("", text).rstrip("\n")
    marked = f"{BEGIN.format(tool=tool)}\n{block}{END}\n"
    return f"{kept}\n\n{marked}" if kept else marked


def _others(config: dict[str, Any]) -> dict[str, Any]:
    """A Codex config without what Ralex owns (``model_providers.ralex``, ``profiles.ralex``)."""
    rest = dict(config)
    for table in ("model_providers", "profiles"):
        if isinstance(rest.get(table), dict):
            rest[table] = {k: v for k, v in rest[table].items() if k != "ralex"} or None
        if rest.get(table, ...) is None:
            del rest[table]
    return rest


def merged(tool: str, path: Path, existing: str | None, base: str, key: str) -> tuple[str, str]:
    """The new text of ``path`` (``existing`` with Ralex's part added or replaced) and that part, as shown.

    Raises a one-line :class:`RalexError` naming the fix when ``existing`` cannot be merged safely.
    """
    base = base.rstrip("/")
    text = existing or ""
    if tool == "codex":
        try:
            if tomllib.loads(text).get("profile") == "ralex":
                raise _rerun(tool, path, 'selects the legacy profile = "ralex" (Codex refuses it with -p ralex)')
        except tomllib.TOMLDecodeError as exc:
            raise _rerun(tool, path, f"is not valid TOML ({exc})") from None
        block = (f'[model_providers.ralex]\nname = "Ralex"\nbase_url = {json.dumps(base + "/v1")}\n'
                 f'experimental_bearer_token = {json.dumps(key)}\nwire_api = "responses"\n')
        new = _appended(_without_tables(MARKED.sub("", text), CODEX_TABLE), tool, block)
        mine = tomllib.loads(block)["model_providers"]["ralex"]
        try:
            merged_config = tomllib.loads(new)
        except tomllib.TOMLDecodeError:
            merged_config = None
        if merged_config is None or merged_config["model_providers"]["ralex"] != mine:
            if "ralex" in (tomllib.loads(text).get("model_providers") or {}):
                raise _rerun(tool, path, "defines model_providers.ralex outside a [model_providers.ralex] table")
            raise _rerun(tool, path, "cannot be merged without changing its other settings")
        if _others(tomllib.loads(text)) != _others(merged_config):
            raise _rerun(tool, path, "cannot be merged without changing its other settings")
        return new, block
    if tool == "claude-code":
        try:
            data: Any = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise _rerun(tool, path, f"is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("env", {}), dict):
            raise _rerun(tool, path, 'is not a JSON object with an "env" object')
        env = connection(tool, base, key).env
        data["env"] = {**data.get("env", {}), **env}
        return json.dumps(data, indent=2) + "\n", json.dumps({"env": env}, indent=2) + "\n"
    if tool == "aider":
        try:
            data = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError as exc:
            raise _rerun(tool, path, f"is not valid YAML ({' '.join(str(exc).split())})") from None
        if not isinstance(data, dict | None):
            raise _rerun(tool, path, "is not a YAML mapping of option: value")
        values = ("openai/auto", "openai/cheap", f"{base}/v1", key)
        block = "".join(f"{k}: {json.dumps(v)}\n" for k, v in zip(AIDER_KEYS, values, strict=True))
        new = _appended(_without_keys(MARKED.sub("", text), AIDER_KEYS), tool, block)
        result = yaml.safe_load(new)
        if not isinstance(result, dict) or [result.get(k) for k in AIDER_KEYS] != list(values):
            raise _rerun(tool, path, f"sets {', '.join(AIDER_KEYS)} in a form ralexctl cannot replace")
        if {k: v for k, v in (data or {}).items() if k not in AIDER_KEYS} != {
                k: v for k, v in result.items() if k not in AIDER_KEYS}:
            raise _rerun(tool, path, "cannot be merged without changing its other settings")
        return new, block
    raise RalexError(f"unknown tool {tool!r}; use one of: {', '.join(TOOLS)}")


def write_settings(path: Path, text: str) -> Path | None:
    """Write ``text`` to ``path`` (through a symlink) atomically with mode 0600; return the backup, if any."""
    target = path.resolve()
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    backup = None
    if target.exists():
        backup = target.with_name(target.name + BACKUP_SUFFIX)
        fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(target.read_bytes())
        os.chmod(backup, 0o600)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup


CODEX_PROFILE: Final = f'model = "auto"\nmodel_provider = "ralex"\nmodel_context_window = {CONTEXT_WINDOW}\n'
"""``codex -p ralex`` layers ``$CODEX_HOME/ralex.config.toml`` on the base config (Codex 0.171 refuses a
``[profiles.ralex]`` table in config.toml when ``-p ralex`` is given)."""
RUN_WRITTEN: Final = {"codex": f'{CODEX_EXEC} -p ralex "{TASK}"', "claude-code": CLAUDE_RUN, "aider": "aider"}
NOTES_WRITTEN: Final = {"codex": CODEX_NOTES, "claude-code": (), "aider": ()}


def masked(key: str) -> str:
    """``key`` as the terminal may show it: enough to tell keys apart, never enough to use one."""
    prefix = "sk-ralex-" if key.startswith("sk-ralex-") else ""
    return f"{prefix}…{key[-4:]}" if len(key) > len(prefix) + 8 else "…"


def _read(tool: str, path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise _rerun(tool, path, f"cannot be read ({exc.__class__.__name__}: {exc})") from None


def _write(tool: str, base: str, key: str, key_name: str) -> str:
    """Write the tool's settings with ``key``; return what to print (the key masked)."""
    path = settings_file(tool)
    new, block = merged(tool, path, _read(tool, path), base, key)
    writes = [(path, new, block.replace(key, masked(key)))]
    if tool == "codex":
        writes.append((path.with_name("ralex.config.toml"), CODEX_PROFILE, CODEX_PROFILE))
    if tool == "aider":
        metadata = path.with_name(AIDER_METADATA)
        writes.append((metadata, aider_metadata(metadata, _read(tool, metadata)),
                       f"# {', '.join(AIDER_MODELS)}: a {CONTEXT_WINDOW:,}-token window, no price (Ralex's spend: "
                       "ralexctl status)\n"))
    lines: list[str] = []
    for target, text, shown in writes:
        if target != path and _read(tool, target) == text:
            lines += [f"# {target} already holds:", shown.rstrip("\n"), ""]
            continue
        try:
            backup = write_settings(target, text)
        except OSError as exc:
            raise RalexError(f"could not write {target} ({exc}); fix the permissions, then re-run: ralexctl "
                             f"connect {tool} --write (it reuses the key {key_name})") from None
        kept = f"; the previous file is {backup}" if backup else ""
        key_note = " with the key, shown masked" if key in text else ""
        lines += [f"# wrote {target} (mode 0600{kept}){key_note}:", shown.rstrip("\n"), ""]
    return "\n".join([*lines, *NOTES_WRITTEN[tool], f"# then: {RUN_WRITTEN[tool]}"]) + "\n"


# --- the key each tool uses, kept for re-runs ----------------------------------------------------

STORE_FILE: Final = "connect-keys.json"


@dataclass(frozen=True)
class StoredKey:
    name: str
    key: str


class KeyStore:
    """``connect-keys.json`` in the project folder (mode 0600): ``{tool: {"name": ..., "key": ...}}``."""

    def __init__(self, root: Path) -> None:
        self.path = root / STORE_FILE

    def load(self) -> dict[str, StoredKey]:
        """The stored keys; a file that is not such a map is reported in one line and treated as empty."""
        try:
            data: Any = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            notes.print(f"{self.path} cannot be read ({exc.__class__.__name__}); replacing it", highlight=False,
                        markup=False)
            return {}
        if isinstance(data, dict) and all(isinstance(v, dict) and _valid_name(v.get("name"))
                                          and isinstance(v.get("key"), str) and v["key"] for v in data.values()):
            return {tool: StoredKey(v["name"], v["key"]) for tool, v in data.items()}
        notes.print(f'{self.path} is not a map of tool: {{"name", "key"}}; replacing it', highlight=False,
                    markup=False)
        return {}

    def save(self, keys: dict[str, StoredKey]) -> None:
        data = {tool: {"name": k.name, "key": k.key} for tool, k in keys.items()}
        replace_file(self.path, (json.dumps(data, indent=2) + "\n").encode(), 0o600)


def _valid_name(name: object) -> bool:
    try:
        return check_name(name) == name
    except ClientKeyError:
        return False


def _active(client: ProxyClient, name: str) -> dict[str, Any] | None:
    """The proxy's view of key ``name`` if it exists and is not revoked."""
    return next((k for k in client.keys()["keys"] if k["name"] == name and not k.get("revoked_at")), None)


def connect_command(
    tool: Annotated[str, typer.Argument(help=f"One of: {', '.join(TOOLS)}.")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="The key's name (default: the stored key's, or "
                                                                   "TOOL-xxxx for a new one).")] = None,
    budget: Annotated[str | None, typer.Option("--budget", "-b", help="Daily sub-budget in dollars, also set on a "
                                                                       "reused key (default: the global budget "
                                                                       "only).")] = None,
    write: Annotated[bool, typer.Option("--write", "-w", help="Write the settings where the tool reads them "
                                        "(~/.codex/config.toml, ~/.claude/settings.json, ~/.aider.conf.yml; "
                                        "other content kept, old file saved as NAME.bak-ralex).")] = False,
    rotate: Annotated[bool, typer.Option("--rotate", help="Create a new key for the tool and revoke the one "
                                         "it used.")] = False,
    key: Annotated[str | None, typer.Option("--key", metavar="KEY", help="In a folder joined to a team server: "
                                            "use this client key (sk-ralex-...) instead of the joined one.")
                   ] = None,
) -> None:
    """Point a coding agent at Ralex with a key of its own: print the lines to use (or write them, with --write).

    The key is kept in connect-keys.json in the project folder and reused while it is active. In a folder
    joined to a team server (ralexctl init --join) the tool uses the team proxy's URL and your joined key,
    or the one given with --key: keys are made on the server, by its operator.
    Example: ralexctl connect claude-code --budget 2 --write
    """
    if tool not in TOOLS:
        raise RalexError(f"unknown tool {tool!r}; use one of: {', '.join(TOOLS)}")
    project = find_project()
    if project.joined:
        _connect_joined(project.env(), tool, key, write, asked=[flag for flag, given in (
            ("--name", name is not None), ("--budget", budget is not None), ("--rotate", rotate)) if given])
        return
    if key is not None:
        raise RalexError("--key is for a folder joined to a team server; here connect makes the tool's key itself "
                         "(or use: ralexctl keys add NAME)")
    wanted, limit = _name(name) if name else None, _budget(budget)
    client = _client()
    if write:  # a file that cannot be merged is refused before any key exists
        path = settings_file(tool)
        merged(tool, path, _read(tool, path), client.base, PLACEHOLDER)
        if tool == "aider":
            aider_metadata(path.with_name(AIDER_METADATA), _read(tool, path.with_name(AIDER_METADATA)))
    store = KeyStore(project.root)
    keys = store.load()
    old = keys.get(tool)
    current = _active(client, old.name) if old else None
    if old and current and not rotate and wanted in (None, old.name):
        use = old
        if budget is not None:
            current = client.set_key_budget(old.name, limit)
        notes.print(f"reusing key {safe_line(old.name)} ({allows_text(current)}); --rotate for a new one",
                    highlight=False)
    else:
        if old and not current:
            notes.print(f"key {safe_line(old.name)} in {STORE_FILE} is revoked or gone; creating a new one",
                        highlight=False)
        created = client.add_key(wanted or f"{tool}-{secrets.token_hex(2)}", limit)
        use = StoredKey(created["name"], created["key"])
        store.save({**keys, tool: use})
        notes.print(f"[green]key {safe_line(use.name)} created[/green] ({allows_text(created)}); kept in "
                    f"{escape(safe_line(str(store.path)))} (mode 0600) for the next run", highlight=False)
        if old and current and rotate:
            client.revoke_key(old.name)
            notes.print(f"key {safe_line(old.name)} revoked", highlight=False)
        elif old and current:
            notes.print(f"key {safe_line(old.name)} stays active; revoke it with: ralexctl keys revoke "
                        f"{safe_line(old.name)}", highlight=False)
    if write:
        sys.stdout.write(_write(tool, client.base, use.key, use.name))
    else:
        sys.stdout.write(render(connection(tool, client.base, use.key)))
    sys.stdout.flush()


def _connect_joined(env: dict[str, str], tool: str, key: str | None, write: bool, asked: list[str]) -> None:
    """`connect` in a joined folder: the team proxy's URL with the joined key (or ``key``). No key is made
    or changed: without the server's master key only its operator can (ralexctl keys add on the server)."""
    if asked:
        raise RalexError(f"{', '.join(asked)}: this folder is joined to a team server, where keys are made and "
                         "budgeted by its operator (on the server: ralexctl keys add NAME --budget 2); pass the "
                         "key they give you with --key, or leave it out to use your joined key")
    base = target_of(env).url
    use = check_key(key) if key is not None else env.get("RALEX_JOIN_KEY", "")
    if not use:
        raise RalexError("RALEX_JOIN_KEY is missing in .env: run ralexctl init --join URL --key KEY --force")
    if key is None:
        notes.print(f"using your joined key {masked(use)} (RALEX_JOIN_KEY in .env): {tool} and the agent here share "
                    "its sub-budget; for one of its own ask the server's operator for another key and pass --key",
                    highlight=False, markup=False)
    else:
        notes.print(f"using the key given with --key ({masked(use)}); it is not stored", highlight=False, markup=False)
    if write:
        sys.stdout.write(_write(tool, base, use, "given with --key" if key is not None else "from RALEX_JOIN_KEY"))
    else:
        sys.stdout.write(render(connection(tool, base, use)))
    sys.stdout.flush()
