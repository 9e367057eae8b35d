"""Real OpenCode request sizes behind the real proxy, and what share of them candidate caps admit.

Runs the real OpenCode binary (the version the agent image pins) on this machine with the shipped
`services/opencode/opencode.json` (its `instructions` pointed at this repository's Agent OS), in a
copy of the `ralex/` package as workspace, against the real proxy, Postgres and the fake
OpenRouter. A small recorder between OpenCode and the proxy keeps every body exactly as OpenCode
sent it and the proxy's answer status. The fake's replies are scripted with tool calls that match
the tools OpenCode offers, so OpenCode really runs them (reads, greps, bash, an edit) and sends
their results back. The proxy's caps are set high while recording, so nothing is refused.

Sessions:
  1. first step: `opencode run "fix the typo in hello.py"` (one tool call, then the answer);
  2. a 20-step turn (reads, grep, glob, bash, an edit, ...), then the answer;
  3. a long session on `ralex/smart`: turns that each read four ~48 KB files, until the prompt
     passes ~200k real tokens (the smart model's context); then, kept apart ("past_context", out of
     the figures), more turns until OpenCode compacts: it counts context from the usage its provider
     reports, and the fake's (~4 characters a token) is below Claude's, so it compacts later here.

For each request OpenCode sent: body bytes, the proxy's prompt bound (one token per UTF-8 byte),
real token counts (o200k_base and Anthropic's tokenizer, both bundled offline with LiteLLM), its
kind (step, title, summary) and its worst case on cheap and on smart. Then every step is offered to
the budget engine's side-effect-free preview as a `smart` request under candidate cap pairs:
admitted on smart (possibly with max_tokens clamped), stepped down to cheap, or refused.

    uv run --frozen python -m bench.agent_sizes_bench [--opencode PATH] [--keep]

Needs Docker (Postgres), node/npm (to install OpenCode unless --opencode is given) and git.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx

from bench.stack import DATA, environment, start_fake, stop_process, summary, table, write_results
from tests.integration.conftest import ROOT, Fake, free_port, start_postgres, start_proxy

OPENCODE_VERSION = "1.18.33"
AGENT_KEY = "sk-ralex-test-agent"
PRICES = {  # USD per token: (input, output), as OpenRouter lists them
    "cheap": (0.10e-6, 0.40e-6),   # google/gemini-2.5-flash-lite
    "smart": (3.0e-6, 15.0e-6),    # anthropic/claude-sonnet-4.5
}
DEFAULT_MAX_TOKENS = 4096
CHEAP_CAPS = (0.05, 0.10, 0.20)
SMART_CAPS = (0.30, 0.60, 1.00, 2.00)
STRICT_CAPS = (0.001, 0.01)   # the caps sized for one-shot chat prompts, for reference
CAP_PAIRS = [STRICT_CAPS, *((c, s) for c in CHEAP_CAPS for s in SMART_CAPS)]
# The environment the agent image sets (services/opencode/Dockerfile).
IMAGE_ENV = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "NPM_CONFIG_UPDATE_NOTIFIER": "false",
    "NPM_CONFIG_FUND": "false",
    "NPM_CONFIG_AUDIT": "false",
}
BIG_FILE_BYTES = 48_000   # below the read tool's 50 KB output limit: each read returns the whole file
LONG_SESSION_TARGET = 200_000   # real (Anthropic) prompt tokens at which the long session stops
READS_PER_TURN = 4
MAX_LONG_TURNS = 12


# --- the recorder between OpenCode and the proxy ----------------------------------------------

class Recorder:
    """An HTTP relay that keeps every request body as the client sent it and the answer's status.

    Answers are relayed whole (a stream arrives at once): sizes, not timings, are measured here.
    """

    HOP: ClassVar[frozenset[str]] = frozenset(
        {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding"})

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.records: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.client = httpx.Client(timeout=600)
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("content-length") or 0))

            def _relay(self) -> None:
                data = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in Recorder.HOP}
                response = recorder.client.request(self.command, recorder.target + self.path, content=data,
                                                   headers=headers)
                if self.command == "POST" and self.path.endswith("/chat/completions"):
                    record: dict[str, Any] = {
                        "raw": data, "status": response.status_code,
                        "headers": sorted(k.lower() for k in self.headers),
                        "route": response.headers.get("x-ralex-route"),
                        "upstream_model": response.headers.get("x-ralex-model"),
                    }
                    if response.status_code != 200:
                        record["error"] = response.text[:2000]
                    with recorder.lock:
                        recorder.records.append(record)
                self.send_response(response.status_code)
                for key, value in response.headers.items():
                    if key.lower() not in Recorder.HOP | {"content-encoding"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            do_GET = do_POST = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def take(self) -> list[dict[str, Any]]:
        with self.lock:
            taken, self.records = self.records, []
        return taken

    def close(self) -> None:
        self.server.shutdown()
        self.client.close()


# --- OpenCode ----------------------------------------------------------------------------------

def install_opencode(prefix: Path) -> Path:
    """`npm install opencode-ai@VERSION` into ``prefix``; the postinstall puts the binary in bin/."""
    subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-fund", "--no-audit",
                    f"opencode-ai@{OPENCODE_VERSION}"], check=True, capture_output=True, timeout=600)
    package = prefix / "node_modules" / "opencode-ai"
    binary = package / "bin" / "opencode.exe"
    if subprocess.run([str(binary), "--version"], capture_output=True, check=False).returncode != 0:
        subprocess.run(["node", "postinstall.mjs"], cwd=package, check=True, capture_output=True)
    return binary


def opencode_config(tmp: Path) -> Path:
    """The shipped config, its instructions pointed at this repository's Agent OS."""
    config = json.loads((ROOT / "services" / "opencode" / "opencode.json").read_text())
    config["instructions"] = [str(ROOT / "agent-os" / "standards" / "*.md")]
    path = tmp / "opencode.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def make_workspace(tmp: Path) -> Path:
    """A copy of the `ralex/` package (a realistic code base), a hello.py with a typo, a git repo."""
    ws = tmp / "workspace"
    shutil.copytree(ROOT / "ralex", ws, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (ws / "hello.py").write_text('def hello() -> None:\n    print("Helo, world")\n\n\nif __name__ == "__main__":\n'
                                 '    hello()\n')
    git = ["git", "-c", "user.email=bench@ralex.invalid", "-c", "user.name=bench"]
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([*git, "add", "-A"], cwd=ws, check=True)
    subprocess.run([*git, "commit", "-qm", "workspace"], cwd=ws, check=True)
    return ws


def big_files(ws: Path, count: int) -> list[Path]:
    """``count`` files of ~48 KB each, concatenations of the repository's Python sources."""
    sources = sorted(p for folder in ("ralex", "ralex_ctl", "tests", "bench") for p in (ROOT / folder).rglob("*.py")
                     if "__pycache__" not in p.parts)
    lines: list[str] = []
    for path in sources:
        lines.append(f"# ---- {path.relative_to(ROOT)} ----")
        lines += [line[:400] for line in path.read_text(errors="replace").splitlines()]
    out_dir = ws / "big"
    out_dir.mkdir(exist_ok=True)
    files: list[Path] = []
    cursor = 0
    for n in range(count):
        chunk: list[str] = []
        size = 0
        while size < BIG_FILE_BYTES - 500:
            line = lines[cursor % len(lines)]
            cursor += 1
            chunk.append(line)
            size += len(line.encode()) + 1
        path = out_dir / f"part_{n:02d}.py"
        path.write_text("\n".join(chunk) + "\n")
        files.append(path)
    return files


class OpenCode:
    def __init__(self, binary: Path, config: Path, home: Path, ws: Path, proxy_url: str, log: Path) -> None:
        self.binary, self.ws, self.log = binary, ws, log
        home.mkdir(parents=True, exist_ok=True)
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TERM": "dumb",
                    "OPENCODE_CONFIG": str(config), "RALEX_PROXY_URL": proxy_url, "RALEX_AGENT_KEY": AGENT_KEY,
                    **IMAGE_ENV}

    def run(self, message: str, *args: str, timeout: float = 900) -> int:
        with self.log.open("ab") as out:
            out.write(f"\n$ opencode run {' '.join(args)} {message!r}\n".encode())
            out.flush()
            return subprocess.run([str(self.binary), "run", *args, message], cwd=self.ws, env=self.env,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False).returncode


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}], "requires_tools": True}


