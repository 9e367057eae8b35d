"""`ralexctl connect`: a key per coding agent and the lines that point it at Ralex."""

from __future__ import annotations

import itertools
import json
import stat
import tomllib
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from typer.testing import CliRunner

import ralex_ctl.keys
from ralex_ctl.cli import app
from ralex_ctl.connect import BACKUP_SUFFIX, TOOLS, connection, render
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
    assert "--write" in helped.output


# --- --write ------------------------------------------------------------------------------------

FILES = {"codex": ".codex/config.toml", "claude-code": ".claude/settings.json", "aider": ".aider.conf.yml"}
EXISTING = {
    "codex": ('# my settings\nmodel = "gpt-5"\n\n[model_providers.other]\nname = "Other"\n'
              'base_url = "https://example.invalid/v1"\n\n[profiles.ralex]\nmodel = "old"\n\n'
              '[tui]\nanimations = false\n'),
    "claude-code": '{"theme": "dark", "env": {"FOO": "1", "ANTHROPIC_MODEL": "opus"}}\n',
    "aider": "# mine\ndark-mode: true\nmodel: gpt-4o\nread:\n  - CONVENTIONS.md\n",
}
BAD = {"codex": 'model = "unterminated\n', "claude-code": '{"env": [', "aider": "model: [unclosed\n"}


class FreshKeys(FakeProxyAt):
    """Keys as the proxy holds them: a new key per ``keys add``, listed (revoked or not) by ``keys``."""

    serial = itertools.count(1)
    held: ClassVar[dict[str, dict[str, Any]]] = {}

    def add_key(self, name: str, budget: float | None) -> dict[str, Any]:
        self.calls.append(("add", (name, budget)))
        self.held[name] = self._key(name, budget)
        return {**self.held[name], "key": f"sk-ralex-{next(self.serial):043d}"}

    def keys(self) -> dict[str, Any]:
        return {"day": "2026-11-26", "keys": list(self.held.values())}

    def revoke_key(self, name: str) -> dict[str, Any]:
        self.calls.append(("revoke", (name,)))
        self.held[name] = {**self.held[name], "revoked_at": "2026-11-26T11:00:00+01:00"}
        return self.held[name]

    def set_key_budget(self, name: str, budget: float | None) -> dict[str, Any]:
        self.calls.append(("budget", (name, budget)))
        self.held[name] = {**self.held[name], "daily_budget": budget}
        return self.held[name]


