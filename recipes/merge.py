#!/usr/bin/env python
"""Merge stage: see posttrain.export.stage_merge (shared with `posttrain merge`); this file is wiring only.

    python recipes/merge.py --config recipes/configs/smollm2-135m/merge.yaml

Loads the base in float32 (never 4-bit), applies the adapter chain (SFT, then DPO/PPO), merge_and_unload, and
writes safetensors + tokenizer + chat template + generation_config, reporting the adapter-on vs merged logit drift.
"""

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "smollm2-135m" / "merge.yaml"

if __name__ == "__main__":
    from posttrain.cli import run_stage

    run_stage("merge", default_config=DEFAULT_CONFIG)
