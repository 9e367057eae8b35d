"""ralexctl argument handling and rendering (Typer's runner; no stack needed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from ralex_ctl import render, stack
from ralex_ctl.cli import app
from ralex_ctl.cli.stack import _local_timezone, _urls
from ralex_ctl.project import (
    REQUIRED,
    BadComposeSetting,
    BadEnvValue,
    compose_path,
    find_project,
    read_env,
    read_env_text,
    render_env,
    resolve_compose,
)
from ralex_ctl.proxy_api import ProxyClient

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SETTINGS = ("COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_PATH_SEPARATOR", "COMPOSE_PROFILES")
runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("compose.yaml", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    for name in ("RALEX_HOME", "OPENROUTER_API_KEY", *COMPOSE_SETTINGS, "RALEX_WORKSPACE", "RALEX_PROXY_PORT",
                 "RALEX_PROMETHEUS_PORT", "RALEX_GRAFANA_PORT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_every_command_has_help_with_an_example():
    for command in ("init", "up", "down", "status", "attach", "logs", "dashboard", "spend", "route", "doctor",
                    "budget set", "budget tier", "budget cap", "keys", "keys add", "keys list", "keys revoke",
                    "keys budget", "sandbox", "sandbox network", "sandbox allow", "sandbox deny", "sandbox reset",
                    "sandbox log", "sandbox toolchain"):
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


@pytest.mark.parametrize(("name", "email", "expected"), [
    ("Ada Lovelace", "ada@example.invalid", ("Ada Lovelace", "ada@example.invalid")),
    ("Miles O'Brien", "miles@example.invalid", ("Ralex agent", "miles@example.invalid")),  # .env cannot hold it
    (None, None, ("Ralex agent", "agent@ralex.invalid")),
])
def test_init_gives_the_agent_this_machines_git_identity(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                         name: str | None, email: str | None,
                                                         expected: tuple[str, str]):
    config = project / "gitconfig"
    config.write_text("".join(f"{k} = {v}\n" for k, v in (("name", name), ("email", email)) if v)
                      and "[user]\n" + "".join(f"\t{k} = {v}\n" for k, v in (("name", name), ("email", email)) if v))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    result = runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y"])
    assert result.exit_code == 0, result.output
    env = read_env(project / ".env")
    assert (env["RALEX_GIT_NAME"], env["RALEX_GIT_EMAIL"]) == expected
    composed = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=project, capture_output=True,
                              text=True, check=False)
    if composed.returncode == 0:  # Compose reads the same identity for the agent's commits
        agent = json.loads(composed.stdout)["services"]["opencode"]["environment"]
        assert (agent["GIT_AUTHOR_NAME"], agent["GIT_COMMITTER_EMAIL"]) == expected


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


def test_spend_by_key_keeps_names_whole_and_every_amount_in_one_format():
    data = {"days": 1, "by": "key", "today": "2026-11-26", "rows": [
        {"day": "2026-11-26", "key": "claude-code-4f2a", "requests": 3, "refusals": 0, "spent": 0.01},
        {"day": "2026-11-26", "key": "agent", "requests": 9, "refusals": 0, "spent": 0.000012},
    ]}
    from rich.console import Console

    console = Console(width=80, record=True)
    console.print(render.spend_table(data))
    text = console.export_text()
    assert "claude-code-4f2a" in text
    assert "…" not in text
    assert "$0.010000" in text
    assert "$0.000012" in text
    assert "vs top" in text
    cents = render.money_column([0.0285, 1.5])
    assert cents(0.0285) == "$0.0285"  # the digits usd() writes, as the TUI's summary shows them
    assert cents(1.5) == "$1.5000"


def test_budget_line_shows_the_bar_then_the_proxys_summary_and_the_configured_alert_level():
    from datetime import datetime

    from ralex.budget import BudgetSnapshot
    snap = BudgetSnapshot(limit=5.0, spent=3.2, reserved=0.0, timezone="Europe/Berlin",
                          now=datetime.fromisoformat("2026-11-26T20:00:00+00:00"))
    line = str(render.budget_line({"spent": 3.2, "limit": 5.0, "tier": snap.tier, "summary": snap.summary(),
                                   "alert_thresholds": [60, 90]}))
    assert line == ("█" * 19 + "░" * 11 + " $3.20 of $5.00 spent (64%) · $1.80 left · tier economy (cheap only) · "
                    "resets at 00:00 Europe/Berlin (in 3h00m) · alert 60%")


def test_budget_line_from_a_proxy_without_the_summary():
    line = render.budget_line({"spent": 4.0, "limit": 5.0, "tier": "economy", "timezone": "Europe/Berlin",
                               "now": "2026-11-26T20:00:00+00:00", "resets_at": "2026-11-27T00:00:00+01:00"})
    assert "$4.00 / $5.00 80% · tier economy · alert 80% · resets in 3h00m (Europe/Berlin)" in str(line)


# --- init: every default makes a .env that Compose accepts -------------------------------------------

def compose_available() -> bool:
    return stack.compose_version() is not None


def compose_config(root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real `docker compose config`, run in the project folder as a user would."""
    return subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=root, capture_output=True,
                          text=True, timeout=60, check=False, env={**os.environ, **(env or {})})


