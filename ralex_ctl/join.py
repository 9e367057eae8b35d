"""A Ralex folder joined to a team server: only the sandboxed agent and its relay run here.

`ralexctl init --join URL --key KEY` writes a .env that selects ``compose.join.yaml`` (COMPOSE_FILE) and
holds the team proxy's URL and the developer's client key (made on the server with
``ralexctl keys add NAME --budget N``). Pure parts first (:func:`parse_url`, :func:`check_key`,
:func:`join_env`), then the one network check (:func:`check_server`), which asks the server the way the
relay will reach it: directly, never through an HTTP(S)_PROXY.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import requests

from ralex.keys import KEY_PREFIX
from ralex_ctl.errors import RalexError
from ralex_ctl.textout import safe_line

JOIN_COMPOSE: Final = "compose.join.yaml"
JOIN_SERVICES: Final = ("relay", "egress", "opencode")
JOIN_REQUIRED: Final = ("RALEX_JOIN_URL", "RALEX_JOIN_KEY", "RALEX_JOIN_ADDRESS")
MAX_URL: Final = 2048
_KEY = re.compile(r"sk-ralex-[A-Za-z0-9_-]{32,128}")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")
KEY_FIX: Final = ("ask the server's operator for a client key (on the server: ralexctl keys add NAME --budget 2) "
                  "and pass it with --key")


class JoinError(RalexError):
    """A join URL, key or CA file that cannot be used; the message names the fix."""


@dataclass(frozen=True)
class JoinTarget:
    """Where the team proxy is: ``url`` as ralexctl writes and shows it (scheme://host:port, no path)."""

    tls: bool
    host: str
    port: int

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.netloc}"


