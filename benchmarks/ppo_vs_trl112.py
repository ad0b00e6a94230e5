#!/usr/bin/env python
"""posttrain's PPO vs TRL 1.12.0's ``trl.experimental.ppo.PPOTrainer`` (the last TRL with PPO) on one tiny task.

    pip install --no-deps --target .bench/trl112 trl==1.12.0        # once; only this benchmark puts it on sys.path
    OMP_NUM_THREADS=2 python benchmarks/ppo_vs_trl112.py [--steps 12] [--seed 0]
    python benchmarks/ppo_vs_trl112.py --smoke     # 1 step, 4 rollouts, 4 new tokens: checks it runs end to end

Each implementation runs in its own subprocess (TRL 1.12 is imported from ``--trl-path`` there, never into the
posttrain process) on the same tiny chat Llama (``tests/tiny.py``), the same prompts (``builtin:identity``, no digits
in them) and seed, the same reward -- 1.0 when a reply token contains a digit, computed from token ids: a rule function
for posttrain, an equivalent ``score`` module for TRL, which only takes reward *models* -- and the same PPO settings
(LoRA r=8 policy, 32 rollouts per step in 2 minibatches, 4 PPO epochs, 8 new tokens, KL coefficient 0.05, lr 3e-3).
TRL's value model is its usual separate sequence-classification copy; posttrain's is a value head on the policy.

Prints steps/s and reward gain (mean of the last 3 steps minus the first 3) for both and the ratios
posttrain / TRL (target: both >= 1). If TRL 1.12 cannot be imported or run with the installed transformers, the
script says so and exits 0 after reporting posttrain's numbers. The figures go to ``--output`` as JSON (with the
reason under ``trl112.skipped`` when TRL 1.12 was not run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRL_PATH = ROOT / ".bench" / "trl112"
SETTINGS = dict(rollout=32, mini_batches=2, micro=16, epochs=4, new_tokens=8, kl_coef=0.05, lr=3e-3, lora_r=8)
SMOKE = dict(rollout=4, mini_batches=2, micro=2, epochs=1, new_tokens=4)  # --smoke: the same code path, tiny sizes


def digit_ids(tokenizer) -> list[int]:
    return [i for i in range(len(tokenizer)) if any(c.isdigit() for c in tokenizer.decode([i]))]


def prompts(n: int, seed: int):
    from posttrain.tasks import generate_task

    return [[{"role": "user", "content": ex.prompt}] for ex in generate_task("identity", n, seed=seed)]


def summarize(rewards: list[float], elapsed: float, steps: int) -> dict:
    k = 3 if len(rewards) >= 6 else 1
    return {
        "steps": steps,
        "seconds": elapsed,
        "steps_per_s": steps / elapsed,
        "reward_first": sum(rewards[:k]) / k,
        "reward_last": sum(rewards[-k:]) / k,
        "reward_gain": sum(rewards[-k:]) / k - sum(rewards[:k]) / k,
        "rewards": rewards,
    }


def run_posttrain(model_path: str, steps: int, seed: int) -> dict:
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from posttrain.rl.config import PPOConfig
    from posttrain.rl.ppo import PPOTrainer
    from posttrain.rl.rewards import RewardSet

    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    digits = set(digit_ids(tokenizer))

    def digit_token(prompts, completions, completion_ids=None, **_):
        return [float(any(i in digits for i in ids)) for ids in completion_ids]

    data = datasets.Dataset.from_list(
        [{"prompt": p, "task": "", "answer": "", "meta": "{}"} for p in prompts(64, seed)]
    )
    s = SETTINGS
    args = PPOConfig(
        output_dir=tempfile.mkdtemp(),
        rewards=["has_number"],
        bf16=False,
        report_to="none",
        seed=seed,
        max_steps=steps,
        rollout_batch_size=s["rollout"],
        num_mini_batches=s["mini_batches"],
        per_device_train_batch_size=s["micro"],
        generation_batch_size=s["rollout"],
        forward_batch_size=s["rollout"],
        num_ppo_epochs=s["epochs"],
        max_completion_length=s["new_tokens"],
        kl_coef=s["kl_coef"],
        learning_rate=s["lr"],
        lr_scheduler_type="constant",
        missing_eos_penalty=None,
        logging_steps=1000,
        save_strategy="no",
    )
    lora = LoraConfig(r=s["lora_r"], lora_alpha=2 * s["lora_r"], lora_dropout=0.0, target_modules="all-linear")
    trainer = PPOTrainer(model, tokenizer, RewardSet([digit_token], [1.0], ["digit"]), args, data, peft_config=lora)
    started = time.time()
    trainer.train()
    elapsed = time.time() - started
    return summarize([h["reward"] for h in trainer.state.log_history], elapsed, steps)


def run_trl112(model_path: str, steps: int, seed: int, trl_path: str) -> dict:
    sys.path.insert(0, trl_path)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    import trl
    from torch import nn

    if not trl.__version__.startswith("1.12"):
        raise RuntimeError(f"expected trl 1.12.x from {trl_path}, imported {trl.__version__} from {trl.__file__}")
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    digits = torch.tensor(digit_ids(tokenizer))

    class DigitCount(nn.Module):
        """hidden[..., 0] = number of digit tokens so far (prompts have none): TRL reads it at the last token."""

        def forward(self, input_ids, attention_mask, **_):
            is_digit = torch.isin(input_ids, digits) & attention_mask.bool()
            hidden = is_digit.float().cumsum(1).unsqueeze(-1)
            return type("Output", (), {"hidden_states": (hidden,)})()

    class DigitReward(nn.Module):
        base_model_prefix = "backbone"

        def __init__(self):
            super().__init__()
            self.backbone = DigitCount()
            self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)

        def score(self, hidden):
            return hidden.clamp(max=1.0)  # 1.0 as soon as one digit token was generated

    s = SETTINGS
    policy = AutoModelForCausalLM.from_pretrained(model_path)
    value_model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1)
    value_model.config.pad_token_id = tokenizer.pad_token_id
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts(64, seed)]
    data = datasets.Dataset.from_dict(
        {"input_ids": [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]}
    )
    args = PPOConfig(
        output_dir=tempfile.mkdtemp(),
        bf16=False,
        use_cpu=True,
        report_to="none",
        seed=seed,
        total_episodes=steps * s["rollout"],
        gradient_accumulation_steps=1,
        # TRL: rollout batch = per_device_train_batch_size x grad. accumulation; its minibatches of rollout /
        # num_mini_batches are one micro-batch each here, as posttrain's (micro = rollout / mini_batches)
        per_device_train_batch_size=s["rollout"],
        num_mini_batches=s["mini_batches"],
        num_ppo_epochs=s["epochs"],
        response_length=s["new_tokens"],
        temperature=1.0,
        stop_token="eos",
        kl_coef=s["kl_coef"],
        learning_rate=s["lr"],
        lr_scheduler_type="constant",
        local_rollout_forward_batch_size=s["rollout"],
        num_sample_generations=0,
        logging_steps=1,
        save_strategy="no",
        gradient_checkpointing=False,
        missing_eos_penalty=None,
    )
    lora = LoraConfig(
        r=s["lora_r"], lora_alpha=2 * s["lora_r"], lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=None,
        reward_model=DigitReward(),
        value_model=value_model,
        train_dataset=data,
        peft_config=lora,
    )
    started = time.time()
    trainer.train()
    elapsed = time.time() - started
    rewards = [h["objective/scores"] for h in trainer.state.log_history if "objective/scores" in h]
    return summarize(rewards, elapsed, len(rewards))


def child(args) -> None:
    if args.impl == "posttrain":
        result = run_posttrain(args.model, args.steps, args.seed)
    else:
        result = run_trl112(args.model, args.steps, args.seed, args.trl_path)
    Path(args.result).write_text(json.dumps(result))


def run_child(impl: str, model: str, args) -> tuple[dict | None, str]:
    result = Path(tempfile.mkdtemp()) / f"{impl}.json"
    command = [
        sys.executable,
        __file__,
        "--impl",
        impl,
        "--model",
        model,
        "--steps",
        str(args.steps),
        "--seed",
        str(args.seed),
        "--trl-path",
        str(args.trl_path),
        "--result",
        str(result),
    ] + (["--smoke"] if args.smoke else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("OMP_NUM_THREADS", "2")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not result.is_file():
        return None, (proc.stderr or proc.stdout)[-3000:]
    return json.loads(result.read_text()), ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trl-path", default=str(DEFAULT_TRL_PATH))
    parser.add_argument("--impl", choices=["posttrain", "trl112"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help=f"1 PPO step at tiny sizes ({SMOKE})")
    parser.add_argument("--output", type=Path, help="JSON results (default benchmarks/results/ppo_vs_trl112.json)")
    args = parser.parse_args()
    if args.smoke:
        SETTINGS.update(SMOKE)
        args.steps = 1
    if args.output is None:
        args.output = ROOT / "benchmarks" / "results" / f"ppo_vs_trl112{'_smoke' if args.smoke else ''}.json"
    if args.impl:
        child(args)
        return 0

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import build_tiny_model

    model = str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny-chat", chat=True))
    print(
        f"task: tiny chat Llama, builtin:identity prompts, reward = reply has a digit token; {args.steps} PPO steps, "
        f"seed {args.seed}; settings {SETTINGS}",
        flush=True,
    )
    ours, error = run_child("posttrain", model, args)
    if ours is None:
        print(f"posttrain PPO failed:\n{error}")
        return 1
    print(
        f"posttrain: {ours['steps_per_s']:.3f} steps/s, reward {ours['reward_first']:.3f} -> "
        f"{ours['reward_last']:.3f} (gain {ours['reward_gain']:+.3f})",
        flush=True,
    )
    if not Path(args.trl_path, "trl").is_dir():
        reason = f"trl 1.12.0 not found in {args.trl_path}: pip install --no-deps --target {args.trl_path} trl==1.12.0"
        print(reason)
        return write(args, {"settings": SETTINGS, "posttrain": ours, "trl112": {"skipped": reason}})
    theirs, error = run_child("trl112", model, args)
    if theirs is None:
        print(f"TRL 1.12.0 PPOTrainer could not run with the installed libraries; no comparison:\n{error}")
        skipped = {"skipped": f"TRL 1.12.0 PPOTrainer failed with the installed libraries: {error[-500:]}"}
        return write(args, {"settings": SETTINGS, "posttrain": ours, "trl112": skipped})
    print(
        f"trl 1.12.0: {theirs['steps_per_s']:.3f} steps/s, reward {theirs['reward_first']:.3f} -> "
        f"{theirs['reward_last']:.3f} (gain {theirs['reward_gain']:+.3f})"
    )
    speed = ours["steps_per_s"] / theirs["steps_per_s"]
    gain = ours["reward_gain"] / theirs["reward_gain"] if theirs["reward_gain"] > 0 else None
    gain_text = f"{gain:.2f}x" if gain is not None else f"n/a (trl 1.12.0 gained {theirs['reward_gain']:+.3f})"
    met = speed >= 1 and (ours["reward_gain"] >= theirs["reward_gain"])
    print(
        f"ratios posttrain / trl 1.12.0: speed {speed:.2f}x, reward gain {gain_text} "
        f"(target: at least as fast and at least as much gain: {'met' if met else 'NOT met'})"
    )
    report = {"settings": SETTINGS, "posttrain": ours, "trl112": theirs, "speed_ratio": speed, "gain_ratio": gain}
    print(json.dumps(report))
    return write(args, report)


def write(args, report: dict) -> int:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
