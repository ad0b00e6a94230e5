#!/usr/bin/env python
"""Tool-use SFT benchmark: does SFT on the built-in ``calculator`` task teach the embedded model to use a tool?

1. **SFT** of the embedded SmolLM2-135M-Instruct (``posttrain sft``, in its own process) on ``builtin:calculator``
   (the task's ``train`` pool: tool-calling conversations) with LoRA r16 / alpha 32 on every linear layer like the
   default ``recipes/configs/smollm2-135m/sft.yaml``, but on the full-precision base (``--qlora`` for the default's
   4-bit NF4 base, several times slower on a CPU). ``chat_template: auto``: SmolLM2's own template has no tool
   format, so posttrain adds its tool-capable ChatML template and the adapter's tokenizer carries it.
2. **Evaluation** (``posttrain evaluate``) of the base model and the SFT adapter on the ``tools`` suite (the task's
   held-out ``eval`` pool: other phrasings, other numbers) with the tool loop: a pure-Python calculator answers the
   calls, greedy decoding, at most 3 replies per question. The base model is shown the same tools through the same
   ChatML template (its own template would hide them).
3. ``--output`` (default ``benchmarks/results/tool_sft.json``): per model the ``tool_use`` score (every step right)
   and its sub-scores (``tool_call``, ``tool_name``, ``tool_arguments``, ``final_answer``) with 95% bootstrap CIs,
   the paired 95% bootstrap CI of SFT - base for each, the machine class, date, settings and timings.

With ``--serve`` it then exports a Q8_0 GGUF of the adapter (``posttrain export``), serves it with
llama-cpp-python's OpenAI-compatible server (``posttrain.export.serve``) and asks a few held-out questions with
``tools`` in the request, recording whether each reply carries a call that parses (in ``tool_calls`` or in
``content``, read by :func:`posttrain.checks.tool_calls.calls_from_message`).

Run it from the repository root::

    .venv/bin/python benchmarks/tool_sft.py              # 320 training conversations, 1 epoch, 80 held-out questions
    .venv/bin/python benchmarks/tool_sft.py --smoke      # 8 conversations, 2 steps, 4 questions: checks it all runs

A benchmark, not a test: it measures and reports; it exits non-zero only when a stage fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MODEL_ALIAS = "smollm2-135m-instruct"
SCORES = ("tool_use", "tool_call", "tool_name", "tool_arguments", "final_answer")


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return {
        "platform": platform.platform(),
        "processor": model.group(1).strip() if model else platform.processor(),
        "cpu_count": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in cpuinfo,
        "threads": int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1),
        "loadavg": os.getloadavg()[0],
    }


def stage(name: str, config: dict, work: Path, *extra: str) -> float:
    """Run ``python -m posttrain.stages <name> --config <yaml>`` and return its wall time (raises on failure)."""
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.monotonic()
    command = [PYTHON, "-m", "posttrain.stages", name, "--config", str(path), *extra]
    print(f"[tool_sft] {' '.join(command)}", flush=True)
    proc = subprocess.run(command, cwd=REPO, text=True, capture_output=True)
    (work / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"[tool_sft] {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    for line in proc.stdout.splitlines():
        if "chat_template auto" in line or line.startswith("posttrain: tools:"):
            print(f"[tool_sft] {line}", flush=True)
    return time.monotonic() - started


def sft_config(args, output_dir: Path) -> dict:
    config = {
        "model_name_or_path": MODEL_ALIAS,
        "use_peft": True,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "lora_target_modules": "all-linear",
        "datasets": [{"path": "builtin:calculator", "num_samples": args.train_samples}],
        "chat_template": "auto",
        "output_dir": str(output_dir),
        "seed": args.seed,
        "num_train_epochs": args.epochs,
        "packing": True,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 3,
        "max_length": 512,
        "gradient_checkpointing": False,
        "logging_steps": 5,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "show_example": False,
    }
    if args.max_steps:
        config["max_steps"] = args.max_steps
    if args.qlora:
        config.update(load_in_4bit=True, bnb_4bit_quant_type="nf4", use_bnb_nested_quant=True)
    return config


def eval_config(args, sft_dir: Path, output_dir: Path) -> dict:
    return {
        "models": [{"label": "base", "path": MODEL_ALIAS}, {"label": "sft", "path": str(sft_dir)}],
        "suites": ["tools"],
        "max_samples": args.eval_samples,
        "batch_size": 16,
        "do_sample": False,
        "seed": args.seed,
        "baseline": "base",
        "bootstrap_samples": 2000,
        "output_dir": str(output_dir),
        "progress": False,
    }


def saved_template(sft_dir: Path) -> str:
    """Which chat template the adapter's tokenizer carries (what evaluation, merge and export use)."""
    from posttrain.chat_templates import load_template

    jinja = sft_dir / "chat_template.jinja"
    config = json.loads((sft_dir / "tokenizer_config.json").read_text())
    template = jinja.read_text() if jinja.is_file() else config.get("chat_template")
    if template == load_template("chatml"):
        return "posttrain's tool-capable ChatML (chatml.jinja), added by chat_template: auto"
    return "the model's own"


def summarize(results: dict) -> dict:
    models = {}
    for label, stats in results["summary"]["tools"].items():
        models[label] = {
            name: {k: stats[name].get(k) for k in ("mean", "low", "high", "n")} for name in SCORES if name in stats
        }
        models[label]["generation"] = stats.get("_generation")
    deltas = {
        d["score"]: {k: d[k] for k in d if k not in ("suite", "score")}
        for d in results["deltas"]
        if d["suite"] == "tools" and d["from"] == "base" and d["to"] == "sft"
    }
    examples = {}
    for record in results["samples"]:
        if record["id"] == results["samples"][0]["id"]:
            examples[record["model"]] = {"prompt": record["prompt"][-1]["content"], "replies": record.get("replies")}
    return {"models": models, "delta_sft_minus_base": deltas, "example": examples}


