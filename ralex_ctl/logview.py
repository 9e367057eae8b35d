"""What `ralexctl logs` shows of Compose's log lines: each line once, without terminal colour codes,
without LiteLLM's per-request chatter, and with OpenCode's startup warning put in the sandbox's terms.

Pure and line by line (`LogView.line` returns the text to print or None), so `--follow` streams; every
match is a plain substring or a linear regex on one line. `ralexctl logs --raw` skips all of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

ANSI: Final = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
"""CSI sequences (colours, cursor moves) and two-byte escapes."""
PREFIX: Final = re.compile(r"^([A-Za-z0-9_.-]{1,80}\s{0,40}\|\s?)?")
"""Compose's `service-1  | ` in front of each line (absent with --no-log-prefix)."""
CHATTER: Final = ("SESSION REUSE: ", "LiteLLM completion() model= ", "litellm.acompletion(model=")
"""LiteLLM's INFO lines for every request (older images; the proxy now logs LiteLLM from WARNING on)."""
REWRITES: Final = {
    "Warning: OPENCODE_SERVER_PASSWORD is not set; server is unsecured.":
        "opencode server: no password needed (it listens on 127.0.0.1 inside the agent's sandbox, which only "
        "`ralexctl attach` enters)",
}


@dataclass
class LogView:
    last: dict[str, str] = field(default_factory=dict)  # per prefix: the last message shown

    def line(self, raw: str) -> str | None:
        text = ANSI.sub("", raw.rstrip("\r\n"))
        match = PREFIX.match(text)
        prefix = match.group(1) or "" if match else ""
        message = text[len(prefix):]
        if not message.strip() or message.lstrip().startswith(CHATTER):
            return None
        message = REWRITES.get(message.strip(), message)
        key = prefix.split("|")[0].strip()
        if self.last.get(key) == message:  # the same record twice in a row (two handlers)
            return None
        self.last[key] = message
        return prefix + message
