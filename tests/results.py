"""Figures a test measured, kept for the README only on purpose.

A plain test run writes nothing into the checkout. With RALEX_RESULTS_DIR set (e.g.
`RALEX_RESULTS_DIR=bench/results uv run --frozen pytest -m integration`), each named file there is
updated: `record("faults.json", "sigkill", {...})` merges one entry, `record("alerts.json", None,
{...})` replaces the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def results_dir() -> Path | None:
    """Where measured figures go, or None when the run is not meant to keep them."""
    where = os.environ.get("RALEX_RESULTS_DIR", "").strip()
    return Path(where) if where else None


def record(file: str, name: str | None, figures: dict[str, Any]) -> Path | None:
    """Merge `figures` under `name` into RALEX_RESULTS_DIR/file (or replace the file when name is None)."""
    where = results_dir()
    if where is None:
        return None
    where.mkdir(parents=True, exist_ok=True)
    path = where / file
    if name is None:
        data: dict[str, Any] = figures
    else:
        data = json.loads(path.read_text()) if path.exists() else {}
        data[name] = figures
    path.write_text(json.dumps(data, indent=2, sort_keys=name is not None) + "\n")
    return path
