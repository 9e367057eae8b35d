"""Every sink encodes what it is given: HTTP header values, Postgres text, log lines, for any text."""

from __future__ import annotations

import io
import logging
import re
from typing import Any

import h11
import pytest
from h11._headers import normalize_and_validate
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ralex.proxy.exchange import open_exchange
from ralex.proxy.hooks import META_HEADERS, META_KEY, handler
from ralex.proxy.server import _hiding_headers
from ralex.sinks import (
    HEADER_MAX,
    KNOWN_CLIENTS,
    LOG_LINE_MAX,
    PG_TEXT_MAX,
    LogLineFormatter,
    client_label,
    header_fields,
    header_value,
    log_line,
    log_to_stderr,
    pg_text,
)

ANY_TEXT = st.text(st.characters(exclude_categories=()))
"""Every code point: controls, NUL, CR/LF, U+2028, bidi overrides, lone surrogates, astral characters."""
HOSTILE = st.one_of(
    ANY_TEXT,
    st.lists(st.sampled_from(["\n", "\r", "\x00", "\t", " ", "\\", "\u2028", "\u2029", "\u202e", "\ud800",
                              "\udfff", "é", "😀", "<b>", "[red]", "%s", "\x1b[31m", "\x7f", "\x85", "a"]))
    .map("".join),
)
RFC9110_FIELD_VALUE = re.compile(rb"(?:[\x21-\x7e](?:[ \t]*[\x21-\x7e])*)?")
"""field-value = *field-content, field-content = field-vchar [ 1*( SP / HTAB ) field-vchar ] (ASCII only)."""
UVICORN_REFUSES = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
"""What uvicorn's httptools server refuses in a header value (RuntimeError: the connection just closes)."""


# --- HTTP header values --------------------------------------------------------------------------------

@settings(max_examples=500)
@given(HOSTILE)
@example("Hi,\ncan you fix the typo in a.py")
@example("small-edit 'hi,\x00can you fix'")
@example(" padded ")
@example("x" * 100_000)
@example("é" * 600)
def test_a_header_value_is_always_one_valid_bounded_ascii_field_value(text: str):
    value = header_value(text).encode("ascii")
    assert RFC9110_FIELD_VALUE.fullmatch(value), value
    assert not UVICORN_REFUSES.search(value)
    assert normalize_and_validate([(b"x-ralex-reason", value)]) == [(b"x-ralex-reason", value)]
    assert len(value) <= HEADER_MAX


def test_h11_writes_the_encoded_header_of_a_multi_line_reason():
    """The server side of the bug: h11 refuses the raw reason, and sends the encoded one."""
    reason = "task looks cheap (score -1.0: small-edit 'hi,\ncan you fix')"
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    server.next_event()
    with pytest.raises(h11.LocalProtocolError):
        server.send(h11.Response(status_code=200, headers=[("x-ralex-reason", reason)]))
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    server.next_event()
    sent = server.send(h11.Response(status_code=200, headers=[("x-ralex-reason", header_value(reason))]))
    assert sent is not None
    assert b"x-ralex-reason: task looks cheap (score -1.0: small-edit 'hi,\\ncan you fix')\r\n" in sent


@pytest.mark.parametrize(("text", "value"), [
    ("task looks cheap (score -1.0: small-edit 'fix')", "task looks cheap (score -1.0: small-edit 'fix')"),
    ("hi,\ncan", "hi,\\ncan"),
    ("a\r\nb\tc", "a\\r\\nb\\tc"),
    ("nul\x00here", "nul\\x00here"),
    ("line\u2028sep", "line\\u2028sep"),
    ("café 😀", "caf\\u00e9 \\U0001f600"),
    ("lone \ud800", "lone \\ud800"),
    ("C:\\path", "C:\\\\path"),
    (" both ends ", "\\x20both ends\\x20"),
    ("", ""),
])
def test_header_values_escape_visibly_and_keep_plain_text_as_it_is(text: str, value: str):
    assert header_value(text) == value


def test_a_long_header_value_is_cut_at_the_bound_without_splitting_an_escape():
    value = header_value("é" * 1000)
    assert len(value) <= HEADER_MAX
    assert value.endswith("\\u00e9...")
    assert header_value("x" * 10_000) == "x" * (HEADER_MAX - 3) + "..."
    assert header_value("y" * HEADER_MAX) == "y" * HEADER_MAX


def test_header_fields_encode_every_value_and_never_write_a_name_that_is_not_a_token():
    fields = header_fields({"x-ralex-reason": "a\nb", "X-Ralex-Tier": "full", "bad name\n": "v",
                            "x-ralex-max-tokens": 200})
    assert fields == [(b"x-ralex-reason", b"a\\nb"), (b"x-ralex-tier", b"full"), (b"x-ralex-max-tokens", b"200")]


@given(st.dictionaries(st.sampled_from(["x-ralex-reason", "x-ralex-key", "x-ralex-dropped"]), HOSTILE))
def test_every_owed_header_reaches_the_client_encoded(owed: dict[str, str]):
    assert all(normalize_and_validate(header_fields(owed)))


