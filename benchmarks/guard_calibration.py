#!/usr/bin/env python
"""The reward-hacking guard's false stops and power, simulated (issue 27): how often the proxy-vs-rule check stops a
run whose rule pass rate does not change, with the old rule (a 0.05 fall between the 3-step window means) and the
calibrated one (:mod:`posttrain.rl.guard`: a one-sided exact test on the pooled pass counts, Bonferroni over the
run's looks, ``hacking_guard_alpha`` 0.05), and how often each catches a real fall.

    .venv/bin/python benchmarks/guard_calibration.py            # 2000 runs per setting, about 10 s in all
    .venv/bin/python benchmarks/guard_calibration.py --runs 500

Pure Python, seeded (:func:`posttrain.rl.guard.simulate_false_stops`). Each step scores ``--replies`` replies that pass
with probability p; false stops: p in {0.2, 0.5, 0.8} all run long, the proxy reward either noise that does not change
(``proxy noise``) or rising every step (``proxy rising``, the worst case: the proxy condition never holds a stop back);
power: p falls from 0.6 (or 0.5) to 0.3 (or 0.2) at the middle step, the proxy rising (what reward hacking looks like).

Grouped (GRPO/RLOO-like) rows: each step samples ``--group-sizes`` replies (num_generations) to each of a few prompts
of heterogeneous difficulty (each prompt's pass rate drawn from a Beta with mean p and a + b = ``--concentration``;
1.0 puts half the variance of a reply's outcome between prompts), the proxy rising, no change: ``new_rule`` is the
guard with its design-effect correction (the tally's group sums), ``new_rule_ungrouped`` the same replies counted as
independent; one power row per group size (p 0.6 -> 0.2).
Results: ``--output`` (default ``benchmarks/results/guard_calibration.json``) with the date and settings.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from posttrain.rl.guard import simulate_false_stops  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--replies", type=int, default=16)
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--group-prompts", type=int, nargs="+", default=[2, 4, 16], help="prompts a step")
    parser.add_argument("--concentration", type=float, default=1.0)
    parser.add_argument("--grouped-steps", type=int, default=20)
    parser.add_argument("--grouped-runs", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/guard_calibration.json")
    args = parser.parse_args(argv)
    settings = {"runs": args.runs, "replies_per_step": args.replies, "window": args.window, "steps": args.steps,
                "alpha": args.alpha, "seed": args.seed, "old_rule": "min_drop 0.05 between window means",
                "grouped": {"group_sizes": args.group_sizes, "prompts_per_step": args.group_prompts,
                            "concentration": args.concentration, "steps": args.grouped_steps,
                            "runs": args.grouped_runs}}  # fmt: skip
    common = {"replies": args.replies, "window": args.window, "runs": args.runs, "alpha": args.alpha}
    started = time.perf_counter()
    rows = []
    for steps in args.steps:
        for p in (0.2, 0.5, 0.8):
            for rising in (False, True):
                rates = simulate_false_stops(p, steps=steps, proxy_rising=rising, seed=args.seed, **common)
                rows.append({"kind": "false stops", "steps": steps, "p": p, "drop_to": None,
                             "proxy": "rising" if rising else "noise", **rates})  # fmt: skip
        for p, drop_to in ((0.6, 0.3), (0.5, 0.2)):
            rates = simulate_false_stops(p, steps=steps, drop_to=drop_to, proxy_rising=True, seed=args.seed, **common)
            rows.append({"kind": "power", "steps": steps, "p": p, "drop_to": drop_to, "proxy": "rising", **rates})
    grouped = {"steps": args.grouped_steps, "window": args.window, "runs": args.grouped_runs, "alpha": args.alpha,
               "proxy_rising": True, "seed": args.seed, "concentration": args.concentration}  # fmt: skip
    for size in args.group_sizes:
        for prompts in args.group_prompts:
            for p in (0.2, 0.5):
                rates = simulate_false_stops(p, replies=size * prompts, group_size=size, **grouped)
                rows.append({"kind": "grouped false stops", "steps": args.grouped_steps, "p": p, "drop_to": None,
                             "proxy": "rising", "group_size": size, "prompts_per_step": prompts,
                             "concentration": args.concentration, **rates})  # fmt: skip
        rates = simulate_false_stops(0.6, replies=size * 4, group_size=size, drop_to=0.2, **grouped)
        rows.append({"kind": "grouped power", "steps": args.grouped_steps, "p": 0.6, "drop_to": 0.2, "proxy": "rising",
                     "group_size": size, "prompts_per_step": 4, "concentration": args.concentration, **rates})  # fmt: skip
    margin = 3 * math.sqrt(args.alpha * (1 - args.alpha) / args.runs)  # 3 standard errors of a rate at alpha
    print(f"{'':20} {'steps':>5} {'groups':>7} {'p':>9} {'proxy':>7} {'old rule':>9} {'new rule':>9} "
          f"{'ungrouped':>9}")  # fmt: skip
    for r in rows:
        change = f"{r['p']}" if r["drop_to"] is None else f"{r['p']}->{r['drop_to']}"
        groups = f"{r['prompts_per_step']}x{r['group_size']}" if "group_size" in r else "-"
        ungrouped = f"{r['new_rule_ungrouped']:>9.3f}" if "new_rule_ungrouped" in r else f"{'-':>9}"
        print(f"{r['kind']:20} {r['steps']:>5} {groups:>7} {change:>9} {r['proxy']:>7} {r['old_rule']:>9.3f} "
              f"{r['new_rule']:>9.3f} {ungrouped}")  # fmt: skip
    worst = max(r["new_rule"] for r in rows if r["kind"] == "false stops")
    grouped_rows = [r for r in rows if r["kind"] == "grouped false stops"]
    worst_grouped = max((r["new_rule"] for r in grouped_rows), default=None)
    worst_ungrouped = max((r["new_rule_ungrouped"] for r in grouped_rows), default=None)
    if grouped_rows:
        print(f"grouped replies: worst false-stop rate {worst_grouped:.4f} with the design-effect correction, "
              f"{worst_ungrouped:.4f} counting replies as independent")  # fmt: skip
    print(f"worst false-stop rate of the new rule {worst:.4f} (alpha {args.alpha}, Monte Carlo margin {margin:.4f}); "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    from posttrain.manifest import hardware

    # a seeded simulation: the rates do not depend on the machine; it is recorded as for every results file
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": hardware(), "settings": settings,
              "results": rows,
              "worst_false_stop_rate_new": worst, "worst_grouped_false_stop_rate_new": worst_grouped,
              "worst_grouped_false_stop_rate_ungrouped": worst_ungrouped, "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