def answer(text: str) -> dict[str, Any]:
    return {"content": text, "requires_tools": True}


def twenty_steps(ws: Path) -> list[dict[str, Any]]:
    """20 tool calls a coding agent makes in one turn: explore, read, search, edit, verify."""
    def f(rel: str) -> str:
        return str(ws / rel)

    policy = (ws / "policy.py").read_text().splitlines()
    old = next(line for line in policy if line.strip().startswith('"""') and len(line.strip()) > 20)
    return [
        call("todowrite", todos=[
            {"content": "find where per-request caps are applied", "status": "in_progress", "priority": "high"},
            {"content": "make the cap refusal name the preset", "status": "pending", "priority": "medium"},
            {"content": "verify the package still compiles", "status": "pending", "priority": "medium"}]),
        call("glob", pattern="**/*.py"),
        call("grep", pattern="max_cost_per_request", include="*.py"),
        call("read", filePath=f("policy.py")),
        call("read", filePath=f("engine.py")),
        call("grep", pattern="def (route|preview|explain)\\b"),
        call("read", filePath=f("budget.py")),
        call("read", filePath=f("config.py")),
        call("bash", command="ls -la", description="List workspace files"),
        call("read", filePath=f("request.py"), offset=1, limit=200),
        call("grep", pattern="Refusal\\(", path=str(ws)),
        call("read", filePath=f("params.py")),
        call("read", filePath=f("proxy/hooks.py")),
        call("glob", pattern="proxy/*.py"),
        call("read", filePath=f("proxy/runtime.py"), offset=200, limit=200),
        call("edit", filePath=f("policy.py"), oldString=old, newString=old.replace('"""', '"""NOTE: ', 1)),
        call("bash", command="python3 -m py_compile policy.py engine.py budget.py && echo compiled",
             description="Compile the changed modules"),
        call("bash", command="git diff --stat", description="Show changed files"),
        call("read", filePath=f("classify.py"), offset=1, limit=120),
        call("todowrite", todos=[
            {"content": "find where per-request caps are applied", "status": "completed", "priority": "high"},
            {"content": "make the cap refusal name the preset", "status": "completed", "priority": "medium"},
            {"content": "verify the package still compiles", "status": "completed", "priority": "medium"}]),
        answer("Caps are applied in policy.route via worst_case_cost; I noted it in policy.py's docstring and "
               "the package compiles. Files changed: policy.py."),
    ]


