#!/usr/bin/env python
"""Reward-model stage: see posttrain.training.reward (shared with `posttrain reward`); this file is wiring only.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/reward.py --config recipes/configs/smollm2-135m/reward.yaml
"""

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "smollm2-135m" / "reward.yaml"

if __name__ == "__main__":
    from posttrain.cli import run_stage

    run_stage("reward", default_config=DEFAULT_CONFIG)
