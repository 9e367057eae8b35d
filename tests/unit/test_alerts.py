"""Alert receivers: what ralexctl renders for Alertmanager, what it refuses, and that a refusal writes nothing."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ralex_ctl import alerts
from ralex_ctl.alerts import AlertSettingError, Receiver, check_target, render, update_env
from ralex_ctl.cli import alerts as alert_commands
from ralex_ctl.cli import app
from ralex_ctl.cli.doctor import _alerts_check
from ralex_ctl.project import find_project, read_env

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
SMTP = {"RALEX_SMTP_HOST": "smtp.example.com:587", "RALEX_SMTP_FROM": "ralex@example.com"}


def rendered(env: dict[str, str]) -> dict[str, Any]:
    return dict(yaml.safe_load(render(env)))


def test_no_receiver_renders_a_receiver_that_calls_nothing_with_the_shipped_routing():
    config = rendered({})
    assert config["receivers"] == [{"name": "ralex"}]
    shipped = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.default.yml").read_text())
    assert config["route"] == shipped["route"] == alerts.ROUTE
    route = config["route"]
    assert route["group_by"] == ["alertname", "threshold", "budget_day"]  # one notification per threshold and day
    assert route["group_wait"] == "5s"
    assert route["repeat_interval"] == "72h"  # longer than any alert lives (a day), shorter than the log's 120 h


def test_each_kind_renders_its_alertmanager_integration_without_resolved_messages():
    config = rendered({
        "RALEX_ALERT_WEBHOOK_URL": "https://example.com/hook",
        "RALEX_ALERT_NTFY_URL": "https://ntfy.sh/my-topic",
        "RALEX_ALERT_SLACK_URL": "https://hooks.slack.com/services/T0/B0/XX",
        "RALEX_ALERT_DISCORD_URL": "https://discord.com/api/webhooks/1/abc",
        "RALEX_ALERT_EMAIL_TO": "me@example.com",
        **SMTP, "RALEX_SMTP_USER": "me", "RALEX_SMTP_PASSWORD": "p4ss word",
    })
    (receiver,) = config["receivers"]
    webhook, ntfy = receiver["webhook_configs"]
    assert webhook == {"url": "https://example.com/hook", "max_alerts": 0, "send_resolved": False}
    assert ntfy["url"].startswith("https://ntfy.sh/my-topic?tpl=1&t=%7B%7B.commonAnnotations.summary%7D%7D&m=")
    assert receiver["slack_configs"][0]["api_url"] == "https://hooks.slack.com/services/T0/B0/XX"
    assert receiver["slack_configs"][0]["text"] == "{{ .CommonAnnotations.description }}"
    assert receiver["discord_configs"][0]["webhook_url"] == "https://discord.com/api/webhooks/1/abc"
    email = receiver["email_configs"][0]
    assert email["to"] == "me@example.com"
    assert email["smarthost"] == "smtp.example.com:587"
    assert email["from"] == "ralex@example.com"
    assert (email["auth_username"], email["auth_password"], email["require_tls"]) == ("me", "p4ss word", True)
    assert email["headers"] == {"Subject": "{{ .CommonAnnotations.summary }}"}
    integrations = [c for field, items in receiver.items() if field != "name" for c in items]
    assert len(integrations) == 5
    assert all(c["send_resolved"] is False for c in integrations)


def test_email_without_login_or_tls():
    (receiver,) = rendered({"RALEX_ALERT_EMAIL_TO": "me@example.com", **SMTP, "RALEX_SMTP_REQUIRE_TLS": "false"}
                           )["receivers"]
    email = receiver["email_configs"][0]
    assert "auth_username" not in email
    assert email["require_tls"] is False


def test_ntfy_keeps_the_topic_s_own_query_and_replaces_only_the_template():
    url = alerts.ntfy_url("https://ntfy.example.com/ralex?auth=abc&tpl=0")
    assert url.startswith("https://ntfy.example.com/ralex?auth=abc&tpl=1&t=")
    assert url.count("tpl=") == 1


@pytest.mark.parametrize(("kind", "target", "message"), [
    ("webhook", "example.com/hook", "is not an http(s) URL for webhook; e.g. ralexctl alerts add webhook https://"),
    ("webhook", "ftp://example.com/hook", "is not an http(s) URL"),
    ("webhook", "https://", "is not an http(s) URL"),
    ("webhook", "https://exa mple.com/x", "is not an http(s) URL"),
    ("webhook", "https://example.com:99999999/x", "invalid port"),
    ("slack", "hooks.slack.com/services/x", "e.g. ralexctl alerts add slack https://hooks.slack.com/"),
    ("ntfy", "https://ntfy.sh/", "not an ntfy topic URL (server and one topic name)"),
    ("ntfy", "https://ntfy.sh/a/b", "not an ntfy topic URL"),
    ("discord", "https://discord.com/channels/1/2", "not a Discord webhook URL"),
    ("discord", "https://discord.com/api/webhooks/1/abc/slack", "without /slack"),
    ("email", "me(at)example.com", "is not an email address; e.g. ralexctl alerts add email you@example.com"),
    ("email", "a@b.c, d@e.f", "is not an email address"),
])
def test_a_bad_target_is_one_line_naming_the_fix(kind: str, target: str, message: str):
    with pytest.raises(AlertSettingError, match=None) as caught:
        check_target(kind, target)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("env", "message"), [
    ({"RALEX_ALERT_EMAIL_TO": "me@example.com"}, "email alerts need an SMTP server and a sender: set RALEX_SMTP_HOST"),
    ({"RALEX_ALERT_EMAIL_TO": "me@example.com", **SMTP, "RALEX_SMTP_HOST": "smtp.example.com"}, "is not host:port"),
    ({"RALEX_ALERT_EMAIL_TO": "me@example.com", **SMTP, "RALEX_SMTP_FROM": "ralex"}, "RALEX_SMTP_FROM='ralex' is not"),
    ({"RALEX_ALERT_EMAIL_TO": "me@example.com", **SMTP, "RALEX_SMTP_USER": "me"}, "set both RALEX_SMTP_USER and"),
    ({"RALEX_ALERT_EMAIL_TO": "me@example.com", **SMTP, "RALEX_SMTP_REQUIRE_TLS": "yes"}, "use true or false"),
    ({"RALEX_ALERT_SLACK_URL": "not a url"}, "RALEX_ALERT_SLACK_URL in .env: 'not a url' is not an http(s) URL"),
])
def test_receivers_in_env_that_cannot_work_are_refused(env: dict[str, str], message: str):
    with pytest.raises(AlertSettingError) as caught:
        render(env)
    assert message in str(caught.value)


def test_smtp_settings_alone_add_no_receiver():
    assert rendered(SMTP)["receivers"] == [{"name": "ralex"}]


def test_unknown_kind():
    with pytest.raises(AlertSettingError, match="unknown receiver kind 'pager'; use one of: webhook, ntfy, slack, "
                                                "discord, email"):
        alerts.kind_of("pager")
    assert alerts.kind_of(" Slack ") == "slack"


def test_targets_are_shown_without_their_secret_part():
    assert Receiver("slack", "https://hooks.slack.com/services/T0/B0/XXsecretYY").shown() == \
        "https://hooks.slack.com/…etYY"
    assert Receiver("ntfy", "https://ntfy.sh/ab").shown() == "https://ntfy.sh/ab"
    assert Receiver("email", "me@example.com").shown() == "me@example.com"


def test_update_env_replaces_in_place_clears_and_appends():
    text = "# receivers\nRALEX_ALERT_SLACK_URL=https://old\nRALEX_ALERT_NTFY_URL=https://ntfy.sh/t\nOTHER=1\n"
    out = update_env(text, {"RALEX_ALERT_SLACK_URL": "https://hooks.slack.com/x y", "RALEX_ALERT_NTFY_URL": "",
                            "RALEX_SMTP_HOST": "smtp.example.com:587"})
    lines = out.splitlines()
    assert lines[:4] == ["# receivers", "RALEX_ALERT_SLACK_URL='https://hooks.slack.com/x y'", "RALEX_ALERT_NTFY_URL=",
                         "OTHER=1"]
    assert lines[-1] == "RALEX_SMTP_HOST=smtp.example.com:587"


def test_the_config_hash_is_alertmanager_s():
    # alertmanager_config_hash: the first 6 bytes of the file's MD5 as a little-endian integer
    assert alerts.config_hash("") == float(int.from_bytes(bytes.fromhex("d41d8cd98f00"), "little"))


def test_receiver_secrets_reach_the_alertmanager_service_only():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    text = (ROOT / "compose.yaml").read_text()
    assert "RALEX_ALERT_" not in text  # never in any service's environment
    assert "RALEX_SMTP_" not in text
    holders = [name for name, service in compose["services"].items()
               if any(str(v).startswith("./alertmanager") for v in service.get("volumes", []))]
    assert holders == ["alertmanager"]
    alertmanager = compose["services"]["alertmanager"]
    assert alertmanager["networks"] == ["backend"]
    assert "ports" not in alertmanager
    assert "${RALEX_ALERTMANAGER_IMAGE:-prom/alertmanager:" in alertmanager["image"]
    assert "healthcheck" in alertmanager
    prometheus = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


# --- ralexctl alerts ---------------------------------------------------------------------------

class FakeAlertmanager(alerts.Alertmanager):
    """amtool's verdict without Docker; no container runs."""

    def __init__(self, project: Any, rejects: str | None = None) -> None:
        super().__init__(project, None)
        self.rejects = rejects
        self.checked: list[str] = []

    def check(self, text: str) -> None:
        self.checked.append(text)
        if self.rejects:
            raise AlertSettingError(f"Alertmanager rejects the rendered config ({self.rejects}); nothing was written")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(ROOT / "compose.yaml", tmp_path / "compose.yaml")
    (tmp_path / "alertmanager").mkdir()
    shutil.copy(ROOT / "alertmanager" / "alertmanager.default.yml", tmp_path / "alertmanager")
    env = (ROOT / ".env.example").read_text()
    (tmp_path / ".env").write_text(update_env(env, {"RALEX_UID": str(os.getuid()), "RALEX_GID": str(os.getgid())}))
    monkeypatch.chdir(tmp_path)
    for name in ("RALEX_HOME", *alerts.KINDS.values(), *alerts.SMTP):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def use(monkeypatch: pytest.MonkeyPatch, manager: FakeAlertmanager | None = None, rejects: str | None = None
        ) -> list[FakeAlertmanager]:
    made: list[FakeAlertmanager] = []

    def build(project: Any) -> FakeAlertmanager:
        made.append(manager or FakeAlertmanager(project, rejects))
        return made[-1]

    monkeypatch.setattr(alert_commands, "_alertmanager", build)
    return made


