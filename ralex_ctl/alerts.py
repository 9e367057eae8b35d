"""Alert receivers: where Alertmanager sends the budget alerts (each threshold once per budget day).

Receivers live in .env (``RALEX_ALERT_*`` and ``RALEX_SMTP_*``). ralexctl renders
``alertmanager/alertmanager.yml`` from them, has Alertmanager's own ``amtool check-config`` accept it,
and only then replaces the old file and reloads Alertmanager. Only the alertmanager service mounts
that folder: no receiver secret reaches the agent or the proxy. Without the file, Alertmanager runs
on the checked-in ``alertmanager.default.yml``, which has no receiver.

The rendering is pure (``render``, ``receivers``, ``update_env``); ``Alertmanager`` is the thin
adapter to the running container.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import yaml

from ralex_ctl.errors import RalexError
from ralex_ctl.project import Project
from ralex_ctl.project import update_env as project_update_env

KINDS: Final[dict[str, str]] = {
    "webhook": "RALEX_ALERT_WEBHOOK_URL",
    "ntfy": "RALEX_ALERT_NTFY_URL",
    "slack": "RALEX_ALERT_SLACK_URL",
    "discord": "RALEX_ALERT_DISCORD_URL",
    "email": "RALEX_ALERT_EMAIL_TO",
}
"""Receiver kinds and the .env variable holding each one's target."""

EXAMPLES: Final[dict[str, str]] = {
    "webhook": "https://example.com/hooks/ralex",
    "ntfy": "https://ntfy.sh/my-ralex-alerts",
    "slack": "https://hooks.slack.com/services/T000/B000/XXXX",
    "discord": "https://discord.com/api/webhooks/123456/abcdef",
    "email": "you@example.com",
}
SMTP_HOST: Final = "RALEX_SMTP_HOST"
SMTP_FROM: Final = "RALEX_SMTP_FROM"
SMTP_USER: Final = "RALEX_SMTP_USER"
SMTP_PASSWORD: Final = "RALEX_SMTP_PASSWORD"
SMTP_REQUIRE_TLS: Final = "RALEX_SMTP_REQUIRE_TLS"
SMTP: Final = (SMTP_HOST, SMTP_FROM, SMTP_USER, SMTP_PASSWORD, SMTP_REQUIRE_TLS)
SECRETS: Final = frozenset({*KINDS.values(), SMTP_PASSWORD} - {KINDS["email"]})

DEFAULT_IMAGE: Final = "prom/alertmanager:v0.25.0"
CONFIG: Final = Path("alertmanager") / "alertmanager.yml"
DEFAULT_CONFIG: Final = Path("alertmanager") / "alertmanager.default.yml"
SERVICE: Final = "alertmanager"

# The same routing as alertmanager.default.yml: one group per alert name, threshold and budget day,
# notified 5 s after it starts and never repeated within the day (the alert lives one budget day; it
# resolves at midnight when the exporter stops publishing yesterday's crossings, and resolved alerts
# are not sent).
ROUTE: Final[dict[str, Any]] = {
    "receiver": "ralex",
    "group_by": ["alertname", "threshold", "budget_day"],
    "group_wait": "5s",
    "group_interval": "30s",
    "repeat_interval": "72h",
}
SUMMARY: Final = "{{ .CommonAnnotations.summary }}"
DESCRIPTION: Final = "{{ .CommonAnnotations.description }}"
_EMAIL = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+$")
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})$")


class AlertSettingError(RalexError):
    """A receiver, SMTP setting or rendered Alertmanager config that cannot be used."""


class AlertmanagerUnavailable(RalexError):
    pass


