"""ralexctl argument handling and rendering (Typer's runner; no stack needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ralex_ctl import render
from ralex_ctl.cli import app
from ralex_ctl.project import read_env

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("compose.yaml", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RALEX_HOME", raising=False)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    return tmp_path


def test_every_command_has_help_with_an_example():
    for command in ("init", "up", "down", "status", "attach", "logs", "dashboard", "spend", "route", "doctor",
                    "budget set", "budget tier", "budget cap"):
        result = runner.invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0, command
        assert "Example: ralexctl" in result.output, command


def test_init_writes_a_complete_env_with_generated_secrets(project: Path):
    result = runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "--budget", "power",
                                 "--timezone", "Europe/Berlin", "-y"])
    assert result.exit_code == 0, result.output
    env = read_env(project / ".env")
    assert env["OPENROUTER_API_KEY"] == "sk-or-v1-abc"
    assert env["RALEX_DAILY_BUDGET"] == "10"
    assert env["RALEX_TIMEZONE"] == "Europe/Berlin"
    assert env["LITELLM_MASTER_KEY"].startswith("sk-")
    assert len(env["LITELLM_MASTER_KEY"]) > 40
    assert env["RALEX_AGENT_KEY"] != env["LITELLM_MASTER_KEY"]
    assert all(env[k] for k in ("POSTGRES_PASSWORD", "RALEX_EXPORTER_DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD"))
    assert "# REQUIRED: your OpenRouter API key" in (project / ".env").read_text()  # comments kept
    assert (project / ".env").stat().st_mode & 0o077 == 0
    assert (project / "workspace").is_dir()


def test_init_gives_the_agent_the_workspace_owner_and_never_root(project: Path, monkeypatch: pytest.MonkeyPatch):
    import os

    (project / "ws").mkdir()
    owner = (project / "ws").stat()
    assert runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-w", str(project / "ws"), "-y"]
                         ).exit_code == 0
    env = read_env(project / ".env")
    expected = (owner.st_uid, owner.st_gid) if owner.st_uid else (1000, 1000)
    assert (int(env["RALEX_UID"]), int(env["RALEX_GID"])) == expected

    if os.getuid() == 0:  # `sudo ralexctl init`: the user behind sudo owns the new workspace
        monkeypatch.setenv("SUDO_UID", "1234")
        monkeypatch.setenv("SUDO_GID", "1235")
        assert runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-w", "new-ws", "-y", "--force"]
                             ).exit_code == 0
        env = read_env(project / ".env")
        assert (env["RALEX_UID"], env["RALEX_GID"]) == ("1234", "1235")
        assert (project / "new-ws").stat().st_uid == 1234


def test_init_never_overwrites_without_force(project: Path):
    (project / ".env").write_text("OPENROUTER_API_KEY=keep-me\n")
    result = runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-new", "-y"])
    assert result.exit_code == 1
    assert (project / ".env").read_text() == "OPENROUTER_API_KEY=keep-me\n"
    assert runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-new", "-y", "--force"]).exit_code == 0


@pytest.mark.parametrize(("args", "message"), [
    (["init", "--openrouter-key", "not-a-key", "-y"], "start with sk-or-"),
    (["init", "--openrouter-key", "sk-or-1", "--budget", "-3", "-y"], "positive amount"),
    (["init", "--openrouter-key", "sk-or-1", "--timezone", "Mars/Base", "-y"], "unknown timezone"),
    (["init", "-y"], "no OpenRouter key"),
])
def test_init_bad_input_is_one_line_with_the_fix(project: Path, args, message, monkeypatch, capsys):
    from ralex_ctl.cli import main

    monkeypatch.setattr("sys.argv", ["ralexctl", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert not (project / ".env").exists()


def test_route_json_matches_the_policy(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RALEX_CONFIG", str(ROOT / "tests" / "unit" / "priced.yaml"))
    result = runner.invoke(app, ["route", "--json", "refactor the auth module", "--remaining", "1.20"])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    assert decision["classification"]["label"] == "smart"
    assert decision["alias"] == "cheap"
    assert decision["tier"] == "economy"
    assert "smart needs more than $2.00 left ($1.20 left)" in decision["reason"]


def test_budget_tier_rejects_unknown_names(project: Path):
    result = runner.invoke(app, ["budget", "tier", "huge"])
    assert result.exit_code != 0


@pytest.mark.parametrize(("args", "message"), [
    (["budget", "cap", "auto", "0.05"], "no per-request cap for 'auto'"),
    (["budget", "cap", "smart", "lots"], "positive dollar amount"),
])
def test_budget_cap_bad_input_names_the_fix_before_calling_the_proxy(project: Path, args, message, monkeypatch,
                                                                     capsys):
    from ralex_ctl.cli import main

    monkeypatch.setattr("sys.argv", ["ralexctl", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert message in capsys.readouterr().err


def test_spend_rendering_has_totals_and_bars():
    data = {"days": 2, "by": "alias", "today": "2026-11-26", "rows": [
        {"day": "2026-11-25", "key": "cheap", "requests": 10, "refusals": 0, "spent": 0.5},
        {"day": "2026-11-26", "key": "cheap", "requests": 4, "refusals": 1, "spent": 0.25},
        {"day": "2026-11-26", "key": "smart", "requests": 2, "refusals": 0, "spent": 1.0},
    ]}
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(render.spend_table(data))
    text = console.export_text()
    assert "$1.75" in text  # grand total
    assert "$1.25" in text  # 2026-11-26 total
    assert render.spend_csv(data).splitlines()[0] == "day,alias,requests,refusals,spent_usd"


def test_budget_line_shows_bar_tier_and_reset():
    line = render.budget_line({"spent": 4.0, "limit": 5.0, "tier": "economy", "timezone": "Europe/Berlin",
                               "now": "2026-11-26T20:00:00+00:00", "resets_at": "2026-11-27T00:00:00+01:00"})
    assert str(line).startswith("$4.00 / $5.00 ")
    assert "80% · tier economy · alert 80% · resets in 3h00m (Europe/Berlin)" in str(line)
