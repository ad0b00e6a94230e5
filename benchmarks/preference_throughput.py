#!/usr/bin/env python
"""DPO, reward-model and PPO training speed: posttrain's stages beside stock TRL's trainers, in one run.

The same QLoRA set-up for every run (the embedded SmolLM2-135M-Instruct, NF4 with double quantization, LoRA r16 /
alpha 32 on all linear layers, dropout 0.05 for the reward model and 0 for DPO and PPO as posttrain's recipes use,
seed 0, the precision the CPU executes natively), one run after the other, each in its own subprocess with the same
interpreter and thread count:

* **dpo-stock** -- TRL 1.16's DPO script (``trl.scripts.dpo``, what ``trl dpo`` runs) configured as a competent user
  would: no gradient checkpointing, bf16 only where the CPU has it; sigmoid loss, beta 0.1.
* **dpo-posttrain** -- ``recipes/dpo.py`` with the same keys (TRL's ``DPOTrainer``: chosen and rejected in one
  concatenated forward; the reference is the adapter disabled) plus posttrain's fast paths.
* **reward-stock** / **reward-posttrain** -- TRL's reward script (``RewardTrainer``, ``lora_task_type: SEQ_CLS``)
  and ``recipes/reward.py``, the same way -- except that stock runs in bf16 on every CPU: TRL casts a 4-bit model's
  trainable weights, the score head included, to bf16, so under fp32 compute its first forward fails
  (``expected m1 and m2 to have the same dtype``); posttrain keeps them in the compute dtype. Where the CPU has no
  bf16 (emulated bf16 is several times slower), **reward-stock-lora** is stock's fastest working set-up: the same
  LoRA on the unquantized model in fp32; posttrain is compared with the faster of the two.
* **ppo-posttrain** -- posttrain's own PPO (TRL removed its PPO trainer, so there is nothing stock beside it): rule
  reward only (``decimal_compare``), KV-cached rollouts, reference log-probs from the same model with the adapter off.

Every run trains on the same preference pairs (``builtin`` tasks' template-written right and wrong answers, with the
same system message; posttrain's stages with ``overlong_samples: truncate``, as stock's trainers cut or filter pairs
longer than ``max_length``), the same number of optimizer steps of the same batch size. Reported: steps/s (optimizer
steps / ``Trainer.train`` timed with the monotonic clock), peak RSS, and posttrain / stock for DPO and the reward
model. Results as JSON.

    .venv/bin/python benchmarks/preference_throughput.py            # 8 steps of 8 pairs each
    .venv/bin/python benchmarks/preference_throughput.py --smoke    # tiny 2-layer model, 1 step each: checks it runs

A benchmark, not a test: it measures and asserts nothing about time; it exits non-zero only when a run fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sft_throughput import (  # shared subprocess, RSS and model helpers
    COMMON,
    PYTHON,
    REPO,
    SYSTEM_PROMPT,
    build_tiny,
    child_env,
    model_folder,
    ratio,
    run_training,
    yaml_dump,
)

RUNS = ("dpo-stock", "dpo-posttrain", "reward-stock", "reward-stock-lora", "reward-posttrain", "ppo-posttrain")
TASKS = ("decimal_compare", "arithmetic", "letter_count", "unknown_entity")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 8; 1 with --smoke)")
    parser.add_argument("--batch", type=int, default=None, help="pairs (or PPO rollouts) per step (default 8)")
    parser.add_argument("--max-length", type=int, default=None, help="default 256")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS/MKL_NUM_THREADS for every run")
    parser.add_argument("--smoke", action="store_true", help="tiny 2-layer chat model, 1 step per run")
    parser.add_argument("--only", choices=RUNS, nargs="+", help="run just these")
    parser.add_argument(
        "--output", type=Path, default=None, help="default benchmarks/results/preference_throughput.json"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep data, configs and logs here")
    parser.add_argument("--train", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--counts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps = args.steps or (1 if args.smoke else 8)
    args.batch = args.batch or (2 if args.smoke else 8)
    args.max_length = args.max_length or 256
    if args.output is None:
        args.output = REPO / "benchmarks" / "results" / f"preference_throughput{'_smoke' if args.smoke else ''}.json"
    return args


def write_pairs(path: Path, rows: int) -> None:
    """``prompt`` (system + user), ``chosen`` and ``rejected`` (one assistant message each), conversational."""
    from posttrain.data import DatasetSpec
    from posttrain.data.preference import load_preferences

    per_task = -(-rows // len(TASKS))
    data = load_preferences([DatasetSpec(path=f"builtin:{t}", num_samples=per_task) for t in TASKS], seed=0)["train"]
    with path.open("w", encoding="utf-8") as handle:
        for row in data:
            prompt = [{"role": "system", "content": SYSTEM_PROMPT}, *row["prompt"]]
            handle.write(json.dumps({"prompt": prompt, "chosen": row["chosen"], "rejected": row["rejected"]}) + "\n")


def shared(args, bf16: bool, dropout: float) -> dict:
    """The SFT benchmark's model set-up (4-bit NF4, LoRA r16 on all linear layers) with this run's steps and batch."""
    model_keys = ("load_in_4bit", "bnb_4bit_quant_type", "use_bnb_nested_quant", "use_peft", "lora_r", "lora_alpha",
                  "lora_target_modules")  # fmt: skip
    return {
        **{key: COMMON[key] for key in model_keys},
        "lora_dropout": dropout,
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch,
        "learning_rate": 1.0e-4,
        "seed": 0,
        "gradient_checkpointing": False,
        "bf16": bf16,
        "logging_steps": 1,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
    }


def configs(model: str, data: Path, work: Path, args, bf16: bool) -> dict[str, dict]:
    stock_data = {"datasets": [{"path": "json", "data_files": str(data), "split": "train"}], "use_cpu": True,
                  "dtype": "bfloat16" if bf16 else "float32"}  # fmt: skip
    # stock's DPOTrainer cuts overlong pairs and its RewardTrainer filters them out; posttrain refuses them by default
    ours_data = {"datasets": [{"path": str(data)}], "show_example": False, "overlong_samples": "truncate"}
    dpo = {"beta": 0.1, "loss_type": ["sigmoid"], "max_length": args.max_length, **shared(args, bf16, 0.0)}
    reward = {"max_length": args.max_length, **shared(args, bf16, 0.05)}
    ppo = {
        **shared(args, bf16, 0.0),
        "datasets": [{"path": "builtin:decimal_compare", "num_samples": 64}],
        "system_prompt": SYSTEM_PROMPT,
        "rewards": [{"name": "task", "weight": 1.0}],
        "rollout_batch_size": args.batch,
        "generation_batch_size": args.batch,
        "forward_batch_size": args.batch,
        "num_mini_batches": 1,
        "num_ppo_epochs": 1,
        "max_completion_length": 16 if args.smoke else 40,
        "temperature": 0.7,
        "show_example": False,
    }
    ppo.pop("bf16")
    return {
        "dpo-stock": {"model_name_or_path": model, **stock_data, **dpo, "output_dir": str(work / "dpo-stock")},
        "dpo-posttrain": {"model_name_or_path": model, **ours_data, **dpo, "output_dir": str(work / "dpo-posttrain")},
        # TRL casts a 4-bit model's trainable weights, the score head too, to bf16; under fp32 compute the head then
        # meets fp32 hidden states and the first forward fails. bf16 is the one precision stock QLoRA reward runs in.
        "reward-stock": {
            "model_name_or_path": model,
            **stock_data,
            **reward,
            "lora_task_type": "SEQ_CLS",
            "bf16": True,
            "dtype": "bfloat16",
            "output_dir": str(work / "rw-stock"),
        },
        # ... so where the CPU lacks bf16, stock's fastest reward run is plain LoRA on the unquantized model in fp32
        "reward-stock-lora": {
            "model_name_or_path": model,
            **stock_data,
            **reward,
            "lora_task_type": "SEQ_CLS",
            "load_in_4bit": False,
            "use_bnb_nested_quant": False,
            "output_dir": str(work / "rw-stock-lora"),
        },
        "reward-posttrain": {"model_name_or_path": model, **ours_data, **reward, "output_dir": str(work / "rw-pt")},
        "ppo-posttrain": {"model_name_or_path": model, **ppo, "output_dir": str(work / "ppo-posttrain")},
    }


def train_child(args) -> int:
    """One instrumented run: the trainer's metrics (``train_runtime``, steps) go to ``--counts``."""
    import transformers

    record = {}

    def recorded(train):
        def wrapper(self, *a, **kw):
            started = time.perf_counter()
            output = train(self, *a, **kw)
            metrics = dict(output.metrics) if hasattr(output, "metrics") else dict(output)
            # monotonic: the trainer's train_runtime is wall-clock time, which a VM's clock adjustments can step
            metrics["train_runtime_monotonic"] = time.perf_counter() - started
            record.update(metrics=metrics, steps=self.state.global_step)
            args.counts.write_text(json.dumps(record, indent=2, default=str))
            return output

        return wrapper

    transformers.Trainer.train = recorded(transformers.Trainer.train)
    stage, kind = args.train.split("-", 1)
    if kind == "posttrain":
        if stage == "ppo":
            from posttrain.rl.ppo import PPOTrainer

            PPOTrainer.train = recorded(PPOTrainer.train)
        from posttrain.stages import run_stage

        run_stage(stage, ["--config", str(args.config)])
    else:
        module = {"dpo": "trl.scripts.dpo", "reward": "trl.scripts.reward"}[stage]
        script = __import__(module, fromlist=["main", "make_parser"])
        parsed = script.make_parser().parse_args_and_config(["--config", str(args.config)], fail_with_unknown_args=True)
        script.main(*parsed[:4])
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.train:
        return train_child(args)
    env = child_env(args.threads)
    from posttrain.precision import cpu_has_bf16

    bf16 = cpu_has_bf16()
    temporary = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="preference_throughput_")) if temporary else args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.smoke:
            model = str(work / "tiny-chat")
            build_tiny(Path(model))
        else:
            model = model_folder(env)
        data = work / "pairs.jsonl"
        write_pairs(data, max(args.steps * args.batch, 8))
        print(f"model: {model}\npairs: {data}\nthreads: {args.threads}, bf16 CPU: {bf16}", flush=True)
        results = {}
        for name, config in configs(model, data, work, args, bf16).items():
            if args.only and name not in args.only:
                continue
            config_path, counts = work / f"{name}.yaml", work / f"{name}.counts.json"
            config_path.write_text(yaml_dump(config))
            cmd = [PYTHON, str(Path(__file__).resolve()), "--train", name, "--config", str(config_path),
                   "--counts", str(counts)]  # fmt: skip
            result = run_training(name, cmd, env, work)
            counted = json.loads(counts.read_text())
            runtime = float(counted["metrics"]["train_runtime_monotonic"])
            log = (work / f"{name}.stdout.log").read_text(errors="replace")
            fast = [line.split("fast paths: ", 1)[1] for line in log.splitlines() if "posttrain: fast paths: " in line]
            result.update(steps=counted["steps"], train_runtime_s=round(runtime, 2), fast_paths=fast[0] if fast else None,
                          steps_per_s=round(counted["steps"] / runtime, 4))  # fmt: skip
            results[name] = result
        print(f"\n{'run':18} {'steps':>5} {'train_s':>8} {'steps/s':>8} {'peak_RSS_MiB':>12} {'load':>9}")
        for name, r in results.items():
            print(f"{name:18} {r['steps']:>5} {r['train_runtime_s']:>8.1f} {r['steps_per_s']:>8.3f} "
                  f"{r['peak_rss_mib']:>12.1f} {r['loadavg_before']:>4.1f}->{r['loadavg_after']:.1f}")  # fmt: skip
        ratios = {}
        for stage in ("dpo", "reward"):
            stocks = [r for name, r in results.items() if name.startswith(f"{stage}-stock")]
            ours, stock = results.get(f"{stage}-posttrain"), max(stocks, key=lambda r: r["steps_per_s"], default=None)
            if ours and stock:
                ratios[stage] = {"steps_per_s": ratio(ours["steps_per_s"], stock["steps_per_s"]),
                                 "peak_rss": ratio(ours["peak_rss_mib"], stock["peak_rss_mib"])}  # fmt: skip
                print(f"ratio {stage} posttrain/stock: steps/s {ratios[stage]['steps_per_s']}x, "
                      f"peak RSS {ratios[stage]['peak_rss']}x")  # fmt: skip
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"bf16": bf16, "threads": args.threads, "steps": args.steps,
                                           "batch": args.batch, "runs": results, "ratios": ratios}, indent=2))  # fmt: skip
        print(f"results written to {args.output}")
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
