"""The proxy's write-ahead journal: no request that may be billed goes unrecorded, even after SIGKILL.

Before a request is forwarded its hold is appended as the row it would leave if the proxy died
now (``status='interrupted'``, charged at the hold, the upper bound of its cost). When it is
settled, its real row is appended. Both are one ``write(2)`` to a file opened with ``O_APPEND``:
no fsync and no database round trip on the request path, and the data is in the kernel's page
cache the moment the call returns, so it survives the death of the process (not a power cut).

At start the journal is replayed: every settled row, and every hold that never settled, goes to
Postgres (once per request id, so replays are idempotent; a row charged at its hold gives way to the
request's real row: :data:`ralex.ledger.store.INSERT_LEDGER`) before today's
spend is read; a row Postgres refuses stays in the journal for the next start, and its cost counts
in today's spend meanwhile. While running, the journal is rewritten from what is still open (holds
in flight, rows not yet in Postgres, rows it refused) whenever it grows past a threshold.

With several replicas each has a journal of its own (``ledger-journal.<replica>.jsonl``): a replica
replays only its own at start, and the journal of a replica that is gone is replayed once, by the
replica that took its lock (:mod:`ralex.ledger.shared`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from ralex.ledger.rows import LedgerRow, row_from_json, row_json_line, row_to_json

log = logging.getLogger("ralex.ledger")
COMPACT_BYTES: Final = 1 << 20


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.size = os.fstat(self._fd).st_size

    def hold(self, row: LedgerRow) -> None:
        """A request is about to be forwarded; ``row`` is what it costs if it never settles."""
        self._append("hold", row)

    def settled(self, row: LedgerRow) -> None:
        self._append("row", row)

    def _append(self, kind: str, row: LedgerRow) -> None:
        line = row_json_line(kind, row)
        try:
            self.size += os.write(self._fd, line)
        except OSError as exc:  # a full disk must not fail the request; Postgres still gets the row
            log.error("ledger: cannot append to the journal %s (%s)", self.path, exc)

    def pending(self) -> list[LedgerRow]:
        """Rows to make sure of in Postgres: every settled row, and every hold that never settled."""
        return replay(self.path)

    def rewrite(self, holds: Iterable[LedgerRow], rows: Iterable[LedgerRow]) -> None:
        """Replace the journal by what is still open (synchronous: nothing can interleave in the loop)."""
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            for row in holds:
                fh.write(json.dumps({"hold": row_to_json(row)}, separators=(",", ":")) + "\n")
            for row in rows:
                fh.write(json.dumps({"row": row_to_json(row)}, separators=(",", ":")) + "\n")
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.size = os.fstat(self._fd).st_size

    def close(self) -> None:
        os.close(self._fd)


def replay(*paths: Path) -> list[LedgerRow]:
    """The rows journal files stand for, one per request: settled rows win over holds of the same
    request. Bare rows (the spool and rejected-row files of earlier versions) are settled rows."""
    holds: dict[str, LedgerRow] = {}
    rows: dict[str, LedgerRow] = {}
    for path in paths:
        if not path.exists():
            continue
        bad = 0
        with path.open() as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                    if "request_id" in record:  # a bare row: the spool file of earlier versions
                        kind, value = "row", record
                    else:
                        kind, value = next(iter(record.items()))
                    row = row_from_json(value)
                except (ValueError, TypeError, KeyError, StopIteration, AttributeError):
                    bad += 1  # a line cut short by a crash mid-write
                    continue
                (rows if kind == "row" else holds)[str(row.request_id)] = row
        if bad:
            log.warning("ledger: skipped %d unreadable journal lines in %s", bad, path)
    return [*rows.values(), *(row for key, row in holds.items() if key not in rows)]
