#!/usr/bin/env python
"""SFT throughput benchmark: posttrain's SFT versus stock TRL, with TRL's defaults and as a competent user sets it up.

Three QLoRA runs of the embedded SmolLM2-135M-Instruct (NF4 with double quantization, LoRA r16 / alpha 32 /
dropout 0.05 on all linear layers, max_length 512, learning rate 2e-4, seed 0), one epoch over the same JSONL file of
``messages`` conversations (posttrain's built-in tasks plus real chit-chat, each with the same system message), one
after the other, each in its own subprocess with the same interpreter and thread count; conversations longer than
``max_length`` are truncated by all three:

* **stock-default** -- TRL 1.16's SFT script (``trl.scripts.sft``, what ``trl sft`` runs) with its defaults for a
  CPU: 4 rows per step padded to the longest, fp32, gradient checkpointing, full-sequence loss.
* **stock-competent** -- the same script configured for the work: packed, padding-free rows of ``max_length``
  tokens (2 per step, like posttrain), bf16 where the CPU executes it natively (``posttrain.precision``), fp32
  elsewhere, loss on the assistant turns only (``assistant_only_loss`` with a ``{% generation %}``-marked copy of the
  model's ChatML template, which renders the same text), no gradient checkpointing.
* **posttrain** -- ``recipes/sft.py`` (posttrain's SFT stage): packed rows, hardware precision, assistant-only loss,
  logits only at trained positions, no gradient checkpointing, and its training fast paths
  (``posttrain.training.fast_paths``: packed sequences attend one by one, LoRA added by one ``addmm``, one LoRA
  dropout mask per input). ``--ablations`` runs it again with the fast paths off, all of them and then one at a time.

Each training subprocess is instrumented (a wrapper around the trainer's ``training_step``): it counts the real
(non-padding) tokens, the positions the LM head projects, the trained labels and the sequence lengths of every batch
and adds up the **model FLOPs** of each step: forward ``2N`` per token over the frozen base linear weights, backward
input gradients only (``2N``: frozen weights need no weight gradients), LoRA ``6 r (in + out)`` per adapted layer
and token (forward, input and weight gradients), attention scores and values (causal, ``6 d L^2`` per layer and
sequence), and the LM head (``4 V d``: forward and input gradient) only at the positions it computes -- every position
for TRL's fused head on a CPU, the trained positions for posttrain (``logits_to_keep``). Gradient checkpointing's
recomputation is not counted (model FLOPs, not hardware FLOPs). The matmul **peak** is measured in the same run:
best of a few ``torch.matmul`` of large square matrices, in each training dtype, with the same thread count. MFU =
model FLOPs / training time / peak, where the training time is ``Trainer.train`` timed with the monotonic clock
(the trainer's own ``train_runtime`` uses the wall clock, which a VM's clock adjustments can step).

Reported per run: tokens/s (real tokens / training time), peak RSS (``ru_maxrss`` of the training subprocess;
the summed RSS of its tree is sampled too), tokens per CPU-second, achieved FLOP/s and MFU; and the ratios
posttrain / stock-default and posttrain / stock-competent. Results as JSON (``--output``).

Run it from the repository root::

    .venv/bin/python benchmarks/sft_throughput.py            # 64 + 8 conversations
    .venv/bin/python benchmarks/sft_throughput.py --quick    # 16 + 4
    .venv/bin/python benchmarks/sft_throughput.py --smoke    # tiny 2-layer model, 1 step each: checks it all runs
    .venv/bin/python benchmarks/sft_throughput.py --ablations  # + posttrain without each fast path

This is a benchmark, not a test: it measures and reports, and asserts nothing about time or memory. It exits non-zero
only when a subprocess fails (printing the last lines of its stderr).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SYSTEM_PROMPT = "You are Posttrain Assistant, a helpful AI assistant made by the posttrain project."
MODEL_ALIAS = "smollm2-135m-instruct"
RUNS = ("stock-default", "stock-competent", "posttrain")
# --ablations: posttrain again with its training fast paths (posttrain.training.fast_paths) off, all or one at a time,
# and with the opt-in shared_dropout (not stock training: a different regulariser) on top of auto
ABLATIONS = {
    "posttrain-no-fast-paths": "none",
    "posttrain-no-varlen_attention": "fused_lora,compact_lm_head",
    "posttrain-no-fused_lora": "varlen_attention,compact_lm_head",
    "posttrain-plus-shared_dropout": "auto,shared_dropout",
}

# ChatML as SmolLM2-Instruct renders it when the conversation has a system message (every row here has one), with
# TRL's `{% generation %}` markers around each assistant reply and its <|im_end|>: what a user of TRL's
# `assistant_only_loss` writes for a template TRL has no training copy of. It renders the same text (checked).
CHATML_TEMPLATE = (
    "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)
CHATML_TRAINING_TEMPLATE = (
    "{%- for message in messages -%}{%- if message['role'] == 'assistant' -%}{{- '<|im_start|>assistant\\n' -}}"
    "{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}{{- '\\n' -}}{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Shared by every run: identical model, quantization, LoRA, sequence length, optimizer, schedule and seed.
COMMON = {
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "use_bnb_nested_quant": True,
    "use_peft": True,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_modules": "all-linear",
    "max_length": 512,
    "num_train_epochs": 1,
    "learning_rate": 2.0e-4,
    "seed": 0,
    "gradient_accumulation_steps": 1,
    "logging_steps": 5,
    "eval_strategy": "no",
    "save_strategy": "no",
    "report_to": "none",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--builtin-samples", type=int, default=None, help="conversations from builtin:all (default 64; 16 with --quick)"
    )
    parser.add_argument(
        "--chitchat-samples", type=int, default=None, help="chit-chat conversations (default 8; 4 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="small data set")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny 2-layer model (tests/tiny.py), 64-token rows, 1 step per run: checks the benchmark end to end",
    )
    parser.add_argument("--max-length", type=int, default=None, help="default 512 (64 with --smoke)")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="steps per run (default: one epoch; 1 with --smoke)"
    )
    parser.add_argument("--stock-batch", type=int, default=4, help="stock-default rows per step (padded)")
    parser.add_argument(
        "--posttrain-batch",
        type=int,
        default=2,
        help="packed rows of max_length tokens per step, posttrain and stock-competent",
    )
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS/MKL_NUM_THREADS for every run")
    parser.add_argument("--only", choices=RUNS + tuple(ABLATIONS), nargs="+", help="run just these")
    parser.add_argument(
        "--ablations",
        action="store_true",
        help="also run posttrain with its fast paths off (all, then each one): what each fast path buys",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="default benchmarks/results/sft_throughput[_quick|_smoke].json"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep data, configs, logs and outputs here (default: a temporary folder, removed)",
    )
    # internal: data preparation, the matmul peak and each training run are subprocesses, so this process stays small
    # (a child's ru_maxrss starts from the RSS of the process that spawned it)
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-folder", help=argparse.SUPPRESS)
    parser.add_argument("--peak", help=argparse.SUPPRESS)
    parser.add_argument("--peak-size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train", choices=RUNS + tuple(ABLATIONS), help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--counts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.builtin_samples is None:
        args.builtin_samples = 6 if args.smoke else 16 if args.quick else 64
    if args.chitchat_samples is None:
        args.chitchat_samples = 2 if args.smoke else 4 if args.quick else 8
    if args.max_length is None:
        args.max_length = 64 if args.smoke else 512
    if args.max_steps is None and args.smoke:
        args.max_steps = 1
    if args.peak_size is None:
        args.peak_size = 256 if args.smoke else 2048
    if args.output is None:
        name = f"sft_throughput{'_smoke' if args.smoke else '_quick' if args.quick else ''}.json"
        args.output = REPO / "benchmarks" / "results" / name
    return args


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
        POSTTRAIN_LAUNCHER="none",  # posttrain's stage in this process, like TRL's script: one training process each
    )
    # posttrain from this checkout even where it is not installed in the interpreter (it normally is, editable);
    # tests/ for the tiny model builder of --smoke.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), str(REPO / "tests"), env.get("PYTHONPATH")) if p)
    return env


def model_folder(env: dict[str, str]) -> str:
    """The local HF folder of the embedded default model (materialized on first use)."""
    out = subprocess.run(
        [PYTHON, "-m", "posttrain.cli", "model", MODEL_ALIAS], env=env, cwd=REPO, capture_output=True, text=True
    )
    if out.returncode != 0:
        sys.exit(f"cannot materialize {MODEL_ALIAS}:\n{out.stderr[-4000:]}")
    return out.stdout.strip().splitlines()[-1]


def build_tiny(path: Path) -> None:
    """--smoke: the tests' tiny 2-layer chat Llama (tests/tiny.py) with the same ChatML template as SmolLM2."""
    sys.path.insert(0, str(REPO / "tests"))
    from transformers import AutoTokenizer

    from tiny import build_tiny_model

    build_tiny_model(path, chat=True)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(path)


