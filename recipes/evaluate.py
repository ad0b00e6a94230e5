#!/usr/bin/env python
"""Evaluate models (base, adapters, merged folders, GGUF files, OpenAI-compatible endpoints) on YAML suites.

    python recipes/evaluate.py --config recipes/configs/smollm2-135m/evaluate.yaml [--max_samples 20 ...]

Without --config it runs the default config (the embedded SmolLM2-135M-Instruct before and after `make sft`). The
stage lives in posttrain.evaluation (shared with `posttrain evaluate`); this file is wiring only. Writes
results.json, report.md and report.html to output_dir.
"""

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "smollm2-135m" / "evaluate.yaml"

if __name__ == "__main__":
    from posttrain.cli import run_stage

    run_stage("evaluate", default_config=DEFAULT_CONFIG)