def test_add_writes_env_and_a_private_config_checked_first(project: Path, monkeypatch: pytest.MonkeyPatch):
    made = use(monkeypatch)
    result = runner.invoke(app, ["alerts", "add", "ntfy", "https://ntfy.sh/my-topic"])
    assert result.exit_code == 0, result.output
    assert "alerts go to ntfy https://ntfy.sh/…opic; wrote alertmanager/alertmanager.yml; Alertmanager reads it " \
           "when it starts" in result.output
    assert read_env(project / ".env")["RALEX_ALERT_NTFY_URL"] == "https://ntfy.sh/my-topic"
    config = project / "alertmanager" / "alertmanager.yml"
    assert made[0].checked == [config.read_text()]
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert config.stat().st_gid == os.getgid()
    listed = runner.invoke(app, ["alerts", "list", "--json"])
    assert '"kind": "ntfy"' in listed.output
    assert '"config": "current"' in listed.output

    removed = runner.invoke(app, ["alerts", "remove", "ntfy"])
    assert removed.exit_code == 0, removed.output
    assert read_env(project / ".env")["RALEX_ALERT_NTFY_URL"] == ""
    assert yaml.safe_load(config.read_text())["receivers"] == [{"name": "ralex"}]


@pytest.mark.parametrize(("args", "message"), [
    (["alerts", "add", "slack", "hooks.slack.com/x"], "is not an http(s) URL for slack"),
    (["alerts", "add", "pager", "https://example.com"], "unknown receiver kind 'pager'"),
    (["alerts", "add", "email", "me@example.com"], "email alerts need an SMTP server and a sender"),
    (["alerts", "add", "email", "me@example.com", "--smtp-host", "smtp.example.com", "--smtp-from", "r@example.com"],
     "is not host:port"),
    (["alerts", "add", "webhook", "https://example.com/hook"], "Alertmanager rejects the rendered config"),
])
def test_bad_input_writes_nothing(project: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str):
    use(monkeypatch, rejects="unsupported scheme" if "webhook" in args else None)
    before = (project / ".env").read_text()
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in str(result.exception)
    assert (project / ".env").read_text() == before
    assert not (project / "alertmanager" / "alertmanager.yml").exists()


