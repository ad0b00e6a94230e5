"""Supervised fine-tuning with (Q)LoRA and chat templates on TRL's SFTTrainer.

Conversations are rendered with the tokenizer's chat template and tokenized here, with an assistant-only loss mask
(:func:`posttrain.chat_templates.tokenize_conversations`: one sequence per conversation, or one per diverging assistant
turn for a template that is not prefix-preserving, such as Qwen3's); TRL then builds labels, truncates, packs and
trains.
"""

from __future__ import annotations

from posttrain import chat_templates
from posttrain.chat_templates import tokenize_conversations
from posttrain.configs import ModelConfig, PosttrainArguments, SFTConfig
from posttrain.data import fingerprint, load_conversations
from posttrain.data.formats import with_system_prompt
from posttrain.training.common import (
    finish_run,
    load_model_and_tokenizer,
    peft_config,
    start_run,
    train,
)


def trainer_class():
    """TRL's ``SFTTrainer`` with a loss computed only where it is needed.

    With assistant-only loss most positions carry no label, yet a plain LM head (and TRL's fused one off GPU)
    projects every position onto the whole vocabulary. Here the model is asked for logits at the positions whose
    next token is trained only (transformers' ``logits_to_keep``), through the model's own forward, so peft's
    trainable new-token rows of ``lm_head`` (``<|im_end|>`` added to a base model) are applied and learned --
    TRL's fused head reads ``lm_head.weight`` directly and would skip them.
    """
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    class PosttrainSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            labels = inputs.pop("labels")
            targets = labels[:, 1:]  # position t predicts token t + 1
            keep = (targets != -100).any(dim=0).nonzero().flatten()
            if keep.numel() == 0:  # nothing trained in this micro-batch: keep one position, contributing zero
                keep = torch.zeros(1, dtype=torch.long, device=labels.device)
            outputs = model(**inputs, use_cache=False, logits_to_keep=keep)
            logits = outputs.logits.float()
            kept = targets[:, keep]
            loss = F.cross_entropy(logits.flatten(0, 1), kept.flatten(), ignore_index=-100, reduction="sum")
            valid = kept != -100
            loss = loss / (num_items_in_batch if num_items_in_batch is not None else valid.sum().clamp(min=1))
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients; undo it for a token mean
            with torch.no_grad():
                correct = ((logits.argmax(-1) == kept) & valid).sum()
                counts = self.accelerator.gather_for_metrics(torch.stack([correct, valid.sum()]).view(1, 2)).sum(0)
                self._metrics[mode]["mean_token_accuracy"].append((counts[0] / counts[1].clamp(min=1)).item())
            return (loss, outputs) if return_outputs else loss

    return PosttrainSFTTrainer


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, SFTConfig, ModelConfig))


def tokenize_dataset(conversations, tokenizer, *, system_prompt: str | None = None):
    """Map a ``messages`` dataset to ``input_ids`` + ``assistant_masks`` with the tokenizer's chat template (a
    conversation may give several rows where the template is not prefix-preserving)."""

    def tokenize(batch):
        rows = [
            row
            for messages in batch["messages"]
            for row in tokenize_conversations(tokenizer, with_system_prompt(messages, system_prompt))
        ]
        return {key: [row[key] for row in rows] for key in ("input_ids", "assistant_masks")}

    return conversations.map(
        tokenize,
        batched=True,
        remove_columns=conversations.column_names,
        desc="Rendering chat template and loss masks",
    )


def main(pt_args: PosttrainArguments, training_args: SFTConfig, model_args: ModelConfig):
    """Data → tokenizer/model → SFTTrainer → train → save adapter, tokenizer, model card, manifest."""

    run = start_run(training_args)
    # Data first: every row is validated before a model is loaded or an output directory exists.
    data = load_conversations(
        pt_args.datasets, test_split_size=pt_args.test_split_size, seed=training_args.seed, identity=pt_args.identity
    )
    model, tokenizer, new_token_ids = load_model_and_tokenizer(pt_args, training_args, model_args)

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
    if run.state.is_main_process and pt_args.show_example:
        example = tokenized["train"][0]
        print(f"── training example 0 (trained text in ⟦ ⟧; {stats.fraction:.0%} of all tokens are trained) ──")
        print(chat_templates.format_masked(tokenizer, example["input_ids"], example["assistant_masks"]))
        print("─" * 60, flush=True)

    trainer = trainer_class()(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized.get("test") if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=peft_config(model, model_args, new_token_ids),
    )
    result = train(run, trainer, training_args, fast=pt_args.fast_paths)

    metrics = dict(result.metrics)
    if "test" in tokenized:  # every rank takes part in evaluation
        metrics.update(trainer.evaluate(tokenized["test"]))
    trainer.save_model(training_args.output_dir)
    if run.state.is_main_process:
        tokenizer.save_pretrained(training_args.output_dir)
    finish_run(
        run,
        trainer,
        stage="sft",
        title=f"SFT adapter for {model_args.model_name_or_path}",
        configs=(pt_args, training_args, model_args),
        data_fingerprint=fingerprint(data, pt_args.datasets),
        summary={
            "trained tokens": f"{stats.trained} of {stats.total} ({stats.fraction:.1%})",
            "chat template": pt_args.chat_template,
        },
        metrics=metrics,
        new_special_tokens=tokenizer.convert_ids_to_tokens(new_token_ids),
        loss_mask={"trained_tokens": stats.trained, "total_tokens": stats.total},
    )
    if run.state.is_main_process:
        print(f"posttrain: SFT adapter, tokenizer, README.md and run_manifest.json saved to {training_args.output_dir}")
    return trainer
