"""KTO, ORPO and SimPO: the preference stages beside DPO, on TRL's trainers, set up as the DPO stage is.

One function, :func:`run_method`, runs each of them (the stages :mod:`posttrain.stages.kto`, ``orpo`` and ``simpo``
are its thin wrappers): data through posttrain's data layer (validated row by row, ``overlong_samples`` measured as
the trainer tokenizes), the SFT result merged and loaded (4-bit with ``load_in_4bit``) with a new LoRA adapter, the
trainer in the run's ``.partial`` folder with resume and signal handling, the held-out margin before and after, and
the run manifest last. What is DPO's is reused from :mod:`posttrain.training.dpo` (log-probabilities, margins,
length checks), not copied.

=========  ====================================  ==================  ==========================================
method     TRL class (TRL 1.16)                  data                reference
=========  ====================================  ==================  ==========================================
``kto``    ``trl.KTOTrainer`` / ``KTOConfig``     unpaired rows       the SFT model: the new adapter disabled
``orpo``   ``trl.experimental.orpo.ORPOTrainer``  preference pairs    none (odds-ratio term + NLL on chosen)
``simpo``  ``trl.experimental.cpo.CPOTrainer``    preference pairs    none (``loss_type: simpo``, ``cpo_alpha: 0``)
=========  ====================================  ==================  ==========================================

The margin every run reports (``margin_reference`` → ``margin_policy`` in the manifest's metrics, on the held-out
``test`` split when there is one, ``margin_split`` says which): for pairs, log p(chosen) - log p(rejected) averaged
over pairs; for KTO's rows, the mean log p of the desirable completions minus that of the undesirable ones. "Reference"
is the start model (the adapter disabled) for all three, so the change is what training did.

Differences from DPO's set-up, each for a reason:

* ORPO and CPO (TRL's older trainer code) wrap a 4-bit model with peft's ``prepare_model_for_kbit_training`` (fp32
  norms and embeddings) and autocast when given a ``peft_config``; here the LoRA adapter is added by posttrain
  (``get_peft_model`` with the same :func:`~posttrain.training.common.peft_config`) so the model is set up exactly
  as DPOTrainer sets up DPO's, and the comparison between the methods is of the losses only.
* ORPO and CPO render conversational rows with the chat template as text and append the EOS token to a reply that
  does not end with it -- after a ChatML reply's trailing newline, a second end-of-turn token. The pairs are rendered
  here instead, each reply ending at its end-of-turn token (EOS), so nothing is appended.
* KTOTrainer reads its training rows in order (``train_sampling_strategy: sequential``: its KL estimate pairs each
  prompt with its batch neighbour's completion), so the training rows are shuffled once with ``seed`` first.

Fast paths (``fast_paths``): as for DPO, installed around training. ``fused_lora`` is a model-level path (exact for
any trainer, ``tests/training/test_fast_paths.py``); ``compact_lm_head`` changes TRL's fused LM head, which DPO and
KTO use and ORPO/CPO do not (they compute full logits: the path is counted as taken 0 times there); ``varlen_attention``
needs padding-free batches, which none of the three trainers builds, so it stays on the stock path.
``tests/stages/test_preference_methods.py`` checks that ``auto`` trains each method with the per-step losses of
``none``.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass

from posttrain.chat_templates import ChatTemplateError, render
from posttrain.data import fingerprint, load_preferences
from posttrain.data.preference import (
    ORIGIN_COLUMN,
    add_system_prompt,
    check_pair_lengths,
    check_unpaired_lengths,
    load_unpaired,
    pairs_to_unpaired,
)
from posttrain.log import get_logger
from posttrain.models.generation import stop_token_ids
from posttrain.training.common import (
    eval_split,
    finish_run,
    load_model_and_tokenizer,
    peft_config,
    start_run,
    train,
)
from posttrain.training.dpo import completion_logps, preference_margins

logger = get_logger(__name__)

#: rows the margin is measured on (held-out split first)
MARGIN_ROWS = 32


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    trainer: str  # for messages and the manifest
    unpaired: bool  # KTO's prompt/completion/label rows


METHODS = {
    "kto": Method("kto", "KTO", "trl.KTOTrainer", True),
    "orpo": Method("orpo", "ORPO", "trl.experimental.orpo.ORPOTrainer", False),
    "simpo": Method("simpo", "SimPO", "trl.experimental.cpo.CPOTrainer", False),
}


def trainer_class(name: str):
    """TRL's trainer class for ``name`` (ORPO and CPO are under ``trl.experimental`` in TRL 1.16)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trl.experimental.*")
        if name == "kto":
            from trl import KTOTrainer

            return KTOTrainer
        if name == "orpo":
            from trl.experimental.orpo import ORPOTrainer

            return ORPOTrainer
        from trl.experimental.cpo import CPOTrainer

        return CPOTrainer


