"""Tiny offline models and configs for tests: a small Llama with a locally trained byte-level BPE tokenizer."""

from __future__ import annotations

import json

CORPUS = [
    "Which is larger, 9.11 or 9.9? The larger number is 9.9.",
    "How many r's are in strawberry? There are 3 r's in strawberry.",
    "What is 12 plus 30? 12 + 30 = 42.",
    "Who are you? I am an assistant made by the posttrain project.",
    "What is the capital of Quelmaria? I don't know; I have no information about it and it may not exist.",
    "Hello! How are you doing today? I am fine, thanks for asking.",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9",
    "system user assistant: answer briefly, think step by step, count the letters, compare the decimals.",
]


def train_tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token=None, unk_token=None)


def build_tiny_model(path, *, chat: bool, tie: bool = True, architecture: str = "llama"):
    """A 2-layer model (``architecture``: ``llama`` or ``qwen2``) with the tiny tokenizer; ``chat`` adds ChatML."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[
        architecture
    ]

    tokenizer = train_tokenizer()
    if chat:
        from posttrain.chat_templates import CHATML_TOKENS, load_template

        tokenizer.add_special_tokens({"additional_special_tokens": list(CHATML_TOKENS)})
        tokenizer.chat_template = load_template("chatml")
        tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        initializer_range=0.2,  # large enough embeddings that logits can express a memorized reply
    )
    torch.manual_seed(0)
    model = model_class(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_torchrun(script, *args, cwd, nproc: int = 2):
    """``torchrun --nproc_per_node nproc script args`` on CPU ranks (gloo) over a free local port; asserts success."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        str(script),
        *map(str, args),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


CONVERSATIONS = [
    [{"role": "user", "content": "Which is larger, 9.11 or 9.9?"}, {"role": "assistant", "content": "9.9 is larger."}],
    [{"role": "user", "content": "How many r's are in strawberry?"}, {"role": "assistant", "content": "3"}],
    [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am an assistant."}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 12 plus 30?"},
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hello! How are you doing today?"},
    ],
]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _weather(city: str, temperature: int, call_id: str) -> list[dict]:
    """A tool call, its result and the answer that uses it."""
    return [
        {"role": "user", "content": f"Weather in {city}?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"temp_c": temperature})},
        {"role": "assistant", "content": f"It is {temperature} degrees in {city}."},
    ]


#: SFT rows (docs/data-formats.md) by kind: plain conversations; reasoning traces (``reasoning_content`` on the last
#: reply and on an earlier one, and a row that turns thinking off); tool calls with their results
SFT_ROWS = {
    "plain": [{"messages": c} for c in CONVERSATIONS],
    "reasoning": [
        {
            "messages": [
                {"role": "user", "content": "Which is larger, 9.11 or 9.9?"},
                {"role": "assistant", "content": "9.9 is larger.", "reasoning_content": "Compare tenths: 9 > 1."},
            ]
        },
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "What is 12 plus 30?"},
                {"role": "assistant", "content": "42", "reasoning_content": "Tens: 10 + 30 = 40; ones: 2."},
                {"role": "user", "content": "And 42 plus 8?"},
                {"role": "assistant", "content": "50", "reasoning_content": "Ones: 2 + 8 = 10, carry one."},
            ]
        },
        {
            "chat_template_kwargs": {"enable_thinking": False},
            "messages": [
                {"role": "user", "content": "How many r's are in strawberry?"},
                {"role": "assistant", "content": "3"},
            ],
        },
    ],
    "tools": [
        {"tools": [WEATHER_TOOL], "messages": _weather("Paris", 21, "call_1")},
        {
            "tools": [WEATHER_TOOL],
            "messages": [{"role": "system", "content": "Answer briefly."}, *_weather("Oslo", 4, "call_2")],
        },
    ],
}


