"""Reward model: a one-output sequence-classification head trained on preference pairs with TRL's RewardTrainer.

(Q)LoRA on the backbone plus a trained ``score`` head (Bradley-Terry loss, Ouyang et al. 2022). The stage writes
``output_dir/adapter/`` (the LoRA adapter) and, next to it, the adapter merged into full-precision weights as a
plain HF sequence-classification folder in ``output_dir`` itself, which PPO, GRPO (``reward_funcs``) and
evaluation load directly. Held-out pairwise accuracy is measured on that saved model (and training-split accuracy on
a seeded sample of at most 64 pairs).

Validation: ``validation_pairs`` names held-out pairs (a JSONL file, or a folder with ``pairs.jsonl``), typically
on-policy ones -- ``posttrain pairs --pool validation`` samples the policy on the tasks' validation pool and ranks its
replies by the rule checks -- so the reported accuracy says whether the reward model learned what the rule checks
measure, on the replies PPO will show it. Ties (``chosen_score == rejected_score``) and pairs whose prompt is a
training prompt are left out. The accuracy (chosen scored above rejected) gets a 95% Wilson score interval, overall and
per ``task``, and is recorded in ``run_manifest.json`` as ``validation_pairwise`` (without ``validation_pairs``: the
``test_split_size`` split, when there is one). An interval that reaches 0.5 is *at chance*: the stage warns, and PPO
(:func:`posttrain.models.reward.warn_if_at_chance`) warns again when given this model.

Length: pairs longer than ``max_length`` (prompt + chosen or prompt + rejected, as RewardTrainer tokenizes them) are
refused by default, naming the file and row (``overlong_samples: error``); ``drop`` skips them with a count, and so
does ``truncate``: RewardTrainer never cuts a pair (it would filter it out silently).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posttrain.configs import ModelConfig, PosttrainArguments, RewardConfig
from posttrain.data import fingerprint, load_preferences
from posttrain.data.formats import prompt_keys, with_system_prompt
from posttrain.data.preference import ORIGIN_COLUMN, check_pair_lengths, validate_preference
from posttrain.data.validation import DataError
from posttrain.errors import ConfigError
from posttrain.models.merge import merge_adapter
from posttrain.models.reward import VALIDATION_RECORD, RewardModel
from posttrain.training.common import (
    eval_split,
    finish_run,
    load_model_and_tokenizer,
    peft_config,
    start_run,
    train,
)

#: training pairs scored for the train-split pairwise accuracy (all of them cost as much as the training itself on CPU)
TRAIN_ACCURACY_PAIRS = 64
#: the accuracy of a reward model that ranks pairs by coin flip
CHANCE = 0.5
#: z of a two-sided 95% interval
Z95 = 1.959964


def wilson_interval(wins: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial share ``wins / n`` (sound for small ``n`` and shares of 0 or 1,
    where a bootstrap interval collapses to a point)."""
    if n == 0:
        return math.nan, math.nan
    share = wins / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_record(wins: Sequence[bool]) -> dict[str, Any]:
    """``{accuracy, low, high, n, above_chance, at_chance}`` of per-pair outcomes (chosen scored above rejected):
    ``above_chance`` when the 95% interval lies above 0.5, ``at_chance`` when it holds 0.5."""
    n, won = len(wins), sum(bool(w) for w in wins)
    low, high = wilson_interval(won, n)
    return {
        "accuracy": won / n if n else math.nan,
        "low": low,
        "high": high,
        "n": n,
        "above_chance": bool(n and low > CHANCE),
        "at_chance": bool(n and low <= CHANCE <= high),
    }


def pairwise_record(reward_model: RewardModel, rows: Sequence[dict], tasks: Sequence[str | None]) -> dict[str, Any]:
    """Pairwise accuracy of ``reward_model`` on ``rows`` (prompt/chosen/rejected) with its 95% interval, overall
    and per task (``tasks``: each row's task or ``None``), and the mean score margin chosen - rejected."""
    chosen = reward_model.score([[*row["prompt"], *row["chosen"]] for row in rows])
    rejected = reward_model.score([[*row["prompt"], *row["rejected"]] for row in rows])
    wins = [c > r for c, r in zip(chosen, rejected, strict=True)]
    record = accuracy_record(wins)
    record["mean_margin"] = sum(c - r for c, r in zip(chosen, rejected, strict=True)) / max(len(rows), 1)
    record["by_task"] = {
        task: accuracy_record([w for w, t in zip(wins, tasks, strict=True) if t == task])
        for task in sorted({t for t in tasks if t is not None})
    }
    return record