# Each prompt of an interactive `ralexctl init`, the option that answers it instead, and its default.
PROMPTS = {
    "budget": (["--budget", "power"], "RALEX_DAILY_BUDGET", lambda: "5"),
    "timezone": (["--timezone", "Europe/Berlin"], "RALEX_TIMEZONE", _local_timezone),
    "workspace": (["--workspace", "elsewhere"], "RALEX_WORKSPACE", lambda: "./workspace"),
}


@pytest.mark.parametrize("accepted", [*PROMPTS, "every"])
def test_accepting_a_prompts_default_writes_an_env_compose_accepts(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   accepted: str):
    monkeypatch.setattr("ralex_ctl.cli.stack._stdin_is_terminal", lambda: True)
    args = ["init"]
    for prompt, (answer, _, _) in PROMPTS.items():
        if accepted not in (prompt, "every"):
            args += answer
    result = runner.invoke(app, args, input="sk-or-v1-abc\n" + "\n" * len(PROMPTS))  # Enter: the default
    assert result.exit_code == 0, result.output
    env = read_env(project / ".env")
    for prompt, (_, variable, default) in PROMPTS.items():
        if accepted in (prompt, "every"):
            assert env[variable] == default(), variable
    workspace = project / env["RALEX_WORKSPACE"]
    assert workspace.is_dir()
    if not compose_available():
        assert "not checked" in result.output
        pytest.skip("Docker Compose is not available: the .env was written but not checked by Compose")
    assert "docker compose config accepts it" in result.output
    config = compose_config(project)
    assert config.returncode == 0, config.stderr
    mounts = {v["target"]: v for v in json.loads(config.stdout)["services"]["opencode"]["volumes"]}
    assert mounts["/workspace"]["type"] == "bind"  # a folder, never a named volume
    assert Path(mounts["/workspace"]["source"]) == workspace.resolve()


@pytest.mark.parametrize(("given", "written"), [
    ("workspace", "./workspace"), ("./workspace", "./workspace"), ("../shared/ws", "../shared/ws"),
    ("/srv/ralex ws", "/srv/ralex ws"), ("~/code", str(Path.home() / "code")), (".", "."),
])
def test_workspace_is_written_as_a_folder_compose_cannot_mistake_for_a_volume(given: str, written: str):
    assert compose_path("RALEX_WORKSPACE", given) == written


def test_a_workspace_compose_cannot_mount_is_refused_with_the_fix(project: Path):
    result = runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-w", "a:b", "-y"])
    assert result.exit_code == 1
    assert "RALEX_WORKSPACE=a:b has a ':'" in str(result.exception)
    assert not (project / ".env").exists()


def test_every_written_value_reads_back_as_written():
    values = {"A": "plain-1.5_x/y:z", "B": "with space", "C": "dollar$HOME", "D": "hash #not-a-comment"}
    text = render_env("A=\n# comment\nB=\n", values)
    assert read_env_text(text) == values
    with pytest.raises(BadEnvValue, match="D cannot hold"):
        render_env("", {"D": "it's"})


