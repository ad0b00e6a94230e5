"""The plan against measured peaks: each training stage runs 2 steps on a Llama-shaped model of ~52M parameters
(hidden 1024, 4 layers; ~200 MiB of fp32 weights, so the estimated terms dominate the process's own memory), one
after another in one subprocess that records each run's peak resident memory above a baseline taken after the
imports and before its model loads (``ru_maxrss``, tests/planning/measure_peak.py; glibc's mmap threshold fixed so that it is the live peak); the
estimate without the runtime baseline must be within 25%.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import write_stage_config

HERE = Path(__file__).resolve().parent
TOLERANCE = 0.25
#: a JSONL file each case appends its figures to (set by benchmarks/plan_check.py)
RECORD_ENV = "POSTTRAIN_PLAN_CHECK_RECORD"
#: the longest arithmetic prompt in a batch with the tiny byte-level tokenizer and ChatML (21-42 tokens)
PROMPT_LENGTH = 40

#: glibc's fixed mmap threshold: freed large blocks go back to the system at once, so ru_maxrss is the live peak (with
#: the default dynamic threshold the same runs measured 1.0-1.5x of it, varying run to run)
LIVE_PEAK = {"MALLOC_MMAP_THRESHOLD_": "131072"}

PROMPTS = [{"path": "builtin:arithmetic", "num_samples": 32}]
PAIRS = [{"path": "builtin:decimal_compare", "num_samples": 32}]
COMMON = {
    "load_in_4bit": False,
    "max_steps": 2,
    "fast_paths": "none",
    "per_device_train_batch_size": 8,
    "learning_rate": 1e-4,
    "show_example": False,
}
RL = {"datasets": PROMPTS, "rewards": ["has_number"], "max_completion_length": 16}
SETTINGS = {
    "sft": {"datasets": PROMPTS, "max_length": 64, "overlong_samples": "truncate"},
    "sft-checkpointing": {
        "datasets": PROMPTS, "max_length": 64, "overlong_samples": "truncate", "gradient_checkpointing": True,
    },
    "reward": {"datasets": PAIRS, "max_length": 64, "overlong_samples": "drop"},
    "dpo": {"datasets": PAIRS, "max_length": 64, "overlong_samples": "truncate", "beta": 0.1},
    "ppo": {
        **RL, "missing_eos_penalty": None, "rollout_batch_size": 8, "generation_batch_size": 8,
        "forward_batch_size": 8, "num_mini_batches": 1, "num_ppo_epochs": 1,
    },
    "grpo": {**RL, "num_generations": 4, "beta": 0.0},
    "rloo": {**RL, "num_generations": 4, "beta": 0.0},
    "kto": {"datasets": PAIRS, "max_length": 64, "overlong_samples": "truncate", "kto_from_pairs": True},
    "orpo": {"datasets": PAIRS, "max_length": 64, "overlong_samples": "truncate"},
    "simpo": {"datasets": PAIRS, "max_length": 64, "overlong_samples": "truncate"},
}  # fmt: skip


def build_model(path: Path) -> Path:
    """A Llama of ~52M parameters (hidden 1024, intermediate 2816, 4 layers, 8 heads) with the tiny chat tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from posttrain.chat_templates import CHATML_TOKENS, load_template

    from tiny import train_tokenizer

    tokenizer = train_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": list(CHATML_TOKENS)})
    tokenizer.chat_template = load_template("chatml")
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def planning_model(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("planning-model"))


@pytest.fixture(scope="module")
def configs(tmp_path_factory, planning_model):
    """Each case's stage config, written with the test defaults of ``write_stage_config``."""
    folder = tmp_path_factory.mktemp("planning-configs")
    written = {}
    for case, settings in SETTINGS.items():
        (folder / case).mkdir()
        stage = case.split("-")[0]
        written[case] = write_stage_config(
            folder / case, stage, {"model_name_or_path": str(planning_model), **COMMON, **settings}
        )
    return written


@pytest.fixture(scope="module")
def measured(configs):
    """Every case run once, in order, in one subprocess (the imports once: ~1 minute in all): ``{case: delta}``."""
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "POSTTRAIN_PRECISION": "fp32", "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false", **LIVE_PEAK,
    }  # fmt: skip
    args = [a for case, config in configs.items() for a in (case, case.split("-")[0], str(config))]
    proc = subprocess.run(
        [sys.executable, str(HERE / "measure_peak.py"), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    deltas = {}
    for line in proc.stdout.splitlines():
        if line.startswith("peak-delta "):
            case, result = line.removeprefix("peak-delta ").split(": ", 1)
            deltas[case] = json.loads(result)["delta"]
    assert list(deltas) == list(SETTINGS), proc.stdout[-4000:]
    return deltas


@pytest.mark.parametrize("case", list(SETTINGS))
def test_estimate_within_25_percent_of_measured_peak(case, configs, measured, monkeypatch):
    from posttrain.planning.estimate import mib, render
    from posttrain.stages.plan import make_plan

    monkeypatch.setenv("POSTTRAIN_PRECISION", "fp32")
    plan = make_plan(configs[case], case.split("-")[0], overhead=False, prompt_length=PROMPT_LENGTH)
    estimate = plan.estimated_bytes
    if case != next(iter(SETTINGS)):
        # the `run` term is a process's one-time state (lazily imported code, thread pools, caches): the first run
        # of the subprocess pays it, and the runs after it start with it already in their baseline
        estimate -= next(t.bytes for t in plan.terms if t.name == "run")
    ratio = estimate / measured[case]
    print(f"{case}: estimated {mib(estimate)}, measured {mib(measured[case])}, ratio {ratio:.2f}")
    if os.environ.get(RECORD_ENV):  # benchmarks/plan_check.py: keep each case's figures for its results file
        with open(os.environ[RECORD_ENV], "a", encoding="utf-8") as record:
            record.write(json.dumps({"case": case, "estimated_bytes": estimate, "measured_bytes": measured[case],
                                     "ratio": round(ratio, 3)}) + "\n")  # fmt: skip
    assert abs(ratio - 1) <= TOLERANCE, f"{case}: ratio {ratio:.2f}\n{render(plan)}\nmeasured {mib(measured[case])}"
