"""`ralexctl route` with no stack and no network: the engine's preview on the shipped policy and the
dated price snapshot, labelled as such; every bad input is one line and exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ralex_ctl.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Outside any Ralex folder, no ledger, no OpenRouter: a laptop on a plane."""
    monkeypatch.chdir(tmp_path)
    for name in ("RALEX_DATABASE_URL", "RALEX_CONFIG", "RALEX_HOME", "OPENROUTER_API_BASE", "OPENROUTER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_offline_route_uses_the_shipped_policy_and_says_its_prices_are_a_snapshot():
    result = runner.invoke(app, ["route", "--json", "review the auth module for race conditions"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["decision"] == "route"
    assert payload["alias"] == "smart"
    assert payload["prices"].startswith("price snapshot of ")
    assert "offline" in payload["prices"]
    assert payload["source"].startswith("computed here")
    assert payload["worst_case_usd"] <= payload["caps"]["smart"] + 1e-12


def test_offline_route_in_words_names_its_sources():
    result = runner.invoke(app, ["route", "fix the typo in hello.py", "--remaining", "0.30"])
    assert result.exit_code == 0, result.output
    assert "cheap -> google/gemini-2.5-flash-lite" in result.output
    assert "emergency" in result.output
    assert "price snapshot of" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["route", "x", "-m", "gpt-4"], "unknown model 'gpt-4'"),
    (["route", "x", "--remaining", "lots"], "--remaining"),
    (["route", "x", "--max-tokens", "0"], "--max-tokens"),
    (["route", "   "], "the prompt is empty"),
])
def test_bad_route_input_is_one_line_and_exit_1(args, message, monkeypatch, capsys):
    from ralex_ctl.cli import main

    monkeypatch.setattr("sys.argv", ["ralexctl", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