async def test_the_gate_is_the_only_writer_of_ralex_headers():
    """An answer's own x-ralex-* headers (LiteLLM's, or an upstream's) are replaced by the owed ones,
    encoded; LiteLLM's x-litellm-* headers are hidden; the rest passes."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    write = _hiding_headers(send, {"x-ralex-reason": "small-edit 'hi,\ncan you fix'", "x-ralex-route": "cheap"})
    await write({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"x-ralex-route", b"smart"), (b"X-Ralex-Reason", b"spoofed"),
        (b"x-litellm-version", b"1.0")]})
    await write({"type": "http.response.body", "body": b"{}"})
    assert sent[0]["headers"] == [(b"content-type", b"application/json"),
                                  (b"x-ralex-reason", b"small-edit 'hi,\\ncan you fix'"),
                                  (b"x-ralex-route", b"cheap")]
    assert normalize_and_validate(sent[0]["headers"])
    assert sent[1] == {"type": "http.response.body", "body": b"{}"}


async def test_the_hook_owes_its_headers_to_the_gate_and_hands_litellm_none():
    """No x-ralex-* header goes out through LiteLLM (whose server would refuse a newline in it)."""
    owed = open_exchange()
    headers = {"x-ralex-route": "cheap", "x-ralex-reason": "small-edit 'hi,\ncan you fix'"}
    data = {"litellm_metadata": {META_KEY: "k", META_HEADERS: headers}}
    assert await handler.async_post_call_response_headers_hook(data, None, {"model": "x"}) is None
    assert owed == headers


# --- Postgres text ---------------------------------------------------------------------------------------

@settings(max_examples=500)
@given(HOSTILE)
@example("quoted\x00nul")
@example("\ud800\udc00")
@example("z" * 100_000)
def test_postgres_text_has_no_nul_is_valid_utf8_and_is_bounded(text: str):
    value = pg_text(text)
    assert "\x00" not in value
    value.encode("utf-8")  # no lone surrogate: Postgres takes it in a UTF-8 database
    assert len(value) <= PG_TEXT_MAX


@given(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=PG_TEXT_MAX))
def test_postgres_text_keeps_any_other_text_unchanged(text: str):
    assert pg_text(text) == text


def test_postgres_text_marks_what_it_replaces_and_cuts():
    assert pg_text("a\x00b\ud800c\n<b>") == "a\ufffdb\ufffdc\n<b>"
    assert pg_text("w" * (PG_TEXT_MAX + 1)) == "w" * (PG_TEXT_MAX - 3) + "..."


# --- log lines ------------------------------------------------------------------------------------------

@settings(max_examples=500)
@given(HOSTILE)
@example("fine\nFAKE 2026-01-01 ralex.proxy ERROR forged line")
@example("\x1b[2J\u202eevil")
def test_a_log_line_is_one_printable_line(text: str):
    line = log_line(text)
    assert line.isprintable()  # no CR, LF, NUL, U+2028/2029, escape sequences, bidi overrides
    assert len(line.splitlines()) <= 1
    assert len(line) <= LOG_LINE_MAX


@given(st.text(st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters="\u00a0\u1680"
                             "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"),
               max_size=200))
def test_a_log_line_keeps_readable_text_of_any_script(text: str):
    assert log_line(text) == text


def test_the_ralex_log_writer_writes_one_line_per_record_traceback_included():
    stream = io.StringIO()
    logger = logging.getLogger("ralex.test-sinks")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogLineFormatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("row of %s refused (%s)", "request", "quoted 'hi,\nERROR forged'")
        try:
            raise ValueError("bad\r\nvalue")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "ERROR row of request refused (quoted 'hi,\\nERROR forged')"
    assert len(lines) == 2
    assert lines[1].startswith("ERROR failed\\nTraceback")
    assert "ValueError: bad\\r\\nvalue" in lines[1]


def test_ralex_log_lines_have_one_writer():
    log_to_stderr("ralex.test-writer")
    log_to_stderr("ralex.test-writer")
    logger = logging.getLogger("ralex.test-writer")
    assert len(logger.handlers) == 1
    assert isinstance(logger.handlers[0].formatter, LogLineFormatter)
    assert logger.propagate is False  # never printed a second time, unescaped, by a root handler


# --- the user_agent label LiteLLM's metrics keep -----------------------------------------------------

@pytest.mark.parametrize(("sent", "label"), [
    (b"claude-cli/2.1.332 (external, cli)", b"claude-cli/"),
    (b"codex_cli_rs/0.77.0 (Debian 12; x86_64) xterm", b"codex_cli_rs/"),
    (b"opencode/1.18.33 ai-sdk/provider-utils/3.0.1 runtime/bun/1.2", b"opencode/"),
    (b"OpenAI/Python 1.99.0", b"openai/"),
    (b"evil/1.0\r\nx-injected: 1", b"other"),
    (b"\x00claude-cli/1", b"other"),
    (b"", b"other"),
    (b"a" * 100_000, b"other"),
    ("claude-cli\u2028/1".encode(), b"claude-cli/"),  # only the name is kept, never what follows
])
def test_the_user_agent_reaches_litellm_as_a_bounded_label(sent: bytes, label: bytes):
    assert client_label(sent) == label


@given(st.binary(max_size=300))
def test_any_user_agent_gets_one_of_a_few_labels(sent: bytes):
    assert client_label(sent) in {f"{name}/".encode() for name in KNOWN_CLIENTS} | {b"other"}


def test_litellm_still_recognises_claude_code_and_codex_by_their_label():
    from litellm.litellm_core_utils.core_helpers import is_codex_user_agent
    from litellm.llms.anthropic.common_utils import is_claude_code_user_agent

    assert is_claude_code_user_agent(client_label(b"claude-cli/2.1.332 (external, cli)").decode())
    assert is_codex_user_agent(client_label(b"codex_cli_rs/0.77.0").decode())