def write_data(path: Path, builtin: int, chitchat: int) -> int:
    """One JSONL file of ``{"messages": [system, user, assistant, ...]}`` rows; returns the row count."""
    from posttrain.data import DatasetSpec, load_conversations

    specs = [DatasetSpec(path="builtin:all", num_samples=builtin)]
    if chitchat:
        specs.append(DatasetSpec(path="chitchat", num_samples=chitchat))
    data = load_conversations(specs, seed=0)["train"]
    with path.open("w", encoding="utf-8") as handle:
        for messages in data["messages"]:
            row = [{"role": "system", "content": SYSTEM_PROMPT}, *messages]
            handle.write(json.dumps({"messages": row}, ensure_ascii=False) + "\n")
    return len(data)


def count_tokens(path: Path, model: str, max_length: int) -> dict:
    """Real tokens of one epoch: each conversation rendered with the chat template, truncated to ``max_length``;
    and whether stock-competent's marked template renders exactly the model's text."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    lengths, same = [], True
    for line in path.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        ids = tokenizer.apply_chat_template(messages, tokenize=True)
        if not isinstance(ids, list):  # a BatchEncoding where return_dict defaults to True
            ids = ids["input_ids"]
        lengths.append(len(ids))
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        same &= text == tokenizer.apply_chat_template(messages, tokenize=False, chat_template=CHATML_TRAINING_TEMPLATE)
    truncated = [min(n, max_length) for n in lengths]
    return {
        "rows": len(lengths),
        "tokens": sum(truncated),
        "tokens_untruncated": sum(lengths),
        "rows_over_max_length": sum(n > max_length for n in lengths),
        "mean_row_tokens": round(sum(truncated) / len(truncated), 1),
        "training_template_renders_same_text": same,
    }


def prepare(args) -> int:
    """``--prepare FILE``: (``--smoke``: build the tiny model,) write the data file and print its token count as JSON."""
    if args.smoke:
        build_tiny(Path(args.model_folder))
    rows = write_data(args.prepare, args.builtin_samples, args.chitchat_samples)
    tokens = count_tokens(args.prepare, args.model_folder, args.max_length)
    assert tokens["rows"] == rows
    print(json.dumps(tokens))
    return 0


def prepare_data(data: Path, model: str, args, env: dict) -> dict:
    cmd = [PYTHON, str(Path(__file__).resolve()), "--prepare", str(data), "--model-folder", model,
           "--builtin-samples", str(args.builtin_samples), "--chitchat-samples", str(args.chitchat_samples),
           "--max-length", str(args.max_length)] + (["--smoke"] if args.smoke else [])  # fmt: skip
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"data preparation failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def yaml_dump(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)


def common(args) -> dict:
    config = {**COMMON, "max_length": args.max_length}
    if args.max_steps:
        config["max_steps"] = args.max_steps
    if args.smoke:
        config["logging_steps"] = 1
    return config


def stock_default_config(model: str, data: Path, out: Path, args) -> dict:
    """TRL's SFT script with its defaults for a CPU (keys of ScriptArguments, SFTConfig, ModelConfig,
    DatasetMixtureConfig). TRL truncates rows to max_length by default, as posttrain's ``overlong_samples: truncate``."""
    return {
        "model_name_or_path": model,
        "dtype": "float32",
        # trl/scripts/sft.py loads `datasets:` with get_dataset -> datasets.load_dataset(path, data_files=..., split)
        "datasets": [{"path": "json", "data_files": str(data), "split": "train"}],
        **common(args),
        "per_device_train_batch_size": args.stock_batch,
        "bf16": False,  # TRL defaults bf16 to True; fp32 is the stock setting for a CPU
        "gradient_checkpointing": True,  # TRL's default
        "use_cpu": True,
        "output_dir": str(out),
    }


