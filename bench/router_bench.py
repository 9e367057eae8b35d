"""Router quality and cost: accuracy, smart tasks sent cheap, and cost relative to always-smart.

Method: every labelled prompt goes through the real policy (`ralex.policy.route`) with a full
budget and the shipped config's aliases and default prices. Cost per task is the price of a
typical agent step on the routed model (`--prompt-tokens` in, `--output-tokens` out), compared
with sending every task to smart. Data sets: the labelled dev set the router was tuned on, and
held-out sets written independently of the router (`bench/data/routing_holdout*.jsonl`).

    python -m bench.router_bench [--dev ../shared/routing/dev.jsonl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from ralex.budget import BudgetSnapshot
from ralex.classify import classify
from ralex.config import load_config
from ralex.policy import Decision, RouteInput, route
from ralex.pricing import Price, routing_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_PRICES = {  # OpenRouter list prices (USD per token) of the shipped default models
    "google/gemini-2.5-flash-lite": Price(1e-7, 4e-7),
    "anthropic/claude-sonnet-4.5": Price(3e-6, 1.5e-5),
}


def load(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluate(rows: list[dict[str, str]], prompt_tokens: int, output_tokens: int) -> dict[str, float]:
    config = load_config(ROOT / "config" / "ralex.yaml")
    routing = routing_config(config, DEFAULT_PRICES)
    snapshot = BudgetSnapshot(limit=1000.0, spent=0.0, reserved=0.0, timezone="UTC", now=datetime.now(UTC))
    smart = routing.aliases["smart"]
    cost_smart = prompt_tokens * smart.prompt_price + output_tokens * smart.completion_price
    correct = smart_total = smart_sent_cheap = 0
    cost = 0.0
    timings = []
    for row in rows:
        started = time.perf_counter_ns()
        decision = route(RouteInput("auto", row["prompt"], prompt_tokens, output_tokens), snapshot, routing)
        timings.append(time.perf_counter_ns() - started)
        assert isinstance(decision, Decision)
        label = "smart" if decision.alias == "smart" else "cheap"
        correct += label == row["label"]
        if row["label"] == "smart":
            smart_total += 1
            smart_sent_cheap += label == "cheap"
        spec = routing.aliases[decision.alias]
        cost += prompt_tokens * spec.prompt_price + output_tokens * spec.completion_price
    return {
        "prompts": len(rows),
        "accuracy": correct / len(rows),
        "smart_sent_cheap": smart_sent_cheap / smart_total if smart_total else 0.0,
        "cost_vs_always_smart": cost / (cost_smart * len(rows)),
        "decision_p50_us": statistics.median(timings) / 1000,
        "decision_p99_us": sorted(timings)[int(len(timings) * 0.99) - 1] / 1000,
    }


def classify_speed(rows: list[dict[str, str]], rounds: int = 50) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        for row in rows:
            classify(row["prompt"])
    return (time.perf_counter() - started) / (rounds * len(rows)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", type=Path, default=ROOT.parent / "shared" / "routing" / "dev.jsonl")
    parser.add_argument("--prompt-tokens", type=int, default=500, help="prompt size of a task request")
    parser.add_argument("--output-tokens", type=int, default=400, help="output size of a task request")
    args = parser.parse_args()
    sets = {"dev (tuned on)": args.dev} if args.dev.exists() else {}
    sets.update({f"held-out {p.stem.removeprefix('routing_')}": p
                 for p in sorted((ROOT / "bench" / "data").glob("routing_holdout*.jsonl"))})
    results = {}
    print(f"{'set':<24}{'n':>5}{'accuracy':>10}{'smart->cheap':>14}{'cost/always-smart':>19}"
          f"{'p50 us':>9}{'p99 us':>9}")
    all_rows: list[dict[str, str]] = []
    for name, path in sets.items():
        rows = load(path)
        all_rows += rows
        r = evaluate(rows, args.prompt_tokens, args.output_tokens)
        results[name] = r
        print(f"{name:<24}{r['prompts']:>5}{r['accuracy']:>10.1%}{r['smart_sent_cheap']:>14.1%}"
              f"{r['cost_vs_always_smart']:>19.1%}{r['decision_p50_us']:>9.1f}{r['decision_p99_us']:>9.1f}")
    results["classify_mean_us"] = classify_speed(all_rows)
    print(f"targets: accuracy >= 90%, smart->cheap <= 5%, cost <= 55% of always-smart; "
          f"classification alone: {results['classify_mean_us']:.1f} us/prompt")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "router.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
