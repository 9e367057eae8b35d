"""The README and docs/ as a user reads them: every `ralexctl` command shown exists with the options
shown, every relative link (and its anchor) resolves, and the quick start keeps its order."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ralex_ctl.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = (README, *sorted((ROOT / "docs").glob("*.md")))


FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"`([^`\n]+)`")
RALEXCTL = re.compile(r"(?<![\w./-])ralexctl(?![\w-])")
QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
# Where a shown command ends: a comment, the next shell command, a closing $(...), prose after it.
STOP = re.compile(r"\s#|;|&&|\)|\(|,|`|\"|'")
WORD = re.compile(r"[a-z][a-z0-9-]*")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _code(text: str) -> Iterator[tuple[str, bool]]:
    """Each code line of a markdown text, and whether it is a shell line (in a fenced block)."""
    for block in FENCE.findall(text):
        for line in block.splitlines():
            yield re.split(r"(?:^|\s)#", line, maxsplit=1)[0], True  # a shell comment is prose
    for span in SPAN.findall(FENCE.sub("", text)):
        yield span.replace("\\|", "|"), False  # `a\|b` in a table cell shows as a|b


def shown_commands(text: str) -> Iterator[tuple[str, list[str]]]:
    """(the command as shown, its tokens after `ralexctl`) for every ralexctl command in code."""
    for line, shell in _code(text):
        for match in RALEXCTL.finditer(line):
            tail = QUOTED.sub(" ARG ", line[match.end():])
            if shell:
                tail = tail.split(" | ", 1)[0]  # a pipe to another program
            tail = STOP.split(tail, 1)[0]
            tokens = [t for t in re.split(r"[\s\[\]|]+", tail) if t]
            yield f"ralexctl{line[match.end():]}".strip(), tokens


# Typer builds click commands (its own copy of click): read them by shape, not by class.
@cache
def _root() -> Any:
    command = typer.main.get_command(app)
    assert isinstance(getattr(command, "commands", None), dict)
    return command


def _options(command: Any) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        if param.param_type_name == "option":
            names.update(param.opts, param.secondary_opts)
    return names


def resolve(tokens: list[str]) -> tuple[list[str], list[str]]:
    """The command path the tokens name (`["budget", "set"]`) and the problems found on the way."""
    problems: list[str] = []
    command = _root()
    path: list[str] = []
    rest = list(tokens)
    while rest:
        token = rest.pop(0)
        if token.startswith("-"):
            flag = token.split("=", 1)[0]
            if len(flag) > 1 and flag not in _options(command):
                problems.append(f"`{' '.join(['ralexctl', *path])}` has no option {flag}")
            continue
        if isinstance(getattr(command, "commands", None), dict):
            sub = command.commands.get(token)
            if sub is None:
                if WORD.fullmatch(token) or not path:
                    problems.append(f"`{' '.join(['ralexctl', *path])}` has no command {token!r}")
                continue
            command, path = sub, [*path, token]
        # anything else is an argument (a host, an amount, a placeholder)
    if not path and not problems and tokens and not tokens[0].startswith("-"):
        problems.append(f"no command in {tokens!r}")
    return path, problems


def _shown() -> list[tuple[str, str, list[str]]]:
    return [(doc.relative_to(ROOT).as_posix(), shown, tokens)
            for doc in DOCS for shown, tokens in shown_commands(doc.read_text())]


def test_the_docs_show_ralexctl_commands() -> None:
    """The parser finds what it is meant to check (an empty harvest would pass everything)."""
    shown = _shown()
    paths = {" ".join(resolve(tokens)[0]) for _, _, tokens in shown}
    assert len(shown) > 50
    assert {"init", "up", "attach", "status", "spend", "budget set", "sandbox network", "sandbox allow",
            "connect", "keys add", "doctor", "dashboard"} <= paths


def test_every_shown_command_and_option_exists() -> None:
    problems = [f"{doc}: {shown!r}: {problem}" for doc, shown, tokens in _shown()
                for problem in resolve(tokens)[1]]
    assert not problems, "\n".join(problems)


def test_every_shown_command_answers_help() -> None:
    runner = CliRunner()
    paths = sorted({tuple(resolve(tokens)[0]) for _, _, tokens in _shown()} - {()})
    failed = []
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        if result.exit_code != 0:
            failed.append(f"ralexctl {' '.join(path)} --help: exit {result.exit_code}: {result.output[-300:]}")
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize(("tokens", "problem"), [
    (["budgte", "set", "10"], "has no command 'budgte'"),
    (["budget", "sett", "10"], "`ralexctl budget` has no command 'sett'"),
    (["spend", "--weeks", "2"], "`ralexctl spend` has no option --weeks"),
    (["keys", "add", "laptop", "--budgets", "2"], "`ralexctl keys add` has no option --budgets"),
])
def test_a_wrong_command_is_caught(tokens: list[str], problem: str) -> None:
    assert any(problem in p for p in resolve(tokens)[1])


def test_command_parsing_reads_shell_and_tables() -> None:
    text = ('```sh\neval "$(ralexctl connect claude-code --budget 2)"   # a key\n'
            'ralexctl spend --json | jq .rows\n```\n'
            "| `ralexctl attach [--continue \\| --session ID]` | `run ralexctl up, then ralexctl logs <service>` |\n")
    assert [tokens for _, tokens in shown_commands(text)] == [
        ["connect", "claude-code", "--budget", "2"], ["spend", "--json"],
        ["attach", "--continue", "--session", "ID"], ["up"], ["logs", "<service>"]]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation gone, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def test_slugs_follow_github() -> None:
    assert slug("`.env` and `ralexctl init`") == "env-and-ralexctl-init"
    assert slug("A large body, everyone else") == "a-large-body-everyone-else"
    assert slug("Other clients: Claude Code, Codex, Aider and your own") == \
        "other-clients-claude-code-codex-aider-and-your-own"


def test_every_relative_link_resolves() -> None:
    broken = []
    for doc in DOCS:
        prose = SPAN.sub("", FENCE.sub("", doc.read_text()))
        for target in LINK.findall(prose):
            if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            where = f"{doc.relative_to(ROOT)}: ({target})"
            if not path.exists() or not path.is_relative_to(ROOT):
                broken.append(f"{where}: no file {file}")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{where}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_every_doc_is_linked_from_the_readme() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    assert [doc.name for doc in DOCS[1:] if doc.resolve() not in linked] == []


def _sections(text: str) -> list[tuple[str, str]]:
    """(title, body) of each `## ` section, code blocks kept whole."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def test_the_quick_start_comes_first_fits_a_screen_and_runs_in_order() -> None:
    title, body = _sections(README.read_text())[0]
    assert title.strip() == "Quick start"
    assert len(body.strip().splitlines()) <= 45
    lines = [line.strip() for line in FENCE.findall(body)[0].splitlines()]
    steps = ("git clone ", "uv tool install ", "ralexctl init", "ralexctl up", "ralexctl attach")
    at = [next((i for i, line in enumerate(lines) if line.startswith(step)), -1) for step in steps]
    assert -1 not in at, dict(zip(steps, at, strict=True))
    assert at == sorted(at), dict(zip(steps, at, strict=True))


def test_the_readme_keeps_the_test_command() -> None:
    assert "uv run --frozen pytest" in README.read_text().splitlines()