def read_validation_pairs(path: str, training_prompts: Sequence[list[dict]]) -> tuple[list[dict], list, dict]:
    """The held-out pairs of ``validation_pairs`` (a JSONL file or a folder with ``pairs.jsonl``): validated rows,
    each row's ``task`` (or ``None``), and counts of what was left out (ties, prompts also trained on).

    Raises:
        ConfigError: The path is missing or is no JSONL file, naming ``validation_pairs``.
        DataError: A row is not a valid preference pair (file and line).
    """
    file = Path(path)
    if file.is_dir():
        file = file / "pairs.jsonl"
    if not file.is_file() or file.suffix != ".jsonl":
        raise ConfigError(
            f"validation_pairs {path!r}: no such JSONL file (give a .jsonl file of preference pairs or a folder "
            "with pairs.jsonl, e.g. from `posttrain pairs --pool validation --output_dir DIR`)"
        )
    trained = {key for prompt in training_prompts for key in prompt_keys(prompt)}
    rows, tasks, ties, seen = [], [], 0, 0
    for line, text in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(str(file), f"not JSON: {err.msg}", line=line) from None
        pair = validate_preference(raw, source=str(file), line=line)
        if "chosen_score" in raw and "rejected_score" in raw and raw["chosen_score"] == raw["rejected_score"]:
            ties += 1
            continue
        if any(key in trained for key in prompt_keys(pair["prompt"])):
            seen += 1
            continue
        rows.append(pair)
        tasks.append(raw.get("task"))
    pool = None  # the pool `posttrain pairs` drew the prompts from, when its run manifest is next to the file
    manifest = file.parent / "run_manifest.json"
    if manifest.is_file():
        try:
            pool = (
                json.loads(manifest.read_text(encoding="utf-8")).get("config", {}).get("PairsArguments", {}).get("pool")
            )
        except (ValueError, AttributeError):
            pool = None
    return rows, tasks, {"ties_dropped": ties, "trained_prompts_dropped": seen, "file": str(file), "pool": pool}


def chance_warning(record: dict[str, Any], where: str) -> str | None:
    """The stage's warning line when ``record``'s interval is not above chance (``None`` otherwise)."""
    if record["above_chance"]:
        return None
    tasks = ", ".join(t for t, r in record["by_task"].items() if not r["above_chance"])
    return (
        f"posttrain: warning: {where}: the reward model ranks {record['n']} held-out pairs at chance: pairwise "
        f"accuracy {record['accuracy']:.3f} [95% CI {record['low']:.3f}, {record['high']:.3f}] reaches 0.5, so its "
        "scores carry no measured signal; PPO/GRPO/RLOO given it (rewards: reward_model path) will warn too. "
        + (f"Tasks not above chance: {tasks}. " if tasks else "")
        + "Train on more (or on-policy) pairs, for longer, or measure on more pairs"
    )


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, RewardConfig, ModelConfig))


def add_system_prompt(pairs, system_prompt: str | None):
    if not system_prompt:
        return pairs
    return pairs.map(lambda row: {"prompt": with_system_prompt(row["prompt"], system_prompt)}, desc="System prompt")


