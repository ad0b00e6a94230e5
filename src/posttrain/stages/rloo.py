"""RLOO stage: TRL's ``RLOOTrainer`` (REINFORCE leave-one-out baseline, Ahmadian et al. 2024, arXiv:2402.14740) with
the same prompts, rewards and adapter handling as the GRPO stage (:mod:`posttrain.stages.grpo`)."""

from __future__ import annotations

from posttrain.configs import ModelConfig, PosttrainArguments
from posttrain.rl.config import RLOOConfig
from posttrain.stages import grpo


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, RLOOConfig, ModelConfig))


def main(pt_args: PosttrainArguments, training_args: RLOOConfig, model_args: ModelConfig):

    return grpo.main(pt_args, training_args, model_args, trainer_name="rloo")