@pytest.mark.skipif(not compose_available(), reason="needs Docker Compose")
def test_init_restores_the_previous_env_when_compose_rejects_the_new_one(project: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    (project / ".env").write_text("OPENROUTER_API_KEY=keep-me\n")
    monkeypatch.setenv("RALEX_WORKSPACE", "workspace")  # the shell wins over .env, in Compose as here
    result = runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-w", "new-ws", "-y", "--force"])
    assert result.exit_code == 1
    message = str(result.exception)
    assert len(message.splitlines()) == 1
    assert "RALEX_WORKSPACE=workspace from your shell" in message
    assert "undefined volume workspace" in message
    assert "unset RALEX_WORKSPACE" in message
    assert (project / ".env").read_text() == "OPENROUTER_API_KEY=keep-me\n"
    assert not (project / "new-ws").exists()


def test_a_rejected_secret_is_named_never_shown(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(stack, "compose_config_error", lambda _: "required variable POSTGRES_PASSWORD is bad")
    result = runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y"])
    assert result.exit_code == 1
    message = str(result.exception)
    assert "docker compose rejects POSTGRES_PASSWORD (" in message
    assert "was left as it was" in message
    assert not (project / ".env").exists()
    assert not (project / "workspace").exists()


# --- Compose's settings, resolved as Compose resolves them ---------------------------------------

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


SERVICE = "services:\n  app:\n    image: busybox\n"


@pytest.mark.parametrize(("shell", "dotenv", "files", "expected"), [
    ({}, {}, {"compose.yaml": "name: ralex\n" + SERVICE}, ("ralex", "name: in compose.yaml")),
    ({}, {"COMPOSE_PROJECT_NAME": "from-dotenv"}, {"compose.yaml": "name: ralex\n" + SERVICE},
     ("from-dotenv", ".env")),
    ({"COMPOSE_PROJECT_NAME": "from-shell"}, {"COMPOSE_PROJECT_NAME": "from-dotenv"},
     {"compose.yaml": "name: ralex\n" + SERVICE}, ("from-shell", "environment")),
    ({"COMPOSE_PROJECT_NAME": ""}, {"COMPOSE_PROJECT_NAME": "from-dotenv"},  # set but empty: .env is not read
     {"compose.yaml": "name: ralex\n" + SERVICE}, ("ralex", "name: in compose.yaml")),
    ({}, {}, {"compose.yaml": SERVICE}, ("mystack-2", "folder")),  # the folder, normalised
    ({}, {}, {"compose.yaml": "name: Ralex.Two\n" + SERVICE}, ("ralextwo", "name: in compose.yaml")),
    ({}, {"COMPOSE_FILE": "compose.yaml:extra/more.yaml"},
     {"compose.yaml": "name: ralex\n" + SERVICE, "extra/more.yaml": "name: more\n"}, ("more", "name: in more.yaml")),
    ({"COMPOSE_PATH_SEPARATOR": ","}, {"COMPOSE_FILE": "extra/more.yaml,compose.yaml"},
     {"compose.yaml": SERVICE, "extra/more.yaml": "name: more\n"}, ("more", "name: in more.yaml")),
    ({"STACK": "dev"}, {}, {"compose.yaml": "name: ralex-${STACK:-main}\n" + SERVICE},
     ("ralex-dev", "name: in compose.yaml")),
    ({}, {}, {"compose.yaml": "name: ralex-${STACK:-main}\n" + SERVICE}, ("ralex-main", "name: in compose.yaml")),
])
def test_project_name_precedence_matches_compose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shell, dotenv,
                                                 files, expected):
    root = tmp_path / "My Stack-2"
    for name, text in files.items():
        write(root / name, text)
    write(root / ".env", "".join(f"{k}={v}\n" for k, v in dotenv.items()))
    for name in (*COMPOSE_SETTINGS, "COMPOSE_PATH_SEPARATOR", "STACK"):
        monkeypatch.delenv(name, raising=False)
    resolved = resolve_compose(root, shell, read_env(root / ".env"))
    assert (resolved.project_name, resolved.name_from) == expected
    if compose_available():  # and Compose itself, run in the folder, agrees
        config = compose_config(root, shell)
        assert config.returncode == 0, config.stderr
        assert json.loads(config.stdout)["name"] == resolved.project_name


def test_an_invalid_project_name_is_one_line_with_the_fix(tmp_path: Path):
    with pytest.raises(BadComposeSetting, match=r"COMPOSE_PROJECT_NAME='My\.Stack' in .*/\.env is not a valid"):
        resolve_compose(tmp_path, {}, {"COMPOSE_PROJECT_NAME": "My.Stack"})


def test_ports_and_keys_from_the_shell_win_over_env(project: Path, monkeypatch: pytest.MonkeyPatch):
    (project / ".env").write_text("RALEX_PROXY_PORT=14000\nRALEX_GRAFANA_PORT=13000\nLITELLM_MASTER_KEY=sk-file\n")
    monkeypatch.setenv("RALEX_PROXY_PORT", "15000")
    found = find_project()
    assert found.env()["RALEX_PROXY_PORT"] == "15000"
    assert ProxyClient(found).base == "http://127.0.0.1:15000"
    result = runner.invoke(app, ["dashboard"])
    assert "http://127.0.0.1:13000/d/ralex-budget" in result.output


@pytest.mark.skipif(not compose_available(), reason="needs Docker Compose")
def test_init_without_the_dashboard_leaves_grafana_out_of_compose_and_of_ralexctl(project: Path):
    result = runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "--no-dashboard", "-y"])
    assert result.exit_code == 0, result.output
    assert "no dashboard" in result.output
    assert read_env(project / ".env")["COMPOSE_PROFILES"] == ""
    config = compose_config(project)
    assert config.returncode == 0, config.stderr
    assert "grafana" not in json.loads(config.stdout)["services"]
    found = find_project()
    assert not found.dashboard
    assert "dashboard" not in _urls(found)
    assert "--profile" not in stack.compose_command(found, "up")
    shown = runner.invoke(app, ["dashboard"])
    assert "the dashboard is off" in shown.output
    assert "ralexctl dashboard on" in shown.output


