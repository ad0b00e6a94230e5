#!/usr/bin/env python
"""Supervised fine-tuning with 4-bit QLoRA and chat templates.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft.py \
        --config recipes/configs/smollm2-135m/sft.yaml [--max_steps 10 ...]

Without --config it runs the default config (the embedded SmolLM2-135M-Instruct). The stage itself lives in
posttrain.training.sft (shared with `posttrain sft`); this file is wiring only.
"""

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "smollm2-135m" / "sft.yaml"

if __name__ == "__main__":
    from posttrain.cli import run_stage

    run_stage("sft", default_config=DEFAULT_CONFIG)