@pytest.fixture
def home(proxy: type[FakeProxyAt], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("CODEX_HOME", "CLAUDE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(ralex_ctl.keys, "ProxyClient", FreshKeys)
    FreshKeys.held = {}
    return home


def load(tool: str, text: str) -> Any:
    return {"codex": tomllib.loads, "claude-code": json.loads, "aider": yaml.safe_load}[tool](text)


def ralex_settings(tool: str, data: Any) -> tuple[str, str]:
    """(base URL, key) as the tool will read them."""
    if tool == "codex":
        provider = data["model_providers"]["ralex"]
        assert provider["wire_api"] == "responses"
        return provider["base_url"], provider["experimental_bearer_token"]
    if tool == "claude-code":
        return data["env"]["ANTHROPIC_BASE_URL"], data["env"]["ANTHROPIC_AUTH_TOKEN"]
    assert (data["model"], data["weak-model"]) == ("openai/auto", "openai/cheap")
    return data["openai-api-base"], data["openai-api-key"]


def assert_kept(tool: str, data: Any) -> None:
    if tool == "codex":
        assert data["model"] == "gpt-5"
        assert data["model_providers"]["other"]["name"] == "Other"
        assert data["tui"] == {"animations": False}
        assert "profiles" not in data  # the legacy [profiles.ralex] would make Codex refuse `-p ralex`
    elif tool == "claude-code":
        assert data["theme"] == "dark"
        assert data["env"]["FOO"] == "1"
        assert data["env"]["ANTHROPIC_MODEL"] == "auto"
    else:
        assert data["dark-mode"] is True
        assert data["read"] == ["CONVENTIONS.md"]


def base_for(tool: str) -> str:
    return FakeProxyAt.base if tool == "claude-code" else f"{FakeProxyAt.base}/v1"


@pytest.mark.parametrize("tool", TOOLS)
def test_write_merges_into_the_tools_file_keeps_the_rest_and_backs_up_the_old_one(home: Path, tool: str):
    path = home / FILES[tool]
    path.parent.mkdir(exist_ok=True)
    path.write_text(EXISTING[tool])
    result = runner.invoke(app, ["connect", tool, "--write"])
    assert result.exit_code == 0, result.output
    assert [call for call, _ in FreshKeys.calls] == ["add"]
    data = load(tool, path.read_text())
    key = ralex_settings(tool, data)[1]
    assert ralex_settings(tool, data) == (base_for(tool), key)
    assert_kept(tool, data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    assert backup.read_text() == EXISTING[tool]
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert key not in result.output  # the key goes to the file only: the terminal shows it masked
    assert f"sk-ralex-…{key[-4:]}" in result.stdout
    assert "shown only now" not in result.output
    assert f"# wrote {path} (mode 0600; the previous file is {backup}) with the key, shown masked:" in result.stdout
    assert sum(key in f.read_text() for f in home.rglob("*") if f.is_file()) == 1
    if tool == "codex":  # `codex -p ralex` layers this profile on config.toml
        assert tomllib.loads((home / ".codex" / "ralex.config.toml").read_text()) == {
            "model": "auto", "model_provider": "ralex", "model_context_window": 200_000}


@pytest.mark.parametrize("tool", TOOLS)
def test_write_again_replaces_ralexs_part_instead_of_adding_one(home: Path, tool: str):
    path = home / FILES[tool]
    path.parent.mkdir(exist_ok=True)
    path.write_text(EXISTING[tool])
    assert runner.invoke(app, ["connect", tool, "--write"]).exit_code == 0
    first = path.read_text()
    again = runner.invoke(app, ["connect", tool, "--write", "--name", "second"])
    assert again.exit_code == 0, again.output
    text = path.read_text()
    data = load(tool, text)
    old_key, new_key = ralex_settings(tool, load(tool, first))[1], ralex_settings(tool, data)[1]
    assert new_key != old_key
    assert old_key not in text
    assert_kept(tool, data)
    assert path.with_name(path.name + BACKUP_SUFFIX).read_text() == first  # the file as it was before this run
    marker = {"codex": "[model_providers.ralex]", "claude-code": "ANTHROPIC_AUTH_TOKEN", "aider": "openai-api-key"}
    assert text.count(marker[tool]) == 1
    assert text == first.replace(old_key, new_key)  # the same place, nothing appended twice
    if tool == "codex":  # the profile is left as it was
        assert not (home / ".codex" / f"ralex.config.toml{BACKUP_SUFFIX}").exists()
        assert "ralex.config.toml already holds:" in again.stdout


@pytest.mark.parametrize("tool", TOOLS)
def test_write_creates_a_missing_file_private_without_a_backup(home: Path, tool: str):
    result = runner.invoke(app, ["connect", tool, "--write"])
    assert result.exit_code == 0, result.output
    path = home / FILES[tool]
    assert ralex_settings(tool, load(tool, path.read_text()))[0] == base_for(tool)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name(path.name + BACKUP_SUFFIX).exists()
    assert "# then: " in result.stdout


@pytest.mark.parametrize("tool", TOOLS)
def test_write_refuses_a_file_it_cannot_merge_in_one_line_before_any_key_exists(home: Path, tool: str):
    path = home / FILES[tool]
    path.parent.mkdir(exist_ok=True)
    path.write_text(BAD[tool])
    result = runner.invoke(app, ["connect", tool, "--write"])
    assert result.exit_code == 1
    message = str(result.exception)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert message.endswith(f"fix it or move it away, then re-run: ralexctl connect {tool} --write")
    assert FreshKeys.calls == []
    assert path.read_text() == BAD[tool]
    assert not path.with_name(path.name + BACKUP_SUFFIX).exists()


@pytest.mark.parametrize(("tool", "text", "says"), [
    ("claude-code", '{"env": "ANTHROPIC_BASE_URL=x"}', 'is not a JSON object with an "env" object'),
    ("claude-code", "[]", 'is not a JSON object with an "env" object'),
    ("aider", "- model\n", "is not a YAML mapping"),
    ("codex", 'profile = "ralex"\n', 'selects the legacy profile = "ralex"'),
    ("codex", 'model_providers.ralex.name = "Mine"\n', "defines model_providers.ralex outside"),
    ("codex", 'note = """\n[model_providers.ralex]\n"""\n', "cannot be merged without changing its other settings"),
    ("codex", "model_providers = []\n", "cannot be merged without changing its other settings"),
])
def test_write_names_what_is_wrong_with_the_file(home: Path, tool: str, text: str, says: str):
    path = home / FILES[tool]
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    result = runner.invoke(app, ["connect", tool, "--write"])
    assert result.exit_code == 1
    assert says in str(result.exception)
    assert FreshKeys.calls == []


def test_write_follows_codex_home(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex"))
    assert runner.invoke(app, ["connect", "codex", "--write"]).exit_code == 0
    assert (tmp_path / "codex" / "config.toml").exists()
    assert not (home / ".codex").exists()


# --- one key per tool, kept for re-runs -----------------------------------------------------------

def stored(root: Path) -> dict[str, Any]:
    path = root / "connect-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return dict(json.loads(path.read_text()))


def key_of(tool: str, result: Any) -> str:
    env = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines()
               if line.startswith("export "))
    return env[{"claude-code": "ANTHROPIC_AUTH_TOKEN", "codex": "RALEX_API_KEY", "aider": "OPENAI_API_KEY"}[tool]]


@pytest.mark.parametrize("tool", TOOLS)
def test_connect_again_reuses_the_tools_key_instead_of_creating_one(home: Path, project: Path, tool: str):  # noqa: F811
    first = runner.invoke(app, ["connect", tool])
    assert first.exit_code == 0, first.output
    [(_, (name, _))] = FreshKeys.calls
    assert stored(project) == {tool: {"name": name, "key": key_of(tool, first)}}
    again = runner.invoke(app, ["connect", tool])
    assert again.exit_code == 0, again.output
    assert [call for call, _ in FreshKeys.calls] == ["add"]  # no second live key
    assert again.stdout == first.stdout
    assert f"reusing key {name} (no sub-budget: the day's budget and its tiers apply); --rotate for a new one" \
        in again.stderr


def test_connect_again_with_a_budget_sets_the_reused_keys_sub_budget(home: Path, project: Path):  # noqa: F811
    assert runner.invoke(app, ["connect", "aider", "--name", "laptop-aider"]).exit_code == 0
    again = runner.invoke(app, ["connect", "aider", "--budget", "3"])
    assert again.exit_code == 0, again.output
    assert FreshKeys.calls == [("add", ("laptop-aider", None)), ("budget", ("laptop-aider", 3.0))]
    assert "reusing key laptop-aider ($3.00" in again.stderr


def test_rotate_stores_a_new_key_then_revokes_the_old_one(home: Path, project: Path):  # noqa: F811
    first = runner.invoke(app, ["connect", "codex", "--name", "laptop-codex"])
    rotated = runner.invoke(app, ["connect", "codex", "--rotate", "--name", "laptop-codex-2"])
    assert rotated.exit_code == 0, rotated.output
    assert FreshKeys.calls == [("add", ("laptop-codex", None)), ("add", ("laptop-codex-2", None)),
                               ("revoke", ("laptop-codex",))]
    assert key_of("codex", rotated) != key_of("codex", first)
    assert stored(project) == {"codex": {"name": "laptop-codex-2", "key": key_of("codex", rotated)}}
    assert "key laptop-codex revoked" in rotated.stderr
    again = runner.invoke(app, ["connect", "codex"])
    assert key_of("codex", again) == key_of("codex", rotated)


def test_a_revoked_stored_key_is_replaced_by_a_new_one(home: Path, project: Path):  # noqa: F811
    assert runner.invoke(app, ["connect", "claude-code", "--name", "laptop-claude"]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", "laptop-claude"]).exit_code == 0
    again = runner.invoke(app, ["connect", "claude-code"])
    assert again.exit_code == 0, again.output
    [(_, (new_name, _))] = [c for c in FreshKeys.calls if c[0] == "add"][1:]
    assert new_name != "laptop-claude"
    assert "key laptop-claude in connect-keys.json is revoked or gone; creating a new one" in again.stderr
    assert stored(project)["claude-code"] == {"name": new_name, "key": key_of("claude-code", again)}


def test_another_name_makes_a_new_key_and_leaves_the_old_one_active(home: Path, project: Path):  # noqa: F811
    assert runner.invoke(app, ["connect", "aider", "--name", "laptop-aider"]).exit_code == 0
    other = runner.invoke(app, ["connect", "aider", "--name", "desk-aider"])
    assert other.exit_code == 0, other.output
    assert FreshKeys.calls == [("add", ("laptop-aider", None)), ("add", ("desk-aider", None))]
    assert stored(project)["aider"]["name"] == "desk-aider"
    assert "key laptop-aider stays active; revoke it with: ralexctl keys revoke laptop-aider" in other.stderr


@pytest.mark.parametrize("data", [b"{not json", b'{"aider": "sk-ralex-x"}', b"[]", b'{"aider": {"name": 1}}',
                                  b'{"aider": {"name": "../../budget", "key": "sk-ralex-x"}}', b"\xff\xfe"])
def test_a_corrupt_key_file_is_said_in_one_line_and_replaced(home: Path, project: Path, data: bytes):  # noqa: F811
    path = project / "connect-keys.json"
    path.write_bytes(data)
    result = runner.invoke(app, ["connect", "aider"])
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.stderr.splitlines() if "connect-keys.json" in line and "replacing" in line]
    assert line.endswith("replacing it")
    assert [call for call, _ in FreshKeys.calls] == ["add"]
    assert stored(project) == {"aider": {"name": FreshKeys.calls[0][1][0], "key": key_of("aider", result)}}


def test_write_again_reuses_the_key_and_still_never_shows_it(home: Path, project: Path):  # noqa: F811
    assert runner.invoke(app, ["connect", "claude-code", "--write"]).exit_code == 0
    again = runner.invoke(app, ["connect", "claude-code", "--write"])
    assert again.exit_code == 0, again.output
    key = stored(project)["claude-code"]["key"]
    assert [call for call, _ in FreshKeys.calls] == ["add"]
    assert json.loads((home / FILES["claude-code"]).read_text())["env"]["ANTHROPIC_AUTH_TOKEN"] == key
    assert key not in again.output
    assert "reusing key" in again.stderr


def test_the_printed_commands_edit_files_without_asking():
    claude = connection("claude-code", "http://127.0.0.1:4000", KEY)
    assert claude.run == 'claude --permission-mode acceptEdits -p "fix the typo in hello.py"'
    assert claude.env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "200000"  # known window: no unknown-model notice
    codex = render(connection("codex", "http://127.0.0.1:4000", KEY))
    assert '# then: codex exec --sandbox workspace-write "fix the typo in hello.py"' in codex
    assert "# outside a git repository add --skip-git-repo-check" in codex
    assert "model_context_window = 200000" in codex


def test_write_tells_aider_the_models_keeping_the_ones_it_knew(home: Path):
    from ralex_ctl.connect import AIDER_MODELS

    metadata = home / ".aider.model.metadata.json"
    metadata.write_text(json.dumps({"my/model": {"max_input_tokens": 1000}}))
    result = runner.invoke(app, ["connect", "aider", "--write"])
    assert result.exit_code == 0, result.output
    data = json.loads(metadata.read_text())
    assert data == {"my/model": {"max_input_tokens": 1000}, **AIDER_MODELS}
    assert data["openai/auto"]["max_input_tokens"] == 200_000
    assert f"# wrote {metadata} (mode 0600; the previous file is" in result.stdout
    again = runner.invoke(app, ["connect", "aider", "--write"])
    assert again.exit_code == 0, again.output
    assert f"# {metadata} already holds:" in again.stdout


def test_aider_metadata_aider_cannot_read_as_json_is_refused_before_any_key_exists(home: Path):
    metadata = home / ".aider.model.metadata.json"
    metadata.write_text("{ // a json5 comment\n}")
    result = runner.invoke(app, ["connect", "aider", "--write"])
    assert result.exit_code == 1
    assert str(result.exception).startswith(f"{metadata} is not plain JSON")
    assert FreshKeys.calls == []


def test_without_write_aider_is_told_how_to_get_its_model_info():
    printed = render(connection("aider", "http://127.0.0.1:4000", "sk-ralex-k"))
    assert "ralexctl connect aider --write writes it" in printed
    assert all(line.startswith(("export ", "# ")) or not line for line in printed.splitlines())  # eval-safe