@pytest.mark.skipif(not compose_available(), reason="needs Docker Compose")
def test_the_dashboard_is_on_by_default_and_switches_in_env(project: Path):
    assert runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y"]).exit_code == 0
    assert read_env(project / ".env")["COMPOSE_PROFILES"] == "dashboard"
    assert "grafana" in json.loads(compose_config(project).stdout)["services"]
    shown = runner.invoke(app, ["dashboard"])
    assert "/d/ralex-budget" in shown.output
    assert "user admin, password: GRAFANA_ADMIN_PASSWORD in .env" in shown.output
    password = runner.invoke(app, ["dashboard", "--password"])
    assert password.output.strip() == read_env(project / ".env")["GRAFANA_ADMIN_PASSWORD"]
    on = runner.invoke(app, ["dashboard", "on"])
    assert on.exit_code == 0, on.output
    bad = runner.invoke(app, ["dashboard", "maybe"])
    assert bad.exit_code == 1
    assert "use: ralexctl dashboard on, or ralexctl dashboard off" in str(bad.exception)


def test_an_env_from_before_the_profile_keeps_the_dashboard(project: Path):
    (project / ".env").write_text("OPENROUTER_API_KEY=sk-or-v1-abc\n")
    found = find_project()
    assert found.dashboard
    assert stack.compose_command(found, "up")[-3:] == ["--profile", "dashboard", "up"]


@pytest.mark.parametrize("session", ["ses_", "ses_abc;rm -rf /", "abc", "ses_" + "a" * 65, "ses_\u2028x"])
def test_attach_refuses_what_is_not_a_session_id(project: Path, session: str):
    result = runner.invoke(app, ["attach", "--session", session])
    assert result.exit_code == 1
    assert "is not an OpenCode session id" in str(result.exception)
    assert "\n" not in str(result.exception)


def test_attach_takes_continue_or_a_session_not_both(project: Path):
    result = runner.invoke(app, ["attach", "--continue", "--session", "ses_abc"])
    assert result.exit_code == 1
    assert "not both" in str(result.exception)


class FakeEngine:
    """The Docker SDK's containers.list, recording the label filter it is asked for."""

    def __init__(self, containers: list[Any] | None = None) -> None:
        self.asked: list[str] = []
        self.found = containers or []
        self.containers = self

    def list(self, all: bool, filters: dict[str, str]) -> list[Any]:
        self.asked.append(filters["label"])
        return self.found


def container(project_name: str, service: str, folder: Path, health: str = "healthy") -> Any:
    labels = {"com.docker.compose.project": project_name, "com.docker.compose.service": service,
              "com.docker.compose.project.working_dir": str(folder)}
    return SimpleNamespace(name=f"{project_name}-{service}-1", labels=labels, status="running",
                           attrs={"State": {"Health": {"Status": health}}, "Config": {"Image": "x"},
                                  "NetworkSettings": {"Ports": {}}})


