"""SimPO (Meng et al. 2024) on (Q)LoRA with TRL's ``CPOTrainer`` (``trl.experimental.cpo`` in TRL 1.16) run with
``loss_type: simpo`` and ``cpo_alpha: 0``, as TRL's documentation gives SimPO.

Data: preference pairs, as for DPO (unpaired KTO rows are refused naming the source). Model: the SFT result merged
with a new LoRA adapter (4-bit base with ``load_in_4bit``), set up as for DPO. SimPO needs no reference model: its
reward is the length-normalized log-probability of a reply times ``beta``, and the loss asks the chosen reward to
exceed the rejected one by ``simpo_gamma``. The run reports log p(chosen) - log p(rejected) on held-out pairs for
the start model (adapter disabled) and the trained one (:mod:`posttrain.training.preference_methods`).
"""

from __future__ import annotations

from posttrain.configs import ModelConfig, PosttrainArguments, SimPOConfig
from posttrain.training.preference_methods import run_method


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, SimPOConfig, ModelConfig))


def main(pt_args: PosttrainArguments, training_args: SimPOConfig, model_args: ModelConfig):
    """Preference pairs → merged SFT model (4-bit) + new adapter → CPOTrainer (SimPO loss) → save."""
    return run_method("simpo", pt_args, training_args, model_args)
