"""ORPO (Hong et al. 2024) on (Q)LoRA with TRL's ``ORPOTrainer`` (``trl.experimental.orpo`` in TRL 1.16).

Data: preference pairs, as for DPO (:func:`posttrain.data.load_preferences`; unpaired KTO rows are refused naming
the source). Model: the SFT result merged with a new LoRA adapter (4-bit base with ``load_in_4bit``), set up as for
DPO. ORPO needs no reference model: its loss is the NLL of the chosen reply plus ``beta`` (the paper's lambda) times
the log odds ratio of chosen over rejected. The run reports log p(chosen) - log p(rejected) on held-out pairs for the
start model (adapter disabled) and the trained one (:mod:`posttrain.training.preference_methods`).
"""

from __future__ import annotations

from posttrain.configs import ModelConfig, ORPOConfig, PosttrainArguments
from posttrain.training.preference_methods import run_method


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, ORPOConfig, ModelConfig))


def main(pt_args: PosttrainArguments, training_args: ORPOConfig, model_args: ModelConfig):
    """Preference pairs → merged SFT model (4-bit) + new adapter → ORPOTrainer → save."""
    return run_method("orpo", pt_args, training_args, model_args)