def test_status_finds_the_stack_named_in_env(project: Path, monkeypatch: pytest.MonkeyPatch):
    (project / ".env").write_text("COMPOSE_PROJECT_NAME=second-stack\n")
    engine = FakeEngine([container("second-stack", "postgres", project)])
    monkeypatch.setattr(stack, "client", lambda: engine)
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert engine.asked == ["com.docker.compose.project=second-stack"]
    assert data["project"] == {"name": "second-stack", "name_from": ".env", "folder": str(project),
                               "stack_folder": str(project)}
    assert {s["service"]: s["state"] for s in data["services"]}["postgres"] == "running"


def test_a_project_name_used_by_another_folder_is_never_taken_over(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path_factory: pytest.TempPathFactory):
    other = tmp_path_factory.mktemp("other-ralex")
    monkeypatch.setattr(stack, "client", lambda: FakeEngine([container("ralex", "postgres", other)]))
    for command in (["up"], ["down"], ["logs"], ["attach"]):
        (project / ".env").write_text("".join(f"{k}=x\n" for k in REQUIRED))
        result = runner.invoke(app, command)
        assert result.exit_code == 1
        assert f"the Compose project 'ralex' is the stack in {other}" in str(result.exception)
        assert f"COMPOSE_PROJECT_NAME=ralex-{project.name.lower()}" in str(result.exception)
    status = runner.invoke(app, ["status"])
    assert f"these containers are the stack in {other}" in status.output


# --- up: per-service progress ----------------------------------------------------------------------

COMPOSE_UP = """\
 litellm Pulling
 litellm Warning Get "https://registry-1.docker.io/v2/": no such host
#0 building with "default" instance using docker driver
#1 [litellm internal] load build definition from Dockerfile
#4 [litellm build 1/9] FROM docker.io/library/python:3.11-slim-bookworm
#10 [litellm build 4/9] RUN /opt/ralex/bin/pip install --require-hashes -r /tmp/requirements.txt
#10 12.40 Collecting litellm==1.106.12
#15 [litellm stage-1 3/3] RUN useradd --system ralex
#16 [litellm] exporting to image
 litellm  Built
 Network ralex-a_backend  Created
 Container ralex-a-postgres-1  Creating
 Container ralex-a-postgres-1  Created
 Container ralex-a-litellm-1  Created
 Container ralex-a-postgres-1  Started
 Container ralex-a-postgres-1  Waiting
 Container ralex-a-postgres-1  Healthy
 Container ralex-a-litellm-1  Started
 Container ralex-a-litellm-1  Waiting
 Container ralex-a-postgres-1  Healthy
"""


def test_up_progress_follows_builds_starts_and_health():
    progress = stack.UpProgress("ralex-a", ["litellm"])
    changes = [c for i, line in enumerate(COMPOSE_UP.splitlines()) if (c := progress.feed(line, float(i)))]
    assert changes[:4] == ["litellm: pulling", "litellm: building",
                           "litellm: building (build step 1/9: FROM docker.io/library/python:3.11-slim-bookworm)",
                           "litellm: building (build step 4/9: RUN /opt/ralex/bin/pip install --require-hashes -r "
                           "/tmp/req…)"]
    assert "litellm: built" in changes
    assert list(progress.services) == ["postgres", "litellm"]  # the dependency joins, in the stack's order
    assert progress.services["postgres"].phase == "ready"
    litellm = progress.services["litellm"]
    assert (litellm.phase, litellm.build_seconds) == ("started", 6.0)  # first build line to Built
    assert progress.observe([stack.ServiceState("litellm", "running", "starting", "", "")], 30.0) == [
        "litellm: started (health: starting)"]
    assert progress.feed(" Container ralex-a-litellm-1  Healthy", 42.0) == "litellm: ready"
    assert litellm.ready_at == 42.0
    assert progress.feed("container ralex-a-postgres-1 is unhealthy", 43.0) == "postgres: failed (is unhealthy)"


