"""KTO (Ethayarajh et al. 2024) on (Q)LoRA with TRL's ``KTOTrainer``: desirable and undesirable replies, unpaired.

Data: rows of ``prompt`` + ``completion`` + ``label`` (true: desirable, false: undesirable), validated row by row
(:func:`posttrain.data.preference.load_unpaired`); or, with ``kto_from_pairs: true``, preference pairs (files,
``builtin:<task>``, ``posttrain pairs`` output), each becoming a desirable (chosen) and an undesirable (rejected) row.
Pairs without ``kto_from_pairs`` and unpaired rows with it are refused, naming the source. The training rows are
shuffled once with ``seed`` (KTOTrainer reads them in order for its KL estimate).

Model: as for DPO (:mod:`posttrain.stages.dpo`): the SFT result merged, a new LoRA adapter (4-bit base with
``load_in_4bit``), the reference is the same model with the adapter disabled. ``beta``, ``desirable_weight``,
``undesirable_weight`` and ``loss_type`` (``kto``, ``apo_zero_unpaired``) are TRL's KTOConfig keys. The run reports
the mean log p of desirable minus undesirable completions on held-out rows, before and after
(:mod:`posttrain.training.preference_methods`).
"""

from __future__ import annotations

from posttrain.configs import KTOConfig, ModelConfig, PosttrainArguments
from posttrain.training.preference_methods import run_method


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, KTOConfig, ModelConfig))


def main(pt_args: PosttrainArguments, training_args: KTOConfig, model_args: ModelConfig):
    """Unpaired rows (or pairs, ``kto_from_pairs``) → merged SFT model (4-bit) + new adapter → KTOTrainer → save."""
    return run_method("kto", pt_args, training_args, model_args)