# --- measuring -----------------------------------------------------------------------------------

def tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        raise SystemExit("litellm is not installed; run `uv sync`")
    return Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"


def counters() -> dict[str, Callable[[str], int]]:
    """o200k_base (tiktoken) and Anthropic's tokenizer, both from LiteLLM's bundled files."""
    os.environ["TIKTOKEN_CACHE_DIR"] = str(tokenizer_dir())
    import tiktoken
    import tokenizers

    o200k = tiktoken.get_encoding("o200k_base")
    anthropic = tokenizers.Tokenizer.from_file(str(tokenizer_dir() / "anthropic_tokenizer.json"))
    return {"o200k": lambda text: len(o200k.encode(text, disallowed_special=())),
            "anthropic": lambda text: len(anthropic.encode(text).ids)}


def prompt_texts(body: dict[str, Any]) -> list[str]:
    """What a provider tokenizes: every message's text, tool calls' JSON, and the tool definitions."""
    texts: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if message.get("tool_calls"):
            texts.append(json.dumps(message["tool_calls"]))
    if body.get("tools"):
        texts.append(json.dumps(body["tools"]))
    return texts


def kind_of(body: dict[str, Any]) -> str:
    """title (the session title), summary (a compaction: the conversation summarised) or step."""
    messages = body.get("messages", [])
    system = " ".join(m["content"] for m in messages if m.get("role") == "system" and isinstance(m.get("content"), str))
    if "title generator" in system:
        return "title"
    last = json.dumps(messages[-1:]).lower() if messages and messages[-1].get("role") == "user" else ""
    if "tasked with summarizing" in system.lower() or any(
            word in last for word in ("summar", "continuing our conversation", "compact")):
        return "summary"  # the bench's own prompts never use these words
    return "step"


