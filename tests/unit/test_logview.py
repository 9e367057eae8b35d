"""`ralexctl logs`' view of Compose's lines: once each, no colour codes, no LiteLLM chatter, OpenCode's
warning in the sandbox's terms; hostile bytes pass through as text (the patterns are anchored or have no
nested repetition: linear in the line)."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from ralex.proxy.server import _NoRefusalTraces
from ralex_ctl.logview import LogView


def shown(*lines: str) -> list[str]:
    view = LogView()
    return [s for line in lines if (s := view.line(line)) is not None]


def test_colour_codes_chatter_and_repeats_are_left_out():
    assert shown(
        "litellm-1  | SESSION REUSE: Attached shared aiohttp session to request (ID: 1)\n",
        "litellm-1  | \n",
        "litellm-1  | litellm.acompletion(model=openrouter/x)\x1b[32m 200 OK\x1b[0m\n",
        "litellm-1  | 2026-12-05 10:00:46 ralex.proxy INFO ralex: 50 % reached\n",
        "litellm-1  | 2026-12-05 10:00:46 ralex.proxy INFO ralex: 50 % reached\n",
        "postgres-1  | 2026-12-05 10:00:46 ralex.proxy INFO ralex: 50 % reached\n",
        "opencode-1  | \x1b[1mbold\x1b[0m text\n",
    ) == ["litellm-1  | 2026-12-05 10:00:46 ralex.proxy INFO ralex: 50 % reached",
          "postgres-1  | 2026-12-05 10:00:46 ralex.proxy INFO ralex: 50 % reached",
          "opencode-1  | bold text"]


def test_opencodes_password_warning_says_why_none_is_needed():
    [line] = shown("opencode-1  | Warning: OPENCODE_SERVER_PASSWORD is not set; server is unsecured.")
    assert line.startswith("opencode-1  | opencode server: no password needed (it listens on 127.0.0.1 inside")


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_any_line_comes_back_as_one_line_or_nothing(text: str):
    out = LogView().line(f"svc-1  | {text}\n")
    assert out is None or "\n" not in out.rstrip("\n") or "\n" in text


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("LiteLLM Proxy", logging.ERROR, __file__, 1, message, None, None)


def test_litellms_trace_of_a_refusal_is_dropped_and_real_errors_are_kept():
    keep = _NoRefusalTraces().filter
    refusal = ("litellm.proxy.proxy_server._handle_llm_api_exception(): Exception occured - litellm_call_id="
               "9e463e5c-8ece-4235-ba0a-ceed4c416363 - 402: Daily budget $0.0654 exhausted")
    assert not keep(record(refusal))
    assert keep(record(refusal.replace(" - 402: ", " - 500: ")))
    assert keep(record("Traceback: something else broke"))