@dataclass(frozen=True)
class Receiver:
    kind: str
    target: str

    @property
    def variable(self) -> str:
        return KINDS[self.kind]

    def shown(self) -> str:
        """The target without its secret part: webhook tokens and topics are credentials."""
        if self.kind == "email":
            return self.target
        parts = urlsplit(self.target)
        path = parts.path.rstrip("/")
        tail = path.rsplit("/", 1)[-1] if path else ""
        hidden = f"/…{tail[-4:]}" if len(tail) > 4 else (path or "/")
        return f"{parts.scheme}://{parts.netloc}{hidden}"


def kind_of(name: str) -> str:
    kind = name.strip().lower()
    if kind not in KINDS:
        raise AlertSettingError(f"unknown receiver kind {name!r}; use one of: {', '.join(KINDS)} "
                                f"(e.g. ralexctl alerts add ntfy {EXAMPLES['ntfy']})")
    return kind


def check_target(kind: str, target: str) -> str:
    """The target as it will be stored, or AlertSettingError naming the fix."""
    target = target.strip()
    example = f"ralexctl alerts add {kind} {EXAMPLES[kind]}"
    if kind == "email":
        if not _EMAIL.match(target):
            raise AlertSettingError(f"{target!r} is not an email address; e.g. {example}")
        return target
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in target):
        raise AlertSettingError(f"{target!r} is not an http(s) URL for {kind}; e.g. {example}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise AlertSettingError(f"{target!r} has an invalid port; e.g. {example}") from None
    if kind == "ntfy" and len([p for p in parts.path.split("/") if p]) != 1:
        raise AlertSettingError(f"{target!r} is not an ntfy topic URL (server and one topic name); e.g. {example}")
    if kind == "discord":
        if "/api/webhooks/" not in parts.path:
            raise AlertSettingError(f"{target!r} is not a Discord webhook URL (…/api/webhooks/<id>/<token>); "
                                    f"e.g. {example}")
        if parts.path.rstrip("/").endswith(("/slack", "/github")):
            raise AlertSettingError(f"{target!r}: give the webhook URL without /slack or /github (Alertmanager "
                                    "speaks Discord's own format)")
    return target


def receivers(env: Mapping[str, str]) -> list[Receiver]:
    """Every receiver set in ``env``, validated (AlertSettingError names the variable to correct)."""
    found = []
    for kind, name in KINDS.items():
        value = (env.get(name) or "").strip()
        if not value:
            continue
        try:
            found.append(Receiver(kind, check_target(kind, value)))
        except AlertSettingError as exc:
            raise AlertSettingError(f"{name} in .env: {exc}") from None
    if any(r.kind == "email" for r in found):
        smtp_settings(env)
    return found


def smtp_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Alertmanager's SMTP fields from ``env``; AlertSettingError when email cannot be sent with them."""
    host = (env.get(SMTP_HOST) or "").strip()
    sender = (env.get(SMTP_FROM) or "").strip()
    user = env.get(SMTP_USER) or ""
    password = env.get(SMTP_PASSWORD) or ""
    fix = ("set RALEX_SMTP_HOST (host:port, e.g. smtp.example.com:587) and RALEX_SMTP_FROM in .env, or pass "
           "--smtp-host and --smtp-from to `ralexctl alerts add email`")
    if not host or not sender:
        raise AlertSettingError(f"email alerts need an SMTP server and a sender: {fix}")
    match = _HOST_PORT.match(host)
    if not match or not 0 < int(match["port"]) < 65536:
        raise AlertSettingError(f"RALEX_SMTP_HOST={host!r} is not host:port; e.g. smtp.example.com:587")
    if not _EMAIL.match(sender):
        raise AlertSettingError(f"RALEX_SMTP_FROM={sender!r} is not an email address; e.g. ralex@example.com")
    if bool(user) != bool(password):
        raise AlertSettingError("set both RALEX_SMTP_USER and RALEX_SMTP_PASSWORD (or neither, for a server "
                                "without login)")
    tls = (env.get(SMTP_REQUIRE_TLS) or "true").strip().lower()
    if tls not in ("true", "false"):
        raise AlertSettingError(f"RALEX_SMTP_REQUIRE_TLS={tls!r}: use true or false")
    fields: dict[str, Any] = {"from": sender, "smarthost": host, "require_tls": tls == "true"}
    if user:
        fields.update({"auth_username": user, "auth_password": password})
    return fields


def ntfy_url(topic: str) -> str:
    """The topic URL with ntfy's message templating (ntfy 2.10+): the alert's summary as the title and
    its description as the message, taken from Alertmanager's JSON body."""
    parts = urlsplit(topic)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("tpl", "t", "m")]
    query += [("tpl", "1"), ("t", "{{.commonAnnotations.summary}}"), ("m", "{{.commonAnnotations.description}}")]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def integration(receiver: Receiver, env: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """The Alertmanager receiver field and its entry for one receiver. Resolved alerts are never sent."""
    quiet = {"send_resolved": False}
    if receiver.kind == "webhook":
        return "webhook_configs", {"url": receiver.target, "max_alerts": 0, **quiet}
    if receiver.kind == "ntfy":
        return "webhook_configs", {"url": ntfy_url(receiver.target), **quiet}
    if receiver.kind == "slack":
        return "slack_configs", {"api_url": receiver.target, "title": SUMMARY, "text": DESCRIPTION, **quiet}
    if receiver.kind == "discord":
        return "discord_configs", {"webhook_url": receiver.target, "title": SUMMARY, "message": DESCRIPTION, **quiet}
    return "email_configs", {"to": receiver.target, **smtp_settings(env), "headers": {"Subject": SUMMARY},
                             "text": DESCRIPTION, **quiet}


def render(env: Mapping[str, str]) -> str:
    """alertmanager.yml for the receivers in ``env`` (no receiver: nothing is called)."""
    entry: dict[str, Any] = {"name": "ralex"}
    for receiver in receivers(env):
        field, config = integration(receiver, env)
        entry.setdefault(field, []).append(config)
    body = yaml.safe_dump({"route": dict(ROUTE), "receivers": [entry]}, sort_keys=False, width=1000)
    return ("# Written by `ralexctl alerts` from the receivers in .env (RALEX_ALERT_*, RALEX_SMTP_*); do not edit:\n"
            "# change .env and run `ralexctl alerts apply`. Holds secrets: readable by you and Alertmanager only.\n"
            + body)


def config_hash(text: str) -> float:
    """Alertmanager's `alertmanager_config_hash` of a config file's text (48 bits of its MD5): which
    file a running Alertmanager has loaded."""
    return float(int.from_bytes(hashlib.md5(text.encode()).digest()[:6], "little"))


def update_env(text: str, changes: Mapping[str, str]) -> str:
    """.env text with the receivers' ``changes`` applied (:func:`ralex_ctl.project.update_env`)."""
    return project_update_env(text, changes, "# Alert receivers (ralexctl alerts)")


# --- the running Alertmanager -------------------------------------------------------------------

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class Alertmanager:
    """The project's alertmanager container, reached through the Docker CLI (amtool inside it)."""

    def __init__(self, project: Project, container: Any | None, run: Runner = subprocess.run) -> None:
        self.project = project
        self.container: Any = container  # a docker Container, or None
        self._run = run

    @property
    def running(self) -> bool:
        return self.container is not None and self.container.status == "running"

    def _docker(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        try:
            return self._run(["docker", *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                             check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AlertmanagerUnavailable(f"cannot run docker ({type(exc).__name__}); install Docker or start it, "
                                          "then retry") from None

    def check(self, text: str) -> None:
        """`amtool check-config` on ``text``: in the running container, else in a throwaway one."""
        if self.running:
            out = self._docker("exec", "-i", self.container.id, "amtool", "check-config", "/dev/stdin", stdin=text)
        else:
            image = self.project.setting("RALEX_ALERTMANAGER_IMAGE", DEFAULT_IMAGE)
            out = self._docker("run", "--rm", "-i", "--network", "none", "--entrypoint", "/bin/amtool", image,
                               "check-config", "/dev/stdin", stdin=text, timeout=300)
            if out.returncode != 0 and "Checking" not in out.stdout:
                why = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
                raise AlertmanagerUnavailable(f"cannot run amtool in {image} to check the config ({why}); "
                                              "start the stack (ralexctl up) or set RALEX_ALERTMANAGER_IMAGE")
        if out.returncode != 0:
            failed = re.search(r"FAILED: (.+)", out.stdout + out.stderr)
            raise AlertSettingError("Alertmanager rejects the rendered config ("
                                    + (failed.group(1).strip() if failed else (out.stdout + out.stderr).strip()[-200:])
                                    + "); nothing was written: correct the receiver it names in .env")

    def _get(self, path: str, post: bool = False) -> str:
        """An HTTP call to Alertmanager from inside its container (it publishes no port): wget in the
        official image, bash's /dev/tcp in images without wget. The body, or "" when it fails."""
        method = "POST" if post else "GET"
        script = (f"wget -q -O - {'--post-data= ' if post else ''}http://127.0.0.1:9093{path} 2>/dev/null || "
                  f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/9093 && printf \"{method} {path} HTTP/1.0\\r\\n"
                  f"Content-Length: 0\\r\\n\\r\\n\" >&3 && cat <&3' 2>/dev/null")
        out = self._docker("exec", self.container.id, "sh", "-c", script, timeout=20)
        return out.stdout if out.returncode == 0 else ""

    def loaded_hash(self) -> float | None:
        """`alertmanager_config_hash` of the running Alertmanager (None: not running or not answering)."""
        if not self.running:
            return None
        match = re.search(r"^alertmanager_config_hash(?:\{[^}]*\})? (\S+)$", self._get("/metrics"), re.MULTILINE)
        return float(match.group(1)) if match else None

    def reload(self, text: str, restart: bool, timeout: float = 30) -> None:
        """Make the running Alertmanager load ``text`` from its file: POST /-/reload (it rereads the file
        it started with), or a restart when it started on the default file; waits until it has."""
        if restart:
            self.container.restart(timeout=10)
        else:
            self._get("/-/reload", post=True)
        wanted = config_hash(text)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.loaded_hash() == wanted:
                return
            time.sleep(0.5)
        raise AlertmanagerUnavailable(f"Alertmanager did not load the new config within {timeout:.0f} s; see "
                                      "`ralexctl logs alertmanager`")

    def send_test(self) -> None:
        """A test alert straight into Alertmanager (not through Prometheus): every receiver gets it once;
        it resolves by itself after Alertmanager's resolve_timeout (5 min)."""
        if not self.running:
            raise AlertmanagerUnavailable("the alertmanager service is not running: run `ralexctl up`")
        now = datetime.now(UTC)
        out = self._docker(
            "exec", self.container.id, "amtool", "alert", "add", "alertname=RalexTest", "severity=info",
            f"test_id={now:%Y%m%dT%H%M%S}",
            "--annotation=summary=Ralex test alert",
            "--annotation=description=Ralex alerts reach you here (sent by ralexctl alerts test).",
            "--alertmanager.url=http://127.0.0.1:9093", timeout=20)
        if out.returncode != 0:
            raise AlertmanagerUnavailable(f"Alertmanager refused the test alert: {(out.stderr or out.stdout).strip()}")


def install(project: Project, text: str, manager: Alertmanager) -> str:
    """Replace alertmanager/alertmanager.yml with ``text`` (already accepted by ``manager.check``; mode
    0640, group RALEX_GID, which the alertmanager service joins) and have a running Alertmanager load
    it. Returns what happened, for the user."""
    path = project.root / CONFIG
    loaded = manager.loaded_hash()
    if path.exists() and path.read_text() == text and (not manager.running or loaded == config_hash(text)):
        return "unchanged"
    path.parent.mkdir(exist_ok=True)
    temporary = path.with_name(f".{path.name}.ralexctl-tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(temporary, 0o640)
        _give_to_group(temporary, project)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    if not manager.running:
        return f"wrote {CONFIG}; Alertmanager reads it when it starts (ralexctl up)"
    default = project.root / DEFAULT_CONFIG
    on_default = loaded is None or (default.exists() and loaded == config_hash(default.read_text()))
    manager.reload(text, restart=on_default)
    return f"wrote {CONFIG}; Alertmanager " + ("restarted on it" if on_default else "reloaded it")


def _give_to_group(path: Path, project: Project) -> None:
    """The file belongs to the host user of .env (RALEX_UID/RALEX_GID) and is readable by its group,
    which the alertmanager container joins (group_add): secrets stay unreadable to other users."""
    env = project.env()
    gid = int(env.get("RALEX_GID") or 1000)
    uid = int(env.get("RALEX_UID") or 1000) if os.getuid() == 0 else -1
    try:
        os.chown(path, uid, gid)
    except PermissionError:
        raise AlertSettingError(f"cannot give {CONFIG} to group {gid} (RALEX_GID in .env), which Alertmanager "
                                "reads it as; run ralexctl as the user in .env (RALEX_UID) or correct RALEX_GID"
                                ) from None


def config_state(project: Project, env: Mapping[str, str]) -> str:
    """Whether alertmanager/alertmanager.yml matches the receivers in ``env``: "current", "stale"
    (run `ralexctl alerts apply`) or "absent" (Alertmanager runs on the default: no receiver)."""
    path = project.root / CONFIG
    if not path.exists():
        return "absent"
    try:
        return "current" if path.read_text() == render(env) else "stale"
    except (OSError, AlertSettingError):
        return "stale"


def firing_alerts(prometheus: str, timeout: float = 2.0) -> list[dict[str, Any]]:
    """The alerts Prometheus has firing now (its /api/v1/alerts), budget thresholds first."""
    import requests  # loaded by the proxy client anyway

    session = requests.Session()
    session.trust_env = False  # 127.0.0.1: never through an HTTP(S)_PROXY
    try:
        response = session.get(f"{prometheus}/api/v1/alerts", timeout=timeout)
        response.raise_for_status()
        alerts = response.json()["data"]["alerts"]
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise AlertmanagerUnavailable(f"Prometheus at {prometheus} does not answer ({type(exc).__name__})") from None
    firing = [{
        "alertname": a["labels"].get("alertname", ""),
        "threshold": a["labels"].get("threshold"),
        "budget_day": a["labels"].get("budget_day"),
        "severity": a["labels"].get("severity", ""),
        "since": a.get("activeAt"),
        "summary": a.get("annotations", {}).get("summary", ""),
        "description": a.get("annotations", {}).get("description", ""),
    } for a in alerts if a.get("state") == "firing"]

    def order(alert: dict[str, Any]) -> tuple[bool, float]:
        level = alert["threshold"] or ""
        return alert["alertname"] != "RalexBudgetThreshold", -float(level) if level.isdigit() else 0.0

    return sorted(firing, key=order)


def firing_lines(firing: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(severity, text) lines for `ralexctl status`: the budget thresholds crossed today in one line,
    with the text of the highest; any other alert on a line of its own."""
    budget = [a for a in firing if a["alertname"] == "RalexBudgetThreshold"]
    lines = []
    if budget:
        top = budget[0]  # firing_alerts puts the highest threshold first
        crossed = "/".join(str(a["threshold"]) for a in reversed(budget))
        text = top["description"] or top["summary"]
        lines.append((top["severity"], f"{crossed} % of today's budget crossed · {text}"))
    lines += [(a["severity"], f"{a['summary']}: {a['description']}" if a["description"] else a["summary"] or
               a["alertname"]) for a in firing if a["alertname"] != "RalexBudgetThreshold"]
    return lines
