"""The agent's egress policy (ralex/egress.py) and `ralexctl sandbox` (ralex_ctl/sandbox.py), without a stack.

The proxy itself (Squid with this policy, the DNS and address checks) is proven end to end in
tests/e2e/test_egress.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from ralex import egress
from ralex_ctl import sandbox
from ralex_ctl.cli import app
from ralex_ctl.project import read_env

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
HOSTILE = ["pypi.org\r\nX-Evil: 1", "py\x00pi.org", "pypi\u2028.org", "a" * 300 + ".org",
           "https://pypi.org/simple", "pypi.org:443", "user@pypi.org", "10.0.0.1", "[::1]", "localhost", "",
           "*", ".", "-bad.org", "bad-.org", "pyp\u0131.org"]


@pytest.mark.parametrize(("text", "host"), [
    ("PyPI.org", "pypi.org"), (" pypi.org. ", "pypi.org"), ("*.example.com", ".example.com"),
    (".example.com", ".example.com"), ("xn--bcher-kva.example", "xn--bcher-kva.example"),
])
def test_a_host_name_is_normalised(text: str, host: str):
    assert egress.normalise_host(text) == host


@pytest.mark.parametrize("text", HOSTILE)
def test_anything_but_a_host_name_is_refused_in_one_line_with_the_fix(text: str):
    with pytest.raises(egress.HostError) as caught:
        egress.normalise_host(text)
    message = str(caught.value)
    assert message.isprintable(), message
    assert len(message) < 300
    assert "e.g." in message or "name" in message


@given(st.text(max_size=400))
def test_normalise_either_returns_a_safe_name_or_refuses(text: str):
    try:
        host = egress.normalise_host(text)
    except egress.HostError as err:
        message = str(err)
        host = ""
    else:
        message = ""
    assert message.isprintable()
    if not host:
        return
    assert host.isascii()
    assert host.isprintable()
    assert len(host.lstrip(".")) <= egress.MAX_HOST
    assert set(host) <= set("abcdefghijklmnopqrstuvwxyz0123456789.-")


def test_a_list_file_keeps_good_lines_and_names_the_bad_ones():
    hosts, problems = egress.parse_list("# mine\npypi.org\n\nexample.com  # docs\nhttps://x.org/\npypi.org\n")
    assert hosts == ["pypi.org", "example.com"]
    assert len(problems) == 1
    assert problems[0].startswith("line 5: ")


def test_none_allows_nothing_and_packages_the_indexes_plus_the_users_hosts():
    assert egress.effective("none", ["example.com"], []).allowed == ()
    lists = egress.effective("packages", ["example.com"], [])
    assert {"pypi.org", "files.pythonhosted.org", "registry.npmjs.org", "example.com"} <= set(lists.allowed)
    assert lists.verdict("PyPI.org") == "listed"
    assert lists.verdict("evil.invalid") == "not_listed"


def test_deny_wins_over_every_allow():
    lists = egress.effective("packages", [".github.com"], ["github.com"])
    assert lists.verdict("github.com") == "denied"
    assert lists.verdict("api.github.com") == "listed"
    assert egress.effective("packages", [], [".npmjs.org"]).verdict("registry.npmjs.org") == "denied"


def test_a_wildcard_swallows_the_names_it_covers_as_squid_requires():
    lists = egress.effective("packages", [".githubusercontent.com", "raw.githubusercontent.com"], [])
    assert ".githubusercontent.com" in lists.allowed
    assert "raw.githubusercontent.com" not in lists.allowed
    assert "objects.githubusercontent.com" not in lists.allowed


def test_an_unknown_mode_is_refused_with_the_choices():
    with pytest.raises(egress.HostError, match="none, packages"):
        egress.effective("all", [], [])


def test_blocked_networks_take_the_hosts_addresses_and_skip_garbage():
    nets = egress.blocked_nets("192.0.2.2, 2001:db8::1 nonsense")
    assert "192.0.2.2/32" in nets
    assert "2001:db8::1/128" in nets
    assert "nonsense" not in " ".join(nets)
    assert egress.bad_nets("192.0.2.2, nonsense") == ["nonsense"]
    for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "fc00::/7"):
        assert private in nets


def test_squids_log_lines_become_verdicts():
    line = "1764916000.123 CONNECT pypi.org 443 200 TCP_TUNNEL -"
    assert egress.parse_access(line) == egress.Access(1764916000.123, "CONNECT", "pypi.org", "443", 200, "TCP_TUNNEL",
                                                      "allowed")
    assert egress.parse_access("1.0 GET evil.invalid 80 403 TCP_DENIED ERR_RALEX_NOT_LISTED").verdict == "not_listed"
    assert egress.parse_access("1.0 GET lan.test 80 403 TCP_DENIED ERR_RALEX_BLOCKED").verdict == "blocked"
    assert egress.parse_access("1.0 GET pypi.org 80 503 TCP_MISS ERR_CONNECT_FAIL").verdict == "failed"
    assert egress.parse_access("1.0 - - - 0 NONE_NONE -") is None  # a probe that sent no request
    assert egress.parse_access("garbage") is None
    assert egress.parse_access("x GET a 80 200 TCP_MISS -") is None


@given(st.text(max_size=300))
def test_a_metric_label_is_a_list_entry_or_other_whatever_the_host(host: str):
    lists = egress.effective("packages", ["example.com"], ["evil.example"])
    label = egress.host_label(lists, host)
    assert label == "other" or label in (*lists.allowed, *lists.denied)


@pytest.mark.parametrize("verdict", ["offline", "not_listed", "denied", "address", "blocked", "port"])
def test_every_refusal_is_one_printable_line(verdict: str):
    text = egress.refusal(verdict, "evil\r\n.invalid\u2028")
    assert text.startswith("403 Forbidden: ")
    assert text.isprintable()
    assert "\n" not in text


def test_the_refusal_for_a_name_off_the_list_gives_the_users_command():
    assert egress.refusal("not_listed", "%H").endswith("ralexctl sandbox allow %H")  # Squid's error page
    assert "ralexctl sandbox network packages" in egress.refusal("offline", "pypi.org")


def test_every_error_page_squid_can_name_is_a_verdict_with_its_own_text():
    """Each `deny_info` page in the shipped squid.conf is one of ERROR_PAGES; its page holds the verdict's
    refusal text, which names the host (but for a port) and differs from every other verdict's; and a log line
    naming the page reads back as that verdict."""
    root = Path(__file__).resolve().parents[2]
    named = set(re.findall(r"^deny_info (ERR_RALEX_\w+) ", (root / "services/egress/egress.py").read_text(), re.M))
    assert named == set(egress.ERROR_PAGES)
    texts = {verdict: egress.refusal(verdict, "h.example") for verdict in egress.ERROR_PAGES.values()}
    assert len(set(texts.values())) == len(texts)
    for page, verdict in egress.ERROR_PAGES.items():
        assert texts[verdict].startswith("403 Forbidden: "), texts[verdict]
        assert ("h.example" in texts[verdict]) != (verdict == "port"), texts[verdict]  # a port is not about the host
        line = f"1733390000.123 CONNECT h.example 443 403 TCP_DENIED/403 {page}"
        access = egress.parse_access(line)
        assert access is not None, line
        assert access.verdict == verdict, (line, access)


# --- ralexctl sandbox -------------------------------------------------------------------------------

def test_this_machines_own_public_addresses_are_found_and_private_ones_left_to_the_ranges(tmp_path: Path):
    (tmp_path / "fib_trie").write_text(
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
        "     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.1\n"
        "              /32 host LOCAL\n     |-- 192.0.2.2\n        /32 host LOCAL\n"
        "     |-- 192.0.2.255\n        /32 link BROADCAST\n     |-- 172.17.0.1\n        /32 host LOCAL\n")
    (tmp_path / "if_inet6").write_text("00000000000000000000000000000001 01 80 10 80       lo\n"
                                       "20010db8000000000000000000000005 02 40 00 80     eth0\n"
                                       "fe800000000000000000000000000001 02 40 20 80     eth0\n")
    assert sandbox.host_addresses(tmp_path) == ["192.0.2.2", "2001:db8::5"]
    assert sandbox.host_addresses(tmp_path / "missing") == []


@pytest.mark.parametrize(("files", "preset"), [
    ([], "node"), (["pyproject.toml"], "python"), (["requirements.txt"], "python"), (["package.json"], "node"),
    (["go.mod"], "go"), (["Cargo.toml"], "rust"), (["pyproject.toml", "package.json"], "full"),
])
def test_the_toolchain_follows_the_workspace(tmp_path: Path, files: list[str], preset: str):
    for name in files:
        (tmp_path / name).write_text("")
    assert sandbox.detect_toolchain(tmp_path) == preset


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("compose.yaml", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    for name in ("RALEX_HOME", "OPENROUTER_API_KEY", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "RALEX_WORKSPACE",
                 "RALEX_AGENT_NETWORK", "RALEX_AGENT_BASE_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_init_picks_the_toolchain_from_the_workspace_or_the_option(project: Path):
    (project / "workspace").mkdir()
    (project / "workspace" / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    result = runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y"])
    assert result.exit_code == 0, result.output
    env = read_env(project / ".env")
    assert env["RALEX_AGENT_TOOLCHAIN"] == "python"
    assert env["RALEX_AGENT_BASE_IMAGE"] == "python:3.12-slim-bookworm"
    assert env["RALEX_AGENT_NETWORK"] == "none"
    assert "python toolchain, agent offline" in result.output
    result = runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y", "--force", "--agent", "full"])
    assert result.exit_code == 0, result.output
    env = read_env(project / ".env")
    assert (env["RALEX_AGENT_TOOLCHAIN"], env["RALEX_AGENT_PACKAGES"]) == ("full", "nodejs npm golang-go cargo")
    result = runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y", "--force", "--agent", "cobol"])
    assert result.exit_code == 1
    assert "unknown toolchain 'cobol'" in str(result.exception)


def test_allow_deny_and_reset_edit_the_lists_the_proxy_reads(project: Path):
    assert runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y"]).exit_code == 0
    result = runner.invoke(app, ["sandbox", "allow", "API.example.com", "*.docs.example"])
    assert result.exit_code == 0, result.output
    assert "nothing leaves the box until `ralexctl sandbox network packages`" in result.output
    allowed, problems = egress.parse_list((project / "sandbox" / "allow.txt").read_text())
    assert (allowed, problems) == (["api.example.com", ".docs.example"], [])
    assert runner.invoke(app, ["sandbox", "deny", "api.example.com"]).exit_code == 0
    assert sandbox.read_list(sandbox.find_project(), "allow.txt") == [".docs.example"]
    assert sandbox.read_list(sandbox.find_project(), "deny.txt") == ["api.example.com"]
    assert runner.invoke(app, ["sandbox", "reset", "api.example.com", ".docs.example"]).exit_code == 0
    assert sandbox.read_list(sandbox.find_project(), "allow.txt") == []
    assert sandbox.read_list(sandbox.find_project(), "deny.txt") == []


@pytest.mark.parametrize("args", [["sandbox", "allow", "https://pypi.org/simple"], ["sandbox", "allow", "10.0.0.1"],
                                  ["sandbox", "deny", "bad\nhost.org"], ["sandbox", "network", "all"],
                                  ["sandbox", "toolchain", "cobol"]])
def test_bad_sandbox_input_is_one_line_with_the_fix_and_changes_nothing(project: Path, args: list[str],
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]):
    from ralex_ctl.cli import main

    assert runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y"]).exit_code == 0
    before = (project / ".env").read_text()
    monkeypatch.setattr("sys.argv", ["ralexctl", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert any(fix in err for fix in ("e.g.", "choose one of", "instead")), err
    assert (project / ".env").read_text() == before
    assert not (project / "sandbox" / "allow.txt").exists()


def test_network_and_toolchain_are_written_to_env(project: Path):
    assert runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y"]).exit_code == 0
    result = runner.invoke(app, ["sandbox", "network", "packages"])
    assert result.exit_code == 0, result.output
    assert read_env(project / ".env")["RALEX_AGENT_NETWORK"] == "packages"
    result = runner.invoke(app, ["sandbox", "toolchain", "go"])
    assert result.exit_code == 0, result.output
    env = read_env(project / ".env")
    assert (env["RALEX_AGENT_TOOLCHAIN"], env["RALEX_AGENT_BASE_IMAGE"]) == ("go", "golang:1.23-bookworm")
    shown = runner.invoke(app, ["sandbox"])
    assert shown.exit_code == 0, shown.output
    assert "toolchain  go: Go 1.23" in shown.output
    assert "network    packages: " in shown.output


def test_doctor_names_a_bad_mode_and_each_bad_list_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("RALEX_AGENT_NETWORK", raising=False)
    assert sandbox.network_check(tmp_path, {}).ok
    assert "nothing leaves the box" in sandbox.network_check(tmp_path, {}).detail
    bad = sandbox.network_check(tmp_path, {"RALEX_AGENT_NETWORK": "all"})
    assert not bad.ok
    assert bad.fix == "ralexctl sandbox network none or packages"
    (tmp_path / "sandbox").mkdir()
    (tmp_path / "sandbox" / "allow.txt").write_text("example.com\nhttp://x.org/\x1b[31m\n")
    lines = sandbox.network_check(tmp_path, {"RALEX_AGENT_NETWORK": "packages"})
    assert not lines.ok
    assert lines.detail.startswith("sandbox/allow.txt line 2: ")
    assert "\x1b" not in lines.detail
    (tmp_path / "sandbox" / "allow.txt").write_text("example.com\n")
    good = sandbox.network_check(tmp_path, {"RALEX_AGENT_NETWORK": "packages"})
    assert good.ok
    assert good.detail == f"packages: {len(egress.PACKAGES) + 1} hosts allowed, 0 denied (ralexctl sandbox)"


def test_status_says_what_the_box_has_and_may_reach(project: Path):
    assert runner.invoke(app, ["init", "--openrouter-key", "sk-or-v1-abc", "-y", "--agent", "python"]).exit_code == 0
    box = sandbox.summary(sandbox.find_project())
    assert box == {"toolchain": "python", "network": "none", "allowed_hosts": 0, "denied_hosts": 0}
    assert sandbox.summary_line(box) == ("agent box: python toolchain, offline (ralexctl sandbox network packages "
                                         "to install packages)")
    assert runner.invoke(app, ["sandbox", "network", "packages"]).exit_code == 0
    box = sandbox.summary(sandbox.find_project())
    hosts = len(egress.PACKAGES)
    assert sandbox.summary_line(box) == f"agent box: python toolchain, network packages, {hosts} hosts allowed"
