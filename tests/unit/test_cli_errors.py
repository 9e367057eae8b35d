"""ralexctl's error path and every line built from outside text: one line, escaped, whatever the text."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from ralex_ctl import cli, stack
from ralex_ctl.cli.output import STATE
from ralex_ctl.cli.stack import _compose_up_failure
from ralex_ctl.errors import RalexError
from ralex_ctl.textout import LIMIT, safe_line

runner = CliRunner()

# Characters that must never reach the terminal as themselves (said here independently of textout).
BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def hidden(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or ord(c) in BIDI


MARKUP = ["[/x]", "[bold]", "[/bold]", "[/]", "[red]", "[link=https://example.com/a?b=[c]]", "[/link]",
          "[@click]", "[#ff0000]", "[/bin/sh -c pip install]", "[litellm 3/8]", "[1]", "[", "]", "\\", "\\\\",
          "\\[", "\\[/x]", "\\\\[bold]", ":smile:", ":x:", "\x00", "\r\n", "\n", "\r", "\t", "\x1b[31m", "\x1b]8;;",
          "\x07", "\x08", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\u202e", "\u2066", "\u200f", "\udcff",
          "é", "日本", "\u0301", " "]
pieces = st.one_of(st.text(), st.sampled_from(MARKUP))
untrusted = st.one_of(
    st.text(),
    st.lists(pieces, max_size=12).map("".join),
    # long: up to 100k characters, markup and line breaks included
    st.builds(lambda piece, times: piece * times, st.sampled_from([*MARKUP, "x", "a b "]).filter(bool),
              st.integers(1, 100_000 // 4)),
)


def error_path(text: str) -> tuple[int | str | None, str, str]:
    """Run ralexctl's main() with a command that fails with ``text``: (exit code, stdout, stderr)."""

    def failing_app() -> None:
        raise RalexError(text)

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(cli, "app", failing_app), mock.patch.dict(STATE, {"verbose": False}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, out.getvalue(), err.getvalue()


def printed(markup: str) -> str:
    """What ralexctl's console prints for ``markup`` (not a terminal, as in a pipe)."""
    out = io.StringIO()
    Console(file=out, soft_wrap=True, emoji=False, highlight=False, width=80).print(markup)
    return out.getvalue()


def runs_of_shown(text: str) -> list[str]:
    """The pieces of ``text`` between hidden characters."""
    runs, current = [], []
    for c in text:
        if hidden(c):
            runs.append("".join(current))
            current = []
        else:
            current.append(c)
    runs.append("".join(current))
    return [r for r in runs if r]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(untrusted)
def test_the_error_path_prints_any_text_as_one_escaped_line_and_exits_1(text: str):
    code, out, err = error_path(text)
    assert code == 1
    assert out == ""
    assert err.startswith("error: ")
    assert err.endswith("\n")
    assert len(err.splitlines()) == 1  # splitlines also breaks at \r, \x0b-\x0c, \x1c-\x1e, \x85, \u2028, \u2029
    line = err[:-1]
    assert not any(hidden(c) for c in line)
    shown = text[:LIMIT]
    if len(text) > LIMIT:
        assert line.endswith(f" ... ({len(text) - LIMIT} more characters)")
        assert len(line) < 6 * LIMIT + 100
    if not any(hidden(c) for c in shown):  # verbatim (Rich drops trailing blanks past the width: unseen anyway)
        expected = "error: " + shown + (f" ... ({len(text) - LIMIT} more characters)" if len(text) > LIMIT else "")
        assert line.rstrip() == expected.rstrip()
    else:
        runs = runs_of_shown(shown)
        if len(text) <= LIMIT and runs and shown.endswith(runs[-1]):
            runs[-1] = runs[-1].rstrip()  # the end of the line, as above
        position = 0
        for run in runs:  # every printable piece, verbatim and in order
            found = line.find(run, position)
            assert found >= 0, run
            position = found + len(run)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(pieces, max_size=10).map("".join), st.sampled_from([
    ("{}", "{}"), ("[red]error:[/red] {}", "error: {}"), ("[dim]from: {}; prices[/dim]", "from: {}; prices"),
    ("[yellow]in {}[/yellow], not here", "in {}, not here"), ("[bold]{}[/bold] -> {}", "{} -> {}"),
]))
def test_a_safe_line_prints_verbatim_inside_any_markup_around_it(text: str, frame: tuple[str, str]):
    markup, expected = frame
    result = printed(markup.replace("{}", safe_line(text)))
    if not any(hidden(c) for c in text):
        assert result.rstrip() == expected.replace("{}", text).rstrip()
    assert len(result.splitlines()) == 1


@pytest.mark.parametrize(("text", "shown"), [
    ("a\nb\x00c\u2028d\te\x1b[31mf", "a\\nb\\x00c\\u2028d e\\x1b[31mf"),
    ("line one\r\nline two", "line one\\r\\nline two"),
    ("\x7f\x85\x9b\u2029", "\\x7f\\x85\\x9b\\u2029"),
    ("abc\u202edcba\u2066x\u2069", "abc\\u202edcba\\u2066x\\u2069"),
    ("bad name \udcff.txt", "bad name \\udcff.txt"),
    ("[/bin/sh -c pip install] \\[x] [1] C:\\", "[/bin/sh -c pip install] \\[x] [1] C:\\"),
    (":smile: [link=https://example.com]click[/link]", ":smile: [link=https://example.com]click[/link]"),
])
def test_control_and_layout_characters_are_shown_as_escapes(text: str, shown: str):
    assert error_path(text)[2] == f"error: {shown}\n"