def measure(record: dict[str, Any], count: dict[str, Callable[[str], int]], session: str, index: int
            ) -> dict[str, Any]:
    from ralex.request import estimate_prompt_tokens

    body = json.loads(record["raw"])
    bound = estimate_prompt_tokens(body.get("messages", []), body.get("tools"))
    texts = prompt_texts(body)
    real = {name: sum(fn(t) for t in texts) for name, fn in count.items()}
    sent_max = body.get("max_completion_tokens") or body.get("max_tokens")
    max_tokens = sent_max or DEFAULT_MAX_TOKENS
    worst = {alias: round(bound * pin + max_tokens * pout, 6) for alias, (pin, pout) in PRICES.items()}
    return {
        "session": session, "index": index, "kind": kind_of(body), "model": body.get("model"),
        "status": record["status"], "route": record.get("route"), "upstream_model": record.get("upstream_model"),
        "bytes": len(record["raw"]), "messages": len(body.get("messages", [])),
        "tool_messages": sum(1 for m in body.get("messages", []) if m.get("role") == "tool"),
        "tools": len(body.get("tools") or []), "tools_bytes": len(json.dumps(body.get("tools") or []).encode()),
        "bound_tokens": bound, "o200k_tokens": real["o200k"], "anthropic_tokens": real["anthropic"],
        "bound_over_real": round(bound / max(real.values()), 3) if max(real.values()) else None,
        "max_tokens_sent": sent_max, "worst_case_usd": worst,
        "keys": sorted(body), "params": {k: v for k, v in body.items() if k not in ("messages", "tools")},
        "headers": record["headers"], **({"error": record["error"]} if "error" in record else {}),
    }


def admission(bodies: Sequence[tuple[dict[str, Any], dict[str, Any]]], cheap_cap: float, smart_cap: float
              ) -> dict[str, Any]:
    """Each step offered to the engine's preview as a `smart` request under these caps ($5 day, none spent).

    Title and summary calls keep the alias OpenCode asked for (the policy sends them cheap anyway).
    """
    from ralex.budget import Thresholds
    from ralex.engine import BudgetEngine
    from ralex.keys import OPERATOR
    from ralex.ledger.rows import BudgetSettings
    from ralex.policy import AliasSpec, Decision, RoutingConfig
    from ralex.request import ChatRequest

    aliases = {
        "cheap": AliasSpec("cheap", "google/gemini-2.5-flash-lite", *PRICES["cheap"], cheap_cap),
        "smart": AliasSpec("smart", "anthropic/claude-sonnet-4.5", *PRICES["smart"], smart_cap),
        "yolo": AliasSpec("yolo", "google/gemini-2.5-flash-lite", *PRICES["cheap"], cheap_cap),
    }
    routing = RoutingConfig(aliases=aliases, fallbacks={"cheap": ("smart",)}, default_max_tokens=DEFAULT_MAX_TOKENS)
    settings = BudgetSettings(daily_limit=5.0, timezone="UTC", thresholds=Thresholds())
    engine = BudgetEngine(routing, settings, 0.0, clock=lambda: datetime.now(UTC), sink=lambda row: None)
    counts = {"smart": 0, "smart_clamped": 0, "cheap": 0, "refused": 0, "housekeeping_refused": 0}
    worst_admitted = 0.0
    hold_over_billed: list[float] = []
    for measured, body in bodies:
        step = measured["kind"] == "step"
        if measured["kind"] == "step":
            body = {**body, "model": "smart"}
        else:
            body = {**body, "model": str(body.get("model", "cheap")).split("/")[-1]}
        outcome = engine.preview(body)
        if not isinstance(outcome, Decision):
            counts["refused" if step else "housekeeping_refused"] += 1
            continue
        # The upstream answers and reports its prompt tokens: the next step is held by them (ralex/prefix.py).
        request = ChatRequest.from_body(body)
        assert request.prefixes is not None
        billed = billed_tokens(measured)
        known = engine.prefixes.bound(OPERATOR, outcome.model, request.prefixes)
        hold = min(known, request.prompt_tokens) if known else request.prompt_tokens
        hold_over_billed.append(hold / billed)
        engine.prefixes.remember(OPERATOR, outcome.model, request.prefixes, billed)
        worst_admitted = max(worst_admitted, outcome.worst_case)
        if not step:
            continue
        if outcome.alias == "smart":
            counts["smart"] += 1
            if outcome.max_tokens < (measured["max_tokens_sent"] or DEFAULT_MAX_TOKENS):
                counts["smart_clamped"] += 1
        else:
            counts["cheap"] += 1
    steps = sum(1 for m, _ in bodies if m["kind"] == "step")
    return {"cheap_cap": cheap_cap, "smart_cap": smart_cap, "steps": steps, **counts,
            "share_smart": counts["smart"] / steps if steps else None,
            "share_cheap": counts["cheap"] / steps if steps else None,
            "share_refused": counts["refused"] / steps if steps else None,
            "worst_admitted_usd": round(worst_admitted, 6),
            "hold_over_billed": summary(hold_over_billed),
            "held_under_the_bill": sum(1 for r in hold_over_billed if r < 1)}