def test_email_with_smtp_options_stores_them_in_env(project: Path, monkeypatch: pytest.MonkeyPatch):
    use(monkeypatch)
    result = runner.invoke(app, ["alerts", "add", "email", "me@example.com", "--smtp-host", "smtp.example.com:587",
                                 "--smtp-from", "ralex@example.com"])
    assert result.exit_code == 0, result.output
    env = read_env(project / ".env")
    assert (env["RALEX_ALERT_EMAIL_TO"], env["RALEX_SMTP_HOST"], env["RALEX_SMTP_FROM"]) == (
        "me@example.com", "smtp.example.com:587", "ralex@example.com")


def test_doctor_says_when_no_receiver_is_set_and_when_the_config_is_stale(project: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    check = _alerts_check(find_project())
    assert (check.ok, check.warn_only) == (False, True)
    assert "none: budget alerts stay in Prometheus and Grafana" in check.detail
    assert check.fix.startswith("ralexctl alerts add ntfy https://ntfy.sh/")
    env = project / ".env"
    env.write_text(update_env(env.read_text(), {"RALEX_ALERT_WEBHOOK_URL": "https://example.com/hook"}))
    check = _alerts_check(find_project())
    assert (check.ok, check.fix) == (False, "ralexctl alerts apply")
    use(monkeypatch)
    assert runner.invoke(app, ["alerts", "apply"]).exit_code == 0
    check = _alerts_check(find_project())
    assert check.ok, check.detail
    assert check.detail == "webhook; alertmanager/alertmanager.yml matches .env"


def test_alerts_commands_have_help_with_an_example():
    for command in ("list", "add", "remove", "apply", "test"):
        result = runner.invoke(app, ["alerts", command, "--help"])
        assert result.exit_code == 0, command
        assert "Example" in result.output, command
        assert "ralexctl alerts" in result.output, command


def test_status_shows_the_day_s_thresholds_in_one_line_and_other_alerts_apart():
    firing = [
        {"alertname": "RalexBudgetThreshold", "threshold": "80", "severity": "warning", "summary": "80 % ...",
         "description": "80 % of today's budget is spent ($4.00 of $5.00); ..."},
        {"alertname": "RalexBudgetThreshold", "threshold": "50", "severity": "info", "summary": "", "description": ""},
        {"alertname": "RalexExporterDown", "threshold": None, "severity": "critical",
         "summary": "The Ralex budget exporter cannot read the ledger", "description": "Check the logs."},
    ]
    assert alerts.firing_lines(firing) == [
        ("warning", "50/80 % of today's budget crossed · 80 % of today's budget is spent ($4.00 of $5.00); ..."),
        ("critical", "The Ralex budget exporter cannot read the ledger: Check the logs."),
    ]