_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?[^/?#@]*@")


def _shown(text: str) -> str:
    """Text from the user, as an error line shows it: one line, bounded, a password before '@' masked."""
    return safe_line(_USERINFO.sub(lambda m: f"{m.group(1) or ''}***@", text, count=1), 80)


def parse_url(text: str) -> JoinTarget:
    """The team proxy's URL, checked: http or https, a host name or IP address, an optional port (default
    443 or 80), no user name or password, no query; a path of ``/`` or ``/v1`` (as ``connect`` shows the
    URL) is accepted and dropped. Control, space and invisible characters are refused before anything else."""
    example = "e.g. https://ralex.example.com or http://10.0.0.5:4000"
    if not text or not text.strip():
        raise JoinError(f"--join needs the team proxy's URL, {example}")
    if len(text) > MAX_URL:
        raise JoinError(f"the --join URL is {len(text)} characters long; give the team proxy's address, {example}")
    if _FORBIDDEN.search(text.strip()):
        raise JoinError(f"the --join URL {_shown(text)} holds a space, control or invisible character; type it "
                        f"plainly, {example}")
    text = text.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise JoinError(f"the --join URL {_shown(text)} cannot be read ({exc}); {example}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise JoinError(f"the --join URL {_shown(text)} must start with https:// (or http:// on a trusted "
                        f"network), {example}")
    if "@" in parts.netloc:
        raise JoinError(f"the --join URL {_shown(text)} holds a user name or password (masked here); the key "
                        "goes in --key, not in the URL")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise JoinError(f"the --join URL {_shown(text)} has a query or fragment; give only scheme://host:port")
    if parts.path.rstrip("/") not in ("", "/v1"):
        raise JoinError(f"the --join URL {_shown(text)} has a path; give the proxy's own address (scheme://host:"
                        "port): a proxy behind a path prefix cannot be joined")
    host = (parts.hostname or "").lower()
    if not host:
        raise JoinError(f"the --join URL {_shown(text)} has no host; {example}")
    if port == 0:
        raise JoinError(f"the --join URL {_shown(text)} has port 0; give the proxy's port, {example}")
    try:
        address = ipaddress.ip_address(host)
        host = str(address)
    except ValueError:
        if ":" in host or "[" in parts.netloc:
            raise JoinError(f"the --join URL {_shown(text)} has an invalid IP address; {example}") from None
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise JoinError(f"the --join URL's host {_shown(host)} is not a host name (letters, digits, '-' and "
                            f"'.'); {example}") from None
        host = ".".join(labels)
    return JoinTarget(scheme == "https", host, port or (443 if scheme == "https" else 80))


def check_key(text: str) -> str:
    """A client key as ``ralexctl keys add`` prints it (``sk-ralex-`` and URL-safe characters)."""
    key = (text or "").strip(" \t\r\n")  # a pasted line's own ends only: any other character is refused
    if not key:
        raise JoinError(f"--join needs your client key (--key sk-ralex-...); {KEY_FIX}")
    if len(key) > 200 or not _KEY.fullmatch(key):
        what = "is not a client key" if key.startswith(KEY_PREFIX) or not key.startswith("sk-") else \
            "looks like a server's master or agent key, not a client key"
        raise JoinError(f"the --key value ({len(key)} characters) {what} (sk-ralex- and 43 letters, digits, '-' "
                        f"or '_'); {KEY_FIX}")
    return key


def check_ca(path: Path) -> Path:
    """A CA certificate file (PEM) the server's certificate must chain to, as an absolute path Compose can mount."""
    resolved = path.expanduser().resolve()
    if ":" in str(resolved) or _FORBIDDEN.search(str(resolved)):
        raise JoinError(f"--ca {_shown(str(path))}: Compose cannot mount a path with ':', spaces or control "
                        "characters; copy the file to a plain path")
    try:
        head = resolved.read_bytes()[:1 << 20]
    except OSError as exc:
        raise JoinError(f"--ca {_shown(str(path))} cannot be read ({exc.strerror or exc}); give the CA certificate "
                        "(PEM) of the team server") from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise JoinError(f"--ca {_shown(str(path))} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give "
                        "the CA certificate of the team server")
    return resolved


def join_env(target: JoinTarget, key: str, ca: Path | None = None) -> dict[str, str]:
    """What .env holds for a joined folder (besides the workspace, uid and toolchain init adds)."""
    return {
        "COMPOSE_FILE": JOIN_COMPOSE,
        "COMPOSE_PROFILES": "",
        "RALEX_JOIN_URL": target.url,
        "RALEX_JOIN_KEY": key,
        "RALEX_JOIN_ADDRESS": target.netloc,
        "RALEX_JOIN_TLS": "1" if target.tls else "0",
        "RALEX_JOIN_CA": str(ca) if ca else "",
    }


ENV_HEADER: Final = """\
# Ralex, joined to a team server (ralexctl init --join): the agent and its relay run here, the proxy,
# ledger and budget are the server's. Mode 0600: RALEX_JOIN_KEY is your client key.
# RALEX_JOIN_ADDRESS and RALEX_JOIN_TLS are derived from RALEX_JOIN_URL; to change the server or the key,
# re-run: ralexctl init --join URL --key KEY --force
"""


def is_joined(env: Mapping[str, str]) -> bool:
    """Whether a folder's settings (.env under the shell) make it a joined folder."""
    return bool(env.get("RALEX_JOIN_URL"))


def target_of(env: Mapping[str, str]) -> JoinTarget:
    """The joined server from .env, checked against what the relay will use (RALEX_JOIN_ADDRESS, _TLS)."""
    target = parse_url(env.get("RALEX_JOIN_URL", ""))
    tls = env.get("RALEX_JOIN_TLS", "1") != "0"
    if (env.get("RALEX_JOIN_ADDRESS"), tls) != (target.netloc, target.tls):
        raise JoinError("RALEX_JOIN_URL and RALEX_JOIN_ADDRESS/RALEX_JOIN_TLS in .env disagree (edited by hand?); "
                        "re-run: ralexctl init --join URL --key KEY --force")
    return target


# --- asking the server ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerCheck:
    """What the team server said: ``problem`` is None when it answers and accepts the key."""

    url: str
    problem: str | None
    key_name: str | None = None
    status: dict[str, Any] | None = None


class TeamProxy:
    """The team proxy's routes a client key may call, asked directly (no HTTP(S)_PROXY, as the relay)."""

    def __init__(self, target: JoinTarget, key: str, ca: str | None = None, timeout: float = 8.0) -> None:
        self.target = target
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.verify = ca or True
        self._key = key
        self._timeout = timeout

    def get(self, path: str, key: bool = True) -> requests.Response:
        headers = {"Authorization": f"Bearer {self._key}"} if key else {}
        return self._session.get(self.target.url + path, headers=headers, timeout=self._timeout,
                                 allow_redirects=False)


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.exceptions.SSLError):
        return ("its TLS certificate is not trusted (for a private CA pass --ca FILE; the name must match "
                "the URL's host)")
    if isinstance(exc, requests.exceptions.Timeout):
        return "it did not answer in time"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        if "Name or service not known" in text or "NameResolutionError" in text or "nodename" in text:
            return "its name does not resolve"
        if "refused" in text.lower():
            return "the connection was refused (is the server's port published on this network?)"
        return "it cannot be reached"
    return type(exc).__name__


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        error = body.get("error")
        detail = body.get("detail") or (error.get("message") if isinstance(error, dict) else error)
        return str(detail or "")[:300]
    return ""


