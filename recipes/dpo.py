#!/usr/bin/env python
"""DPO stage: see posttrain.training.dpo (shared with `posttrain dpo`); this file is wiring only.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/dpo.py --config recipes/configs/smollm2-135m/dpo.yaml
"""

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "smollm2-135m" / "dpo.yaml"

if __name__ == "__main__":
    from posttrain.cli import run_stage

    run_stage("dpo", default_config=DEFAULT_CONFIG)
