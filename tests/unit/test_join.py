"""`ralexctl init --join URL --key KEY`: a folder that runs only the sandboxed agent against a team server.

The URL and key are parsed at the edge (hostile values refused in one line), the .env written holds the
join settings and no local secret, the join compose keeps the agent as boxed as compose.yaml does, and
the server check speaks to a real HTTP server on 127.0.0.1 (no stack needed)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from typer.testing import CliRunner

from ralex_ctl import stack
from ralex_ctl.cli import app
from ralex_ctl.errors import RalexError
from ralex_ctl.join import JoinError, JoinTarget, check_key, check_server, parse_url, target_of
from ralex_ctl.project import find_project, read_env

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-ralex-" + "A1b2_C3d4-" * 4 + "xyz"
runner = CliRunner()


def new_key() -> str:
    return "sk-ralex-" + secrets.token_urlsafe(32)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("compose.yaml", "compose.join.yaml", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("RALEX_", "COMPOSE_")) or name in ("OPENROUTER_API_KEY", "LITELLM_MASTER_KEY"):
            monkeypatch.delenv(name)
    return tmp_path


def compose_available() -> bool:
    return stack.compose_version() is not None


# --- parsing ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "url", "address"), [
    ("https://ralex.example.com", "https://ralex.example.com:443", "ralex.example.com:443"),
    ("http://10.0.0.5:4000", "http://10.0.0.5:4000", "10.0.0.5:4000"),
    ("  HTTPS://Ralex.Example.COM.:8443/v1/ ", "https://ralex.example.com:8443", "ralex.example.com:8443"),
    ("http://team.invalid/", "http://team.invalid:80", "team.invalid:80"),
    ("https://[fd00::5]:4000", "https://[fd00::5]:4000", "[fd00::5]:4000"),
])
def test_a_team_url_is_read_as_scheme_host_and_port(given: str, url: str, address: str):
    target = parse_url(given)
    assert (target.url, target.netloc) == (url, address)
    assert target.tls is url.startswith("https")


HOSTILE_URLS = {
    "nul": "https://ralex.example.com\x00.evil.invalid",
    "crlf": "https://ralex.example.com\r\nX-Injected: 1",
    "line separator": "https://ralex.example.com\u2028evil",
    "bidi": "https://ralex.\u202eexample.com",
    "huge": "https://" + "a" * 100_000 + ".invalid",
    "userinfo": "https://admin:secret@ralex.example.com",
    "other scheme": "ftp://ralex.example.com",
    "no scheme": "ralex.example.com:4000",
    "path": "https://ralex.example.com/ralex/v1",
    "query": "https://ralex.example.com/?x=1",
    "no host": "https://:4000",
    "port out of range": "https://ralex.example.com:99999",
    "port zero": "https://ralex.example.com:0",
    "bad host": "https://ralex_example;touch.com",
    "socat options": "https://ralex.example.com,fork:4000",
    "empty": "",
}


@pytest.mark.parametrize("given", HOSTILE_URLS.values(), ids=HOSTILE_URLS.keys())
def test_a_hostile_url_is_refused_in_one_line_that_names_the_fix(given: str):
    with pytest.raises(JoinError) as caught:
        parse_url(given)
    message = str(caught.value)
    assert "\n" not in message
    assert "\r" not in message
    assert "\x00" not in message
    assert "\u2028" not in message
    assert len(message) < 400
    assert "secret" not in message  # a password in the URL is never echoed... it is refused before that
    assert any(hint in message for hint in ("e.g. https://", "--key", "scheme://host:port", "https://"))


HOSTILE_KEYS = {
    "nul": KEY + "\x00",
    "newline": KEY[:20] + "\n" + KEY[20:],
    "line separator": KEY + "\u2028",
    "huge": "sk-ralex-" + "a" * 1_000_000,
    "master key": "sk-" + "ab" * 24,
    "short": "sk-ralex-abc",
    "spaces": "sk-ralex- " + "a" * 43,
    "empty": "",
}


@pytest.mark.parametrize("given", HOSTILE_KEYS.values(), ids=HOSTILE_KEYS.keys())
def test_a_value_that_is_not_a_client_key_is_refused_without_showing_it(given: str):
    with pytest.raises(JoinError) as caught:
        check_key(given)
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 400
    assert "ralexctl keys add NAME" in message
    if len(given) > 12:
        assert given.strip()[9:] not in message  # the key itself is never printed


def test_a_client_key_as_keys_add_prints_it_is_accepted():
    key = new_key()
    assert check_key(f"  {key}\n") == key


# --- init --join ------------------------------------------------------------------------------------

def test_init_join_writes_only_the_agents_settings_with_mode_0600(project: Path):
    key = new_key()
    result = runner.invoke(app, ["init", "--join", "https://ralex.team.invalid:8443/v1", "--key", key,
                                 "--no-check", "-y"])
    assert result.exit_code == 0, result.output
    assert "joined https://ralex.team.invalid:8443" in result.output
    assert "not checked (--no-check)" in result.output
    assert key not in result.output
    env_file = project / ".env"
    assert env_file.stat().st_mode & 0o077 == 0
    env = read_env(env_file)
    assert env["COMPOSE_FILE"] == "compose.join.yaml"
    assert env["RALEX_JOIN_URL"] == "https://ralex.team.invalid:8443"
    assert env["RALEX_JOIN_KEY"] == key
    assert (env["RALEX_JOIN_ADDRESS"], env["RALEX_JOIN_TLS"]) == ("ralex.team.invalid:8443", "1")
    assert env["RALEX_AGENT_NETWORK"] == "none"
    for local in ("OPENROUTER_API_KEY", "LITELLM_MASTER_KEY", "RALEX_AGENT_KEY", "POSTGRES_PASSWORD",
                  "RALEX_EXPORTER_DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "RALEX_DAILY_BUDGET"):
        assert local not in env, local
    found = find_project()
    assert found.joined
    assert found.missing() == []
    assert found.compose.project_name == "ralex-agent"
    assert stack.expected_services(found) == ("relay", "egress", "opencode")
    assert (project / "workspace").is_dir()


@pytest.mark.parametrize("given", [HOSTILE_URLS["crlf"], HOSTILE_URLS["nul"], HOSTILE_URLS["huge"],
                                   HOSTILE_URLS["userinfo"], HOSTILE_URLS["line separator"]],
                         ids=["crlf", "nul", "huge", "userinfo", "u2028"])
def test_init_join_with_a_hostile_url_writes_nothing(project: Path, given: str):
    result = runner.invoke(app, ["init", "--join", given, "--key", new_key(), "--no-check", "-y"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RalexError)
    assert "\n" not in str(result.exception)
    assert not (project / ".env").exists()


def test_init_join_refuses_a_local_budget_and_a_ca_without_join(project: Path):
    budget = runner.invoke(app, ["init", "--join", "https://t.invalid", "--key", new_key(), "--budget", "5", "-y"])
    assert budget.exit_code == 1
    assert "ralexctl keys budget NAME" in str(budget.exception)
    alone = runner.invoke(app, ["init", "--no-check", "--openrouter-key", "sk-or-v1-x", "-y"])
    assert alone.exit_code == 1
    assert "go with --join" in str(alone.exception)
    assert not (project / ".env").exists()


def test_init_join_takes_a_private_ca_and_refuses_a_file_that_is_not_one(project: Path):
    ca = project / "team-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    bad = project / "not-a-ca.txt"
    bad.write_text("hello")
    refused = runner.invoke(app, ["init", "--join", "https://t.invalid", "--key", new_key(), "--ca", str(bad),
                                  "--no-check", "-y"])
    assert refused.exit_code == 1
    assert "holds no PEM certificate" in str(refused.exception)
    result = runner.invoke(app, ["init", "--join", "https://t.invalid", "--key", new_key(), "--ca", str(ca),
                                 "--no-check", "-y"])
    assert result.exit_code == 0, result.output
    assert read_env(project / ".env")["RALEX_JOIN_CA"] == str(ca.resolve())


# --- the server check, against a real HTTP server on 127.0.0.1 ---------------------------------------

class TeamServer(BaseHTTPRequestHandler):
    """What a Ralex proxy answers a client key on the routes `init --join` asks."""

    accepted: ClassVar[set[str]] = set()
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        self.seen.append((self.path, auth))
        key = (auth or "").removeprefix("Bearer ")
        if self.path == "/health/liveliness":
            self._send(200, "I'm alive!")
        elif key not in self.accepted:
            self._send(401, {"error": {"message": "invalid API key: use LITELLM_MASTER_KEY ..."}})
        elif self.path == "/v1/models":
            self._send(200, {"data": [{"id": a} for a in ("auto", "cheap", "smart", "yolo")]})
        elif self.path == "/ralex/status":
            self._send(200, {"key": "laptop-ana", "daily_budget": 2.0, "spent": 0.25, "held": 0.0,
                             "remaining": 1.75, "resets_at": "2026-01-01T00:00:00+00:00"})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def _send(self, code: int, body: Any) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def team() -> Iterator[str]:
    TeamServer.accepted, TeamServer.seen = {KEY}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), TeamServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_init_join_asks_the_server_and_names_the_key_it_knows(project: Path, team: str,
                                                              monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the relay uses no proxy: neither does the check
    result = runner.invoke(app, ["init", "--join", team, "--key", KEY, "-y"])
    assert result.exit_code == 0, result.output
    assert "the server answers and takes the key (key laptop-ana, $0.25 spent today of $2.00, $1.75 left)" \
        in result.output
    assert ("/health/liveliness", None) in TeamServer.seen  # liveliness is asked without the key
    assert ("/v1/models", f"Bearer {KEY}") in TeamServer.seen


def test_init_join_with_a_refused_key_writes_nothing_and_names_the_fix(project: Path, team: str):
    result = runner.invoke(app, ["init", "--join", team, "--key", new_key(), "-y"])
    assert result.exit_code == 1
    message = str(result.exception)
    assert "the server refuses the key" in message
    assert "ralexctl keys add NAME" in message
    assert "--no-check" in message
    assert "\n" not in message
    assert not (project / ".env").exists()


def test_a_server_that_does_not_answer_is_one_line_never_a_traceback(project: Path):
    with ThreadingHTTPServer(("127.0.0.1", 0), TeamServer) as closed:
        port = closed.server_address[1]
    answer = check_server(JoinTarget(False, "127.0.0.1", port), KEY, timeout=2)
    assert answer.problem is not None
    assert "does not answer" in answer.problem
    dns = check_server(parse_url("https://ralex.team.invalid"), KEY, timeout=2)
    assert dns.problem is not None
    assert "\n" not in dns.problem
    result = runner.invoke(app, ["init", "--join", f"http://127.0.0.1:{port}", "--key", KEY, "-y"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RalexError)
    assert "does not answer" in str(result.exception)
    assert "--no-check" in str(result.exception)


def test_status_in_a_joined_folder_shows_the_keys_day_on_the_team_server(project: Path, team: str,
                                                                          monkeypatch: pytest.MonkeyPatch):
    assert runner.invoke(app, ["init", "--join", team, "--key", KEY, "-y"]).exit_code == 0
    monkeypatch.setattr(stack, "client", lambda: None)
    monkeypatch.setattr(stack, "containers", lambda project, engine=None: {})
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert [s["service"] for s in shown["services"]] == ["relay", "egress", "opencode"]
    assert shown["team"] == {"url": team, "key": "laptop-ana", "problem": None}
    assert shown["urls"] == {"team proxy": f"{team}/v1"}
    budget = runner.invoke(app, ["budget"])
    assert budget.exit_code == 1
    assert "joined to the team server" in str(budget.exception)


# --- connect in a joined folder ---------------------------------------------------------------------

def test_connect_in_a_joined_folder_uses_the_team_url_and_the_joined_key(project: Path):
    key = new_key()
    assert runner.invoke(app, ["init", "--join", "https://ralex.team.invalid", "--key", key, "--no-check",
                               "-y"]).exit_code == 0
    result = runner.invoke(app, ["connect", "aider"])
    assert result.exit_code == 0, result.output
    assert "export OPENAI_API_BASE=https://ralex.team.invalid:443/v1" in result.stdout
    assert f"export OPENAI_API_KEY={key}" in result.stdout
    other = new_key()
    given = runner.invoke(app, ["connect", "claude-code", "--key", other])
    assert f"export ANTHROPIC_AUTH_TOKEN={other}" in given.stdout
    assert "ANTHROPIC_BASE_URL=https://ralex.team.invalid:443\n" in given.stdout
    for flags in (["--budget", "2"], ["--rotate"], ["--name", "mine"]):
        refused = runner.invoke(app, ["connect", "codex", *flags])
        assert refused.exit_code == 1
        assert "ralexctl keys add NAME --budget 2" in str(refused.exception)
        assert "--key" in str(refused.exception)
    hostile = runner.invoke(app, ["connect", "codex", "--key", "sk-ralex-x\nexport EVIL=1"])
    assert hostile.exit_code == 1
    assert "EVIL" not in hostile.output
    assert not (project / "connect-keys.json").exists()


def test_a_hand_edited_env_whose_url_and_relay_address_disagree_is_caught(project: Path):
    env = {"RALEX_JOIN_URL": "https://a.invalid", "RALEX_JOIN_ADDRESS": "b.invalid:443", "RALEX_JOIN_TLS": "1"}
    with pytest.raises(JoinError, match="disagree"):
        target_of(env)


# --- the join compose file ----------------------------------------------------------------------------

SANDBOX_FIELDS = ("network_mode", "read_only", "cap_drop", "security_opt", "tmpfs", "volumes", "image",
                  "pull_policy", "mem_limit", "init")


def test_the_joined_agent_is_boxed_exactly_as_in_compose_yaml():
    local = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["opencode"]
    joined = yaml.safe_load((ROOT / "compose.join.yaml").read_text())["services"]
    agent = joined["opencode"]
    for name in SANDBOX_FIELDS:
        assert agent.get(name) == local.get(name), name
    assert agent["build"] == local["build"]
    assert agent["network_mode"] == "none"
    assert "ports" not in agent
    for name in ("RALEX_PROXY_URL", "RALEX_AGENT_SOCKET"):
        assert agent["environment"][name] == local["environment"][name]
    assert agent["environment"]["RALEX_AGENT_KEY"].startswith("${RALEX_JOIN_KEY:?")
    relay = joined["relay"]
    assert relay["image"] == local["image"]  # the agent's image: nothing more to build or pull
    assert relay["networks"] == ["remote"]
    assert "ports" not in relay
    assert relay["read_only"]
    assert relay["cap_drop"] == ["ALL"]
    egress = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["egress"]
    assert {k: v for k, v in joined["egress"].items() if k != "networks"} == \
        {k: v for k, v in egress.items() if k not in ("networks", "expose")}
    assert not any("ports" in s for s in joined.values())


@pytest.mark.skipif(not compose_available(), reason="needs Docker Compose")
@pytest.mark.parametrize(("url", "tls"), [("https://ralex.team.invalid", "1"), ("http://10.1.2.3:4000", "0")])
def test_compose_reads_the_joined_folder_as_relay_egress_and_a_networkless_agent(project: Path, url: str, tls: str):
    key = new_key()
    assert runner.invoke(app, ["init", "--join", url, "--key", key, "--no-check", "-y"]).exit_code == 0
    out = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=project, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert config["name"] == "ralex-agent"
    services = config["services"]
    assert sorted(services) == ["egress", "opencode", "relay"]
    agent, relay = services["opencode"], services["relay"]
    assert agent["network_mode"] == "none"
    assert agent["environment"]["RALEX_AGENT_KEY"] == key
    assert relay["environment"] == {"RALEX_JOIN_ADDRESS": parse_url(url).netloc, "RALEX_JOIN_TLS": tls}
    assert key not in json.dumps(relay)  # the relay never holds the key
    assert list(relay["networks"]) == ["remote"]
    assert not config["networks"]["remote"].get("internal")
    assert all(not s.get("ports") for s in services.values())
    mounts = {m["target"]: m for m in relay["volumes"]}
    assert mounts["/etc/ralex/join-ca.pem"]["source"] == "/dev/null"


def test_the_relay_forwards_to_the_one_address_it_was_given(tmp_path: Path):
    """The relay's shell command refuses an address that could smuggle socat options or a second target."""
    command = yaml.safe_load((ROOT / "compose.join.yaml").read_text())["services"]["relay"]["command"][0]
    script = command.replace("$$", "$").replace("exec socat", "echo socat")
    for address, ok in (("ralex.example.com:443", True), ("[fd00::5]:4000", True), ("a.invalid:1,fork", False),
                        ("a.invalid:1!!TCP:evil:1", False), ("a b:1", False), ("", False)):
        done = subprocess.run(["sh", "-c", script], env={"RALEX_JOIN_ADDRESS": address, "RALEX_JOIN_TLS": "1",
                                                          "PATH": os.environ["PATH"]},
                              capture_output=True, text=True, timeout=10, check=False)
        assert (done.returncode == 0) is ok, (address, done.stderr)
        if ok:
            assert f'OPENSSL:{address},verify=1,cafile=/etc/ssl/certs/ca-certificates.crt' in done.stdout
