"""Reading a request costs linear time: parsing and classification vs body size, old regexes vs new.

Method: a request in each API's own shape (chat, Anthropic ``/v1/messages``, OpenAI ``/v1/responses``;
converted from chat as ``bench.api_overhead_bench`` does), grown to 1 KB .. 32 MB (the gate's body
limit) by one of these texts:

* ``prose``: the labelled task prompts, one after another, as the user's message;
* ``agent-step``: a short task, the bulk in a tool result (source code) - a real agent step's shape
  (from 16 KB: its own prompt and tools are ~11 KB);
* adversarial user messages: ``<system-reminder>`` repeated unclosed, closed reminders, "convert
  this " repeated (the classifier's "instead of" signal), ``a-a-a-...`` (file-path signal), "hi" and
  a run of spaces (small-edit signal), runs of NUL/CR/LF/U+2028/punctuation, and non-ASCII text
  that NFKC normalization lengthens.

Each body goes through what admission does per request: ``ChatRequest.from_body`` and ``classify``
of its task, in process, best of a few runs. The *old* column is the same work with the regexes
this version replaced (kept below) and no excerpt cap; it is skipped from the size where it is
predicted to take over ``--old-cutoff`` seconds. ``json.loads`` of the body is shown alongside: the
gate parses the body before any of this runs.

Then the cost a worst-case body puts on everyone else: an asyncio loop serves a small request every
2 ms while one worst-case body is read, on the loop or in a worker thread; the small requests'
latency (arrival to answer) is recorded.

    .venv/bin/python -m bench.parse_bench [--max-mb 32] [--old-cutoff 10] [--apis chat,messages,responses]

Results: tables on stdout and ``bench/results/parse.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.api_overhead_bench import as_messages, as_responses
from bench.stack import agent_body, environment, system_prompt, table, tasks, write_results
from ralex.classify import _QUOTED as QUOTED
from ralex.classify import READ_HEAD, READ_TAIL, SIGNALS, SMART_THRESHOLD, Classification, classify
from ralex.classify import _unwrap as unwrap
from ralex.params import check_messages, check_model
from ralex.request import (
    ChatRequest,
    chat_view,
    content_text,
    estimate_prompt_tokens,
    is_housekeeping,
    requested_max_tokens,
    session_key,
    turn_key,
)

KB = 1 << 10
MB = 1 << 20
SIZES = [KB, 4 * KB, 16 * KB, 64 * KB, 256 * KB, MB, 4 * MB, 16 * MB, 32 * MB]
APIS = ("chat", "messages", "responses")

# --- the old code: the regexes this version replaced, and no excerpt --------------------------------

OLD_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL | re.IGNORECASE)
OLD_PATTERNS = {
    "instead-of": re.compile(r"\b(instead of|(convert|turn) (this|the|it)\b.* (in)?to\b|from \S+ to \S+$)"),
    "small-edit": re.compile(
        r"^\s*([\w#+. ]{1,20}:\s+)?(hi!?,?\s+)?(pls|please|can you|could you( please)?)?\s*(quick(ly)?:?\s+)?(add"
        r"|convert|remove|delete|drop|change|replace|update|bump|set|put|move|fix|close|use|print|log|return|insert"
        r"|wrap|swap|sort|reorder|rearrange|center|centre|align|mark|give|increase|decrease|raise|lower|pin|upgrade"
        r"|import|export|expose|hide|show|enable|disable|turn)\b"),
    "local-target": re.compile(
        r"(\b[\w/-]+\.(py|js|jsx|ts|tsx|go|rs|java|kt|kts|swift|m|scala|dart|ex|exs|vue|svelte|tf|hcl|rb|php|c|h|cpp"
        r"|cs|cfg|toml|ya?ml|json|md|css|scss|html|sql|sh|ini|txt|env|lock|conf|xml|gradle|bas|vba)\b"
        r"|\b(makefile|dockerfile|package\.json)\b|`[^`\n]{1,60}`|\b\w+\(\)|\bin the same file\b|\bat the (top|bottom)"
        r" of\b|\bline \d+\b|#[0-9a-f]{3,6}\b)"),
}
OLD_SIGNALS = [(s.name, s.weight, OLD_PATTERNS.get(s.name, s.pattern)) for s in SIGNALS]


def old_classify(text: str, threshold: float = SMART_THRESHOLD) -> Classification:
    """``classify`` as it was: the whole text, the old patterns."""
    text = QUOTED.sub(" quoted ", unwrap(text)).lower()
    score, matched = 0.0, []
    for name, weight, pattern in OLD_SIGNALS:
        match = pattern.search(text)
        if match:
            score += weight
            matched.append(f"{name} '{match.group(0).strip()}'")
    words = len(re.findall(r"\w+", text))
    score += 2.0 if words > 60 else 1.0 if words > 30 else 0.0
    if text.count("\n- ") + text.count("\n* ") + len(re.findall(r"\n\d+\.", text)) >= 3:
        score += 1.5
    return Classification("smart" if score >= threshold else "cheap", score, tuple(matched))


def old_read(body: Mapping[str, Any], api: str) -> Classification:
    """Admission's reading of a body as it was: ``ChatRequest.from_body``'s steps with the old reminder regex."""
    view = chat_view(body, api)
    model = check_model(view)
    messages = check_messages(view)
    task = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            task = OLD_REMINDER.sub("", content_text(message.get("content"))).strip()
            break
    is_housekeeping(messages)
    estimate_prompt_tokens(messages, view.get("tools"))
    requested_max_tokens(view)
    turn_key(messages, model)
    session_key(messages)
    return old_classify(task)


def new_read(body: Mapping[str, Any], api: str) -> Classification:
    """Admission's reading of a body now."""
    return classify(ChatRequest.from_body(body, api).task)