def test_up_prints_plain_progress_and_a_summary_when_not_on_a_terminal(project: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    (project / ".env").write_text("".join(f"{k}=x\n" for k in REQUIRED) + "COMPOSE_PROJECT_NAME=ralex-a\n")
    output = COMPOSE_UP + " Container ralex-a-litellm-1  Healthy\n"
    fake_up = [sys.executable, "-c", f"import sys; sys.stdout.write({output!r})"]
    monkeypatch.setattr(stack, "client", lambda: FakeEngine())
    monkeypatch.setattr(stack, "compose_command", lambda project, *args: fake_up)
    monkeypatch.setattr(stack, "states", lambda *_args, **_kw: [
        stack.ServiceState("postgres", "running", "healthy", "", ""),
        stack.ServiceState("litellm", "running", "healthy", "", "127.0.0.1:4000->4000/tcp")])
    result = runner.invoke(app, ["up", "litellm"])
    assert result.exit_code == 0, result.output
    assert "\x1b[" not in result.output  # plain lines: no colours, no cursor movement
    lines = result.output.splitlines()
    assert any(line.endswith("litellm: building (build step 4/9: RUN /opt/ralex/bin/pip install --require-hashes "
                             "-r /tmp/req…)") for line in lines)
    assert any(line.endswith("postgres: ready") for line in lines)
    assert "postgres: running, healthy, ready after" in result.output
    assert re.search(r"^litellm: running, healthy, built in [\d.]+s, ready after [\d.]+s$", result.output, re.M)
    assert "Ralex is up in" in result.output
    assert "(Compose project ralex-a)" in result.output
    assert "proxy      http://127.0.0.1:4000/v1" in result.output


@pytest.mark.skipif(not compose_available(), reason="needs Docker Compose")
def test_doctor_names_the_variable_of_an_env_written_before_this_check(project: Path):
    from ralex_ctl.cli.stack import env_culprit

    assert runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y"]).exit_code == 0
    env = project / ".env"
    env.write_text(env.read_text().replace("RALEX_WORKSPACE=./workspace", "RALEX_WORKSPACE=workspace"))
    problem = stack.compose_config_error(find_project())
    assert problem is not None
    assert "undefined volume workspace" in problem
    assert env_culprit(problem, read_env(env)) == ("RALEX_WORKSPACE", "RALEX_WORKSPACE=workspace")


# --- keys ----------------------------------------------------------------------------------------

class FakeProxy:
    """Stands in for the running proxy's /ralex/keys routes (the integration tests use the real one)."""

    calls: ClassVar[list[tuple[str, tuple[Any, ...]]]] = []

    def __init__(self, project: Any, timeout: float = 10.0) -> None:
        pass

    def _key(self, name: str, budget: float | None, **extra: Any) -> dict[str, Any]:
        return {"name": name, "daily_budget": budget, "spent_today": 0.25, "held": 0.01, "remaining": None,
                "created_at": "2026-11-26T10:00:00+01:00", "revoked_at": None, **extra}

    def add_key(self, name: str, budget: float | None) -> dict[str, Any]:
        self.calls.append(("add", (name, budget)))
        return self._key(name, budget, key="sk-ralex-" + "k" * 43)

    def set_key_budget(self, name: str, budget: float | None) -> dict[str, Any]:
        self.calls.append(("budget", (name, budget)))
        return self._key(name, budget)

    def revoke_key(self, name: str) -> dict[str, Any]:
        self.calls.append(("revoke", (name,)))
        return self._key(name, None, revoked_at="2026-11-26T11:00:00+01:00")

    def keys(self) -> dict[str, Any]:
        return {"day": "2026-11-26", "keys": [self._key("laptop-claude", 2.0),
                                              self._key("old", None, revoked_at="2026-11-26T11:00:00+01:00")]}

    def spend(self, days: int, by: str) -> dict[str, Any]:
        self.calls.append(("spend", (days, by)))
        return {"days": days, "by": by, "today": "2026-11-26", "rows": [
            {"day": "2026-11-26", "key": "laptop-claude", "requests": 3, "refusals": 1, "spent": 0.5},
            {"day": "2026-11-26", "key": "agent", "requests": 9, "refusals": 0, "spent": 1.5}]}


@pytest.fixture
def fake_proxy(project: Path, monkeypatch: pytest.MonkeyPatch) -> type[FakeProxy]:
    import ralex_ctl.cli.budget
    import ralex_ctl.keys

    (project / ".env").write_text("LITELLM_MASTER_KEY=sk-master\n")
    FakeProxy.calls = []
    monkeypatch.setattr(ralex_ctl.keys, "ProxyClient", FakeProxy)
    monkeypatch.setattr(ralex_ctl.cli.budget, "ProxyClient", FakeProxy)
    return FakeProxy


@pytest.mark.parametrize(("args", "fix"), [
    (["keys", "add", "Laptop"], "use 1-40 lowercase letters, digits and '-'"),
    (["keys", "add", "x" * 41], "use 1-40 lowercase letters"),
    (["keys", "add", "my_key"], "use 1-40 lowercase letters"),
    (["keys", "add", "agent"], "is reserved"),
    (["keys", "add", "laptop", "--budget", "lots"], "give dollars like 2 or 0.50, or none"),
    (["keys", "add", "laptop", "--budget", "-2"], "must be zero or more dollars"),
    (["keys", "budget", "laptop", "-1"], "must be zero or more dollars"),
    (["keys", "budget", "laptop", "two"], "is not a number"),
    (["keys", "revoke", "Laptop!"], "use 1-40 lowercase letters"),
    (["spend", "--by", "user"], "use alias, model, reason or key"),
])
def test_keys_bad_input_is_one_line_naming_the_fix_and_never_reaches_the_proxy(fake_proxy: type[FakeProxy],
                                                                              args: list[str], fix: str):
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    message = str(result.exception)
    assert len(message.splitlines()) == 1
    assert fix in message
    assert fake_proxy.calls == []


def test_keys_add_prints_the_key_once_and_list_shows_budgets_spend_and_revocation(fake_proxy: type[FakeProxy]):
    added = runner.invoke(app, ["keys", "add", "laptop-claude", "--budget", "2"])
    assert added.exit_code == 0, added.output
    assert fake_proxy.calls == [("add", ("laptop-claude", 2.0))]
    assert added.output.count("sk-ralex-" + "k" * 43) == 1
    assert "shown only now" in added.output
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0, listed.output
    assert "laptop-claude" in listed.output
    assert "$2.00/day" in listed.output
    assert "global only" in listed.output
    assert "2026-11-26 11:00" in listed.output
    assert "sk-ralex-" not in listed.output
    as_json = json.loads(runner.invoke(app, ["keys", "list", "--json"]).output)
    assert [k["name"] for k in as_json["keys"]] == ["laptop-claude", "old"]


def test_keys_budget_and_revoke_call_the_proxy(fake_proxy: type[FakeProxy]):
    assert runner.invoke(app, ["keys", "budget", "laptop-claude", "none"]).exit_code == 0
    assert runner.invoke(app, ["keys", "budget", "laptop-claude", "0.5"]).exit_code == 0
    revoked = runner.invoke(app, ["keys", "revoke", "laptop-claude"])
    assert revoked.exit_code == 0
    assert "revoked" in revoked.output
    assert fake_proxy.calls == [("budget", ("laptop-claude", None)), ("budget", ("laptop-claude", 0.5)),
                                ("revoke", ("laptop-claude",))]


def test_spend_by_key(fake_proxy: type[FakeProxy]):
    result = runner.invoke(app, ["spend", "--by", "key", "--csv"])
    assert result.exit_code == 0, result.output
    assert fake_proxy.calls == [("spend", (7, "key"))]
    assert result.output.splitlines()[0] == "day,key,requests,refusals,spent_usd"
    assert "2026-11-26,laptop-claude,3,1,0.50000000" in result.output


def test_status_shows_one_line_of_key_spend_when_there_are_keys():
    from ralex_ctl.keys import summary_line

    assert summary_line({"keys": []}) is None
    assert summary_line({"keys": [{"name": "laptop", "spent_today": 0.5, "daily_budget": 2.0},
                                  {"name": "ci", "spent_today": 0.0, "daily_budget": None}]}
                        ) == "keys today: laptop $0.50/$2.00, ci $0.00"


def test_doctor_says_when_the_workspace_is_not_the_agents_users(tmp_path: Path):
    from ralex_ctl.cli.doctor import _workspace_check

    (tmp_path / "ws").mkdir()
    st = (tmp_path / "ws").stat()
    mine = {"RALEX_WORKSPACE": "./ws", "RALEX_UID": str(st.st_uid), "RALEX_GID": str(st.st_gid)}
    assert _workspace_check(tmp_path, mine).ok
    other = _workspace_check(tmp_path, {**mine, "RALEX_UID": str(st.st_uid + 1)})
    assert not other.ok
    assert f"belongs to {st.st_uid}:{st.st_gid}" in other.detail
    assert f"RALEX_UID={st.st_uid}" in other.fix
    missing = _workspace_check(tmp_path, {**mine, "RALEX_WORKSPACE": "./nope"})
    assert not missing.ok
    assert "does not exist" in missing.detail


def test_budget_changes_echo_the_alert_thresholds_in_force():
    assert render.alerts_line({"alert_thresholds": [60, 90]}).plain == (
        "alert thresholds: 60 % · 90 % (each notifies once per budget day)")
    assert render.alerts_line({}).plain.startswith("alert thresholds: none")