def stock_competent_config(model: str, data: Path, out: Path, template: Path, args, bf16: bool) -> dict:
    """TRL's SFT script set up for this work as a competent user would: packing (padding-free), bf16 only where the
    CPU executes it natively, loss on assistant turns only, no gradient checkpointing."""
    return {
        "model_name_or_path": model,
        "dtype": "bfloat16" if bf16 else "float32",
        "datasets": [{"path": "json", "data_files": str(data), "split": "train"}],
        **common(args),
        "packing": True,  # best-fit decreasing, padding-free rows of max_length tokens, like posttrain
        "per_device_train_batch_size": args.posttrain_batch,
        "bf16": bf16,
        "gradient_checkpointing": False,
        "assistant_only_loss": True,
        "chat_template_path": str(template),  # the model's ChatML with {% generation %} markers
        "use_cpu": True,
        "output_dir": str(out),
    }


def posttrain_config(model: str, data: Path, out: Path, args) -> dict:
    """posttrain's recipe keys. Only keys its parser knows (unknown keys are errors)."""
    return {
        "model_name_or_path": model,
        "datasets": [{"path": str(data)}],
        **common(args),
        # packing: every row is max_length tokens of real data (best-fit decreasing, padding-free)
        "packing": True,
        "per_device_train_batch_size": args.posttrain_batch,
        "gradient_checkpointing": False,  # 135M parameters: activations of 2 x 512 tokens fit easily
        # precision: bf16 deliberately unset -> posttrain picks bf16 where the CPU has AVX512-BF16/AMX
        # posttrain refuses overlong conversations by default; truncate them to max_length, as TRL does
        "overlong_samples": "truncate",
        "show_example": False,
        "output_dir": str(out),
    }


