"""`ralexctl connect`: a key per coding agent and the lines that point it at Ralex."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ralex_ctl.keys
from ralex_ctl.cli import app
from ralex_ctl.connect import TOOLS, connection, render
from tests.unit.test_cli import FakeProxy, project  # noqa: F401  (the project fixture)

runner = CliRunner()
KEY = "sk-ralex-" + "k" * 43


class FakeProxyAt(FakeProxy):
    base = "http://127.0.0.1:4000"


@pytest.fixture
def proxy(project: Path, monkeypatch: pytest.MonkeyPatch) -> type[FakeProxyAt]:  # noqa: F811
    (project / ".env").write_text("LITELLM_MASTER_KEY=sk-master\n")
    FakeProxy.calls = []
    monkeypatch.setattr(ralex_ctl.keys, "ProxyClient", FakeProxyAt)
    return FakeProxyAt


def test_claude_code_speaks_anthropic_to_the_proxy_root_with_aliases_for_every_model():
    env = connection("claude-code", "http://127.0.0.1:4000/", KEY).env
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:4000"  # Claude Code adds /v1/messages itself
    assert env["ANTHROPIC_AUTH_TOKEN"] == KEY
    assert {env[k] for k in env if k.endswith("_MODEL")} <= {"auto", "cheap", "smart"}


def test_codex_gets_a_responses_provider_and_aider_an_openai_base():
    codex = connection("codex", "http://127.0.0.1:4000", KEY)
    config = tomllib.loads(codex.files["~/.codex/config.toml"])
    assert config["model"] == "auto"
    provider: dict[str, Any] = config["model_providers"][config["model_provider"]]
    assert provider["base_url"] == "http://127.0.0.1:4000/v1"
    assert provider["wire_api"] == "responses"
    assert codex.env == {provider["env_key"]: KEY}
    assert connection("aider", "http://127.0.0.1:4000", KEY).env == {"OPENAI_API_BASE": "http://127.0.0.1:4000/v1",
                                                                     "OPENAI_API_KEY": KEY}


@pytest.mark.parametrize("tool", TOOLS)
def test_connect_creates_a_key_and_prints_it_once_in_the_tools_settings(proxy: type[FakeProxyAt], tool: str):
    result = runner.invoke(app, ["connect", tool, "--budget", "2"])
    assert result.exit_code == 0, result.output
    [(call, (name, budget))] = proxy.calls
    assert (call, budget) == ("add", 2.0)
    assert name.startswith(f"{tool}-")
    assert result.stdout.count(KEY) == 1
    assert result.stdout == render(connection(tool, proxy.base, KEY))


def test_connect_names_the_tools_it_knows(proxy: type[FakeProxyAt]):
    result = runner.invoke(app, ["connect", "cursor"])
    assert result.exit_code == 1
    assert "use one of: claude-code, codex, aider" in str(result.exception)
    assert proxy.calls == []
    helped = runner.invoke(app, ["connect", "--help"])
    assert "Example: ralexctl connect" in helped.output
