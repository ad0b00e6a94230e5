#!/usr/bin/env python
"""The reward-hacking guard on a real PPO run (issue 27): PPO on the embedded default model (``smollm2-135m-instruct``)
rewarded only by a deliberately hackable proxy, with the built-in tasks' own rule check (``task``) monitored at weight
0 and ``hacking_guard: stop``. Does the guard fire, at which step, and which adapter does it keep?

    .venv/bin/python benchmarks/guard_live.py                      # about 10 minutes on 2 CPU cores
    .venv/bin/python benchmarks/guard_live.py --reward verbosity   # pay for length instead of repetition

The proxy (:class:`posttrain.rl.rewards.HackableReward`): ``repetition`` pays for the share of a reply's tokens that
repeat an earlier one, ``verbosity`` for its length in characters; both are meant for demonstrating the guard only.
The learning rate is far above the recipe's (5e-5) so that the policy finds the hack within a few minutes of CPU.
With ``stop`` PPO ends at the finding and keeps, of the start adapter, the one of the best training rule pass rate and
the last one, the adapter with the best held-out (validation-pool) task score.

Writes ``--output`` (default ``benchmarks/results/guard_live.json``): the date, the machine class, the settings, the
per-step curves (proxy reward, rule pass rate, reply length, distinct-bigram ratio, KL), the guard's finding (step,
kind, message), the candidates' held-out task scores, the kept adapter and its score against the last step's, and the
held-out figures of the final (kept) policy against the start model. ``--time-budget`` ends training (as a
signal would, after the step under way) once the PPO loop has run that long, and the run is summarized as is
(``stopped_by``). ``--from-log LOG`` instead summarizes the per-step lines a run killed before it finished printed
(``completed: false``: no held-out scores).

Set ``OMP_NUM_THREADS=1`` on a CPU shared with other jobs: with more threads than free cores a step ran 30x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("POSTTRAIN_LAUNCHER", "none")  # train in this process
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def machine_class() -> str:
    found = subprocess.run(["grep", "-o", "-m1", "avx512_bf16", "/proc/cpuinfo"], capture_output=True, text=True)
    return "CPU with AVX512-BF16" if found.stdout.strip() == "avx512_bf16" else "CPU without AVX512-BF16"


def config(args, output_dir: Path) -> dict:
    proxy = {"name": args.reward, "weight": 1.0}
    if args.reward == "verbosity":
        proxy["max_chars"] = args.max_chars
    return {
        "model_name_or_path": args.model,
        "load_in_4bit": False,
        "use_peft": True,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "lora_target_modules": "all-linear",
        "datasets": [{"path": f"builtin:{task}", "num_samples": 64} for task in args.tasks],
        "test_split_size": args.heldout,
        "rewards": [proxy, {"name": "task", "weight": 0.0}],  # the task check: monitored, not trained on
        "hacking_guard": "stop",
        "hacking_guard_window": args.window,
        "missing_eos_penalty": None,
        "output_dir": str(output_dir),
        "seed": args.seed,
        "max_steps": args.max_steps,
        "rollout_batch_size": args.rollouts,
        "generation_batch_size": args.rollouts,
        "forward_batch_size": args.rollouts,
        "num_mini_batches": 2,
        "per_device_train_batch_size": args.rollouts // 2,
        "num_ppo_epochs": 2,
        "max_completion_length": args.max_completion_length,
        "temperature": 1.0,
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": "constant",
        "kl_coef": args.kl_coef,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--reward", choices=["repetition", "verbosity"], default="repetition")
    parser.add_argument("--max-chars", type=int, default=400, help="verbosity: the length paid in full")
    parser.add_argument("--tasks", nargs="+", default=["arithmetic", "decimal_compare"])
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--rollouts", type=int, default=16)
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--kl-coef", type=float, default=0.01)
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--heldout", type=int, default=24, help="held-out prompts (test_split_size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-budget", type=float, default=600.0, help="seconds of PPO steps at most")
    parser.add_argument("--from-log", type=Path, help="summarize the printed steps of a run that was killed")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/guard_live.json")
    args = parser.parse_args(argv)
    if args.from_log:
        return from_log(args)

    from posttrain.rl.ppo import PPOTrainer
    from posttrain.stages import run_stage

    started = time.perf_counter()
    out_of_time = []
    train = PPOTrainer.train

    def budgeted(self, resume_from_checkpoint=None, should_stop=None):
        loop_started = time.perf_counter()

        def stop() -> bool:
            if time.perf_counter() - loop_started > args.time_budget:
                out_of_time.append(self.state.global_step)
                return True
            return should_stop() if should_stop is not None else False

        return train(self, resume_from_checkpoint, should_stop=stop)

    PPOTrainer.train = budgeted
    try:
        with tempfile.TemporaryDirectory(prefix="guard-live-") as tmp:
            settings = config(args, Path(tmp) / "ppo")
            path = Path(tmp) / "ppo.yaml"
            path.write_text(json.dumps(settings))  # JSON is YAML
            trainer, metrics = run_stage("ppo", ["--config", str(path)])
    finally:
        PPOTrainer.train = train
    seconds = time.perf_counter() - started
    guard = trainer.guard
    curves = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in point.items()} for point in guard.history]
    finding = guard.findings[0] if guard.findings else None
    scores = (finding or {}).get("heldout_task_scores") or {}
    last = next((v for k, v in scores.items() if k.startswith("last step")), None)
    kept = max(scores.values()) if scores else None
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_class(),
        "settings": {k: v for k, v in settings.items() if k not in ("output_dir",)},
        "seconds": round(seconds, 1),
        "steps_run": trainer.state.global_step,
        "completed": True,
        "stopped_by": "hacking_guard" if guard.should_stop else "time budget" if out_of_time else "max_steps",
        "fired": finding is not None,
        "fired_at_step": finding["step"] if finding else None,
        "finding": {k: finding[k] for k in ("kind", "message")} if finding else None,
        "all_findings": [{k: f[k] for k in ("step", "kind", "message")} for f in guard.findings],
        "restored_step": (finding or {}).get("restored_step"),
        "restored_by": (finding or {}).get("restored_by"),
        "heldout_task_scores": scores,  # "candidate (step N)" -> held-out task score (validation pool, greedy)
        "restored_heldout_task_score": kept,
        "last_step_heldout_task_score": last,
        "final_policy_heldout": {k: v for k, v in metrics.items() if k.startswith("eval_")},
        "curves": curves,  # per step: proxy reward, rule (task) pass rate, replies scored, length, distinct-2, KL
    }
    print(json.dumps({k: v for k, v in result.items() if k != "curves"}, indent=2))
    for point in curves:
        print(f"step {point['step']:>3}: proxy {point['proxy']:.3f} rule {point['rule']:.3f} ({point['rule_n']:.0f}) "
              f"length {point['length']:.1f} distinct {point['distinct']:.3f} kl {point['kl']:.2f}")  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


def from_log(args) -> dict:
    """The result of a run killed before it finished, from the per-step metric lines it printed."""
    curves = []
    for line in args.from_log.read_text(errors="replace").splitlines():
        start = line.find('posttrain ppo: {"step"')
        if start >= 0:
            m = json.loads(line[start + len("posttrain ppo: ") :])
            curves.append({"step": m["step"], "proxy": m.get(f"reward/{args.reward}"), "rule": m.get("reward/task"),
                           "rule_n": m.get("scored/task"), "length": m.get("response_length"),
                           "distinct": m.get("distinct_2"), "replies": m.get("replies"), "kl": m.get("kl")})  # fmt: skip
    warnings = [line.strip() for line in args.from_log.read_text(errors="replace").splitlines()
                if "possible reward hacking" in line]  # fmt: skip
    settings = config(args, Path("unused"))
    settings.pop("output_dir")
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_class(),
        "settings": settings,
        "completed": False,
        "stopped_by": "killed at the wall-clock limit before max_steps (summarized from its log)",
        "steps_run": len(curves),
        "fired": bool(warnings),
        "guard_messages": warnings,
        "curves": curves,
    }
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
