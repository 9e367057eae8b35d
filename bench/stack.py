"""Shared pieces of the live benchmarks: the fake OpenRouter as a process, realistic agent bodies,
percentiles, tables and result files.

Postgres and the Ralex proxy are started with the integration-test helpers
(`tests.integration.conftest`), so the benchmarks run exactly what the tests run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # the reaper image cannot be pulled offline
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx

from tests.integration.conftest import Fake, Pg, free_port, start_postgres, wait_until

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATA = ROOT / "bench" / "data"


# --- processes ---------------------------------------------------------------------------------

def start_fake(log_path: Path) -> tuple[subprocess.Popen[bytes], Fake]:
    """The fake OpenRouter in its own process (as in compose), so it does not share our GIL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openrouter", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=ROOT, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"fake OpenRouter exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/models", timeout=2).status_code == 200

    wait_until(up, 30, interval=0.1, what="the fake OpenRouter to start")
    return process, Fake(f"http://127.0.0.1:{port}", state=None)  # type: ignore[arg-type]  # remote: no state


def start_backends(stack: ExitStack, work: Path) -> tuple[Pg, Fake]:
    """Postgres (testcontainers) and the fake OpenRouter in its own process, both stopped with ``stack``."""
    pg = start_postgres()
    stack.callback(pg.container.stop)
    fake_process, fake = start_fake(work / "fake.log")
    stack.callback(stop_process, fake_process)
    return pg, fake


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


_PROBLEM = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception|exception|ledger: |never reported back")
_REFUSAL = re.compile(r" - 402: ")  # LiteLLM logs every HTTPException a hook raises at ERROR, 402s included


def log_problems(path: Path, limit: int = 40) -> dict[str, Any]:
    """Lines of a process log that look like errors (tracebacks, ERROR, ledger warnings).

    Budget refusals (HTTP 402) are counted apart: LiteLLM logs each one as an ERROR.
    """
    if not path.exists():
        return {"refusals_logged_as_error": 0, "lines": 0, "first": []}
    found = [line.strip() for line in path.read_text(errors="replace").splitlines() if _PROBLEM.search(line)]
    other = [line for line in found if not _REFUSAL.search(line)]
    return {"refusals_logged_as_error": len(found) - len(other), "lines": len(other), "first": other[:limit]}


# --- request bodies ----------------------------------------------------------------------------

_GUIDELINES = (
    "You are an interactive coding agent that helps users with software engineering tasks in their "
    "repository. Use the tools available to you to read, search and edit files, and to run commands.",
    "Be concise. Answer in a few lines unless the user asks for detail. Do not add preamble or summaries "
    "of what you just did unless asked.",
    "Before editing a file, read it. Follow the conventions of the surrounding code: naming, imports, "
    "formatting, error handling, and the libraries already in use. Never assume a library is available.",
    "When you run a command that changes the system, explain what it does and why. Never commit unless "
    "the user asks you to. Never push to a remote. Never print or log secrets, keys or tokens.",
    "Prefer small, reviewable changes. Keep the diff focused on the task. Run the project's tests and "
    "linters after a change when you know how to; if you do not, ask the user for the command.",
    "Use the todo tool to plan multi-step work and mark items done as you go, so the user can follow "
    "progress. Use the grep and glob tools instead of shell find or grep.",
    "When referencing code, use the pattern file_path:line_number so the user can navigate to it. When "
    "you are unsure what the user wants, ask a short clarifying question instead of guessing.",
    "Tool results and user messages may include <system-reminder> tags. They contain useful information "
    "and reminders added by the harness; they are not part of the user's request.",
)


def system_prompt(target_bytes: int = 8192) -> str:
    """A coding agent's system prompt of about ``target_bytes`` (guidelines plus an environment block)."""
    parts: list[str] = []
    section = 0
    while sum(len(p) + 2 for p in parts) < target_bytes:
        section += 1
        parts.append(f"# Guidelines, part {section}")
        parts.extend(_GUIDELINES)
    parts.append("<env>\nWorking directory: /home/dev/project\nIs a git repo: yes\nPlatform: linux\n</env>")
    return "\n\n".join(parts)[: target_bytes + 200]


def _tool(name: str, description: str, properties: dict[str, Any], required: Sequence[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": list(required)}}}


TOOLS: list[dict[str, Any]] = [
    _tool("bash", "Run a shell command in the project directory and return its output. Use for builds, tests "
                  "and git. Commands time out after 2 minutes.",
          {"command": {"type": "string", "description": "the command"},
           "timeout": {"type": "integer", "description": "timeout in ms"}}, ["command"]),
    _tool("read", "Read a file. Returns numbered lines; use offset and limit for large files.",
          {"path": {"type": "string"}, "offset": {"type": "integer"}, "limit": {"type": "integer"}}, ["path"]),
    _tool("edit", "Replace an exact string in a file with another. The old string must be unique.",
          {"path": {"type": "string"}, "old_string": {"type": "string"}, "new_string": {"type": "string"},
           "replace_all": {"type": "boolean"}}, ["path", "old_string", "new_string"]),
    _tool("write", "Write a whole file, replacing it if it exists.",
          {"path": {"type": "string"}, "content": {"type": "string"}}, ["path", "content"]),
    _tool("grep", "Search file contents with a regular expression; returns matching files and lines.",
          {"pattern": {"type": "string"}, "path": {"type": "string"}, "include": {"type": "string"}},
          ["pattern"]),
    _tool("glob", "Find files by glob pattern, newest first.",
          {"pattern": {"type": "string"}, "path": {"type": "string"}}, ["pattern"]),
    _tool("todowrite", "Create or update the todo list of the current session.",
          {"todos": {"type": "array", "items": {"type": "object", "properties": {
              "content": {"type": "string"}, "status": {"type": "string",
                                                        "enum": ["pending", "in_progress", "completed"]}}}}},
          ["todos"]),
]

_FILE = "\n".join(
    f"{n:>4}\tdef handler_{n}(request):\n    \"\"\"Handle request {n}.\"\"\"\n    return respond(request, {n})"
    for n in range(1, 25)
)


def tasks() -> list[str]:
    """Realistic task texts (the labelled held-out prompts: a mix of cheap and smart work)."""
    found = []
    for path in sorted(DATA.glob("routing_holdout*.jsonl")):
        found += [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]
    return found or ["fix the typo in the error message of load_user"]


def agent_body(task: str, model: str, nonce: int, *, system: str, max_tokens: int | None = None,
               stream: bool = False) -> dict[str, Any]:
    """One step of a coding agent: system prompt, tools, an earlier tool round trip and the new task.

    ``nonce`` goes into a ``<system-reminder>`` (stripped before classification) so every body is a
    new user turn: ``auto`` classifies it instead of reusing a turn's earlier choice.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "look at the request handlers in app/handlers.py"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "read", "arguments": '{"path": "app/handlers.py"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": _FILE},
            {"role": "assistant", "content": "I read app/handlers.py: 24 handlers, each returns respond()."},
            {"role": "user", "content": f"{task}\n<system-reminder>step {nonce}</system-reminder>"},
        ],
        "tools": TOOLS,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
    return body


# --- statistics and output ---------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": sum(values) / len(values) if values else math.nan,
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    out = [title] if title else []
    out += [line(cells[0]), rule, *(line(r) for r in cells[1:])]
    return "\n".join(out)


def environment() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "litellm": version("litellm"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
