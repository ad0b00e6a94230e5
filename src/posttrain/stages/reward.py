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

from posttrain.configs import ModelConfig, PosttrainArguments, RewardConfig
from posttrain.data import fingerprint, load_preferences
from posttrain.data.preference import ORIGIN_COLUMN, add_system_prompt, check_pair_lengths
from posttrain.log import get_logger
from posttrain.models.merge import merge_adapter
from posttrain.models.reward import VALIDATION_RECORD, RewardModel
from posttrain.models.reward_accuracy import load_validation, log_accuracy, measure
from posttrain.training.common import (
    eval_split,
    finish_run,
    load_model_and_tokenizer,
    peft_config,
    start_run,
    train,
)

logger = get_logger(__name__)


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, RewardConfig, ModelConfig))


def main(pt_args: PosttrainArguments, training_args: RewardConfig, model_args: ModelConfig):
    """Preference pairs → (4-bit) seq-cls model → RewardTrainer → save adapter + merged model → accuracy."""
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
    validation = None
    if training_args.validation_pairs:
        validation = load_validation(training_args.validation_pairs, data["train"]["prompt"], pt_args.system_prompt)
    loaded = {split: ds.remove_columns(ORIGIN_COLUMN) for split, ds in data.items()}  # what the fingerprint covers
    model, tokenizer, new_token_ids = load_model_and_tokenizer(
        pt_args, training_args, model_args, sequence_classification=True
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    for split in data:
        data[split], note = check_pair_lengths(
            data[split], tokenizer, training_args.max_length, pt_args.overlong_samples, trainer="reward", name=split
        )
        if note:
            logger.info(f"posttrain: {note}")

    eval_dataset = eval_split(data, training_args)
    trainer = RewardTrainer(
        model=model,
        args=run.trainer_args(training_args),
        train_dataset=data["train"],
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config(model, model_args, new_token_ids, task_type="SEQ_CLS"),
    )
    result = train(run, trainer, training_args, fast=pt_args.fast_paths)
    metrics = dict(result.metrics)

    trainer.save_model(str(run.work_dir / "adapter"))
    held_out = None
    if run.state.is_main_process:
        tokenizer.save_pretrained(run.work_dir / "adapter")
        merge_adapter(run.work_dir / "adapter", run.work_dir)  # full precision, never into the 4-bit weights
        accuracy, held_out = measure(
            RewardModel.load(str(run.work_dir)), data, seed=training_args.seed, validation=validation
        )
        metrics.update(accuracy)
        log_accuracy(
            metrics,
            held_out,
            where="validation_pairs" if validation is not None else "test_split_size (no validation_pairs)",
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
        **({VALIDATION_RECORD: held_out} if held_out is not None else {}),
    )
    logger.info(f"posttrain: reward model (merged) saved to {run.final_dir}, adapter in {run.final_dir / 'adapter'}")
    return trainer, metrics