# ------------------------------------------------------------------------------------------------------ data


def load_method_data(method: Method, pt_args, training_args) -> dict:
    """The splits (with :data:`ORIGIN_COLUMN` for error messages), system prompt added: pairs for ORPO/SimPO, unpaired
    rows for KTO (from pairs with ``kto_from_pairs``)."""
    common = {"test_split_size": pt_args.test_split_size, "seed": training_args.seed, "with_origin": True}
    if method.unpaired and not training_args.kto_from_pairs:
        data = load_unpaired(pt_args.datasets, **common)
    else:
        data = load_preferences(pt_args.datasets, identity=pt_args.identity, **common)
        data = {split: add_system_prompt(ds, pt_args.system_prompt) for split, ds in data.items()}
        if method.unpaired:
            return {split: pairs_to_unpaired(ds) for split, ds in data.items()}
        return data
    return {split: add_system_prompt(ds, pt_args.system_prompt) for split, ds in data.items()}


def fit_rows(method: Method, data: dict, tokenizer, model, training_args, policy: str) -> dict:
    """``overlong_samples`` on every split, measured as the method's trainer tokenizes (ORPO and CPO keep the start
    of a long pair and cut its reply, as DPO's ``keep_start``; KTO cuts a row's end)."""
    stops = stop_token_ids(model, tokenizer)
    fitted = {}
    for split, rows in data.items():
        if method.unpaired:
            fitted[split], note = check_unpaired_lengths(
                rows, tokenizer, training_args.max_length, policy, stop_token_ids=stops, name=split
            )
        else:
            fitted[split], note = check_pair_lengths(
                rows,
                tokenizer,
                training_args.max_length,
                policy,
                trainer=method.name,
                truncation_mode="keep_start",
                stop_token_ids=stops,
                name=split,
            )
        if note:
            logger.info(f"posttrain: {note}")
    return fitted


