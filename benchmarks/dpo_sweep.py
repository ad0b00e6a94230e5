#!/usr/bin/env python
"""DPO's beta and learning rate, chosen by measurement: a small grid on the default DPO config, chosen on the
built-in tasks' validation pool and reported on their sealed test pool, plus the time ``precompute_ref_log_probs``
saves.

    .venv/bin/python benchmarks/dpo_sweep.py                     # needs outputs/smollm2-135m/{sft,pairs} (make pipeline-full)
    .venv/bin/python benchmarks/dpo_sweep.py --beta 0.1 0.3 --lr 5e-5 1e-4 2e-4 --steps 30 --max-samples 100
    .venv/bin/python benchmarks/dpo_sweep.py --smoke   # tiny 2-layer chat model as "SFT", off-policy builtin pairs,
                                                       # one grid point, 1 step, 2 held-out prompts: checks it runs

Every grid point trains ``recipes/configs/smollm2-135m/dpo.yaml`` (its on-policy pairs from the SFT model) with only
``beta``, ``learning_rate`` and ``output_dir`` changed, each in its own process, one after the other. The grid's
default point is trained a second time with ``precompute_ref_log_probs: true`` (same data, seed, steps): the wall-time
ratio of the two runs is printed. One evaluation run then scores the SFT model and every DPO model, greedy, on two
disjoint held-out suites (neither trained on: ``tests/tasks/test_heldout.py``): ``--select-suite`` (default
``builtin-validation``, the tasks' validation pool), on which the grid point with the best paired gain over SFT is
chosen, and ``builtin`` (the sealed test pool), on which only the chosen point's score is reported, with its 95% CI
and the paired difference DPO - SFT with its paired bootstrap 95% CI. A selection suite that reads the test pool is
refused.
Results: ``--output`` (default ``benchmarks/results/dpo_sweep.json``); the measured table is in ``docs/dpo-sweep.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes/configs/smollm2-135m/dpo.yaml"
EVAL_CONFIG = ROOT / "recipes/configs/smollm2-135m/evaluate-stages.yaml"


def run(argv: list[str], log: Path) -> float:
    """Run one stage in its own process (no accelerate launcher: one process), return its wall time."""
    env = {**os.environ, "POSTTRAIN_LAUNCHER": "none", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "posttrain.stages", *argv], cwd=ROOT, env=env, stdout=out,
                              stderr=subprocess.STDOUT)  # fmt: skip
    if done.returncode:
        sys.exit(f"dpo_sweep: {' '.join(argv[:1])} failed (exit {done.returncode}); log: {log}")
    return time.perf_counter() - start


def label(beta: float, lr: float, precompute: bool = False) -> str:
    return f"beta{beta:g}-lr{lr:g}" + ("-precompute" if precompute else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beta", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--lr", type=float, nargs="+", default=[5e-5, 1e-4, 2e-4])
    parser.add_argument("--steps", type=int, default=None, help="max_steps (default: dpo.yaml's)")
    parser.add_argument("--max-samples", type=int, default=100, help="held-out builtin prompts per task group")
    parser.add_argument("--select-suite", default="builtin-validation",
                        help="the suite the grid point is chosen on (never one reading the test pool)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None, help="keep the DPO outputs and logs here")
    parser.add_argument("--reuse", action="store_true", help="keep grid points already trained in --workdir")
    parser.add_argument("--output", type=Path, default=None, help="default benchmarks/results/dpo_sweep.json")
    parser.add_argument("--smoke", action="store_true", help="tiny model and sizes: the whole sweep end to end")
    args = parser.parse_args()
    args.output = args.output or ROOT / f"benchmarks/results/dpo_sweep{'_smoke' if args.smoke else ''}.json"
    from posttrain.evaluation.suites import SuiteError, check_selection_suite, load_suite

    try:  # before anything trains: a choice made on the test pool would make its report optimistic
        check_selection_suite(load_suite(args.select_suite), "--select-suite")
    except SuiteError as err:
        sys.exit(f"dpo_sweep: {err}")

    config_path, config = CONFIG, yaml.safe_load(CONFIG.read_text())
    eval_overrides = {}
    if args.smoke:  # the same sweep on the tests' tiny chat Llama: 1 step per point, 2 held-out prompts per group
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny import build_tiny_model

        args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dpo-sweep-smoke-"))
        args.workdir.mkdir(parents=True, exist_ok=True)
        config.update(
            model_name_or_path=str(build_tiny_model(args.workdir / "tiny-chat", chat=True)),
            datasets=[{"path": "builtin:decimal_compare", "num_samples": 8}],
            lora_r=8,
            lora_alpha=16,
            per_device_train_batch_size=2,
            warmup_steps=0,
        )
        config_path = args.workdir / "dpo-smoke.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        args.beta, args.lr, args.steps, args.max_samples = [config["beta"]], [config["learning_rate"]], 1, 2
        eval_overrides = {"max_new_tokens": 8, "batch_size": 8}
    for needed in (config["model_name_or_path"], config["datasets"][0]["path"]):
        if not needed.startswith("builtin:") and not (ROOT / needed).exists():
            sys.exit(f"dpo_sweep: {needed} is missing; run `make pipeline-full` (or its sft and pairs stages) first")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dpo-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    default = (float(config["beta"]), float(config["learning_rate"]))
    points = [(b, lr, False) for b in args.beta for lr in args.lr]
    if default not in [(b, lr) for b, lr, _ in points]:
        points.append((*default, False))
    points.append((*default, True))

    from figures import machine  # (this folder is on sys.path when the script runs)

    host = {**machine(), "loadavg_at_start": round(os.getloadavg()[0], 2)}
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    runs = {}
    for beta, lr, precompute in points:
        name = label(beta, lr, precompute)
        argv = ["dpo", "--config", str(config_path), "--beta", str(beta), "--learning_rate", str(lr),
                "--output_dir", str(work / name), "--precompute_ref_log_probs", str(precompute).lower()]  # fmt: skip
        if args.steps:
            argv += ["--max_steps", str(args.steps)]
        timing = work / f"{name}.seconds"
        if args.reuse and timing.is_file() and (work / name / "run_manifest.json").is_file():
            seconds = float(timing.read_text())
        else:
            seconds = run(argv, work / f"{name}.log")
            timing.write_text(f"{seconds}\n")
        manifest = json.loads((work / name / "run_manifest.json").read_text())
        runs[name] = {"beta": beta, "learning_rate": lr, "precompute_ref_log_probs": precompute, "seconds": seconds,
                      "train_loss": manifest.get("metrics", {}).get("train_loss")}  # fmt: skip
        print(f"{name}: {seconds:.0f} s", flush=True)

    evaluated = [n for n, r in runs.items() if not r["precompute_ref_log_probs"]]
    eval_config = yaml.safe_load(EVAL_CONFIG.read_text())
    eval_config.update(
        models=[{"label": "sft", "path": config["model_name_or_path"]}]
        + [{"label": n, "path": str(work / n)} for n in evaluated],
        suites=[args.select_suite, "builtin"],
        max_samples=args.max_samples,
        baseline="sft",
        output_dir=str(work / "eval"),
        **eval_overrides,
    )
    eval_yaml = work / "evaluate.yaml"
    eval_yaml.write_text(yaml.safe_dump(eval_config, sort_keys=False))
    if args.reuse and (work / "eval" / "results.json").is_file():
        eval_seconds = float("nan")
    else:
        eval_seconds = run(["evaluate", "--config", str(eval_yaml)], work / "evaluate.log")
    results = json.loads((work / "eval" / "results.json").read_text())
    selection = results["suites"][0]["name"]  # the suite's own name (e.g. builtin-validation)

    def table(suite_name: str, names: list[str]) -> tuple[dict, dict, str]:
        suite = next(s for s in results["suites"] if s["name"] == suite_name)
        primary = suite["primary"]
        summary = results["summary"][suite_name]
        deltas = {d["to"]: d for d in results["deltas"] if d["suite"] == suite_name and d["score"] == primary
                  and d["from"] == "sft"}  # fmt: skip
        sft = summary["sft"][primary]
        print(f"\n{suite_name} ({primary}), {sft['total']} prompts, greedy")
        print(f"{'model':24} {'score [95% CI]':22} {'vs SFT [paired 95% CI]':26} stop rate  train s")
        print(f"{'sft':24} {pct(sft['mean']):>5} [{pct(sft['low'])}, {pct(sft['high'])}]")
        scored = {}
        for name in names:
            s, d = summary[name][primary], deltas[name]
            stop = summary[name]["_generation"]["stop_rate"]
            scored[name] = {"score": s, "delta": d, "stop_rate": stop}
            print(f"{name:24} {pct(s['mean']):>5} [{pct(s['low'])}, {pct(s['high'])}]   "
                  f"{pct(d['delta'], True):>6} [{pct(d['low'], True)}, {pct(d['high'], True)}]   {pct(stop):>6}%  {runs[name]['seconds']:6.0f}")  # fmt: skip
        return scored, sft, primary

    def pct(x: float, signed: bool = False) -> str:
        return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"

    print(f"evaluation {eval_seconds:.0f} s")
    validation, sft_validation, primary = table(selection, evaluated)
    for name in evaluated:
        runs[name]["validation"] = validation[name]
    best = max(evaluated, key=lambda n: (validation[n]["delta"]["delta"], validation[n]["delta"]["low"]))
    print(f"\nchosen on {selection}: {best}; its score on the sealed test pool (nothing was chosen on it):")
    test, sft, _ = table("builtin", [best])
    runs[best].update(test[best])
    plain, pre = runs[label(*default)], runs[label(*default, True)]
    ratio = plain["seconds"] / pre["seconds"]
    print(f"\nbest: {best}; precompute_ref_log_probs at {label(*default)}: {plain['seconds']:.0f} s without, "
          f"{pre['seconds']:.0f} s with: ratio {ratio:.2f}x")  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    settings = {
        "config": str(config_path.relative_to(ROOT)) if config_path.is_relative_to(ROOT) else config_path.name,
        "start_model": config["model_name_or_path"],
        "data": config["datasets"][0]["path"],
        "max_steps": args.steps or config.get("max_steps"),
        "smoke": args.smoke,
    }
    args.output.write_text(json.dumps({"script": "benchmarks/dpo_sweep.py", "date": started, "machine": host,
                                       "settings": settings, "runs": runs, "sft": sft,
                                       "sft_validation": sft_validation, "best": best, "selection_suite": selection,
                                       "report_suite": "builtin", "precompute_ratio": ratio, "primary": primary,
                                       "max_samples": args.max_samples}, indent=2) + "\n")  # fmt: skip
    print(f"results: {args.output}")


if __name__ == "__main__":
    main()
