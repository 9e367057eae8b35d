"""One encoder per sink: whatever text a request carried, each sink gets something it accepts.

Request text is hostile to every place it reaches. Callers hand these functions plain text (the
classifier's quoted words, an error message, a key name) and never pre-clean it; the one writer of
each sink calls its encoder:

- :func:`header_value` — an HTTP response header value (the gate, :func:`ralex.proxy.server._hiding_headers`,
  writes every ``x-ralex-*`` header): printable ASCII only, anything else escaped visibly
  (``\\n``, ``\\x00``, ``\\u2028``), bounded, never a leading or trailing space (RFC 9110 field-value).
- :func:`pg_text` — a Postgres ``text`` value (:func:`ralex.ledger.store.row_values` builds every
  ledger INSERT): no NUL, no lone surrogate (each becomes U+FFFD), bounded; printable text unchanged.
- :func:`log_line` — one log line (:class:`LogLineFormatter`, the ``ralex`` logger's handler): control,
  format and line-separator characters escaped, so one record is one line whatever it quotes.

- :func:`client_label` — the ``User-Agent`` LiteLLM sees (the gate hands LiteLLM every request's headers
  through :func:`ralex.proxy.auth.with_key`), which LiteLLM's Prometheus metrics keep as the
  ``user_agent`` label: one of a few known clients' names, else ``other``.

No other metric label takes request text: the exporter's labels are aliases, models and routing kinds
from the policy, and key names (``ralex.keys.check_name``'s ``[a-z0-9-]{1,40}``, ``agent``, ``operator``).

Every encoder reads at most a bounded prefix of its input, so a 32 MB prompt costs no more than a short one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Final

HEADER_MAX: Final = 512
"""Characters of an encoded header value (servers and proxies refuse headers of a few KB)."""
PG_TEXT_MAX: Final = 4000
"""Characters of one ledger text value; a longer one keeps its start and ends with ``...``."""
LOG_LINE_MAX: Final = 16_000
"""Characters of one log line."""
TRUNCATED: Final = "..."

_SHORT: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
_PG_BAD: Final = re.compile("[\x00\ud800-\udfff]")
KNOWN_CLIENTS: Final = frozenset({
    "claude-cli", "claude-code", "codex_cli_rs", "codex_exec", "codex-tui", "opencode", "aider", "ai-sdk",
    "openai", "anthropic", "litellm", "python-httpx", "python-requests", "curl", "node", "ralexctl",
})
"""Client names the ``user_agent`` label may take (each followed by ``/``, which LiteLLM's Claude Code and
Codex checks read); any other client is ``other``."""
_PRODUCT: Final = re.compile(rb"[A-Za-z0-9_.-]{1,32}")


def _escape(ch: str) -> str:
    """A visible, unambiguous ASCII spelling of one character: ``\\n``, ``\\x00`` for ASCII controls,
    ``\\u00e9`` / ``\\U0001f600`` beyond ASCII (as a Python or JSON string literal would read it)."""
    short = _SHORT.get(ch)
    if short is not None:
        return short
    code = ord(ch)
    if code < 0x80:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _bounded(pieces: list[str], limit: int, cut: bool) -> str:
    """Join ``pieces`` within ``limit`` characters, never splitting one; ``...`` ends a cut value
    (``cut``: the input was longer than what was read)."""
    if not cut and sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    room = limit - len(TRUNCATED)
    out: list[str] = []
    for piece in pieces:
        room -= len(piece)
        if room < 0:
            break
        out.append(piece)
    return "".join(out) + TRUNCATED


def header_value(text: object, limit: int = HEADER_MAX) -> str:
    """``text`` as an HTTP header value: printable ASCII, at most ``limit`` characters, no space at
    either end. Every other character is escaped as Python spells it, backslash included, so the
    value reads back unambiguously: ``hi,\\ncan`` for a newline, ``\\u00e9`` for ``é``."""
    text = text if isinstance(text, str) else str(text)
    if len(text) <= limit and text.isascii() and text.isprintable() and "\\" not in text \
            and not text.startswith(" ") and not text.endswith(" "):
        return text
    pieces = [ch if " " <= ch <= "~" and ch != "\\" else _escape(ch) for ch in text[:limit]]
    for end in (0, -1):  # spaces around a header value are not part of it: spell them out
        if pieces and pieces[end] == " ":
            pieces[end] = "\\x20"
    return _bounded(pieces, limit, len(text) > limit)


def header_fields(headers: Mapping[str, object]) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs of ``headers``: each value through :func:`header_value`; a name that is not an
    HTTP token (Ralex names its own headers, so this is a bug) is left out rather than sent."""
    return [(name.lower().encode("ascii"), header_value(value).encode("ascii"))
            for name, value in headers.items() if _HEADER_NAME.fullmatch(name)]


def client_label(user_agent: bytes) -> bytes:
    """A bounded stand-in for a client's ``User-Agent``: its product name when it is a known client
    (``claude-cli/``, ``opencode/``), else ``other`` - never its version or anything after it, so the
    label has a few values whatever clients send."""
    found = _PRODUCT.match(user_agent[:33])
    name = found.group().decode().lower() if found else ""
    return f"{name}/".encode() if name in KNOWN_CLIENTS else b"other"


def pg_text(text: str, limit: int = PG_TEXT_MAX) -> str:
    """``text`` as Postgres takes it: NUL and lone surrogates become U+FFFD (Postgres refuses NUL in
    text, and a lone surrogate is no UTF-8), at most ``limit`` characters (``...`` marks a cut).
    Any other text, printable or not, is unchanged."""
    if len(text) > limit:
        text = text[: limit - len(TRUNCATED)] + TRUNCATED
    return _PG_BAD.sub("\ufffd", text)


def log_line(text: str, limit: int = LOG_LINE_MAX) -> str:
    """``text`` as one log line: every character ``str.isprintable`` refuses (controls, CR/LF, NUL,
    U+2028/U+2029, bidi overrides, zero-width and unassigned characters, lone surrogates) is escaped;
    letters of any script stay readable. At most ``limit`` characters."""
    if len(text) <= limit and text.isprintable():
        return text
    pieces = [ch if ch.isprintable() else _escape(ch) for ch in text[:limit]]
    return _bounded(pieces, limit, len(text) > limit)


class LogLineFormatter(logging.Formatter):
    """A formatter whose every record is one line (:func:`log_line`), traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        return log_line(super().format(record))


def log_to_stderr(name: str = "ralex", level: int = logging.INFO) -> None:
    """Make one handler the only writer of logger ``name``'s lines (and its children's): every record
    one line through :class:`LogLineFormatter`, none propagated to a root handler that would print
    it again unescaped. Idempotent."""
    logger = logging.getLogger(name)
    if not any(isinstance(h.formatter, LogLineFormatter) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(LogLineFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
