#!/usr/bin/env python
"""PPO driven by a reward model that learned the rule checks: does it raise the sealed test score?

1. **SFT model**: ``--sft`` (default ``outputs/smollm2-135m/sft`` when it exists), else a short SFT run of
   ``recipes/configs/smollm2-135m/sft.yaml`` (``--sft-steps``, default the config's own 40).
2. **On-policy pairs** (``posttrain pairs``, rule scorer): the SFT model samples ``--n`` replies to each of
   ``--train-prompts`` prompts of the built-in tasks' *train* pool; the rule checks rank them, ties are dropped, best vs
   worst is kept. The same on ``--validation-prompts`` prompts of the *validation* pool (``--pool validation``): the
   reward model's held-out pairs.
3. **Reward model** (``posttrain reward``, ``recipes/configs/smollm2-135m/reward.yaml`` on the SFT model) trained
   ``--reward-epochs`` on the train pairs, measured on the validation pairs (``validation_pairs``): pairwise accuracy
   with a 95% Wilson interval, overall and per task.
4. **PPO** (``recipes/configs/smollm2-135m/ppo.yaml`` from the SFT model) on train-pool prompts of the tasks whose
   reward-model accuracy is above chance on validation (all tasks with validation pairs when none is), rewarded by
   the reward model alone: ``rewards: [reward_model, task with weight 0]`` (the rule check is logged, never trained
   on), ``--ppo-steps`` steps.
5. **Evaluation** (``posttrain evaluate``), greedy, SFT vs PPO on the sealed *test* pool: the ``builtin`` suite (all
   tasks) and a suite of the PPO tasks with ``--test-prompts`` prompts each; per task the score with its 95% bootstrap
   CI and the paired 95% bootstrap CI of PPO - SFT.

Everything chosen from a measurement (which tasks PPO trains on) is chosen on the validation pool; the test pool is
read by step 5 only. Results: ``--output`` (default ``benchmarks/results/reward_from_rules.json``) with the machine
class, date, settings, the figures above and each step's wall time.

    .venv/bin/python benchmarks/reward_from_rules.py                 # about 25 minutes on a 2-core AVX512-BF16 CPU
    .venv/bin/python benchmarks/reward_from_rules.py --smoke         # tiny model, a few prompts, 1 step each

``--smoke`` runs every step on the tests' tiny 2-layer chat model (as the "SFT" model). That model never answers a
task right, so the pairs stage finds no on-policy pair; the smoke run then writes off-policy built-in pairs of the
same pools instead (recorded as ``"source": "off-policy builtin (smoke substitute)"``). A full run never substitutes.
A benchmark, not a test: it measures and reports; it exits non-zero only when a stage fails.
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
from collections import Counter, defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes/configs/smollm2-135m"
DEFAULT_SFT = ROOT / "outputs/smollm2-135m/sft"
TASKS = ("identity", "unknown_entity", "decimal_compare", "letter_count", "arithmetic")
SMOKE_TASKS = ("decimal_compare", "arithmetic")


def machine_class() -> str:
    """``AVX512-BF16`` when ``grep -o -m1 avx512_bf16 /proc/cpuinfo`` finds it, else ``AVX2``."""
    found = subprocess.run(["grep", "-o", "-m1", "avx512_bf16", "/proc/cpuinfo"], capture_output=True, text=True)
    return "AVX512-BF16" if found.stdout.strip() == "avx512_bf16" else "AVX2"


def stage(name: str, config: dict, work: Path, *extra: str) -> float:
    """Run one stage in this process (imports are paid once) from a config file; return its wall time."""
    from posttrain.stages import run_stage

    path = work / f"{name}-{config.get('output_dir', 'x').rsplit('/', 1)[-1]}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"[reward_from_rules] {name}: {path}", flush=True)
    start = time.perf_counter()
    run_stage(name, ["--config", str(path), *extra])
    return time.perf_counter() - start


def read_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def smoke_pairs(tasks, n: int, pool: str, path: Path, system_prompt: str) -> None:
    """Off-policy built-in pairs of ``pool`` (the smoke run's tiny model gives no on-policy pair)."""
    from posttrain.data.formats import with_system_prompt
    from posttrain.data.spec import Identity
    from posttrain.rl.pairs import write_pairs
    from posttrain.tasks import BASE_MODEL_IDENTITY, generate_task, task_to_preference

    rows = []
    for task in tasks:
        for example in generate_task(task, n, seed=42, identity=Identity(), pool=pool):
            pair = task_to_preference(example, BASE_MODEL_IDENTITY)  # plain strings
            rows.append({"prompt": with_system_prompt([{"role": "user", "content": pair["prompt"]}], system_prompt),
                         "chosen": [{"role": "assistant", "content": pair["chosen"]}],
                         "rejected": [{"role": "assistant", "content": pair["rejected"]}],
                         "chosen_score": 1.0, "rejected_score": 0.0, "task": task})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pairs(rows, path, overwrite=True)


def sample_pairs(args, sft: str, pool: str, prompts: int, out: Path, tasks, system_prompt: str) -> dict:
    config = yaml.safe_load((CONFIGS / "pairs.yaml").read_text())
    config.update(model_name_or_path=sft, tasks=",".join(f"builtin:{t}" for t in tasks), num_prompts=prompts, n=args.n,
                  max_new_tokens=args.max_new_tokens, pool=pool, output_dir=str(out),
                  max_length=None, overwrite=True)  # fmt: skip
    if args.smoke:
        config.update(require_finished=False, batch_size=8)
    start = time.perf_counter()
    source = "on-policy (posttrain pairs, rule checks)"
    try:
        stage("pairs", config, out.parent)
    except SystemExit as stop:  # the pairs stage found no pair (every reply scored the same)
        if not args.smoke:
            raise
        print(
            f"[reward_from_rules] smoke: no on-policy {pool} pair (exit {stop.code}); off-policy built-in pairs instead"
        )
        smoke_pairs(tasks, 4, pool, out / "pairs.jsonl", system_prompt)
        source = "off-policy builtin (smoke substitute)"
    rows = read_pairs(out / "pairs.jsonl")
    manifest = json.loads((out / "run_manifest.json").read_text()) if (out / "run_manifest.json").is_file() else {}
    counts = manifest.get("metrics", {})
    return {"source": source, "pool": pool, "prompts": prompts, "n": args.n, "pairs": len(rows),
            "skipped_prompts": counts.get("skipped"), "by_task": dict(sorted(Counter(r.get("task") for r in rows).items())),
            "file": str(out / "pairs.jsonl"), "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def per_task(results: dict, suite: str, before: str, after: str) -> dict:
    """Per task (the builtin records' ``group``): each model's score with its 95% bootstrap CI and the paired 95%
    bootstrap CI of ``after - before``."""
    from posttrain.stats import delta_ci, mean_ci

    primary = next(s["primary"] for s in results["suites"] if s["name"] == suite)
    scores: dict = defaultdict(lambda: defaultdict(dict))
    for record in results["samples"]:
        if record["suite"] == suite and primary in record["scores"]:
            scores[str(record.get("group"))][record["model"]][record["id"]] = record["scores"][primary]
    table = {}
    for task, by_model in sorted(scores.items()):
        table[task] = {
            before: mean_ci(list(by_model[before].values())),
            after: mean_ci(list(by_model[after].values())),
            "delta": delta_ci(by_model[before], by_model[after]),
        }
    everything = {m: {f"{t}/{i}": v for t, bm in scores.items() for i, v in bm[m].items()} for m in (before, after)}
    table["all"] = {before: mean_ci(list(everything[before].values())), after: mean_ci(list(everything[after].values())),
                    "delta": delta_ci(everything[before], everything[after])}  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sft", default=None, help=f"the SFT model (default {DEFAULT_SFT.relative_to(ROOT)} if present)"
    )
    parser.add_argument("--sft-steps", type=int, default=None, help="max_steps of the SFT run when one is needed")
    parser.add_argument("--train-prompts", type=int, default=320, help="train-pool prompts sampled for reward pairs")
    parser.add_argument(
        "--validation-prompts", type=int, default=200, help="validation-pool prompts for held-out pairs"
    )
    parser.add_argument("--n", type=int, default=4, help="replies sampled per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="reply budget when sampling pairs")
    parser.add_argument("--reward-epochs", type=float, default=1.0)
    parser.add_argument("--ppo-steps", type=int, default=20)
    parser.add_argument("--ppo-prompts", type=int, default=64, help="train-pool prompts per PPO task")
    parser.add_argument("--ppo-lr", type=float, default=1e-4)
    parser.add_argument("--test-prompts", type=int, default=100, help="sealed test-pool prompts per PPO task")
    parser.add_argument("--workdir", type=Path, default=None, help="keep every stage's output here")
    parser.add_argument("--output", type=Path, default=None, help="default benchmarks/results/reward_from_rules.json")
    parser.add_argument("--smoke", action="store_true", help="tiny model, a few prompts, 1 step per stage")
    args = parser.parse_args()
    args.output = args.output or ROOT / f"benchmarks/results/reward_from_rules{'_smoke' if args.smoke else ''}.json"
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="reward-from-rules-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started, t0 = dt.datetime.now(dt.UTC), time.perf_counter()
    times: dict[str, float] = {}
    sft_config = yaml.safe_load((CONFIGS / "sft.yaml").read_text())
    system_prompt = sft_config["system_prompt"]
    tasks = SMOKE_TASKS if args.smoke else TASKS

    # 1. the SFT model ------------------------------------------------------------------------------------------
    tiny = {}
    if args.smoke:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny import build_tiny_model

        args.sft = str(build_tiny_model(work / "tiny-chat", chat=True))
        args.train_prompts, args.validation_prompts, args.n, args.max_new_tokens = 4, 4, 2, 8
        args.ppo_steps, args.ppo_prompts, args.test_prompts = 1, 4, 2
        tiny = {"load_in_4bit": False, "lora_r": 4, "lora_alpha": 8}
    sft_info = {"path": args.sft, "trained_here": False}
    if args.sft is None and DEFAULT_SFT.is_dir():
        args.sft = str(DEFAULT_SFT)
        sft_info["path"] = args.sft
    if args.sft is None:
        sft_config.update(output_dir=str(work / "sft"), save_strategy="no")
        if args.sft_steps:
            sft_config["max_steps"] = args.sft_steps
        times["sft"] = stage("sft", sft_config, work)
        args.sft = str(work / "sft")
        sft_info = {"path": args.sft, "trained_here": True, "max_steps": sft_config["max_steps"]}
    elif (Path(args.sft) / "run_manifest.json").is_file():  # an SFT run made earlier: what it was
        made = json.loads((Path(args.sft) / "run_manifest.json").read_text())
        sft_info.update(max_steps=made.get("config", {}).get("SFTConfig", {}).get("max_steps"),
                        wall_time_s=made.get("wall_time_s"), finished_at=made.get("finished_at"))  # fmt: skip

    # 2. on-policy pairs, ranked by the rule checks ---------------------------------------------------------------
    train_pairs = sample_pairs(args, args.sft, "train", args.train_prompts, work / "pairs-train", tasks, system_prompt)
    times["pairs_train"] = train_pairs["seconds"]
    val_pairs = sample_pairs(args, args.sft, "validation", args.validation_prompts, work / "pairs-validation", tasks,
                             system_prompt)  # fmt: skip
    times["pairs_validation"] = val_pairs["seconds"]

    # 3. the reward model, measured on the validation pairs --------------------------------------------------------
    reward = yaml.safe_load((CONFIGS / "reward.yaml").read_text())
    reward.update(model_name_or_path=args.sft, datasets=[{"path": train_pairs["file"]}], test_split_size=None,
                  validation_pairs=val_pairs["file"], output_dir=str(work / "reward"), max_steps=-1,
                  num_train_epochs=args.reward_epochs, **tiny)  # fmt: skip
    if args.smoke:
        reward.update(max_steps=1, per_device_train_batch_size=2, max_length=128, overlong_samples="drop")
    times["reward"] = stage("reward", reward, work)
    reward_manifest = json.loads((work / "reward" / "run_manifest.json").read_text())
    held_out = reward_manifest["validation_pairwise"]
    accurate = [t for t, r in held_out["by_task"].items() if r["above_chance"]]
    ppo_tasks = accurate or sorted(held_out["by_task"]) or list(tasks)

    # 4. PPO on the reward model alone (the task rule is logged with weight 0) --------------------------------------
    ppo = yaml.safe_load((CONFIGS / "ppo.yaml").read_text())
    ppo.update(model_name_or_path=args.sft, datasets=[{"path": f"builtin:{t}", "num_samples": args.ppo_prompts}
                                                      for t in ppo_tasks],
               rewards=[{"name": "reward_model", "path": str(work / "reward"), "weight": 1.0},
                        {"name": "task", "weight": 0.0}],
               output_dir=str(work / "ppo"), max_steps=args.ppo_steps, learning_rate=args.ppo_lr,
               save_strategy="no", test_split_size=16, **tiny)  # fmt: skip
    if args.smoke:
        ppo.update(rollout_batch_size=4, generation_batch_size=4, forward_batch_size=4, num_mini_batches=1,
                   per_device_train_batch_size=4, num_ppo_epochs=1, max_completion_length=8, test_split_size=2)  # fmt: skip
    times["ppo"] = stage("ppo", ppo, work)
    ppo_manifest = json.loads((work / "ppo" / "run_manifest.json").read_text())

    # 5. SFT vs PPO on the sealed test pool, greedy ---------------------------------------------------------------
    suite = {"name": "reward-tasks-test", "description": "The PPO tasks on their sealed test pool.",
             "data": [{"builtin": t, "num_samples": args.test_prompts, "seed": 1234, "pool": "test"} for t in ppo_tasks],
             "scoring": ["task", "stopped"], "primary": "task"}  # fmt: skip
    suite_path = work / "reward-tasks-test.yaml"
    suite_path.write_text(yaml.safe_dump(suite, sort_keys=False))
    evaluate = yaml.safe_load((CONFIGS / "evaluate-stages.yaml").read_text())
    evaluate.update(models=[{"label": "sft", "path": args.sft}, {"label": "ppo", "path": str(work / "ppo")}],
                    suites=["builtin", str(suite_path)], baseline="sft", output_dir=str(work / "eval"))  # fmt: skip
    if args.smoke:
        evaluate.update(max_samples=2, max_new_tokens=8, batch_size=8, dtype="float32")
    times["evaluate"] = stage("evaluate", evaluate, work)
    results = json.loads((work / "eval" / "results.json").read_text())
    on_tasks = per_task(results, "reward-tasks-test", "sft", "ppo")
    builtin = per_task(results, "builtin", "sft", "ppo")
    times["total"] = time.perf_counter() - t0

    raised = sorted(t for t, r in on_tasks.items() if t != "all" and r["delta"]["low"] > 0)
    report = {
        "script": "benchmarks/reward_from_rules.py",
        "date": started.isoformat(timespec="seconds"),
        "machine_class": machine_class(),
        "cpu_count": os.cpu_count(),
        "smoke": args.smoke,
        "settings": {
            "sft": sft_info,
            "pairs": {
                "tasks": list(tasks),
                "n": args.n,
                "max_new_tokens": args.max_new_tokens,
                "temperature": 1.0,
                "ranked_by": "rule checks (task), ties dropped",
            },  # fmt: skip
            "reward": {
                "config": "recipes/configs/smollm2-135m/reward.yaml",
                "epochs": args.reward_epochs,
                "steps": (reward_manifest.get("ranks") or [{}])[0].get("steps"),
                "train_pairs": train_pairs["pairs"],
            },  # fmt: skip
            "ppo": {
                "config": "recipes/configs/smollm2-135m/ppo.yaml",
                "steps": args.ppo_steps,
                "learning_rate": args.ppo_lr,
                "prompts_per_task": args.ppo_prompts,
                "tasks": ppo_tasks,
                "tasks_chosen": "tasks whose reward-model accuracy on validation pairs is above chance"
                + ("" if accurate else " (none was: every task with validation pairs)"),
                "rewards": ppo["rewards"],
            },  # fmt: skip
            "evaluation": {
                "pool": "test",
                "greedy": True,
                "suites": ["builtin", "reward-tasks-test"],
                "prompts_per_task": args.test_prompts,
            },  # fmt: skip
        },
        "pairs": {"train": train_pairs, "validation": val_pairs},
        "reward_model": {
            "validation_accuracy": {k: held_out[k] for k in ("accuracy", "low", "high", "n", "above_chance")},
            "validation_accuracy_by_task": held_out["by_task"],
            "validation_pairs_left_out": {k: held_out.get(k) for k in ("ties_dropped", "trained_prompts_dropped")},
            "train_accuracy": reward_manifest.get("metrics", {}).get("train_pairwise_accuracy"),
            "accurate_tasks": accurate,
        },
        "ppo": {
            "metrics": {
                k: v for k, v in (ppo_manifest.get("metrics") or {}).items() if not isinstance(v, (list, dict))
            },
            "tasks": ppo_tasks,
            "heldout": ppo_manifest.get("heldout"),  # the validation-pool prompts PPO scored before and after
            "reward_curve": ppo_manifest.get("reward_curve"),
            "kl_curve": ppo_manifest.get("kl_curve"),
            "hacking_guard": ppo_manifest.get("hacking_guard"),
        },
        "test": {"ppo_tasks": on_tasks, "builtin": builtin},
        "tasks_raised_with_paired_ci_above_zero": raised,
        "wall_times_s": {k: round(v, 1) for k, v in times.items()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str) + "\n")

    def pct(x, signed=False):
        return "n/a" if x != x else (f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}")

    print(f"\n[reward_from_rules] reward model, validation pairwise accuracy (Wilson 95%): "
          f"{pct(held_out['accuracy'])}% [{pct(held_out['low'])}, {pct(held_out['high'])}] on {held_out['n']} pairs")  # fmt: skip
    for task, r in held_out["by_task"].items():
        print(f"  {task:16} {pct(r['accuracy']):>5}% [{pct(r['low'])}, {pct(r['high'])}] n={r['n']}"
              f"{'  above chance' if r['above_chance'] else ''}")  # fmt: skip
    print(f"[reward_from_rules] test pool, greedy, SFT -> PPO ({args.ppo_steps} steps on {', '.join(ppo_tasks)}):")
    for name, table in (("ppo tasks", on_tasks), ("builtin", builtin)):
        for task, r in table.items():
            d = r["delta"]
            print(f"  {name:9} {task:16} sft {pct(r['sft']['mean']):>5}  ppo {pct(r['ppo']['mean']):>5}  "
                  f"delta {pct(d['delta'], True)} [{pct(d['low'], True)}, {pct(d['high'], True)}] n={d['n']}")  # fmt: skip
    print(f"[reward_from_rules] wall times: {report['wall_times_s']}")
    print(f"[reward_from_rules] results: {args.output}")


if __name__ == "__main__":
    main()
