#!/usr/bin/env python
"""SFT throughput benchmark: stock ``trl sft`` versus posttrain's ``recipes/sft.py`` on the same work.

Both runs QLoRA-train the embedded SmolLM2-135M-Instruct (NF4 with double quantization, LoRA r16 / alpha 32 /
dropout 0.05 on all linear layers, max_length 512, learning rate 2e-4, seed 0) for exactly one epoch over the same
JSONL file of ``messages`` conversations (posttrain's built-in tasks plus real chit-chat, each with the same system
message), one after the other, each in its own subprocess, on the same interpreter and thread count:

* **stock-trl** -- TRL's own CLI, ``trl sft --config stock.yaml`` (TRL 1.16 runs ``trl/scripts/sft.py`` through
  ``accelerate launch``): 4 rows per step padded to the longest, fp32, gradient checkpointing, full-sequence loss
  (TRL's default for a ``messages`` dataset).
* **posttrain** -- ``python recipes/sft.py --config ours.yaml``: packed rows of 512 tokens (padding-free), precision
  left to posttrain's hardware default (bf16 on CPUs with AVX512-BF16/AMX), no gradient checkpointing,
  assistant-only loss.

For each run it reports the real (non-padding) tokens of the epoch -- every conversation rendered with the
tokenizer's chat template, truncated to ``max_length`` and summed -- divided by the trainer's ``train_runtime``, the
wall time of the subprocess, and its peak resident memory (``ru_maxrss`` from ``os.wait4``: the largest process of
the subprocess tree, i.e. the training process; the peak of the whole tree's summed RSS, sampled with psutil, is
reported as well). It prints a table with the ratios posttrain / stock and writes the figures as JSON.

Run it from the repository root::

    .venv/bin/python benchmarks/sft_throughput.py            # 64 + 8 conversations: ~15 minutes on an idle 2-core CPU
    .venv/bin/python benchmarks/sft_throughput.py --quick    # 16 + 4: a smoke run of both pipelines
    .venv/bin/python benchmarks/sft_throughput.py --builtin-samples 128 --chitchat-samples 16   # the README's run

On a lightly loaded 2-core CPU a stock step (4 rows, at most 4 x 512 tokens) took 30-40 s and a posttrain step
(2 x 512 packed tokens) roughly as long; other load on the machine stretches both, so the time grows with the number
of conversations and with whatever else runs.

This is a benchmark, not a test: it measures and reports, and asserts nothing about time or memory. It exits non-zero
only when one of the training subprocesses fails (printing the last lines of its stderr).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
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

# Shared by both runs: identical model, quantization, LoRA, sequence length, optimizer, schedule and seed.
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
    parser.add_argument("--quick", action="store_true", help="tiny data set: a smoke run of both pipelines")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--stock-batch", type=int, default=4, help="stock TRL rows per step (padded)")
    parser.add_argument(
        "--posttrain-batch",
        type=int,
        default=2,
        help="posttrain packed rows of max_length tokens per step (see posttrain_config)",
    )
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS/MKL_NUM_THREADS for both runs")
    parser.add_argument("--only", choices=["stock", "posttrain"], help="run just one of the two")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "sft_throughput.json")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep data, configs, logs and outputs here (default: a temporary folder, removed)",
    )
    # internal: data preparation runs in its own subprocess, so this process stays small (a child's ru_maxrss
    # starts from the RSS of the process that spawned it)
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.builtin_samples is None:
        args.builtin_samples = 16 if args.quick else 64
    if args.chitchat_samples is None:
        args.chitchat_samples = 4 if args.quick else 8
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
    )
    # posttrain from this checkout even where it is not installed in the interpreter (it normally is, editable).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    return env


def model_folder(env: dict[str, str]) -> str:
    """The local HF folder of the embedded default model (materialized on first use)."""
    out = subprocess.run(
        [PYTHON, "-m", "posttrain.cli", "model", MODEL_ALIAS], env=env, cwd=REPO, capture_output=True, text=True
    )
    if out.returncode != 0:
        sys.exit(f"cannot materialize {MODEL_ALIAS}:\n{out.stderr[-4000:]}")
    return out.stdout.strip().splitlines()[-1]


def write_data(path: Path, builtin: int, chitchat: int) -> int:
    """One JSONL file of ``{"messages": [system, user, assistant, ...]}`` rows; returns the row count."""
    from posttrain.data import DatasetSpec, load_conversations

    data = load_conversations(
        [DatasetSpec(path="builtin:all", num_samples=builtin), DatasetSpec(path="chitchat", num_samples=chitchat)],
        seed=0,
    )["train"]
    with path.open("w", encoding="utf-8") as handle:
        for messages in data["messages"]:
            row = [{"role": "system", "content": SYSTEM_PROMPT}, *messages]
            handle.write(json.dumps({"messages": row}, ensure_ascii=False) + "\n")
    return len(data)


def count_tokens(path: Path, model: str, max_length: int) -> dict:
    """Real tokens of one epoch: each conversation rendered with the chat template, truncated to ``max_length``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    lengths = []
    for line in path.read_text(encoding="utf-8").splitlines():
        ids = tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=True)
        if not isinstance(ids, list):  # a BatchEncoding where return_dict defaults to True
            ids = ids["input_ids"]
        lengths.append(len(ids))
    truncated = [min(n, max_length) for n in lengths]
    return {
        "rows": len(lengths),
        "tokens": sum(truncated),
        "tokens_untruncated": sum(lengths),
        "rows_over_max_length": sum(n > max_length for n in lengths),
        "mean_row_tokens": round(sum(truncated) / len(truncated), 1),
    }