TEMPLATE_TOKENS = 4
"""A chat template's tokens per message (role, separators), on top of what the tokenizers count."""


def billed_tokens(measured: dict[str, Any]) -> int:
    """What a provider bills for a recorded request's prompt: the larger real tokenizer count of its
    texts, plus the template's tokens per message."""
    return max(measured["o200k_tokens"], measured["anthropic_tokens"]) + TEMPLATE_TOKENS * measured["messages"]


# --- the run -------------------------------------------------------------------------------------

@contextmanager
def stack(tmp: Path) -> Iterator[tuple[Fake, Any, Recorder]]:
    fake_process, fake = start_fake(tmp / "fake.log")
    pg = None
    proxy = None
    recorder = None
    try:
        pg = start_postgres()
        proxy = start_proxy(pg.new_database(), fake, tmp)
        response = proxy.client.put("/ralex/budget", json={
            "daily_limit": 100, "caps": {"cheap": 5, "smart": 5, "yolo": 5}, "by": "agent-sizes-bench"})
        response.raise_for_status()
        recorder = Recorder(f"http://127.0.0.1:{proxy.port}")
        yield fake, proxy, recorder
    finally:
        if recorder is not None:
            recorder.close()
        if proxy is not None:
            proxy.stop()
        if pg is not None:
            pg.container.stop()
        stop_process(fake_process)


def record_sessions(opencode: OpenCode, fake: Fake, recorder: Recorder, count: dict[str, Callable[[str], int]]
                    ) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]], dict[str, Any]]:
    """Run the three sessions; return the measured requests per session, their bodies, and notes."""
    sessions: dict[str, list[dict[str, Any]]] = {}
    bodies: dict[str, list[dict[str, Any]]] = {}
    notes: dict[str, Any] = {}
    ws = opencode.ws

    def take(name: str) -> list[dict[str, Any]]:
        records = recorder.take()
        start = len(sessions.get(name, []))
        measured = [measure(r, count, name, start + i) for i, r in enumerate(records)]
        sessions.setdefault(name, []).extend(measured)
        bodies.setdefault(name, []).extend(json.loads(r["raw"]) for r in records)
        upstream = notes.setdefault("upstream_keys", {})  # the body as the proxy forwarded it
        for sent in fake.requests():
            for key in sent["body"]:
                upstream[key] = upstream.get(key, 0) + 1
        return measured

    # 1. the first step of a typo fix: one tool call, then the answer
    fake.reset()
    fake.script(call("edit", filePath=str(ws / "hello.py"), oldString="Helo", newString="Hello"),
                answer("Fixed the typo in hello.py: \"Helo\" -> \"Hello\"."))
    notes["first_step_exit"] = opencode.run("fix the typo in hello.py")
    first = take("first_step")
    notes["tools_offered"] = next(([t["function"]["name"] for t in b["tools"]] for b in bodies["first_step"]
                                   if b.get("tools")), [])
    print(f"first step: {len(first)} requests", flush=True)

    # 2. a 20-step turn
    fake.reset()
    fake.script(*twenty_steps(ws))
    notes["twenty_step_exit"] = opencode.run(
        "find where the per-request caps are applied, note it in the module docstring and check it compiles")
    twenty = take("twenty_steps")
    print(f"20-step turn: {len(twenty)} requests", flush=True)

    # 3. a long session on smart, growing by whole-file reads until ~200k real tokens or compaction
    files = big_files(ws, READS_PER_TURN * MAX_LONG_TURNS)
    turns = 0
    compacted = False
    name = "long_session"
    for turn in range(MAX_LONG_TURNS):
        if compacted:
            break
        fake.reset()
        reads = files[turn * READS_PER_TURN:(turn + 1) * READS_PER_TURN]
        fake.script(*(call("read", filePath=str(p)) for p in reads),
                    answer(f"Read {len(reads)} more parts; they repeat the package's modules and tests."))
        args = ("-m", "ralex/smart") + (("-c",) if turn else ())
        notes.setdefault("long_session_exits", []).append(
            opencode.run(f"read the next {len(reads)} files in big/ (part {turn * READS_PER_TURN} on) and tell me "
                         "what is in them", *args))
        measured = take(name)
        turns += 1
        steps = [m for m in measured if m["kind"] == "step"]
        biggest = max((m["anthropic_tokens"] for m in steps), default=0)
        compacted = any(m["kind"] == "summary" for m in measured)
        print(f"{name} turn {turn + 1}: {len(measured)} requests, largest prompt {biggest} Anthropic tokens"
              f"{', compaction seen' if compacted else ''}", flush=True)
        if biggest >= LONG_SESSION_TARGET and name == "long_session":
            # Past the smart model's 200k context a real provider refuses the prompt; OpenCode counts
            # context from the usage its provider reports (the fake's is ~4 characters a token, fewer
            # than Claude's), so the session goes on, apart, until OpenCode compacts.
            notes["long_session_turns"] = turns
            name = "past_context"
    notes["turns_until_compaction"] = turns
    notes["compacted"] = compacted
    summaries = [m for rows in sessions.values() for m in rows if m["kind"] == "summary"]
    notes["summary_requests"] = [{k: m[k] for k in ("session", "index", "bytes", "bound_tokens", "anthropic_tokens",
                                                      "tools", "max_tokens_sent")} for m in summaries]
    return sessions, [b for name in sessions for b in bodies[name]], notes


