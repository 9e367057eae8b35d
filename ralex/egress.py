"""The agent's egress policy: which hosts code in the sandbox may reach, and how each refusal reads.

Pure rules, no I/O: the egress service (``services/egress``, Squid behind a socket relay) renders them
into Squid's config and counts what Squid logged; ``ralexctl sandbox`` validates and edits the user's
lists with the same functions.

- ``RALEX_AGENT_NETWORK`` is ``none`` (the default: nothing leaves the box) or ``packages`` (the
  package indexes in :data:`PACKAGES` plus the user's ``sandbox/allow.txt``).
- ``sandbox/deny.txt`` wins over both lists.
- A name that is not listed is refused before any DNS lookup (Squid's ``dstdomain -n``).
- A listed name that resolves to a private, loopback, link-local or other non-public address
  (:data:`BLOCKED_NETS`, plus the host's own addresses from ``RALEX_EGRESS_BLOCK``) is refused too:
  no LAN, no host, no stack service through the proxy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ralex.sinks import log_line

NETWORK_MODES: Final = ("none", "packages")
DEFAULT_MODE: Final = "none"
ALLOW_FILE: Final = "allow.txt"
DENY_FILE: Final = "deny.txt"

# The package indexes a developer's loop needs, and the hosts their downloads come from.
# A leading dot also matches every subdomain (Squid's dstdomain).
PACKAGES: Final[tuple[str, ...]] = (
    # Python
    "pypi.org", "files.pythonhosted.org",
    # JavaScript
    "registry.npmjs.org", "registry.yarnpkg.com",
    # Rust
    "crates.io", "index.crates.io", "static.crates.io",
    # Go
    "proxy.golang.org", "sum.golang.org",
    # Debian and Ubuntu mirrors (apt inside a devcontainer-style base)
    "deb.debian.org", "security.debian.org", "archive.ubuntu.com", "security.ubuntu.com", "ports.ubuntu.com",
    # GitHub, to read (clone, release downloads); the box holds no credentials to push with
    "github.com", "codeload.github.com", "objects.githubusercontent.com", "raw.githubusercontent.com",
)

# Never reachable through the proxy, whatever name points there.
BLOCKED_NETS: Final[tuple[str, ...]] = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
)

MAX_HOST: Final = 253
_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


class HostError(ValueError):
    """A host the user typed cannot go on a list; the message says why and what to type instead."""


def check_mode(mode: str) -> str:
    if mode not in NETWORK_MODES:
        raise HostError(f"RALEX_AGENT_NETWORK must be one of {', '.join(NETWORK_MODES)}, not {log_line(mode, 40)!r}")
    return mode


def normalise_host(text: str) -> str:
    """``Example.COM`` -> ``example.com``; ``*.example.com`` or ``.example.com`` -> ``.example.com``
    (the domain and every subdomain). Addresses, ports, schemes and paths are refused with the fix."""
    raw = text.strip()
    host = raw.lower().rstrip(".")
    if host.startswith("*."):
        host = host[1:]
    wildcard = host.startswith(".")
    name = host[1:] if wildcard else host
    shown = log_line(raw, 80)
    if not name:
        raise HostError("give a host name, e.g. pypi.org or .example.com (a domain and its subdomains)")
    if "://" in name or "/" in name or ":" in name or "@" in name:
        raise HostError(f"{shown!r} is not a bare host name: give only the name, e.g. pypi.org "
                        "(no scheme, port or path)")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise HostError(f"{shown!r} is an address: allow the host's name instead (the proxy checks where names point)")
    if len(name) > MAX_HOST or not all(_LABEL.match(label) for label in name.split(".")) or "." not in name:
        raise HostError(f"{shown!r} is not a host name (letters, digits, '-' and '.', e.g. pypi.org)")
    return host


def covers(pattern: str, host: str) -> bool:
    """Whether a list entry matches a host name (Squid's dstdomain rule)."""
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return host == pattern


def parse_list(text: str) -> tuple[list[str], list[str]]:
    """A user's list file: one host per line, ``#`` comments. Returns (hosts, problems)."""
    hosts: list[str] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            host = normalise_host(entry)
        except HostError as err:
            problems.append(f"line {number}: {err}")
            continue
        if host not in hosts:
            hosts.append(host)
    return hosts, problems


def _squid_entries(hosts: Iterable[str]) -> list[str]:
    """Squid refuses a dstdomain list where one entry covers another: keep the widest."""
    unique = sorted(set(hosts), key=lambda h: (not h.startswith("."), h))
    kept: list[str] = []
    for host in unique:
        if not any(covers(other, host.lstrip(".")) for other in kept if other != host):
            kept.append(host)
    return sorted(kept)


@dataclass(frozen=True)
class Lists:
    """What the proxy enforces: the names it lets through, and the ones refused whatever else says."""

    allowed: tuple[str, ...]
    denied: tuple[str, ...]

    def verdict(self, host: str) -> str:
        """``denied`` / ``not_listed`` / ``listed`` for a host name (before any address check)."""
        name = host.lower().rstrip(".")
        if any(covers(d, name) for d in self.denied):
            return "denied"
        if any(covers(a, name) for a in self.allowed):
            return "listed"
        return "not_listed"


def effective(mode: str, user_allowed: Iterable[str], user_denied: Iterable[str]) -> Lists:
    """The lists for a mode: ``none`` lets nothing through; ``packages`` the indexes and the user's hosts."""
    check_mode(mode)
    denied = _squid_entries(user_denied)
    if mode == "none":
        return Lists(allowed=(), denied=tuple(denied))
    allowed = _squid_entries([*PACKAGES, *user_allowed])
    return Lists(allowed=tuple(allowed), denied=tuple(denied))


def blocked_nets(extra: str = "") -> list[str]:
    """:data:`BLOCKED_NETS` plus the host's own addresses (``RALEX_EGRESS_BLOCK``: spaces or commas).
    Entries that are not addresses or networks are dropped (they are reported by :func:`bad_nets`)."""
    nets = list(BLOCKED_NETS)
    for item in re.split(r"[\s,]+", extra.strip()):
        if item and _network(item) and item not in nets:
            nets.append(str(_network(item)))
    return nets


def bad_nets(extra: str) -> list[str]:
    return [item for item in re.split(r"[\s,]+", extra.strip()) if item and not _network(item)]


def _network(item: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(item, strict=False)
    except ValueError:
        return None


# What the agent reads when the proxy refuses (the body of Squid's 403 for a plain-HTTP request; the
# agent's standard quotes the same words for HTTPS, where clients show only "403 Forbidden").
def refusal(verdict: str, host: str) -> str:
    name = log_line(host, MAX_HOST) or "this host"
    if verdict == "offline":
        return ("403 Forbidden: the sandbox is offline (RALEX_AGENT_NETWORK=none). "
                "Ask the user to run: ralexctl sandbox network packages (package indexes), "
                f"or: ralexctl sandbox allow {name}")
    if verdict == "denied":
        return f"403 Forbidden: {name} is on the sandbox's deny list; only the user can change that (ralexctl sandbox)."
    if verdict == "address":
        return (f"403 Forbidden: {name} is an address; the sandbox reaches hosts by name only "
                "(ralexctl sandbox allow NAME).")
    if verdict == "port":
        return "403 Forbidden: the sandbox reaches web ports only (80, and 443 for HTTPS)."
    if verdict == "blocked":
        return (f"403 Forbidden: {name} points at a private, loopback or link-local address (or this machine). "
                "The sandbox never reaches those.")
    return (f"403 Forbidden: {name} is not on the sandbox's allow-list; "
            f"ask the user to run: ralexctl sandbox allow {name}")


# Squid's access log line (logformat ``ralex`` in the egress service): epoch, method, host, port,
# status, Squid's result code and the error page that refused it ("-" when none).
@dataclass(frozen=True)
class Access:
    at: float
    method: str
    host: str
    port: str
    status: int
    result: str
    verdict: str  # allowed / not_listed / denied / address / blocked / port / failed


# Squid's error page for each refusal (deny_info in the egress service's config).
ERROR_PAGES: Final = {"ERR_RALEX_NOT_LISTED": "not_listed", "ERR_RALEX_DENIED": "denied",
                      "ERR_RALEX_ADDRESS": "address", "ERR_RALEX_BLOCKED": "blocked", "ERR_RALEX_PORT": "port"}


def parse_access(line: str) -> Access | None:
    parts = line.strip().split(" ")
    if len(parts) != 7:
        return None
    at, method, host, port, status, result, err = parts
    if method == "-":  # a connection that sent no request (a port probe)
        return None
    try:
        stamp, code = float(at), int(status)
    except ValueError:
        return None
    if err in ERROR_PAGES:
        verdict = ERROR_PAGES[err]
    elif result.startswith("TCP_DENIED"):
        verdict = "denied"
    elif code >= 500 or code == 0 or err != "-":
        verdict = "failed"
    else:
        verdict = "allowed"
    return Access(stamp, method[:16], host.lower()[:MAX_HOST], port[:5], code, result[:32], verdict)


def host_label(lists: Lists, host: str) -> str:
    """A metric label for a host: the list entry that names it, else ``other`` (a bounded label set:
    names the agent made up never become series)."""
    for entry in (*lists.denied, *lists.allowed):
        if covers(entry, host):
            return entry
    return "other"
