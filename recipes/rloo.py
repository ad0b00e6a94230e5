#!/usr/bin/env python
"""RLOO stage: see posttrain.training.rloo (shared with `posttrain rloo`); this file is wiring only.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/rloo.py --config recipes/configs/smollm2-135m/rloo.yaml
"""

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "smollm2-135m" / "rloo.yaml"

if __name__ == "__main__":
    from posttrain.cli import run_stage

    run_stage("rloo", default_config=DEFAULT_CONFIG)
