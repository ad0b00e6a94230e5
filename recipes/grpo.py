#!/usr/bin/env python
"""GRPO stage: see posttrain.training.grpo (shared with `posttrain grpo`); this file is wiring only.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/grpo.py --config recipes/configs/smollm2-135m/grpo.yaml
"""

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "smollm2-135m" / "grpo.yaml"

if __name__ == "__main__":
    from posttrain.cli import run_stage

    run_stage("grpo", default_config=DEFAULT_CONFIG)