def test_a_very_long_error_is_cut_and_says_how_much_is_left():
    text = "[/x]\n" * 20_000
    line = error_path(text)[2]
    assert line.startswith("error: [/x]\\n[/x]\\n")
    assert line.endswith(f" ... ({len(text) - LIMIT} more characters)\n")
    assert line.count("\n") == 1


def test_budget_set_with_markup_is_one_error_line_naming_the_fix(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RALEX_HOME", raising=False)
    monkeypatch.setattr("sys.argv", ["ralexctl", "budget", "set", "[/x]"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    line = captured.err.strip()
    assert line.startswith("error: daily budget '[/x]' is not a number")
    assert "give dollars like 5" in line
    assert "Traceback" not in captured.err


def _ralexctl() -> list[str]:
    script = shutil.which("ralexctl", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "from ralex_ctl.cli import main; main()"]


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["budget", "set", "[/x]"], {}, "error: daily budget '[/x]' is not a number"),
    (["budget", "set", "5\n[/bold]\u2028"], {}, "error: daily budget '5\\n[/bold]\\u2028' is not a number"),
    (["status"], {"RALEX_HOME": "/nowhere/[/x]\n[bold]"},
     "error: RALEX_HOME=/nowhere/[/x]\\n[bold] has no compose.yaml; point it at your Ralex folder"),
])
def test_the_real_command_prints_one_error_line_and_exits_1(tmp_path: Path, args: list[str], env: dict[str, str],
                                                            expected: str):
    environment = {k: v for k, v in os.environ.items() if k != "RALEX_HOME"} | env | {"COLUMNS": "40"}
    result = subprocess.run([*_ralexctl(), *args], cwd=tmp_path, env=environment, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(expected), result.stderr
    assert "Traceback" not in result.stderr


BUILD_FAILURE = """\
#11 [litellm 3/8] RUN pip install --no-cache-dir nope==9
#11 2.301 ERROR: Could not find a version that satisfies the requirement nope==9
#11 ERROR: process "/bin/sh -c pip install --no-cache-dir nope==9" did not complete successfully: exit code: 1
------
 > [litellm 3/8] RUN pip install --no-cache-dir nope==9:
------
Dockerfile:12
--------------------
  12 | >>> RUN pip install --no-cache-dir nope==9
--------------------
failed to solve: process "/bin/sh -c pip install --no-cache-dir nope==9" did not complete successfully: exit code: 1

"""


def test_a_failed_build_is_its_last_meaningful_line_and_the_way_to_the_whole_log():
    progress = stack.UpProgress("ralex", ["postgres", "litellm"])
    for at, line in enumerate(BUILD_FAILURE.splitlines()):
        progress.feed(line, float(at))
    message = _compose_up_failure(SimpleNamespace(root=Path("/srv/ralex [test]")), 17,
                                  BUILD_FAILURE.splitlines(), progress)
    assert message.startswith('docker compose up failed (17): failed to solve: process "/bin/sh -c pip install '
                              '--no-cache-dir nope==9" did not complete successfully: exit code: 1; not ready: ')
    assert "litellm: building (step 3/8: RUN pip install --no-cache-dir nope==9)" in message
    assert message.endswith("run `docker compose build litellm` in /srv/ralex [test]")
    assert "\n" not in message
    line = error_path(message)[2]
    assert line == f"error: {message}\n"


def test_a_failed_start_names_the_unhealthy_container_and_the_logs():
    output = [" Container ralex-postgres-1  Started", " Container ralex-litellm-1  Waiting",
              "container ralex-litellm-1 is unhealthy", ""]
    progress = stack.UpProgress("ralex", ["postgres", "litellm"])
    message = _compose_up_failure(SimpleNamespace(root=Path("/srv")), 1, output, progress)
    assert message.startswith("docker compose up failed (1): container ralex-litellm-1 is unhealthy; not ready: ")
    assert message.endswith("; see `ralexctl logs`")
    assert _compose_up_failure(SimpleNamespace(root=Path("/srv")), 3, ["", "-----"],
                               stack.UpProgress("ralex", [])).startswith(
        "docker compose up failed (3): no output, exit code 3; see")


def test_an_image_that_cannot_be_pulled_is_named_with_the_ways_round_it():
    output = [" grafana Pulling ", 'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: '
              "lookup registry-1.docker.io: no such host"]
    progress = stack.UpProgress("ralex", ["postgres", "grafana"])
    for at, line in enumerate(output):
        progress.feed(line, float(at))
    message = _compose_up_failure(SimpleNamespace(root=Path("/srv")), 1, output, progress)
    assert "grafana: pulling" in message
    assert message.endswith("the image of grafana could not be pulled: check the network, or name an image this "
                            "machine has in .env (see Images in .env.example); or run without Grafana: "
                            "ralexctl dashboard off")
    assert "\n" not in message


def test_a_refusal_from_the_proxy_prints_as_one_line_of_its_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RALEX_HOME", raising=False)

    def refused(body: dict[str, Any], remaining: float | None, now: Any = None) -> dict[str, Any]:
        return {"decision": "refuse", "status": "402 [/x]", "message": "over budget [/bold]\nraise it: [red]",
                "source": "offline [dim]", "prices": {"cheap": "[/]"}}

    monkeypatch.setattr("ralex_ctl.explain.explain_offline", refused)
    result = runner.invoke(cli.app, ["route", "fix the typo"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["refused (402 [/x]): over budget [/bold]\\nraise it: [red]",
                                          "from: offline [dim]; prices: {'cheap': '[/]'}"]
