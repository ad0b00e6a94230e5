#!/usr/bin/env python
"""PPO stage: see posttrain.training.ppo (shared with `posttrain ppo`); this file is wiring only.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/ppo.py --config recipes/configs/smollm2-135m/ppo.yaml
"""

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "smollm2-135m" / "ppo.yaml"

if __name__ == "__main__":
    from posttrain.cli import run_stage

    run_stage("ppo", default_config=DEFAULT_CONFIG)
