#!/usr/bin/env python
"""DPO, KTO, ORPO and SimPO side by side on the embedded model: same SFT start, same pairs, same steps.

Each method trains its default config (``recipes/configs/smollm2-135m/{dpo,kto,orpo,simpo}.yaml``: the SFT result,
the on-policy pairs ``posttrain pairs`` sampled from it -- KTO as two unpaired rows per pair, ``kto_from_pairs`` --
30 steps) with only ``output_dir`` (and ``--steps``, for all alike) changed, each in its own process, one after the
other. Its wall time and its peak resident memory (``ru_maxrss`` of that process, from ``os.wait4``) are recorded,
with the held-out margin the stage itself reports (start model → trained). One evaluation run then scores the SFT
model and the four trained ones, greedy, on the ``builtin`` suite (the built-in tasks' sealed test pool, never trained
on): each model's score with its 95% CI and the paired difference method - SFT with its paired bootstrap 95% CI.
Nothing is chosen from these measurements.

    .venv/bin/python benchmarks/preference_methods.py           # needs outputs/smollm2-135m/{sft,pairs} (make pipeline-full)
    .venv/bin/python benchmarks/preference_methods.py --smoke   # the tests' tiny chat model, 1 step each: checks it runs

Results: ``--output`` (default ``benchmarks/results/preference_methods.json``) with the machine class and the date;
the measured table is generated into ``docs/results.md``. A benchmark, not a test: it exits non-zero only when a
stage fails.
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
CONFIGS = ROOT / "recipes/configs/smollm2-135m"
EVAL_CONFIG = CONFIGS / "evaluate-stages.yaml"
METHODS = ("dpo", "kto", "orpo", "simpo")
SUITE = "builtin"


def machine_class() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return "AVX512-BF16" if "avx512_bf16" in cpuinfo else "AVX2"


def run(name: str, config: dict, work: Path, label: str) -> dict:
    """``python -m posttrain.stages <name> --config <yaml>`` in its own process (no accelerate launcher); its wall
    time and peak resident memory (exits on failure)."""
    path = work / f"{label}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "POSTTRAIN_LAUNCHER": "none", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "posttrain.stages", name, "--config", str(path)]
    print(f"[preference_methods] {label}: {' '.join(command)}", flush=True)
    log = work / f"{label}.log"
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN would be the max so far)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"[preference_methods] {label} failed (exit {proc.returncode}); log: {log}\n{log.read_text()[-3000:]}")
    peak = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20  # KiB on Linux
    print(f"[preference_methods] {label}: {seconds:.0f} s, peak RSS {peak:.0f} MiB", flush=True)
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak, 1)}


def method_config(name: str, args, work: Path) -> dict:
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    config.update(output_dir=str(work / name))
    if args.steps:
        config["max_steps"] = args.steps
    if args.smoke:  # the tests' tiny chat Llama as the "SFT" start, off-policy built-in pairs, 1 step
        config.update(
            model_name_or_path=args.start,
            datasets=[{"path": "builtin:decimal_compare", "num_samples": 8}],
            test_split_size=4,
            lora_r=8,
            lora_alpha=16,
            per_device_train_batch_size=4 if name == "kto" else 2,  # the rows of 2 pairs each
            warmup_steps=0,
            overlong_samples="truncate",
            max_steps=1,
        )
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=None, help="max_steps for every method (default: the configs')")
    parser.add_argument("--max-samples", type=int, default=100, help="test-pool prompts per task group")
    parser.add_argument("--work", type=Path, default=None, help="keep the outputs and logs here")
    parser.add_argument("--output", type=Path, default=None, help="default benchmarks/results/preference_methods.json")
    parser.add_argument("--smoke", action="store_true", help="the tests' tiny chat model, 1 step each, 2 prompts")
    args = parser.parse_args()
    args.output = args.output or ROOT / f"benchmarks/results/preference_methods{'_smoke' if args.smoke else ''}.json"
    work = args.work or Path(tempfile.mkdtemp(prefix="preference-methods-"))
    work.mkdir(parents=True, exist_ok=True)
    eval_overrides: dict = {}
    args.start = yaml.safe_load((CONFIGS / "dpo.yaml").read_text())["model_name_or_path"]
    if args.smoke:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny import build_tiny_model

        args.start = str(build_tiny_model(work / "tiny-chat", chat=True))
        args.max_samples = 2
        eval_overrides = {"max_new_tokens": 8, "batch_size": 8}
    configs = {name: method_config(name, args, work) for name in args.methods}
    for config in configs.values():
        for needed in (config["model_name_or_path"], config["datasets"][0]["path"]):
            if not needed.startswith("builtin:") and not (ROOT / needed).exists():
                sys.exit(
                    f"[preference_methods] {needed} is missing; run `make pipeline-full` (or its sft and pairs) first"
                )

    started = dt.datetime.now(dt.UTC)
    clock = time.monotonic()
    load_at_start = os.getloadavg()[0]
    runs = {}
    for name, config in configs.items():
        runs[name] = run(name, config, work, name)
        manifest = json.loads((work / name / "run_manifest.json").read_text())
        metrics = manifest.get("metrics") or {}
        runs[name].update(
            steps=config["max_steps"],
            train_loss=metrics.get("train_loss"),
            train_runtime_s=metrics.get("train_runtime"),
            heldout_margin={k: metrics.get(f"margin_{k}") for k in ("reference", "policy", "split", "rows")},
        )

    eval_config = yaml.safe_load(EVAL_CONFIG.read_text())
    eval_config.update(
        models=[{"label": "sft", "path": args.start}] + [{"label": n, "path": str(work / n)} for n in configs],
        suites=[SUITE],
        max_samples=args.max_samples,
        baseline="sft",
        output_dir=str(work / "eval"),
        **eval_overrides,
    )
    evaluation = run("evaluate", eval_config, work, "evaluate")
    results = json.loads((work / "eval" / "results.json").read_text())
    suite = next(s for s in results["suites"] if s["name"] == SUITE)
    primary = suite["primary"]
    summary = results["summary"][SUITE]
    deltas = {d["to"]: d for d in results["deltas"]
              if d["suite"] == SUITE and d["score"] == primary and d["from"] == "sft"}  # fmt: skip
    sft = summary["sft"][primary]
    print(f"\n{SUITE} ({primary}), {sft['total']} test-pool prompts, greedy")
    print(f"{'model':8} {'score [95% CI]':20} {'vs SFT [paired 95% CI]':26} {'train s':>8} {'peak MiB':>9}")
    print(f"{'sft':8} {100 * sft['mean']:5.1f} [{100 * sft['low']:.1f}, {100 * sft['high']:.1f}]")
    for name in configs:
        s, d = summary[name][primary], deltas[name]
        runs[name].update(score=s, delta=d, stop_rate=summary[name].get("_generation", {}).get("stop_rate"))
        print(f"{name:8} {100 * s['mean']:5.1f} [{100 * s['low']:.1f}, {100 * s['high']:.1f}]   "
              f"{100 * d['delta']:+6.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]       "
              f"{runs[name]['seconds']:8.0f} {runs[name]['peak_rss_mib']:9.0f}")  # fmt: skip

    report = {
        "benchmark": "preference_methods",
        "script": "benchmarks/preference_methods.py",
        "date": started.isoformat(timespec="seconds"),
        "machine": {
            "class": machine_class(),
            "cpu_count": os.cpu_count(),
            "loadavg_at_start": load_at_start,
            "omp": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
        },
        "settings": {
            "start": args.start if not args.smoke else "tests/tiny.py chat Llama",
            "data": configs[next(iter(configs))]["datasets"],
            "steps": {name: c["max_steps"] for name, c in configs.items()},
            "configs": {name: f"recipes/configs/smollm2-135m/{name}.yaml" for name in configs},
            "kto": "each pair as a desirable and an undesirable row (kto_from_pairs); batch 16 rows = 8 pairs",
            "eval": f"suite {SUITE} (test pool), {args.max_samples} prompts per task group, greedy",
            "selection": "none: no setting was chosen from this measurement",
            "smoke": args.smoke,
        },
        "primary": primary,
        "sft": sft,
        "runs": runs,
        "evaluation": evaluation,
        "total_s": round(time.monotonic() - clock, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"[preference_methods] wrote {args.output} ({report['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
