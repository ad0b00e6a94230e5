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

import torch

from posttrain.chat_templates import ChatTemplateError, encode_rendered, render
from posttrain.configs import DPOConfig, ModelConfig, PosttrainArguments
from posttrain.data import fingerprint, load_preferences
from posttrain.data.preference import ORIGIN_COLUMN, check_pair_lengths
from posttrain.models.generation import stop_token_ids
from posttrain.stages.reward import add_system_prompt
from posttrain.training.common import (
    eval_split,
    finish_run,
    load_model_and_tokenizer,
    peft_config,
    start_run,
    train,
)


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, DPOConfig, ModelConfig))


@torch.no_grad()
def completion_logps(model, tokenizer, prompts, completions) -> list[float]:
    """Summed log-probability of each assistant completion (a one-message list) after its prompt."""

    device = next(model.parameters()).device
    out = []
    for prompt, completion in zip(prompts, completions, strict=True):
        prefix = encode_rendered(tokenizer, render(tokenizer, prompt, add_generation_prompt=True))
        full = encode_rendered(tokenizer, render(tokenizer, [*prompt, *completion]))
        ids, start = torch.tensor([full["input_ids"]], device=device), len(prefix["input_ids"])
        # logits only where a completion token is predicted (positions start - 1 .. end - 2)
        logits = model(input_ids=ids, logits_to_keep=ids.shape[1] - start + 1).logits[0, :-1].float()
        out.append(logits.log_softmax(-1).gather(-1, ids[0, start:, None]).sum().item())
    return out


def preference_margins(model, tokenizer, pairs) -> list[float]:
    """log p(chosen) - log p(rejected) for each pair: what DPO pushes up (relative to the reference)."""
    prompts = [row["prompt"] for row in pairs]
    chosen = completion_logps(model, tokenizer, prompts, [row["chosen"] for row in pairs])
    rejected = completion_logps(model, tokenizer, prompts, [row["rejected"] for row in pairs])
    return [c - r for c, r in zip(chosen, rejected)]


def fit_pairs(data, tokenizer, model, training_args, policy: str, verbose: bool = True) -> dict:
    """``overlong_samples`` on every split (:func:`~posttrain.data.preference.check_pair_lengths`, as DPOTrainer
    tokenizes and truncates); prints what was dropped or will be cut."""
    fitted = {}
    for split, pairs in data.items():
        fitted[split], note = check_pair_lengths(
            pairs,
            tokenizer,
            training_args.max_length,
            policy,
            trainer="dpo",
            truncation_mode=training_args.truncation_mode,
            stop_token_ids=stop_token_ids(model, tokenizer),
            name=split,
        )
        if note and verbose:
            print(f"posttrain: {note}", flush=True)
    return fitted


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
        raise ChatTemplateError(
            f"{model_args.model_name_or_path} has no chat template tokens yet ({tokenizer.convert_ids_to_tokens(new_token_ids)} "
            "would be new): run SFT first and give DPO the SFT output as model_name_or_path"
        )
    data = fit_pairs(data, tokenizer, model, training_args, pt_args.overlong_samples, run.state.is_main_process)

    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # with a peft adapter, TRL scores the reference with the adapter disabled
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=eval_split(data, training_args),
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

    trainer.save_model(training_args.output_dir)
    if run.state.is_main_process:
        tokenizer.save_pretrained(training_args.output_dir)
        print(
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
