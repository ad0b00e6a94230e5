#!/usr/bin/env bash
# GPU check (issue 17): posttrain QLoRA SFT vs stock TRL on random Llama-3.2-1B / Llama-3.1-8B shapes, plus one DPO
# and one PPO step on the 1B shape; writes benchmarks/results/gpu_check.json. Under 8 minutes on one modern GPU.
#   benchmarks/gpu_check.sh [--liger] [--shapes llama-3.2-1b] [--output FILE]
#   benchmarks/gpu_check.sh --dry-run      # CPU, 2-layer tiny shapes, 64-token rows, 1 step (the test suite runs it)
# Scale-out engines (accelerate_configs/fsdp_qlora.yaml, deepspeed_zero3.yaml, multi_node.yaml on all GPUs; bf16,
# NCCL and the CUDA-only paths tests/e2e/test_scale_out.py cannot run on a CPU); benchmarks/results/gpu_check_engines.json:
#   benchmarks/gpu_check.sh --engines      # a few minutes; multi-node needs 2 GPUs; needs DeepSpeed (make setup)
#   benchmarks/gpu_check.sh --engines --dry-run   # CPU: write and print the plan only (the test suite runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" benchmarks/gpu_check.py "$@"
