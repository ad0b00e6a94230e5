"""What the DPO stage measures and checks around TRL's ``DPOTrainer``: preference pairs fitted to ``max_length`` as
the trainer tokenizes them (``overlong_samples``), and the log-probability margin chosen - rejected that DPO pushes
up, measured on the policy and on its reference. The stage is :mod:`posttrain.stages.dpo`.
"""

from __future__ import annotations

import torch

from posttrain.chat_templates import encode_rendered, render
from posttrain.data.preference import check_pair_lengths
from posttrain.log import get_logger
from posttrain.models.generation import stop_token_ids

logger = get_logger(__name__)


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


def fit_pairs(data, tokenizer, model, training_args, policy: str) -> dict:
    """``overlong_samples`` on every split (:func:`~posttrain.data.preference.check_pair_lengths`, as DPOTrainer
    tokenizes and truncates); logs what was dropped or will be cut."""
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
        if note:
            logger.info(f"posttrain: {note}")
    return fitted