def check_server(target: JoinTarget, key: str, ca: str | None = None, timeout: float = 8.0) -> ServerCheck:
    """Ask the team proxy whether it is up (``/health/liveliness``) and takes ``key`` (``/v1/models``, then
    ``/ralex/status`` for the key's name and sub-budget). Never raises: a failure is ``problem``, one line."""
    proxy = TeamProxy(target, key, ca, timeout)
    url = target.url
    try:
        alive = proxy.get("/health/liveliness", key=False)
        if alive.status_code != 200:
            return ServerCheck(url, f"{url}/health/liveliness answered HTTP {alive.status_code}, not 200: is this "
                                    "the Ralex proxy's address (the port the server publishes, 4000 by default)?")
        models = proxy.get("/v1/models")
        if models.status_code in (401, 403):
            return ServerCheck(url, f"the server refuses the key ({_shown(_detail(models))}); {KEY_FIX}")
        if models.status_code != 200:
            return ServerCheck(url, f"{url}/v1/models answered HTTP {models.status_code} "
                                    f"({_shown(_detail(models))}); ask the server's operator to check "
                                    "ralexctl status there")
        status = proxy.get("/ralex/status")
        own = status.json() if status.status_code == 200 else None
    except requests.RequestException as exc:
        return ServerCheck(url, f"{url} does not answer: {_reason(exc)}")
    except ValueError:
        own = None
    if not isinstance(own, dict):
        own = None
    name = own.get("key") if own else None
    return ServerCheck(url, None, name if isinstance(name, str) else None, own)


def key_budget_text(status: Mapping[str, Any] | None) -> str:
    """The key's day as the server has it: ``key NAME: $0.40 spent of $2.00, $1.60 left`` (or less when the
    server says less)."""
    from ralex.budget import usd

    if not status or not isinstance(status.get("key"), str):
        return "the server does not report this key's budget"
    parts = [f"key {status['key']}"]
    try:
        spent = float(status["spent"])
        limit = status.get("daily_budget")
        parts.append(f"{usd(spent)} spent today" + (f" of {usd(float(limit))}" if limit is not None else
                                                     " (no sub-budget: the team's day budget applies)"))
        if status.get("remaining") is not None:
            parts.append(f"{usd(float(status['remaining']))} left")
    except (KeyError, TypeError, ValueError):
        pass
    return ", ".join(parts)


def require_compose_file(root: Path) -> None:
    """compose.join.yaml is part of a Ralex checkout; a clear error when this folder predates it."""
    if not (root / JOIN_COMPOSE).exists():
        raise JoinError(f"{root / JOIN_COMPOSE} is missing; update this Ralex folder (git pull) to a version "
                        "that can join a team server")

