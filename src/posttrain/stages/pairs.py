"""``posttrain pairs``: on-policy preference pairs from a model (the logic is :mod:`posttrain.rl.pairs`).

    posttrain pairs --model_name_or_path smollm2-135m-instruct --tasks builtin:decimal_compare,builtin:unknown_entity \\
        --num_prompts 200 --n 4 --output_dir data/pairs
    posttrain pairs --config recipes/configs/smollm2-135m/pairs.yaml --model_name_or_path outputs/smollm2-135m/sft

Inputs (output path, prompts, settings) are checked before the model is loaded; that the replies fit the DPO run's
``max_length`` (the longest prompt + ``max_new_tokens``, :func:`posttrain.rl.pairs.check_reply_budget`) once its
tokenizer is, before any sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trl

from posttrain.configs import DEFAULT_MODEL, IdentityArguments
from posttrain.data.spec import BUILTIN_PREFIX
from posttrain.data.validation import DataError
from posttrain.errors import ConfigError
from posttrain.log import get_logger
from posttrain.manifest import write_manifest
from posttrain.models.generation import load_model_for_generation
from posttrain.models.reward import RewardModel
from posttrain.rl.pairs import (
    ScoreFn,
    Scorer,
    build_pairs,
    check_reply_budget,
    read_prompts,
    refuse_existing,
    reward_model_scorer,
    rule_scorer,
    task_prompts,
    write_pairs,
)
from posttrain.tasks import ALL_TASKS

logger = get_logger(__name__)


@dataclass
class PairsArguments(IdentityArguments):
    """What ``posttrain pairs`` samples, how it scores, and where it writes."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Model alias, folder, hub id or LoRA adapter folder (default: the embedded default)."},
    )
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "The folder to write: the pairs (pairs.jsonl) and their run_manifest.json, as every stage "
            "writes: what the pipeline needs to chain and skip this stage."
        },
    )
    tasks: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated builtin tasks, e.g. builtin:decimal_compare,builtin:unknown_entity "
            "(default: builtin:all)."
        },
    )
    prompts: str | None = field(
        default=None,
        metadata={
            "help": "A .jsonl/.json/.parquet/.csv file or folder of rows with 'prompt' or 'messages', and "
            "'task'/'answer'/'meta' for scoring (instead of `tasks`)."
        },
    )
    num_prompts: int = field(
        default=100, metadata={"help": "Prompts in all (tasks: split evenly between tasks; prompts: the first ones)."}
    )
    pool: str = field(
        default="train",
        metadata={
            "help": "Which pool of the builtin `tasks` the prompts come from: `train` (pairs to train on) or "
            "`validation` (held-out pairs, e.g. the reward stage's `validation_pairs`); `test` is sealed for "
            "reports and refused here."
        },
    )
    n: int = field(default=4, metadata={"help": "Replies sampled per prompt (at least 2)."})
    max_new_tokens: int = field(
        default=96,
        metadata={
            "help": "Token budget per reply. The longest prompt (with the chat template) + max_new_tokens + the "
            "template's end-of-turn tokens must fit `max_length`."
        },
    )
    max_length: int | None = field(
        default=192,
        metadata={
            "help": "The `max_length` of the DPO run these pairs are for (192: recipes/configs/smollm2-135m/dpo.yaml). "
            "A prompt + max_new_tokens reply that would not fit is refused before sampling, naming both keys: DPO "
            "would cut the end and the end-of-turn token off such a chosen reply. null: no check."
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling share, in (0, 1]."})
    seed: int = field(default=42, metadata={"help": "Seed for task prompts and sampling."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generation batch."})
    min_margin: float = field(
        default=0.0, metadata={"help": "Keep a prompt only if best - worst score is larger than this."}
    )
    reward_model: str | None = field(
        default=None,
        metadata={
            "help": "Score replies with this reward model (a folder written by `posttrain reward`) instead of "
            "the rule checks; prompts then need no 'task'."
        },
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message added to prompts that have none."}
    )
    require_finished: bool = field(
        default=True,
        metadata={
            "help": "Keep a pair only when its chosen reply ended with an end-of-turn token (a reply cut off at "
            "max_new_tokens would teach DPO not to stop); false keeps them."
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace the pairs file if it exists."})
    model: str | None = field(default=None, metadata={"help": "Deprecated: the old name of `model_name_or_path`."})
    output: str | None = field(
        default=None,
        metadata={
            "help": "Deprecated: use `output_dir`. The JSONL file to write (with `output_dir`: instead of "
            "<output_dir>/pairs.jsonl; without it no run_manifest.json is written)."
        },
    )

    def __post_init__(self) -> None:
        if self.model is not None:
            if self.model_name_or_path is not None:
                raise ConfigError("model is the old name of model_name_or_path: give only model_name_or_path")
            logger.warning("pairs: 'model' is deprecated, use 'model_name_or_path' (same value)")
            self.model_name_or_path, self.model = self.model, None
        if self.output is not None:
            logger.warning(
                "pairs: 'output' is deprecated, use 'output_dir' (the pairs go to <output_dir>/pairs.jsonl, with "
                "their run_manifest.json)"
            )
        if not self.output and not self.output_dir:
            raise ConfigError("output_dir is required: the folder to write pairs.jsonl and its run_manifest.json to")
        if self.tasks is not None and self.prompts is not None:
            raise ConfigError("give tasks or prompts, not both")
        if self.pool not in ("train", "validation"):
            raise ConfigError(
                f"pool must be train or validation (got {self.pool!r}): the test pool is sealed for reports, and "
                "pairs are what training and selection read"
            )
        if self.pool != "train" and self.prompts is not None:
            raise ConfigError(f"pool {self.pool!r} applies to builtin `tasks` only, not to a `prompts` file")
        for ok, message in (
            (self.n >= 2, f"--n must be at least 2 (got {self.n})"),
            (self.num_prompts >= 1, f"--num_prompts must be at least 1 (got {self.num_prompts})"),
            (self.temperature > 0, f"--temperature must be > 0 (got {self.temperature})"),
            (0 < self.top_p <= 1, f"--top_p must be in (0, 1] (got {self.top_p})"),
            (self.max_new_tokens >= 1 and self.batch_size >= 1, "--max_new_tokens and --batch_size must be at least 1"),
            (self.min_margin >= 0, f"--min_margin must be >= 0 (got {self.min_margin})"),
            (
                self.max_length is None or self.max_new_tokens < self.max_length,
                f"--max_new_tokens {self.max_new_tokens} must be smaller than --max_length {self.max_length} (the DPO "
                "config's): prompt + reply must fit, or DPO would cut the end and the end-of-turn token off chosen "
                "replies",
            ),
        ):
            if not ok:
                raise ConfigError(message)

    @property
    def pairs_file(self) -> Path:
        """The JSONL file the pairs go to: ``<output_dir>/pairs.jsonl``, or the deprecated ``output``."""
        return Path(self.output) if self.output else Path(self.output_dir) / "pairs.jsonl"


def make_parser() -> trl.TrlParser:
    return trl.TrlParser((PairsArguments,))


def main(args: PairsArguments) -> int:
    output = args.pairs_file
    if output.exists() and not args.overwrite:
        refuse_existing(output)
    if args.prompts is not None:
        prompts = read_prompts(args.prompts, limit=args.num_prompts, system_prompt=args.system_prompt)
        unscored = sum(item.task is None for item in prompts)
        if unscored and args.reward_model is None:
            raise DataError(
                args.prompts,
                f"{unscored} of {len(prompts)} prompts have no 'task' to check replies "
                "against; pass --reward_model to score free-form prompts",
            )
    else:
        tasks = (args.tasks or BUILTIN_PREFIX + ALL_TASKS).split(",")
        prompts = task_prompts(
            tasks,
            args.num_prompts,
            seed=args.seed,
            identity=args.identity,
            system_prompt=args.system_prompt,
            pool=args.pool,  # type: ignore[arg-type]
        )
    scorer: Scorer | ScoreFn = rule_scorer
    if args.reward_model is not None:
        scorer = reward_model_scorer(_load_reward_model(args.reward_model))
    model, tokenizer = _load_model(args.model_name_or_path)
    check_reply_budget(tokenizer, prompts, max_new_tokens=args.max_new_tokens, max_length=args.max_length)
    pairs = build_pairs(
        model,
        tokenizer,
        prompts,
        scorer=scorer,
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        batch_size=args.batch_size,
        min_margin=args.min_margin,
        require_finished=args.require_finished,
        progress=True,
    )
    if not pairs:
        raise DataError(
            str(output),
            f"no pairs to write: all {pairs.prompts} prompts were skipped (every reply scored the same, within "
            f"--min_margin, or, for {pairs.truncated} of them, every best reply was cut off at --max_new_tokens). "
            "Try a larger --n, a higher --temperature, a larger --max_new_tokens or other tasks.",
        )
    write_pairs(_with_tasks(pairs, prompts), output, overwrite=args.overwrite)
    counts = {
        "pairs": len(pairs),
        "prompts": pairs.prompts,
        "skipped": pairs.skipped,
        "skipped_cut_off": pairs.truncated,
        "chosen_mean_score": sum(r["chosen_score"] for r in pairs) / len(pairs),
        "rejected_mean_score": sum(r["rejected_score"] for r in pairs) / len(pairs),
    }
    if args.output_dir:
        write_manifest(args.output_dir, stage="pairs", configs=(args,), output=str(output), metrics=counts)
    logger.info(
        f"wrote {len(pairs)} pairs to {output} ({pairs.skipped} of {pairs.prompts} prompts skipped: best and worst "
        f"scores within {args.min_margin}, fewer than two non-empty replies, or ({pairs.truncated}) a best reply "
        "cut off at max_new_tokens)"
    )
    return 0


def _with_tasks(pairs: list[dict[str, Any]], prompts: list) -> list[dict[str, Any]]:
    """Each pair with the ``task`` of its prompt (when it has one): what per-task figures (the reward stage's
    ``validation_pairs`` accuracy) group by."""
    import json

    tasks = {json.dumps(item.messages, sort_keys=True): item.task for item in prompts}
    rows = []
    for row in pairs:
        task = tasks.get(json.dumps(row["prompt"], sort_keys=True))
        rows.append({**row, "task": task} if task is not None else row)
    return rows


def _load_reward_model(path: str) -> Any:
    import torch

    reward_model = RewardModel.load(path)
    if torch.cuda.is_available():
        reward_model.model.to("cuda")
    return reward_model


def _load_model(name: str | None) -> tuple[Any, Any]:
    import torch

    model, tokenizer = load_model_for_generation(name or DEFAULT_MODEL)
    if torch.cuda.is_available():
        model.to("cuda")
    return model, tokenizer