def prepare(args) -> int:
    """``--prepare FILE``: write the data file and print its token count as JSON (run as a subprocess)."""
    rows = write_data(args.prepare, args.builtin_samples, args.chitchat_samples)
    tokens = count_tokens(args.prepare, args.model_folder, args.max_length)
    assert tokens["rows"] == rows
    print(json.dumps(tokens))
    return 0


def prepare_data(data: Path, model: str, args, env: dict) -> dict:
    cmd = [
        PYTHON,
        str(Path(__file__).resolve()),
        "--prepare",
        str(data),
        "--model-folder",
        model,
        "--builtin-samples",
        str(args.builtin_samples),
        "--chitchat-samples",
        str(args.chitchat_samples),
        "--max-length",
        str(args.max_length),
    ]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"data preparation failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def yaml_dump(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)


def stock_config(model: str, data: Path, out: Path, args) -> dict:
    """Stock ``trl sft``: the TRL 1.16 CLI's keys (ScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig)."""
    return {
        "model_name_or_path": model,
        "dtype": "float32",
        # trl/scripts/sft.py loads `datasets:` with get_dataset -> datasets.load_dataset(path, data_files=..., split)
        "datasets": [{"path": "json", "data_files": str(data), "split": "train"}],
        **COMMON,
        "max_length": args.max_length,
        "per_device_train_batch_size": args.stock_batch,
        "bf16": False,  # TRL defaults bf16 to True; fp32 is the stock setting for a CPU
        "gradient_checkpointing": True,
        "use_cpu": True,
        "output_dir": str(out),
    }


def posttrain_config(model: str, data: Path, out: Path, args) -> dict:
    """posttrain's recipe keys. Only keys its parser knows (unknown keys are errors)."""
    return {
        "model_name_or_path": model,
        "datasets": [{"path": str(data)}],
        **COMMON,
        "max_length": args.max_length,
        # Packing: every row is max_length tokens of real data (best-fit decreasing, padding-free). Stock TRL's 4
        # rows are padded to the longest row of the batch, which on this mix (short task answers, long chit-chat)
        # averages roughly 1000-1500 positions per step, up to 4 x 512 = 2048. 2 packed rows = 1024 real tokens per
        # step is the closest match in tokens computed per step (and what the shipped recipe uses); 4 would double
        # the per-step activation memory.
        "packing": True,
        "per_device_train_batch_size": args.posttrain_batch,
        "gradient_checkpointing": False,  # 135M parameters: activations of 2 x 512 tokens fit easily
        # precision: bf16 deliberately unset -> posttrain picks bf16 where the CPU has AVX512-BF16/AMX
        "show_example": False,
        "output_dir": str(out),
    }