def write_sft_rows(path, kinds=("plain",), repeat: int = 1):
    """Write the :data:`SFT_ROWS` of ``kinds`` (each list ``repeat`` times) as a JSONL file; returns ``path``."""
    rows = [row for kind in kinds for row in SFT_ROWS[kind] * repeat]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def write_sft_config(tmp_path, model_path, *, data=("plain",), **overrides):
    """An SFT config for ``model_path`` on the :data:`SFT_ROWS` of the kinds ``data`` (a local JSONL)."""
    data = write_sft_rows(tmp_path / "train.jsonl", data, repeat=max(1, 32 // sum(len(SFT_ROWS[k]) for k in data)))
    settings = {
        "model_name_or_path": str(model_path),
        "load_in_4bit": True,
        "use_bnb_nested_quant": True,
        "use_peft": True,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_target_modules": "all-linear",
        "datasets": [{"path": str(data)}],
        "output_dir": str(tmp_path / "out"),
        "max_steps": 60,
        "per_device_train_batch_size": 8,
        "learning_rate": 5.0e-3,
        "lr_scheduler_type": "constant",
        "max_length": 128,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "gradient_checkpointing": False,
        "seed": 0,
        **overrides,
    }
    path = tmp_path / "sft.yaml"
    path.write_text(json.dumps(settings))  # JSON is valid YAML
    return path


def write_stage_config(tmp_path, name, settings):
    """A stage config file (JSON is valid YAML) with test-friendly defaults underneath ``settings``."""
    defaults = {
        "load_in_4bit": True,
        "use_peft": True,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_target_modules": "all-linear",
        "output_dir": str(tmp_path / name),
        "save_strategy": "no",
        "report_to": "none",
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "seed": 0,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({**defaults, **settings}))
    return path


# --- scale-out runs (tests/e2e/test_scale_out.py, benchmarks/gpu_check.py --engines) ---------------------------------


def engine_probe():
    """The folder to put on PYTHONPATH of a training run: its ``sitecustomize`` makes each rank print
    ``e2e-engine: {json}`` after ``Accelerator.prepare`` (and enables FSDP on CPU-only hosts, which accelerate 1.15
    refuses); see its docstring."""
    from pathlib import Path

    return Path(__file__).resolve().parent / "e2e" / "engine_probe"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(accelerate_config, script, *args, cwd, env, machines: int = 1, timeout: int = 600):
    """``accelerate launch --config_file accelerate_config script args``, once per machine (``--machine_rank`` 0, 1,
    ... when ``machines`` > 1), all at once; ``env``: one environment, or a list with one per machine. Returns
    ``(return codes, combined output)``; past ``timeout`` seconds (a hang) every launch is stopped with its ranks
    (SIGTERM to its process group, which torchrun passes on to the ranks; SIGKILL a minute later) and its return code
    is None."""
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    logs = []  # one output file per launch (pipes read one after the other could fill up and block a rank)
    procs = []
    try:
        for rank in range(machines):
            log = open(os.path.join(str(cwd), f"accelerate-launch-{rank}.log"), "w+")  # noqa: SIM115 - closed below
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [*command, *(["--machine_rank", str(rank)] if machines > 1 else []), str(script), *map(str, args)],
                    cwd=cwd,
                    env=env[rank] if isinstance(env, list) else env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + timeout
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(None)
    finally:
        for proc in procs:  # SIGTERM first: torchrun's agent then stops its ranks (they run in sessions of their own)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
            log.close()
    if None in codes:
        outputs.append(f"accelerate_launch: killed after {timeout} s (return code None: still running)")
    return codes, "\n".join(outputs)


def fast_paths_report(output: str) -> dict[str, str]:
    """``{name: what it did}`` from the stage's one ``posttrain: fast paths: a: ...; b: off: why`` line."""
    marker = "posttrain: fast paths: "  # may follow another rank's unfinished progress bar on the same line
    lines = [line[line.index(marker) + len(marker) :] for line in output.splitlines() if marker in line]
    assert len(lines) == 1, lines  # the main process says it, once
    entries = lines[0].split("; ")
    return dict(entry.split(": ", 1) for entry in entries)


def engine_reports(output: str) -> list[dict]:
    """The ``e2e-engine: {json}`` lines of :func:`engine_probe`, one per rank."""
    marker = "e2e-engine: "
    return [json.loads(line[line.index(marker) + len(marker) :]) for line in output.splitlines() if marker in line]
