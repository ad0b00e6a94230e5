"""How well a reward model ranks preference pairs: pairwise accuracy with a 95% Wilson interval, overall and per
task, on the training split, the held-out split or ``validation_pairs`` (what the reward stage measures and records
as ``validation_pairwise``), and the warning when that interval reaches chance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posttrain.data.formats import prompt_keys, with_system_prompt
from posttrain.data.preference import validate_preference
from posttrain.data.validation import DataError
from posttrain.errors import ConfigError
from posttrain.log import get_logger
from posttrain.models.reward import RewardModel
from posttrain.stats import wilson_interval

logger = get_logger(__name__)

#: training pairs scored for the train-split pairwise accuracy (all of them cost as much as the training itself on CPU)
TRAIN_ACCURACY_PAIRS = 64
#: the accuracy of a reward model that ranks pairs by coin flip
CHANCE = 0.5


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


def load_validation(path: str, training_prompts, system_prompt: str | None) -> dict:
    """The ``validation_pairs`` to measure on (:func:`read_validation_pairs`),
    with the run's system prompt; a DataError when none is left."""
    rows, tasks, counts = read_validation_pairs(path, training_prompts)
    if not rows:
        raise DataError(
            counts["file"],
            f"no validation pairs left to measure on ({counts['ties_dropped']} ties and "
            f"{counts['trained_prompts_dropped']} pairs whose prompt is a training prompt left out): "
            "validation_pairs needs pairs whose chosen reply scored above the rejected one",
        )
    rows = [{**row, "prompt": with_system_prompt(row["prompt"], system_prompt)} for row in rows]
    return {"rows": rows, "tasks": tasks, "counts": counts, "source": f"validation_pairs {path}"}


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


def measure(
    reward_model: RewardModel, data: dict, *, seed: int, validation: dict[str, Any] | None = None
) -> tuple[dict[str, float], dict[str, Any] | None]:
    """The pairwise accuracy metrics of ``reward_model`` on each split of ``data`` (the training split on a seeded
    sample of :data:`TRAIN_ACCURACY_PAIRS`) and its held-out record: on ``validation`` (``{"rows", "tasks",
    "counts", "source"}`` from :func:`read_validation_pairs`) when given, else on the ``test`` split, if any."""
    metrics: dict[str, float] = {}
    for split, pairs in data.items():
        if split == "train" and len(pairs) > TRAIN_ACCURACY_PAIRS:  # a fit check; the held-out split is scored whole
            pairs = pairs.shuffle(seed=seed).select(range(TRAIN_ACCURACY_PAIRS))
        for key, value in reward_model.pairwise_accuracy(pairs).items():
            metrics[f"{split}_pairwise_{key}"] = value
    held_out = None
    if validation is not None:
        held_out = {
            **pairwise_record(reward_model, validation["rows"], validation["tasks"]),
            "source": validation["source"],
            **validation["counts"],
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
    return metrics, held_out


def log_accuracy(metrics: dict[str, float], held_out: dict[str, Any] | None, *, where: str) -> None:
    """The accuracy lines of the reward stage, and its warnings: at chance (``where``: the setting measured on),
    validation pairs drawn from the train pool."""
    logger.info(
        "posttrain: reward model pairwise accuracy: "
        + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if "pairwise_accuracy" in k)
    )
    if held_out is None:
        return
    logger.info(
        f"posttrain: held-out pairwise accuracy ({held_out['source']}): {held_out['accuracy']:.3f} "
        f"[95% CI {held_out['low']:.3f}, {held_out['high']:.3f}] on {held_out['n']} pairs"
        + "".join(
            f"; {t} {r['accuracy']:.3f} [{r['low']:.3f}, {r['high']:.3f}] n={r['n']}"
            for t, r in held_out["by_task"].items()
        )
    )
    warning = chance_warning(held_out, where)
    if warning:
        logger.warning(warning)
    if held_out.get("pool") == "train":
        logger.warning(
            "posttrain: warning: validation_pairs were sampled from the tasks' train pool (their run manifest says "
            "pool: train); sample them with `posttrain pairs --pool validation` so that the accuracy is measured on "
            "prompts no training data draws from"
        )
