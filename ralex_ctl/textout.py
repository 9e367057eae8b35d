"""The one place where text from outside (error messages, server answers, key names, Docker and Compose
output, file paths, user arguments) becomes console text: `safe_line`.

Whatever the text holds, the result prints as exactly one line, shows every character the text had (each
control, line-separator or bidi-override character as a visible escape such as ``\\n``, ``\\x00`` or
``\\u2028``), is never read as Rich markup, and is bounded in length. It runs in linear time.
"""

from __future__ import annotations

import re

LIMIT = 2000  # characters of the text that are shown; the rest is counted

# Characters that would break the line, move the cursor, ring, reach the terminal as an escape sequence,
# reorder what is shown (bidi overrides and isolates) or not encode at all (lone surrogates).
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": " "}
_HIDDEN = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028, 0x2029,
           *range(0x202A, 0x202F), *range(0x2066, 0x206A), *range(0xD800, 0xE000)]
_VISIBLE = {code: _NAMED.get(chr(code)) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
            for code in _HIDDEN}

# A `[` and, when Rich would read it as a tag (`[bold]`, `[/x]`, `[link=...]`), the tag up to its `]`;
# with the backslashes before it. Rich's own pattern for tags is ``(\\*)\[([a-z#/@][^[]*?)]``.
_BRACKET = re.compile(r"(?<!\\)(\\*)(\[(?:[a-z#/@][^[]*?\])?)")  # starts only at a run of backslashes: linear
_TRAILING_BACKSLASHES = re.compile(r"\\+\Z")
_NOTHING = "[none][/none]"  # an empty span: ends the text so that markup after it stays markup


def _escape_bracket(match: re.Match[str]) -> str:
    backslashes, bracket = match.groups()
    if len(bracket) > 1:  # a tag: an odd run of backslashes makes it text, each pair prints one backslash
        return f"{backslashes}{backslashes}\\{bracket}"
    return f"{backslashes}\\["  # a lone `[`: Rich prints `\[` as `[` and keeps the backslashes before it


def _escape_markup(text: str) -> str:
    """Markup that Rich prints as exactly ``text``, also where markup follows it.

    Unlike ``rich.markup.escape``, backslashes survive: before a `[` that is not a tag and at the end."""
    escaped = _BRACKET.sub(_escape_bracket, text)
    trailing = _TRAILING_BACKSLASHES.search(escaped)
    if trailing is None:
        return escaped
    return escaped + trailing.group() + _NOTHING  # 2n backslashes before a tag print n


def safe_line(text: object, limit: int = LIMIT) -> str:
    """``text`` as console markup that prints it on one line, visibly and verbatim otherwise.

    Print the result with markup on (Rich's default) and emoji codes off (as ralexctl's consoles do).
    Example: console.print(f"[red]refused:[/red] {safe_line(payload['message'])}")
    """
    value = text if isinstance(text, str) else str(text)
    shown = value[:limit].translate(_VISIBLE)
    if len(value) > limit:
        shown += f" ... ({len(value) - limit} more characters)"
    return _escape_markup(shown)