def trl_cli() -> list[str]:
    """TRL's ``trl`` console script next to this interpreter (it is ``trl.cli:main``, which has no ``__main__``
    module, so the fallback runs ``trl.cli.main`` directly)."""
    script = Path(PYTHON).parent / "trl"
    return [str(script)] if script.is_file() else [PYTHON, "-m", "trl.cli.main"]


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


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.prepare:
        return prepare(args)
    env = child_env(args.threads)

    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="sft_throughput_")) if temporary else args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        model = model_folder(env)
        data = workdir / "train.jsonl"
        tokens = prepare_data(data, model, args, env)
        print(
            f"model: {model}\ndata: {data} ({tokens['rows']} conversations: {args.builtin_samples} builtin:all + "
            f"{args.chitchat_samples} chitchat; {tokens['tokens']} tokens after truncation to {args.max_length}, "
            f"{tokens['rows_over_max_length']} rows truncated)\nthreads: {args.threads}",
            flush=True,
        )

        configs = {
            "stock-trl": stock_config(model, data, workdir / "stock-out", args),
            "posttrain": posttrain_config(model, data, workdir / "posttrain-out", args),
        }
        commands = {
            "stock-trl": [*trl_cli(), "sft", "--config", str(workdir / "stock.yaml")],
            "posttrain": [PYTHON, str(REPO / "recipes" / "sft.py"), "--config", str(workdir / "ours.yaml")],
        }
        (workdir / "stock.yaml").write_text(yaml_dump(configs["stock-trl"]))
        (workdir / "ours.yaml").write_text(yaml_dump(configs["posttrain"]))

        results = {}
        for name in ("stock-trl", "posttrain"):
            if args.only and not name.startswith(args.only):
                continue
            result = run_training(name, commands[name], env, workdir)
            if name == "stock-trl":  # one process, no drop_last: every batch of `stock_batch` rows is a step
                result["steps"] = math.ceil(tokens["rows"] / args.stock_batch)
            else:
                manifest = workdir / "posttrain-out" / "run_manifest.json"
                if manifest.is_file():
                    recorded = json.loads(manifest.read_text())
                    metrics = recorded.get("metrics", {})
                    if "train_runtime" in metrics:  # full precision, where the log has 4 significant digits
                        result["train_runtime_s"] = round(float(metrics["train_runtime"]), 1)
                    if recorded.get("ranks"):
                        result["steps"] = recorded["ranks"][0]["steps"]
            runtime = result["train_runtime_s"]
            result["tokens"] = tokens["tokens"]
            result["tokens_per_s"] = round(tokens["tokens"] / runtime, 2) if runtime else None
            result["tokens_per_cpu_s"] = round(tokens["tokens"] / result["cpu_s"], 2) if result["cpu_s"] else None
            if result.get("steps"):
                result["real_tokens_per_step"] = round(tokens["tokens"] / result["steps"], 1)
            result["command"] = commands[name]
            result["config"] = configs[name]
            results[name] = result

        ratios = {}
        if len(results) == 2:
            stock, ours = results["stock-trl"], results["posttrain"]
            if stock["tokens_per_s"] and ours["tokens_per_s"]:
                ratios["tokens_per_s"] = round(ours["tokens_per_s"] / stock["tokens_per_s"], 3)
            ratios["peak_rss"] = round(ours["peak_rss_mib"] / stock["peak_rss_mib"], 3)
            if stock["peak_tree_rss_mib"] and ours["peak_tree_rss_mib"]:
                ratios["peak_tree_rss"] = round(ours["peak_tree_rss_mib"] / stock["peak_tree_rss_mib"], 3)
            ratios["wall"] = round(ours["wall_s"] / stock["wall_s"], 3)
            if stock["tokens_per_cpu_s"] and ours["tokens_per_cpu_s"]:
                ratios["tokens_per_cpu_s"] = round(ours["tokens_per_cpu_s"] / stock["tokens_per_cpu_s"], 3)

        nan = float("nan")
        print("\nrun        tokens  steps  train_s  wall_s  tokens/s  peak_RSS_MiB  tree_RSS_MiB  tokens/cpu_s  load")
        for name, r in results.items():
            print(
                f"{name:<10} {r['tokens']:>6}  {r.get('steps', '?'):>5}  {r['train_runtime_s'] or nan:>7.1f}  "
                f"{r['wall_s']:>6.1f}  {r['tokens_per_s'] or nan:>8.1f}  {r['peak_rss_mib']:>12.1f}  "
                f"{r['peak_tree_rss_mib'] or nan:>12.1f}  {r['tokens_per_cpu_s'] or nan:>12.1f}  "
                f"{r['loadavg_before']:.1f}->{r['loadavg_after']:.1f}"
            )
        if ratios:
            print(
                f"ratio posttrain/stock: tokens/s {ratios.get('tokens_per_s', nan):.2f}x, "
                f"peak RSS {ratios['peak_rss']:.2f}x (tree {ratios.get('peak_tree_rss', nan):.2f}x), "
                f"tokens/cpu_s {ratios.get('tokens_per_cpu_s', nan):.2f}x, wall time {ratios['wall']:.2f}x"
            )

        report = {
            "benchmark": "sft_throughput",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "platform": platform.platform(),
                "processor": _cpu_model(),
                "cpu_count": os.cpu_count(),
                "bf16_cpu": _cpu_has_bf16(),
                "threads": args.threads,
            },
            "versions": _versions(),
            "data": {
                "builtin_samples": args.builtin_samples,
                "chitchat_samples": args.chitchat_samples,
                "system_prompt": SYSTEM_PROMPT,
                "max_length": args.max_length,
                **tokens,
            },
            "results": results,
            "ratios_posttrain_over_stock": ratios,
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
