#!/usr/bin/env python
"""Export stage: see posttrain.export.stage_export (shared with `posttrain export`); this file is wiring only.

    python recipes/export.py --config recipes/configs/smollm2-135m/export.yaml

HF folder → GGUF with llama.cpp's own converter (f16, q8_0) and quantizer (Q4_K_M) → Ollama Modelfile, then
verifies what ships (tokenization, greedy replies vs HF, Go template vs Jinja, end-of-turn tokens, the served GGUF
answering an evaluation suite) and exits non-zero when a check fails.
"""

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "smollm2-135m" / "export.yaml"

if __name__ == "__main__":
    from posttrain.cli import run_stage

    run_stage("export", default_config=DEFAULT_CONFIG)