def serve_check(args, sft_dir: Path, work: Path, n: int = 8) -> dict:
    """Export a Q8_0 GGUF of the adapter, serve it with llama-cpp-python's OpenAI-compatible server and ask held-out
    questions with ``tools`` in the request: does the reply carry a call that parses?"""
    import openai

    from posttrain.checks.tool_calls import calls_from_message
    from posttrain.export.serve import llama_server
    from posttrain.tasks import generate_task

    exported = work / "export"
    export = {
        "model_name_or_path": str(sft_dir),
        "output_dir": str(exported),
        "gguf_types": ["q8_0"],
        "verify": False,
        "ollama_create": False,
    }
    timings = {"export_s": stage("export", export, work)}
    gguf = next(exported.glob("*.gguf"))
    replies = []
    started = time.monotonic()
    with llama_server(gguf, alias="tools", n_ctx=2048, log_path=work / "server.log") as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused")
        for example in generate_task("calculator", n, seed=args.seed, pool="validation"):
            reply = client.chat.completions.create(
                model="tools",
                messages=[{"role": "user", "content": example.prompt}],
                tools=example.meta["tools"],
                max_tokens=96,
                temperature=0.0,
            )
            message = reply.choices[0].message.model_dump()
            parsed = calls_from_message(message)
            replies.append(
                {
                    "prompt": example.prompt,
                    "expected_call": example.meta["call"],
                    "content": message.get("content"),
                    "tool_calls": message.get("tool_calls"),
                    "parsed_calls": [{"name": c.name, "arguments": c.arguments} for c in parsed.calls],
                    "parse_errors": parsed.errors,
                }
            )
    timings["serve_s"] = time.monotonic() - started
    return {
        "gguf": gguf.name,
        "questions": n,
        "parseable_call_rate": sum(bool(r["parsed_calls"]) for r in replies) / len(replies),
        "calls_in_tool_calls_field": sum(bool(r["tool_calls"]) for r in replies),
        "replies": replies,
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-samples", type=int, default=320)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=0, help="stop SFT after this many steps (0: the epochs)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-samples", type=int, default=80)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--qlora", action="store_true", help="4-bit NF4 base as the default sft.yaml")
    parser.add_argument("--serve", action="store_true", help="also export a GGUF and serve it with tools")
    parser.add_argument("--smoke", action="store_true", help="8 conversations, 2 steps, 4 questions")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument(
        "--reuse", action="store_true", help="keep a finished SFT run and evaluation in --work (report again)"
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "tool_sft.json")
    args = parser.parse_args()
    if args.smoke:
        args.train_samples, args.max_steps, args.eval_samples = 8, 2, 4

    work = args.work or Path(tempfile.mkdtemp(prefix="tool_sft-"))
    work.mkdir(parents=True, exist_ok=True)
    sft_dir, eval_dir = work / "sft", work / "eval"
    started = dt.datetime.now(dt.UTC)
    timings = {}
    if args.reuse and args.output.is_file():  # the stage timings of the run being reported again
        previous = json.loads(args.output.read_text()).get("timings", {})
        timings.update({k: previous[k] for k in ("sft_s", "evaluate_s") if k in previous})
    if not (args.reuse and (sft_dir / "run_manifest.json").is_file()):
        timings["sft_s"] = stage("sft", sft_config(args, sft_dir), work)
    manifest = json.loads((sft_dir / "run_manifest.json").read_text())
    if not (args.reuse and (eval_dir / "results.json").is_file()):
        timings["evaluate_s"] = stage("evaluate", eval_config(args, sft_dir, eval_dir), work)
    results = json.loads((eval_dir / "results.json").read_text())
    timings["sft_stage_wall_s"] = manifest.get("wall_time_s")
    timings["sft_train_runtime_s"] = (manifest.get("metrics") or {}).get("train_runtime")
    timings["evaluate_elapsed_s"] = results.get("elapsed_s")
    report = {
        "benchmark": "tool_sft",
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "model": MODEL_ALIAS,
            "train": f"builtin:calculator (train pool), {args.train_samples} conversations",
            "epochs": args.epochs,
            "max_steps": args.max_steps or None,
            "learning_rate": args.learning_rate,
            "lora": "r16 alpha32 dropout0.05 all-linear" + (", 4-bit NF4 base (QLoRA)" if args.qlora else ""),
            "eval": f"suite tools: builtin:calculator eval pool, {results['suites'][0]['num_samples']} questions, "
            "greedy, tool loop of at most 3 replies, max_new_tokens 96",
            "chat_template": saved_template(sft_dir),
            "seed": args.seed,
            "smoke": args.smoke,
        },
        "training": {k: manifest.get(k) for k in ("metrics", "loss_curve", "loss_mask") if k in manifest},
        **summarize(results),
        "timings": {k: round(v, 1) for k, v in timings.items() if v is not None},
    }
    if args.serve:
        report["serve"] = serve_check(args, sft_dir, work)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    for label, scores in report["models"].items():
        line = ", ".join(f"{k} {v['mean']:.3f}" for k, v in scores.items() if isinstance(v, dict) and "mean" in v)
        print(f"[tool_sft] {label}: {line}")
    for score, d in report["delta_sft_minus_base"].items():
        print(f"[tool_sft] sft - base {score}: {d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (n={d['n']})")
    print(f"[tool_sft] wrote {args.output}")


if __name__ == "__main__":
    main()
