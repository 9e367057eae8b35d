"""`ralexctl connect TOOL`: a fresh client key and the few lines that point a coding agent at Ralex.

Claude Code speaks Anthropic's ``/v1/messages``, Codex CLI OpenAI's ``/v1/responses`` and Aider chat
completions; the proxy serves all three through the same budget. What each tool needs is a pure
function of the proxy's address and the key (:func:`connection`), printed by the command.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass, field
from typing import Annotated, Final

import typer
from rich.console import Console

from ralex_ctl.errors import RalexError
from ralex_ctl.keys import _budget, _client, _name, budget_text

TOOLS: Final = ("claude-code", "codex", "aider")
notes = Console(stderr=True, soft_wrap=True)
"""Notes go to stderr, so ``eval "$(ralexctl connect aider)"`` sets the variables."""


@dataclass(frozen=True)
class Connection:
    """What a tool needs: environment variables, files (path -> text to put there) and how to start it."""

    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    run: str = ""


def connection(tool: str, base: str, key: str) -> Connection:
    """The settings that point ``tool`` at the proxy at ``base`` (``http://host:port``) with ``key``."""
    base = base.rstrip("/")
    if tool == "claude-code":
        return Connection(env={
            "ANTHROPIC_BASE_URL": base, "ANTHROPIC_AUTH_TOKEN": key,
            "ANTHROPIC_MODEL": "auto", "ANTHROPIC_DEFAULT_SONNET_MODEL": "auto",
            "ANTHROPIC_DEFAULT_OPUS_MODEL": "smart", "ANTHROPIC_DEFAULT_HAIKU_MODEL": "cheap",
            "CLAUDE_CODE_SUBAGENT_MODEL": "cheap", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }, run='claude -p "fix the typo in hello.py"')
    if tool == "codex":
        config = (f'model = "auto"\nmodel_provider = "ralex"\n\n[model_providers.ralex]\nname = "Ralex"\n'
                  f'base_url = "{base}/v1"\nenv_key = "RALEX_API_KEY"\nwire_api = "responses"\n')
        return Connection(env={"RALEX_API_KEY": key}, files={"~/.codex/config.toml": config},
                          run='codex exec "fix the typo in hello.py"')
    if tool == "aider":
        return Connection(env={"OPENAI_API_BASE": f"{base}/v1", "OPENAI_API_KEY": key},
                          run="aider --model openai/auto --weak-model openai/cheap")
    raise RalexError(f"unknown tool {tool!r}; use one of: {', '.join(TOOLS)}")


def render(conn: Connection) -> str:
    lines = [f"export {name}={value}" for name, value in conn.env.items()]
    for path, text in conn.files.items():
        lines += ["", f"# in {path}:", text.rstrip("\n")]
    if conn.run:
        lines += ["", f"# then: {conn.run}"]
    return "\n".join(lines) + "\n"


def connect_command(
    tool: Annotated[str, typer.Argument(help=f"One of: {', '.join(TOOLS)}.")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="The new key's name (default: TOOL-xxxx).")] = None,
    budget: Annotated[str | None, typer.Option("--budget", "-b", help="Daily sub-budget in dollars (default: the "
                                                                       "global budget only).")] = None,
) -> None:
    """Create a key for a coding agent and print the lines that point it at Ralex.

    Example: ralexctl connect claude-code --budget 2
    """
    if tool not in TOOLS:
        raise RalexError(f"unknown tool {tool!r}; use one of: {', '.join(TOOLS)}")
    key_name, limit = _name(name or f"{tool}-{secrets.token_hex(2)}"), _budget(budget)
    client = _client()
    created = client.add_key(key_name, limit)
    notes.print(f"[green]key {created['name']} created[/green] ({budget_text(created)}); it is shown only now:",
                highlight=False)
    sys.stdout.write(render(connection(tool, client.base, created["key"])))
    sys.stdout.flush()