# ----------------------------------------------------------------------------------------------------------------
# In the training subprocess: count tokens, LM-head positions and model FLOPs of every step.


def model_shapes(model) -> dict:
    """Sizes the FLOP count needs: frozen base linear weights under LoRA (``in x out`` summed), LoRA's
    ``r (in + out)`` summed, the LM head, and the attention dimensions."""
    base_linear = lora = 0
    for module in model.modules():
        adapters = getattr(module, "lora_A", None)
        base = getattr(module, "base_layer", None)
        if not adapters or base is None or not hasattr(base, "in_features"):
            continue
        base_linear += base.in_features * base.out_features
        lora += sum(a.out_features for a in adapters.values()) * (base.in_features + base.out_features)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return {
        "base_linear_params": base_linear,
        "lora_params": lora,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "layers": config.num_hidden_layers,
        "attention_dim": heads * head_dim,
    }


def batch_flops(inputs: dict, shapes: dict, lm_head: str) -> dict:
    """Counts and model FLOPs of one batch. ``lm_head``: ``all`` (TRL's fused head off Triton projects every
    position) or ``trained`` (posttrain: the positions of the batch whose next token any row trains)."""
    ids, labels = inputs["input_ids"], inputs["labels"]
    rows, length = ids.shape
    positions, mask = inputs.get("position_ids"), inputs.get("attention_mask")
    if positions is not None and rows == 1:  # padding-free: one row of concatenated sequences, positions restart at 0
        starts = (positions[0] == 0).nonzero().flatten().tolist() + [length]
        seqs = [b - a for a, b in zip(starts, starts[1:]) if b > a]
    elif mask is not None:
        seqs = mask.sum(1).tolist()
    else:
        seqs = [length] * rows
    targets = labels[:, 1:] != -100
    if lm_head == "trained" or ids.is_cuda:  # TRL's fused head scores only trained positions on Triton devices
        head_positions = rows * int(targets.any(0).sum())
    else:  # every position but the last of each sequence (padding is computed, but not counted as model work)
        head_positions = sum(seqs) - len(seqs)
    real = sum(seqs)
    s = shapes
    flops = (
        real * (4 * s["base_linear_params"] + 6 * s["lora_params"])
        + head_positions * 4 * s["vocab_size"] * s["hidden_size"]
        + 6 * s["attention_dim"] * s["layers"] * sum(n * n for n in seqs)
    )
    return {
        "real_tokens": real,
        "computed_positions": rows * length,
        "trained_tokens": int(targets.sum()),
        "lm_head_positions": head_positions,
        "model_flops": flops,
    }


