"""Supervised fine-tuning with (Q)LoRA and chat templates on TRL's SFTTrainer.

Conversations are rendered with the tokenizer's chat template and tokenized here, with an assistant-only loss mask
(:func:`posttrain.chat_templates.tokenize_conversations`: one sequence per conversation, or one per diverging assistant
turn for a template that is not prefix-preserving, such as Qwen3's); TRL then builds labels, truncates, packs and
trains. Tool calls, tool results, reasoning, ``tools`` and ``chat_template_kwargs`` (:mod:`posttrain.data.tools`) go
to every rendering; :func:`~posttrain.training.sft_templates.check_template_support` first makes sure the template
renders them. The machinery is :mod:`posttrain.training.sft` (loss, trainer, tokenization) and
:mod:`posttrain.training.sft_templates` (the template and its checks).
"""

from __future__ import annotations

from posttrain import chat_templates
from posttrain.configs import ModelConfig, PosttrainArguments, SFTConfig
from posttrain.data import fingerprint, load_conversations
from posttrain.log import get_logger
from posttrain.training.common import (
    eval_split,
    finish_run,
    load_model_and_tokenizer,
    peft_config,
    start_run,
    train,
)
from posttrain.training.sft import check_loss_settings, tokenize_dataset, trainer_class
from posttrain.training.sft_templates import settle_template

__all__ = ["main", "make_parser"]

logger = get_logger(__name__)


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, SFTConfig, ModelConfig))


def main(pt_args: PosttrainArguments, training_args: SFTConfig, model_args: ModelConfig):
    """Data → tokenizer/model → SFTTrainer → train → save adapter, tokenizer, model card, manifest."""

    check_loss_settings(training_args)
    run = start_run(training_args)
    # Data first: every row is validated before a model is loaded or an output directory exists.
    data = load_conversations(
        pt_args.datasets, test_split_size=pt_args.test_split_size, seed=training_args.seed, identity=pt_args.identity
    )
    model, tokenizer, new_token_ids = load_model_and_tokenizer(pt_args, training_args, model_args)
    added, template_used = settle_template(
        data,
        model,
        tokenizer,
        chat_template=pt_args.chat_template,
        system_prompt=pt_args.system_prompt,
        model_name=model_args.model_name_or_path,
    )
    new_token_ids = [*new_token_ids, *added]

    with run.state.main_process_first():
        tokenized = {
            split: tokenize_dataset(data[split], tokenizer, system_prompt=pt_args.system_prompt) for split in data
        }
    tokenized = {
        split: chat_templates.check_lengths(
            ds, training_args.max_length, pt_args.overlong_samples, name=split, tokenizer=tokenizer
        )
        for split, ds in tokenized.items()
    }
    stats = chat_templates.check_mask_coverage(tokenized["train"])
    if pt_args.show_example:
        example = tokenized["train"][0]
        trained = f"{stats.fraction:.0%} of all tokens are trained"
        logger.info(f"── training example 0 (trained text in ⟦ ⟧; {trained}) ──")
        logger.info(chat_templates.format_masked(tokenizer, example["input_ids"], example["assistant_masks"]))
        logger.info("─" * 60)

    eval_dataset = eval_split(tokenized, training_args)
    trainer = trainer_class()(
        model=model,
        args=run.trainer_args(training_args),
        train_dataset=tokenized["train"],
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config(model, model_args, new_token_ids),
    )
    result = train(run, trainer, training_args, fast=pt_args.fast_paths)

    metrics = dict(result.metrics)
    if "test" in tokenized:  # every rank takes part in evaluation
        metrics.update(trainer.evaluate(tokenized["test"]))
    trainer.save_model(str(run.work_dir))
    if run.state.is_main_process:
        tokenizer.save_pretrained(run.work_dir)
    finish_run(
        run,
        trainer,
        stage="sft",
        title=f"SFT adapter for {model_args.model_name_or_path}",
        configs=(pt_args, training_args, model_args),
        data_fingerprint=fingerprint(data, pt_args.datasets),
        summary={
            "trained tokens": f"{stats.trained} of {stats.total} ({stats.fraction:.1%})",
            "chat template": template_used,
        },
        metrics=metrics,
        new_special_tokens=tokenizer.convert_ids_to_tokens(new_token_ids),
        loss_mask={"trained_tokens": stats.trained, "total_tokens": stats.total},
        chat_template=template_used,
    )
    logger.info(f"posttrain: SFT adapter, tokenizer, README.md and run_manifest.json saved to {run.final_dir}")
    return trainer