def main(pt_args: PosttrainArguments, training_args: RewardConfig, model_args: ModelConfig):
    """Preference pairs → (4-bit) seq-cls model → RewardTrainer → save adapter + merged model → accuracy."""
    from trl import RewardTrainer

    run = start_run(training_args)
    held_out = None
    data = load_preferences(
        pt_args.datasets,
        test_split_size=pt_args.test_split_size,
        seed=training_args.seed,
        identity=pt_args.identity,
        with_origin=True,  # for check_pair_lengths' errors (file and row); it removes the column
    )
    data = {split: add_system_prompt(data[split], pt_args.system_prompt) for split in data}
    validation = validation_tasks = validation_counts = None
    if training_args.validation_pairs:
        rows, validation_tasks, validation_counts = read_validation_pairs(
            training_args.validation_pairs, data["train"]["prompt"]
        )
        if not rows:
            raise DataError(
                validation_counts["file"],
                f"no validation pairs left to measure on ({validation_counts['ties_dropped']} ties and "
                f"{validation_counts['trained_prompts_dropped']} pairs whose prompt is a training prompt left out): "
                "validation_pairs needs pairs whose chosen reply scored above the rejected one",
            )
        validation = [{**row, "prompt": with_system_prompt(row["prompt"], pt_args.system_prompt)} for row in rows]
    loaded = {split: ds.remove_columns(ORIGIN_COLUMN) for split, ds in data.items()}  # what the fingerprint covers
    model, tokenizer, new_token_ids = load_model_and_tokenizer(
        pt_args, training_args, model_args, sequence_classification=True
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    for split in data:
        data[split], note = check_pair_lengths(
            data[split], tokenizer, training_args.max_length, pt_args.overlong_samples, trainer="reward", name=split
        )
        if note and run.state.is_main_process:
            print(f"posttrain: {note}", flush=True)

    trainer = RewardTrainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=eval_split(data, training_args),
        processing_class=tokenizer,
        peft_config=peft_config(model, model_args, new_token_ids, task_type="SEQ_CLS"),
    )
    result = train(run, trainer, training_args, fast=pt_args.fast_paths)
    metrics = dict(result.metrics)

    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir / "adapter"))
    if run.state.is_main_process:
        tokenizer.save_pretrained(output_dir / "adapter")
        merge_adapter(output_dir / "adapter", output_dir)  # full precision, never into the 4-bit weights
        reward_model = RewardModel.load(str(output_dir))
        for split in data:
            pairs = data[split]
            if (
                split == "train" and len(pairs) > TRAIN_ACCURACY_PAIRS
            ):  # a fit check; the held-out split is scored whole
                pairs = pairs.shuffle(seed=training_args.seed).select(range(TRAIN_ACCURACY_PAIRS))
            for key, value in reward_model.pairwise_accuracy(pairs).items():
                metrics[f"{split}_pairwise_{key}"] = value
        if validation is not None:
            held_out = {
                **pairwise_record(reward_model, validation, validation_tasks),
                "source": f"validation_pairs {training_args.validation_pairs}",
                **validation_counts,
            }
        elif "test" in data and len(data["test"]):
            held_out = {
                **pairwise_record(reward_model, data["test"].to_list(), [None] * len(data["test"])),
                "source": "test_split_size split",
            }
        if held_out is not None:
            held_out["interval"] = "Wilson score, 95%"
            for name, key in (("accuracy", "accuracy"), ("accuracy_low", "low"), ("accuracy_high", "high"),
                              ("mean_margin", "mean_margin"), ("pairs", "n")):  # fmt: skip
                metrics[f"validation_pairwise_{name}"] = held_out[key]
        print(
            "posttrain: reward model pairwise accuracy: "
            + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if "pairwise_accuracy" in k)
        )
        if held_out is not None:
            print(
                f"posttrain: held-out pairwise accuracy ({held_out['source']}): {held_out['accuracy']:.3f} "
                f"[95% CI {held_out['low']:.3f}, {held_out['high']:.3f}] on {held_out['n']} pairs"
                + "".join(
                    f"; {t} {r['accuracy']:.3f} [{r['low']:.3f}, {r['high']:.3f}] n={r['n']}"
                    for t, r in held_out["by_task"].items()
                ),
                flush=True,
            )
            warning = chance_warning(
                held_out, "validation_pairs" if validation is not None else "test_split_size (no validation_pairs)"
            )
            if warning:
                print(warning, flush=True)
            if held_out.get("pool") == "train":
                print(
                    "posttrain: warning: validation_pairs were sampled from the tasks' train pool (their run "
                    "manifest says pool: train); sample them with `posttrain pairs --pool validation` so that the "
                    "accuracy is measured on prompts no training data draws from",
                    flush=True,
                )
    finish_run(
        run,
        trainer,
        stage="reward",
        title=f"Reward model on {model_args.model_name_or_path}",
        configs=(pt_args, training_args, model_args),
        data_fingerprint=fingerprint(loaded, pt_args.datasets),
        summary={k.replace("_", " "): f"{v:.3f}" for k, v in metrics.items() if k.endswith("pairwise_accuracy")},
        metrics=metrics,
        **({VALIDATION_RECORD: held_out} if run.state.is_main_process and held_out is not None else {}),
    )
    if run.state.is_main_process:
        print(f"posttrain: reward model (merged) saved to {run.final_dir}, adapter in {run.final_dir / 'adapter'}")
    return trainer, metrics
