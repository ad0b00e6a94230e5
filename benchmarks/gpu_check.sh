#!/usr/bin/env bash
# GPU check (issue 17): posttrain QLoRA SFT vs stock TRL on random Llama-3.2-1B / Llama-3.1-8B shapes, plus one DPO
# and one PPO step on the 1B shape; writes benchmarks/results/gpu_check.json. Under 8 minutes on one modern GPU.
#   benchmarks/gpu_check.sh [--liger] [--shapes llama-3.2-1b] [--output FILE]
#   benchmarks/gpu_check.sh --dry-run      # CPU, 2-layer tiny shapes, 64-token rows, 1 step (the test suite runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" benchmarks/gpu_check.py "$@"