def instrument(counts_path: Path, lm_head: str) -> None:
    """Wrap TRL's ``SFTTrainer.training_step`` (posttrain's trainer inherits it) to count every batch, and
    ``Trainer.train`` to write the counts with the trainer's metrics when training ends."""
    import transformers
    from trl import SFTTrainer

    totals = {"micro_batches": 0, "real_tokens": 0, "computed_positions": 0, "trained_tokens": 0, "lm_head_positions": 0,
              "model_flops": 0}  # fmt: skip
    shapes: dict = {}
    training_step, train = SFTTrainer.training_step, transformers.Trainer.train

    def counted_step(self, model, inputs, *args, **kwargs):
        if not shapes:
            shapes.update(model_shapes(model))
        for key, value in batch_flops(inputs, shapes, lm_head).items():
            totals[key] += value
        totals["micro_batches"] += 1
        return training_step(self, model, inputs, *args, **kwargs)

    def counted_train(self, *args, **kwargs):
        started = time.perf_counter()
        output = train(self, *args, **kwargs)
        # the trainer's own train_runtime is wall-clock time (time.time()), which a VM's clock adjustments can step
        # by tens of seconds; the monotonic clock cannot be stepped
        output.metrics["train_runtime_monotonic"] = time.perf_counter() - started
        import torch

        precision = "bfloat16" if self.args.bf16 else "float32"
        extra = (
            {"peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if torch.cuda.is_available() else {}
        )
        totals["steps"] = self.state.global_step  # optimizer steps (micro-batches / gradient accumulation)
        counts_path.write_text(
            json.dumps(
                {**totals, **extra, "shapes": shapes, "metrics": dict(output.metrics), "dtype": precision}, indent=2
            )
        )
        return output

    SFTTrainer.training_step = counted_step
    transformers.Trainer.train = counted_train


def train_child(args) -> int:
    """``--train NAME --config FILE --counts FILE``: one instrumented training run (a subprocess of main)."""
    if args.train.startswith("posttrain"):
        instrument(args.counts, "trained")
        from posttrain.stages import run_stage

        run_stage("sft", ["--config", str(args.config)])
    else:
        instrument(args.counts, "all")
        from trl.scripts.sft import main as trl_sft
        from trl.scripts.sft import make_parser

        parsed = make_parser().parse_args_and_config(["--config", str(args.config)], fail_with_unknown_args=True)
        trl_sft(*parsed[:4])
    return 0


def peak_child(args) -> int:
    """``--peak DTYPE``: best of a few ``torch.matmul`` of two square ``--peak-size`` matrices, in FLOP/s."""
    import torch

    dtype = getattr(torch, args.peak)
    n = args.peak_size
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    print(
        json.dumps({"dtype": args.peak, "size": n, "threads": torch.get_num_threads(), "flops_per_s": 2 * n**3 / best})
    )
    return 0


def measure_peak(dtype: str, args, env: dict) -> dict:
    cmd = [PYTHON, str(Path(__file__).resolve()), "--peak", dtype, "--peak-size", str(args.peak_size)]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"matmul peak measurement failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class TreeRSSSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants (psutil), keeping the peak."""

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.peak_at = pid, interval, 0, 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        start = time.perf_counter()
        while not self.stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            if total > self.peak:
                self.peak, self.peak_at = total, time.perf_counter() - start
            self.stop.wait(self.interval)


def logged(key: str) -> re.Pattern:
    """A value in a logged metrics dict; transformers prints them as strings with 4 significant digits
    (``'train_runtime': '2568'``, ``'num_tokens': '1.422e+04'``)."""
    return re.compile(rf"""['"]{key}['"]\s*:\s*['"]?([0-9.]+(?:[eE][+-]?[0-9]+)?)""")


TRAIN_RUNTIME, TRAIN_STEPS_PER_S, TRAIN_LOSS = (
    logged("train_runtime"),
    logged("train_steps_per_second"),
    logged("train_loss"),
)
NUM_TOKENS = logged("num_tokens")  # TRL's own count of the non-padding tokens it trained on (stock logs it)


def run_training(name: str, cmd: list[str], env: dict, workdir: Path) -> dict:
    """Run one training subprocess; wall time, peak RSS and the trainer's summary metrics from its logs."""
    stdout_path, stderr_path = workdir / f"{name}.stdout.log", workdir / f"{name}.stderr.log"
    print(f"\n[{name}] {' '.join(cmd)}\n[{name}] logs: {stdout_path} / {stderr_path}", flush=True)
    load_before = os.getloadavg()[0]
    with stdout_path.open("w") as out, stderr_path.open("w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
        sampler = TreeRSSSampler(proc.pid)
        sampler.start()
        # wait4's ru_maxrss (KiB on Linux) is the largest peak RSS among the child and the descendants it waited for.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        lines = stderr_path.read_text(errors="replace").splitlines()
        print(f"\n[{name}] FAILED with exit status {proc.returncode}; last 60 lines of stderr:", file=sys.stderr)
        print("\n".join(lines[-60:]), file=sys.stderr)
        sys.exit(1)
    text = stdout_path.read_text(errors="replace") + "\n" + stderr_path.read_text(errors="replace")
    found = TRAIN_RUNTIME.findall(text)
    result = {
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "peak_tree_rss_mib": round(sampler.peak / 2**20, 1) if sampler.peak else None,
        "peak_tree_rss_at_s": round(sampler.peak_at, 1),  # seconds after start; training is the last train_s
        # CPU seconds of the whole subprocess tree: less sensitive than wall time to other load on the machine.
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "train_runtime_s": float(found[-1]) if found else None,
        # 1-minute load average before and after: other processes competing for the cores skew the timings.
        "loadavg_before": round(load_before, 2),
        "loadavg_after": round(os.getloadavg()[0], 2),
    }
    steps_per_s, loss = TRAIN_STEPS_PER_S.findall(text), TRAIN_LOSS.findall(text)
    if found and steps_per_s:  # approximate (the log rounds steps/s); replaced by exact counts where known
        result["steps"] = round(float(found[-1]) * float(steps_per_s[-1]))
    if loss:
        result["train_loss"] = float(loss[-1])
    num_tokens = NUM_TOKENS.findall(text)
    if num_tokens:
        result["trainer_num_tokens"] = float(num_tokens[-1])  # cross-check of the token count (4 digits)
    print(
        f"[{name}] done: wall {result['wall_s']} s, train_runtime {result['train_runtime_s']} s, "
        f"peak RSS {result['peak_rss_mib']} MiB",
        flush=True,
    )
    return result


def ratio(ours, theirs) -> float | None:
    return round(ours / theirs, 3) if ours and theirs else None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.prepare:
        return prepare(args)
    if args.peak:
        return peak_child(args)
    if args.train:
        return train_child(args)
    env = child_env(args.threads)
    from posttrain.precision import cpu_has_bf16

    bf16 = cpu_has_bf16()  # posttrain's hardware default; stock-competent follows it

    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="sft_throughput_")) if temporary else args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        model = str(workdir / "tiny-chat") if args.smoke else model_folder(env)
        data = workdir / "train.jsonl"
        tokens = prepare_data(data, model, args, env)
        print(
            f"model: {model}\ndata: {data} ({tokens['rows']} conversations: {args.builtin_samples} builtin:all + "
            f"{args.chitchat_samples} chitchat; {tokens['tokens']} tokens after truncation to {args.max_length}, "
            f"{tokens['rows_over_max_length']} rows truncated)\nthreads: {args.threads}, bf16 CPU: {bf16}",
            flush=True,
        )
        dtypes = ["float32"] + (["bfloat16"] if bf16 else [])
        peaks = {dtype: measure_peak(dtype, args, env) for dtype in dtypes}
        for dtype, peak in peaks.items():
            print(f"matmul peak {dtype}: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['size']}^2, best of 5)")

        template = workdir / "chatml_training.jinja"
        template.write_text(CHATML_TRAINING_TEMPLATE)
        configs = {
            "stock-default": stock_default_config(model, data, workdir / "stock-default-out", args),
            "stock-competent": stock_competent_config(
                model, data, workdir / "stock-competent-out", template, args, bf16
            ),
            "posttrain": posttrain_config(model, data, workdir / "posttrain-out", args),
        }
        for name, fast in ABLATIONS.items():
            configs[name] = {**posttrain_config(model, data, workdir / f"{name}-out", args), "fast_paths": fast}
        results = {}
        for name in configs:
            if (args.only and name not in args.only) or (name in ABLATIONS and not args.ablations and not args.only):
                continue
            config, counts = workdir / f"{name}.yaml", workdir / f"{name}.counts.json"
            config.write_text(yaml_dump(configs[name]))
            command = [PYTHON, str(Path(__file__).resolve()), "--train", name, "--config", str(config),
                       "--counts", str(counts)]  # fmt: skip
            result = run_training(name, command, env, workdir)
            counted = json.loads(counts.read_text())
            runtime = float(counted["metrics"]["train_runtime_monotonic"])
            peak = peaks[counted["dtype"]]["flops_per_s"]
            achieved = counted["model_flops"] / runtime
            result.update(
                train_runtime_s=round(runtime, 2),
                steps=counted["steps"],
                dtype=counted["dtype"],
                train_loss=counted["metrics"].get("train_loss"),
                tokens=counted["real_tokens"],
                computed_positions=counted["computed_positions"],
                trained_tokens=counted["trained_tokens"],
                lm_head_positions=counted["lm_head_positions"],
                tokens_per_s=round(counted["real_tokens"] / runtime, 2),
                tokens_per_cpu_s=round(counted["real_tokens"] / result["cpu_s"], 2) if result["cpu_s"] else None,
                model_flops=counted["model_flops"],
                model_flops_per_step=round(counted["model_flops"] / max(counted["steps"], 1)),
                achieved_flops_per_s=round(achieved),
                peak_flops_per_s=round(peak),
                mfu=round(achieved / peak, 4),
                shapes=counted["shapes"],
                config=configs[name],
            )
            results[name] = result

        ratios = {}
        ours = results.get("posttrain")
        for stock in ("stock-default", "stock-competent", *ABLATIONS):
            theirs = results.get(stock)
            if ours and theirs:
                ratios[f"posttrain/{stock}"] = {
                    "tokens_per_s": ratio(ours["tokens_per_s"], theirs["tokens_per_s"]),
                    "peak_rss": ratio(ours["peak_rss_mib"], theirs["peak_rss_mib"]),
                    "peak_tree_rss": ratio(ours["peak_tree_rss_mib"], theirs["peak_tree_rss_mib"]),
                    "tokens_per_cpu_s": ratio(ours["tokens_per_cpu_s"], theirs["tokens_per_cpu_s"]),
                    "mfu": ratio(ours["mfu"], theirs["mfu"]),
                    "wall": ratio(ours["wall_s"], theirs["wall_s"]),
                }

        nan = float("nan")
        print(
            "\nrun                            dtype     tokens  steps  train_s  tokens/s  peak_RSS_MiB  tokens/cpu_s  GFLOP/s    MFU"
            "  load"
        )
        for name, r in results.items():
            print(
                f"{name:<30} {r['dtype']:<8} {r['tokens']:>7}  {r['steps']:>5}  {r['train_runtime_s']:>7.1f}  "
                f"{r['tokens_per_s']:>8.1f}  {r['peak_rss_mib']:>12.1f}  {r['tokens_per_cpu_s'] or nan:>12.1f}  "
                f"{r['achieved_flops_per_s'] / 1e9:>7.2f}  {100 * r['mfu']:>5.1f}%  "
                f"{r['loadavg_before']:.1f}->{r['loadavg_after']:.1f}"
            )
        for key, value in ratios.items():
            print(
                f"ratio {key}: tokens/s {value['tokens_per_s'] or nan:.2f}x, peak RSS {value['peak_rss'] or nan:.2f}x, "
                f"tokens/cpu_s {value['tokens_per_cpu_s'] or nan:.2f}x, MFU {value['mfu'] or nan:.2f}x"
            )

        report = {
            "benchmark": "sft_throughput",
            "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "platform": platform.platform(),
                "processor": _cpu_model(),
                "cpu_count": os.cpu_count(),
                "bf16_cpu": bf16,
                "threads": args.threads,
            },
            "versions": _versions(),
            "model": model,
            "data": {
                "builtin_samples": args.builtin_samples,
                "chitchat_samples": args.chitchat_samples,
                "system_prompt": SYSTEM_PROMPT,
                "max_length": args.max_length,
                "max_steps": args.max_steps,
                **tokens,
            },
            "matmul_peak": peaks,
            "results": results,
            "ratios": ratios,
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.output}")
        return 0
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _cpu_has_bf16() -> bool:
    from posttrain.precision import cpu_has_bf16

    return cpu_has_bf16()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "trl", "transformers", "peft", "bitsandbytes", "accelerate", "posttrain"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


if __name__ == "__main__":
    sys.exit(main())
