"""Direct Preference Optimization (Rafailov et al. 2023) on (Q)LoRA with TRL's DPOTrainer.

Starting point: ``model_name_or_path`` names the SFT result (its adapter folder). posttrain **merges the SFT
adapter into the full-precision base and trains a new LoRA adapter on top** (4-bit when ``load_in_4bit``), rather
than continuing the SFT adapter. Why: DPO's reference policy must be the SFT model, and with a fresh adapter on the
merged SFT weights "adapter disabled" *is* the SFT model -- the reference costs no memory and no second adapter
copy (continuing the SFT adapter would need a frozen copy of it as the reference). The adapter chain stays explicit
(SFT adapter → DPO adapter) and the export stage merges it in order. ``beta``, ``loss_type`` and
``precompute_ref_log_probs`` are TRL's DPOConfig keys.

Length: every pair is measured as DPOTrainer tokenizes it (prompt + chosen, prompt + rejected, chat template)
against ``max_length`` before training, with ``overlong_samples`` (default ``error``, naming the file and row;
:func:`posttrain.data.preference.check_pair_lengths`): DPOTrainer would otherwise cut the end -- and the
end-of-turn token -- off a long chosen reply silently and train it as a finished one. With ``truncate`` such pairs
are dropped (counted); only pairs whose chosen reply keeps its end-of-turn token are left for DPOTrainer to cut.
"""

from __future__ import annotations

from posttrain.chat_templates import ChatTemplateError
from posttrain.configs import DPOConfig, ModelConfig, PosttrainArguments
from posttrain.data import fingerprint, load_preferences
from posttrain.data.preference import ORIGIN_COLUMN, add_system_prompt
from posttrain.log import get_logger
from posttrain.training.common import (
    eval_split,
    finish_run,
    load_model_and_tokenizer,
    peft_config,
    start_run,
    train,
)
from posttrain.training.dpo import fit_pairs, preference_margins

logger = get_logger(__name__)


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, DPOConfig, ModelConfig))


def main(pt_args: PosttrainArguments, training_args: DPOConfig, model_args: ModelConfig):
    """Preference pairs → merged SFT model (4-bit) + new adapter → DPOTrainer (ref = adapter off) → save."""
    from trl import DPOTrainer

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
    model, tokenizer, new_token_ids = load_model_and_tokenizer(pt_args, training_args, model_args)
    if new_token_ids:
        new_tokens = tokenizer.convert_ids_to_tokens(new_token_ids)
        raise ChatTemplateError(
            f"{model_args.model_name_or_path} has no chat template tokens yet ({new_tokens} would be new): run SFT "
            "first and give DPO the SFT output as model_name_or_path"
        )
    data = fit_pairs(data, tokenizer, model, training_args, pt_args.overlong_samples)

    eval_dataset = eval_split(data, training_args)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # with a peft adapter, TRL scores the reference with the adapter disabled
        args=run.trainer_args(training_args),
        train_dataset=data["train"],
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config(model, model_args, new_token_ids),
    )
    probe = data["train"].select(range(min(len(data["train"]), 32)))
    result = train(run, trainer, training_args, fast=pt_args.fast_paths)
    metrics = dict(result.metrics)
    if "test" in data and training_args.eval_strategy != "no":
        metrics.update(trainer.evaluate())

    policy = trainer.accelerator.unwrap_model(trainer.model)
    policy.eval()
    after = preference_margins(policy, tokenizer, probe)
    with policy.disable_adapter():  # the reference: the SFT model itself
        before = preference_margins(policy, tokenizer, probe)
    metrics["margin_reference"] = sum(before) / len(before)
    metrics["margin_policy"] = sum(after) / len(after)

    trainer.save_model(str(run.work_dir))
    if run.state.is_main_process:
        tokenizer.save_pretrained(run.work_dir)
    logger.info(
        f"posttrain: log p(chosen) - log p(rejected) on {len(probe)} training pairs: "
        f"{metrics['margin_reference']:.3f} (SFT reference) -> {metrics['margin_policy']:.3f} (DPO policy)"
    )
    finish_run(
        run,
        trainer,
        stage="dpo",
        title=f"DPO adapter on {model_args.model_name_or_path}",
        configs=(pt_args, training_args, model_args),
        data_fingerprint=fingerprint(loaded, pt_args.datasets),
        summary={
            "beta": training_args.beta,
            "loss_type": ",".join(training_args.loss_type),
            "chosen-rejected log-prob margin": f"{metrics['margin_reference']:.3f} → {metrics['margin_policy']:.3f}",
        },
        metrics=metrics,
    )
    return trainer, metrics