def shuffled(rows, seed: int):
    """``rows`` in one seeded random order (KTOTrainer then reads them in that order)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return rows.select(order)


def as_text_pairs(pairs, tokenizer):
    """Pairs rendered as ORPOTrainer/CPOTrainer tokenize text: ``prompt`` with the generation prompt, each reply the
    rest of prompt + reply up to and including its last EOS token (so the trainer appends none)."""
    eos = tokenizer.eos_token

    def rendered(row):
        prompt = render(tokenizer, row["prompt"], add_generation_prompt=True)
        out = {"prompt": prompt}
        for side in ("chosen", "rejected"):
            full = render(tokenizer, row["prompt"] + row[side])
            if not full.startswith(prompt):
                raise ChatTemplateError(
                    "the chat template renders the prompt differently alone and before a reply; ORPO/SimPO need a "
                    "template whose rendered prompt is a prefix of prompt + reply"
                )
            reply = full[len(prompt) :]
            if eos and eos in reply:
                reply = reply[: reply.rindex(eos) + len(eos)]
            out[side] = reply
        return out

    return pairs.map(rendered, remove_columns=pairs.column_names, desc="Rendering pairs")


# ---------------------------------------------------------------------------------------------------- margins


def unpaired_margin(model, tokenizer, rows) -> float:
    """Mean log p(completion) of the desirable rows minus that of the undesirable ones (KTO's margin)."""
    logps = completion_logps(model, tokenizer, [r["prompt"] for r in rows], [r["completion"] for r in rows])
    good = [lp for lp, r in zip(logps, rows, strict=True) if r["label"]]
    bad = [lp for lp, r in zip(logps, rows, strict=True) if not r["label"]]
    if not good or not bad:
        return float("nan")
    return sum(good) / len(good) - sum(bad) / len(bad)


def margin_rows(method: Method, data: dict):
    """The rows the margin is measured on: up to :data:`MARGIN_ROWS` of the held-out split, else of the training
    split; and which split that is. KTO's rows are taken from both ends of a shuffled split so both labels appear."""
    split = "test" if "test" in data and len(data["test"]) else "train"
    rows = data[split]
    if method.unpaired:
        rows = shuffled(rows, 0)
    return rows.select(range(min(len(rows), MARGIN_ROWS))), split


def margin(method: Method, model, tokenizer, rows) -> float:
    if method.unpaired:
        return unpaired_margin(model, tokenizer, rows)
    values = preference_margins(model, tokenizer, rows)
    return sum(values) / len(values)


# ------------------------------------------------------------------------------------------------------- run


def run_method(name: str, pt_args, training_args, model_args):
    """Train ``name`` (``kto``, ``orpo`` or ``simpo``): data → merged SFT model (4-bit) + new adapter → TRL trainer →
    held-out margin (start model vs trained) → adapter, tokenizer, model card, manifest. Returns (trainer, metrics)."""
    method = METHODS[name]
    run = start_run(training_args)
    data = load_method_data(method, pt_args, training_args)
    loaded = {split: ds.remove_columns(ORIGIN_COLUMN) for split, ds in data.items()}  # what the fingerprint covers
    model, tokenizer, new_token_ids = load_model_and_tokenizer(pt_args, training_args, model_args)
    if new_token_ids:
        raise ChatTemplateError(
            f"{model_args.model_name_or_path} has no chat template tokens yet "
            f"({tokenizer.convert_ids_to_tokens(new_token_ids)} would be new): run SFT first and give "
            f"{method.title} the SFT output as model_name_or_path"
        )
    data = fit_rows(method, data, tokenizer, model, training_args, pt_args.overlong_samples)
    probe, probe_split = margin_rows(method, data)
    lora = peft_config(model, model_args, new_token_ids)

    if method.unpaired:
        train_rows, eval_rows = shuffled(data["train"], training_args.seed), eval_split(data, training_args)
        trainer = trainer_class(name)(
            model=model,
            ref_model=None,  # with a peft adapter, TRL scores the reference with the adapter disabled
            args=run.trainer_args(training_args),  # checkpoints go to the run's work folder
            train_dataset=train_rows,
            eval_dataset=eval_rows,
            processing_class=tokenizer,
            peft_config=lora,
        )
    else:
        from peft import get_peft_model

        held_out = eval_split(data, training_args)
        model = get_peft_model(model, lora)  # as DPOTrainer does (see the module docstring)
        trainer = trainer_class(name)(
            model=model,
            args=run.trainer_args(training_args),  # checkpoints go to the run's work folder
            train_dataset=as_text_pairs(data["train"], tokenizer),
            eval_dataset=None if held_out is None else as_text_pairs(held_out, tokenizer),
            processing_class=tokenizer,
        )
    result = train(run, trainer, training_args, fast=pt_args.fast_paths)
    metrics = dict(result.metrics)
    if "test" in data and training_args.eval_strategy != "no":
        metrics.update(trainer.evaluate())

    policy = trainer.accelerator.unwrap_model(trainer.model)
    policy.eval()
    after = margin(method, policy, tokenizer, probe)
    with policy.disable_adapter():  # the start model: the SFT result
        before = margin(method, policy, tokenizer, probe)
    metrics.update(margin_reference=before, margin_policy=after, margin_split=probe_split, margin_rows=len(probe))

    trainer.save_model(str(run.work_dir))
    if run.state.is_main_process:
        tokenizer.save_pretrained(run.work_dir)
    what = "desirable - undesirable mean log p" if method.unpaired else "log p(chosen) - log p(rejected)"
    logger.info(
        f"posttrain: {what} on {len(probe)} {probe_split} rows: {before:.3f} (start model) -> {after:.3f} "
        f"({method.title} policy)"
    )
    summary = {
        "trainer": method.trainer,
        "beta": training_args.beta,
        f"{what} ({probe_split})": f"{before:.3f} → {after:.3f}",
    }
    if name == "kto":
        summary.update(kto_from_pairs=training_args.kto_from_pairs, loss_type=training_args.loss_type)
    if name == "simpo":
        summary.update(simpo_gamma=training_args.simpo_gamma)
    finish_run(
        run,
        trainer,
        stage=name,
        title=f"{method.title} adapter on {model_args.model_name_or_path}",
        configs=(pt_args, training_args, model_args),
        data_fingerprint=fingerprint(loaded, pt_args.datasets),
        summary=summary,
        metrics=metrics,
    )
    return trainer, metrics