def distribution(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def pick(key: str) -> list[float]:
        return [r[key] for r in rows if r.get(key) is not None]

    return {key: summary(pick(key)) for key in
            ("bytes", "bound_tokens", "o200k_tokens", "anthropic_tokens", "bound_over_real")} | {
        "worst_case_cheap_usd": summary([r["worst_case_usd"]["cheap"] for r in rows]),
        "worst_case_smart_usd": summary([r["worst_case_usd"]["smart"] for r in rows]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opencode", type=Path, help=f"an OpenCode {OPENCODE_VERSION} binary (default: npm install)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, workspace)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ralex-agent-sizes-"))
    try:
        binary = args.opencode or install_opencode(tmp / "opencode")
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout.strip()
        if version != OPENCODE_VERSION:
            raise SystemExit(f"OpenCode {version} found, {OPENCODE_VERSION} expected")
        if shutil.which("rg") is None:
            raise SystemExit("ripgrep (rg) is not on PATH: OpenCode's grep and glob tools need it, as in the agent "
                             "image (apt-get install ripgrep)")
        count = counters()
        ws = make_workspace(tmp)
        with stack(tmp) as (fake, _proxy, recorder):
            opencode = OpenCode(binary, opencode_config(tmp), tmp / "home", ws, recorder.url, tmp / "opencode.log")
            sessions, bodies, notes = record_sessions(opencode, fake, recorder, count)
            refused = [r for rows in sessions.values() for r in rows if r["status"] != 200]
        report(sessions, bodies, notes, refused, version)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def report(sessions: dict[str, list[dict[str, Any]]], bodies: list[dict[str, Any]], notes: dict[str, Any],
           refused: list[dict[str, Any]], version: str) -> None:
    every = [r for name in sessions for r in sessions[name]]
    measured = [(r, b) for r, b in zip(every, bodies, strict=True) if r["session"] != "past_context"]
    rows = [r for r, _ in measured]
    pairs = measured
    keys = sorted({k for r in every for k in r["keys"]})
    key_counts = {k: sum(1 for r in every if k in r["keys"]) for k in keys}
    param_values = sorted({json.dumps(r["params"], sort_keys=True) for r in every})
    headers = sorted({h for r in every for h in r["headers"]})
    caps = [admission(pairs, c, s) for c, s in CAP_PAIRS]
    caps_by_session = {name: [admission([p for p in pairs if p[0]["session"] == name], c, s) for c, s in CAP_PAIRS]
                       for name in sessions if name != "past_context"}
    results = {
        "environment": environment() | {"opencode": version},
        "method": __doc__,
        "notes": notes,
        "top_level_keys": key_counts,
        "parameter_values": [json.loads(v) for v in param_values],
        "request_headers": headers,
        "refused_by_proxy": [{k: r.get(k) for k in ("session", "index", "status", "error")} for r in refused],
        "distribution": {name: distribution(rs) for name, rs in sessions.items()}
                        | {"all_steps": distribution([r for r in rows if r["kind"] == "step"])},
        "caps": caps,
        "caps_by_session": caps_by_session,
        "requests": every,
    }
    write_results("agent_sizes", results)
    DATA.mkdir(parents=True, exist_ok=True)
    with (DATA / "agent-session-sizes.jsonl").open("w") as f:
        for r in every:
            f.write(json.dumps({k: r[k] for k in (
                "session", "index", "kind", "model", "status", "bytes", "messages", "tool_messages", "tools",
                "tools_bytes", "bound_tokens", "o200k_tokens", "anthropic_tokens", "max_tokens_sent")}) + "\n")

    print(f"\nOpenCode {version}: {len(every)} requests; top-level keys (requests holding it): "
          + ", ".join(f"{k} {n}" for k, n in key_counts.items()))
    print("parameters besides messages and tools, as sent: " + "; ".join(param_values))
    print("request headers: " + ", ".join(headers))
    print(f"refused by the proxy: {len(refused)}" + "".join(f"\n  {r['status']}: {r.get('error')}" for r in refused))
    dist_rows = []
    for name, rs in [*sessions.items(), ("all steps", [r for r in rows if r["kind"] == "step"])]:
        d = distribution(rs)
        for key in ("bytes", "bound_tokens", "anthropic_tokens", "o200k_tokens", "bound_over_real"):
            s = d[key]
            pattern = "{:.2f}" if key == "bound_over_real" else "{:,.0f}"
            dist_rows.append([f"{name}: {key}", s["n"],
                              *(pattern.format(s[p]) for p in ("min", "p50", "p90", "p99", "max"))])
    print(table(["session: measure", "n", "min", "p50", "p90", "p99", "max"], dist_rows,
                "\nRequest sizes (kinds: " + ", ".join(
                    f"{k} {sum(1 for r in every if r['kind'] == k)}" for k in ("step", "title", "summary")) + ")"))
    print(table(["cheap cap", "smart cap", "steps", "smart", "of them clamped", "cheap", "refused", "worst admitted"],
                [[f"${c['cheap_cap']:.3f}", f"${c['smart_cap']:.2f}", c["steps"],
                  f"{c['share_smart']:.1%}", c["smart_clamped"], f"{c['share_cheap']:.1%}",
                  f"{c['share_refused']:.1%}", f"${c['worst_admitted_usd']:.3f}"] for c in caps],
                "\nEvery recorded step asked as `smart` (titles and summaries as sent), $5 day, nothing spent"))
    print(table(["cheap cap", "smart cap", "hold / billed p50", "p90", "p99", "max", "held under the bill"],
                [[f"${c['cheap_cap']:.3f}", f"${c['smart_cap']:.2f}",
                  *(f"{c['hold_over_billed'][p]:.2f}" for p in ("p50", "p90", "p99", "max")),
                  c["held_under_the_bill"]] for c in caps],
                "\nThe hold's prompt tokens over the billed ones, each request after the upstream billed the ones "
                "before (ralex/prefix.py)"))
    names = list(caps_by_session)
    print(table(["cheap cap", "smart cap", *names],
                [[f"${c['cheap_cap']:.3f}", f"${c['smart_cap']:.2f}",
                  *(f"{by[i]['share_smart']:.0%} / {by[i]['share_cheap']:.0%} / {by[i]['share_refused']:.0%}"
                    for by in (caps_by_session[n] for n in names))] for i, c in enumerate(caps)],
                "\nPer session: smart / stepped down to cheap / refused"))
    print("\nupstream (as the proxy forwarded them) keys: " + ", ".join(
        f"{k} {n}" for k, n in sorted(notes.get("upstream_keys", {}).items())))
    print(f"\nlong session: {notes.get('long_session_turns', notes['turns_until_compaction'])} turns to "
          f"{LONG_SESSION_TARGET:,} real tokens; compaction "
          + (f"after {notes['turns_until_compaction']} turns: " + json.dumps(notes["summary_requests"])
             if notes["compacted"] else f"not seen in {notes['turns_until_compaction']} turns"))


if __name__ == "__main__":
    main()
