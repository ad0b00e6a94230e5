"""Reward model: a one-output sequence-classification head trained on preference pairs with TRL's RewardTrainer.

(Q)LoRA on the backbone plus a trained ``score`` head (Bradley-Terry loss, Ouyang et al. 2022). The stage writes
``output_dir/adapter/`` (the LoRA adapter) and, next to it, the adapter merged into full-precision weights as a
plain HF sequence-classification folder in ``output_dir`` itself, which PPO, GRPO (``reward_funcs``) and
evaluation load directly. Held-out pairwise accuracy is measured on that saved model (and training-split accuracy on
a seeded sample of at most 64 pairs).

Length: pairs longer than ``max_length`` (prompt + chosen or prompt + rejected, as RewardTrainer tokenizes them) are
refused by default, naming the file and row (``overlong_samples: error``); ``drop`` skips them with a count, and so
does ``truncate``: RewardTrainer never cuts a pair (it would filter it out silently).
"""

from __future__ import annotations

from posttrain.configs import ModelConfig, PosttrainArguments, RewardConfig
from posttrain.data import fingerprint, load_preferences
from posttrain.data.formats import with_system_prompt
from posttrain.data.preference import ORIGIN_COLUMN, check_pair_lengths
from posttrain.models.merge import merge_adapter
from posttrain.models.reward import RewardModel
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


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, RewardConfig, ModelConfig))


def add_system_prompt(pairs, system_prompt: str | None):
    if not system_prompt:
        return pairs
    return pairs.map(lambda row: {"prompt": with_system_prompt(row["prompt"], system_prompt)}, desc="System prompt")


def main(pt_args: PosttrainArguments, training_args: RewardConfig, model_args: ModelConfig):
    """Preference pairs → (4-bit) seq-cls model → RewardTrainer → save adapter + merged model → accuracy."""
    from pathlib import Path

    from trl import RewardTrainer

    run = start_run(training_args)
    data = load_preferences(
        pt_args.datasets,
        test_split_size=pt_args.test_split_size,
        seed=training_args.seed,
        identity=pt_args.identity,
        with_origin=True,  # for check_pair_lengths' errors (file and row); it removes the column
    )
    data = {split: add_system_prompt(data[split], pt_args.system_prompt) for split in data}
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
        print(
            "posttrain: reward model pairwise accuracy: "
            + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if "pairwise_accuracy" in k)
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
    )
    if run.state.is_main_process:
        print(f"posttrain: reward model (merged) saved to {run.final_dir}, adapter in {run.final_dir / 'adapter'}")
    return trainer, metrics