# --- bodies ------------------------------------------------------------------------------------------

SYSTEM = system_prompt()


def _repeat(unit: str, chars: int) -> str:
    return (unit * (chars // len(unit) + 1))[:chars]


def _prose(chars: int) -> str:
    return _repeat("\n".join(tasks()) + "\n", chars)


CODE = "\n".join(f"def handler_{n}(request):\n    \"\"\"Handle request {n}.\"\"\"\n    return respond(request, {n})"
                 for n in range(400))
TEXTS: dict[str, Callable[[int], str]] = {
    "prose": _prose,
    "unclosed-reminder": lambda n: _repeat("<system-reminder>", n),
    "closed-reminders": lambda n: _repeat("<system-reminder>ctx</system-reminder>\n", n) + "fix the typo in a.py",
    "convert-this": lambda n: _repeat("convert this ", n),
    "hyphen-run": lambda n: _repeat("a-", n),
    "hi-spaces": lambda n: "hi" + " " * n + "add a flag",
    "controls": lambda n: _repeat("\0\r\n\u2028 \t!?.,;:'\"`", n),
    "non-ascii": lambda n: _repeat("\ufdfa \u65e5\u672c\u8a9e e\u0301 \u2460 ", n),
}
FAMILIES = ["agent-step", *TEXTS]
ADVERSARIAL = [f for f in FAMILIES if f not in ("prose", "agent-step")]


def _chat_body(family: str, chars: int) -> dict[str, Any]:
    """The agent step with its tool result grown (``agent-step``), or a lean body whose user message is
    the family's text (so sizes down to 1 KB exist)."""
    if family == "agent-step":
        body = agent_body("fix the failing test in tests/test_handlers.py", "auto", 1, system=SYSTEM)
        body["messages"][3]["content"] = _repeat(CODE, chars)
        return body
    return {"model": "auto", "tools": [], "messages": [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": TEXTS[family](chars)}]}


def build(family: str, api: str, target: int) -> tuple[dict[str, Any], int]:
    """A body of ``family`` in ``api``'s shape, about ``target`` bytes of UTF-8 JSON; and its size."""
    shape: Callable[[dict[str, Any]], dict[str, Any]] = {"chat": lambda b: b, "messages": as_messages,
                                                         "responses": as_responses}[api]
    base = len(json.dumps(shape(_chat_body(family, 0)), ensure_ascii=False).encode())
    chars = max(1, target - base)
    for _ in range(3):  # escapes and multi-byte characters: scale to the target
        body = shape(_chat_body(family, chars))
        size = len(json.dumps(body, ensure_ascii=False).encode())
        if abs(size - target) <= target * 0.02 or size <= base:
            break
        chars = max(1, int(chars * (target - base) / max(1, size - base)))
    return body, size


# --- timing ------------------------------------------------------------------------------------------

def best_of(fn: Callable[[], object], budget: float = 0.5, most: int = 25) -> float:
    """Best wall time (seconds) of ``fn`` over a few runs within about ``budget`` seconds."""
    started = time.perf_counter()
    fn()
    best = time.perf_counter() - started
    runs = min(most, int(budget / max(best, 1e-6)))
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _predicted(history: list[tuple[int, float]], size: int) -> float:
    """Old time at ``size`` from the last two measurements (growth exponent clamped to 1..3)."""
    if not history:
        return 0.0
    (s1, t1) = history[-1]
    exponent = 2.0
    if len(history) >= 2:
        (s0, t0) = history[-2]
        if t0 > 1e-4 and t1 > 1e-4 and s1 > s0:
            exponent = min(3.0, max(1.0, math.log(t1 / t0) / math.log(s1 / s0)))
    return t1 * (size / s1) ** exponent


def measure(families: Sequence[str], apis: Sequence[str], sizes: Sequence[int], cutoff: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for family in families:
        for api in apis:
            history: list[tuple[int, float]] = []
            for target in sizes:
                body, size = build(family, api, target)
                if size > 2 * target:  # the agent step's own prompt and tools are larger than this size
                    continue
                raw = json.dumps(body, ensure_ascii=False).encode()
                new = best_of(lambda b=body, a=api: new_read(b, a))
                loads = best_of(lambda r=raw: json.loads(r), budget=0.2, most=5)
                row: dict[str, Any] = {"family": family, "api": api, "target_bytes": target, "body_bytes": size,
                                       "new_ms": new * 1e3, "json_loads_ms": loads * 1e3, "old_ms": None,
                                       "old_over_new": None}
                predicted = _predicted(history, size)
                if predicted > cutoff:
                    row["old_skipped"] = f"predicted {predicted:,.0f} s (over {cutoff:g} s)"
                else:
                    old = best_of(lambda b=body, a=api: old_read(b, a), budget=min(1.0, cutoff / 4))
                    history.append((size, old))
                    row["old_ms"] = old * 1e3
                    row["old_over_new"] = old / new
                    if old > cutoff:
                        history.append((size * 1000, old * 1e9))  # nothing larger is tried
                rows.append(row)
                old_text = f"{row['old_ms']:.1f}" if row["old_ms"] is not None else "skipped"
                print(f"  {family:<18} {api:<9} {size / KB:>9.0f} KB  new {row['new_ms']:9.2f} ms  "
                      f"old {old_text:>10} ms  json.loads {row['json_loads_ms']:8.1f} ms", flush=True)
    return rows


def classifier(families: Sequence[str], chars: int) -> dict[str, float]:
    """``classify`` alone on each text family at ``chars`` characters (it reads the excerpt)."""
    out = {}
    for family in families:
        if family in TEXTS:
            text = TEXTS[family](chars)
            out[family] = best_of(lambda t=text: classify(t)) * 1e3
    return out


# --- a small request's latency while a worst-case body is read --------------------------------------

SMALL = agent_body("fix the typo in the error message of load_user", "auto", 2, system=SYSTEM)


async def _serve_small_while(work: Callable[[], object], in_thread: bool, interval: float = 0.002
                             ) -> dict[str, float]:
    """Small requests arrive every ``interval`` s; latency = arrival to answer (read + classify)."""
    latencies: list[float] = []
    done = asyncio.Event()

    async def small_requests() -> None:
        arrival = time.perf_counter()
        while not done.is_set():
            arrival += interval
            await asyncio.sleep(max(0.0, arrival - time.perf_counter()))
            now = time.perf_counter()
            if now - arrival > interval:  # requests that arrived while the loop was blocked wait together
                missed = int((now - arrival) / interval)
                latencies.extend(now - (arrival + k * interval) for k in range(missed))
                arrival += missed * interval
            new_read(SMALL, "chat")
            latencies.append(time.perf_counter() - arrival)

    server = asyncio.create_task(small_requests())
    await asyncio.sleep(0.05)
    latencies.clear()
    started = time.perf_counter()
    if in_thread:
        await asyncio.to_thread(work)
    else:
        await asyncio.sleep(0)
        work()
    busy = time.perf_counter() - started
    await asyncio.sleep(0.02)
    done.set()
    await server
    ordered = sorted(latencies)
    return {"worst_body_ms": busy * 1e3, "small_requests": len(ordered),
            "small_p50_ms": statistics.median(ordered) * 1e3,
            "small_p99_ms": ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] * 1e3,
            "small_max_ms": ordered[-1] * 1e3}


def concurrent(rows: list[dict[str, Any]], old_case: tuple[str, int]) -> list[dict[str, Any]]:
    largest = max(r["target_bytes"] for r in rows)
    worst = max((r for r in rows if r["target_bytes"] == largest), key=lambda r: r["new_ms"])
    body, size = build(worst["family"], worst["api"], largest)
    old_family, old_size = old_case
    old_body, old_bytes = build(old_family, "chat", old_size)
    agent, agent_bytes = build("agent-step", "chat", 700 * KB)
    cases = [
        ("idle (no large body)", "chat", 0, lambda: None, False),
        (f"new, agent step ({agent_bytes / KB:.0f} KB), on the loop", "chat", agent_bytes,
         lambda: new_read(agent, "chat"), False),
        (f"new, worst body ({worst['family']}, {worst['api']}, {size / MB:.0f} MB), on the loop", worst["api"], size,
         lambda: new_read(body, worst["api"]), False),
        (f"new, worst body ({worst['family']}, {worst['api']}, {size / MB:.0f} MB), in a thread", worst["api"], size,
         lambda: new_read(body, worst["api"]), True),
        (f"new, {old_family} ({old_bytes / KB:.0f} KB), on the loop", "chat", old_bytes,
         lambda: new_read(old_body, "chat"), False),
        (f"old, {old_family} ({old_bytes / KB:.0f} KB), on the loop", "chat", old_bytes,
         lambda: old_read(old_body, "chat"), False),
        (f"old, {old_family} ({old_bytes / KB:.0f} KB), in a thread", "chat", old_bytes,
         lambda: old_read(old_body, "chat"), True),
    ]
    out = []
    for name, api, nbytes, work, in_thread in cases:
        result = asyncio.run(_serve_small_while(work, in_thread))
        out.append({"case": name, "api": api, "body_bytes": nbytes, "in_thread": in_thread, **result})
        print(f"  {name:<72} body {result['worst_body_ms']:9.1f} ms  small p50 {result['small_p50_ms']:7.2f}  "
              f"p99 {result['small_p99_ms']:8.2f}  max {result['small_max_ms']:8.2f} ms", flush=True)
    return out


# --- report ------------------------------------------------------------------------------------------

def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    largest = max(r["target_bytes"] for r in rows)
    out: dict[str, Any] = {}
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        at_max = [r for r in mine if r["target_bytes"] == largest]
        compared = [r for r in mine if r["old_ms"] is not None]
        top = max(compared, key=lambda r: (r["target_bytes"], r["old_over_new"])) if compared else None
        mb = [r for r in mine if r["target_bytes"] == MB]
        out[family] = {
            f"new_ms_at_{largest // MB}mb_max": max(r["new_ms"] for r in at_max),
            "new_ms_per_mb_at_1mb": max((r["new_ms"] / (r["body_bytes"] / MB) for r in mb), default=None),
            f"new_ms_per_mb_at_{largest // MB}mb": max(r["new_ms"] / (r["body_bytes"] / MB) for r in at_max),
            "old_largest_measured_bytes": top["body_bytes"] if top else None,
            "old_ms_there": top["old_ms"] if top else None,
            "new_ms_there": top["new_ms"] if top else None,
            "old_over_new_there": top["old_over_new"] if top else None,
            "old_skipped_from_bytes": min((r["body_bytes"] for r in mine if r.get("old_skipped")), default=None),
        }
    return out


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}x" if value >= 10 else f"{value:.1f}x"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-mb", type=float, default=32, help="largest body (the gate's limit is 32 MB)")
    parser.add_argument("--old-cutoff", type=float, default=10.0, help="seconds past which the old code is not run")
    parser.add_argument("--apis", default=",".join(APIS))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--old-concurrent", default="unclosed-reminder:136",
                        help="family:KB of the old-code body in the latency test (the issue's 7.2 s case)")
    args = parser.parse_args(argv)
    sizes = [s for s in SIZES if s <= args.max_mb * MB]
    apis = [a for a in args.apis.split(",") if a]
    families = [f for f in args.families.split(",") if f]
    print(f"classifier excerpt: first {READ_HEAD} + last {READ_TAIL} characters of the task")
    print("parse + classify, best of a few runs:")
    rows = measure(families, apis, sizes, args.old_cutoff)
    summary = summarize(rows)
    largest = max(sizes)
    print()
    print(table(["family", f"new ms @{largest / MB:g} MB", "new ms/MB @1 MB", f"new ms/MB @{largest / MB:g} MB",
                 "old measured up to", "old ms", "new ms", "old/new"],
                [[f, f"{s[f'new_ms_at_{largest // MB}mb_max']:.1f}",
                  f"{s['new_ms_per_mb_at_1mb']:.1f}" if s["new_ms_per_mb_at_1mb"] is not None else "-",
                  f"{s[f'new_ms_per_mb_at_{largest // MB}mb']:.1f}",
                  f"{s['old_largest_measured_bytes'] / KB:.0f} KB" if s["old_largest_measured_bytes"] else "-",
                  f"{s['old_ms_there']:.1f}" if s["old_ms_there"] is not None else "-",
                  f"{s['new_ms_there']:.2f}" if s["new_ms_there"] is not None else "-",
                  _ratio(s["old_over_new_there"])]
                 for f, s in summary.items()],
                title="summary (worst API per family)"))
    alone = classifier(families, largest)
    worst_family = max(alone, key=alone.__getitem__)
    print(f"\nclassify alone on a {largest / MB:g} M-character task: at most {alone[worst_family]:.1f} ms "
          f"({worst_family}); " + ", ".join(f"{f} {ms:.1f}" for f, ms in alone.items()))
    old_family, old_kb = args.old_concurrent.split(":")
    print()
    print("a small request every 2 ms while one large body is read:")
    latency = concurrent(rows, (old_family, int(float(old_kb) * KB)))
    path = write_results("parse", {
        "environment": environment(),
        "excerpt": {"read_head": READ_HEAD, "read_tail": READ_TAIL},
        "old_cutoff_s": args.old_cutoff,
        "summary": summary,
        "classify_alone_ms": alone,
        "concurrent": latency,
        "rows": rows,
    })
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
