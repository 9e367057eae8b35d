"""The CLI's small exception family: each says what happened and what to do."""

from __future__ import annotations


class RalexError(Exception):
    """A failure the user can fix; printed as one line, exit code 1."""


class PricesUnknown(RalexError):
    pass
