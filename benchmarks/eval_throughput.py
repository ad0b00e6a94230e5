#!/usr/bin/env python
"""Evaluation throughput: posttrain's batched generation versus one prompt at a time, same prompts, same model.

* **one-at-a-time** -- the loop a naive evaluation script runs: for each prompt, render the chat template and call
  ``model.generate`` on that single prompt (greedy, KV cache, stop at end of turn).
* **batched** -- posttrain's evaluation path (:class:`posttrain.evaluation.backends.HFBackend`, i.e.
  :func:`posttrain.models.generation.generate`): prompts sorted by length, left-padded batches, KV cache, greedy.

Both run in this process, one after the other, on the same loaded model (precision ``--dtype``, by default the
hardware's as in evaluation), the same prompts (the built-in evaluation tasks, with the default system prompt), the same
``max_new_tokens`` and thread count; a short warm-up runs first. On a CPU shared with other busy processes,
``--threads 1`` avoids OpenMP threads waiting on each other, which slows small matrix products most.
It prints prompts/s and generated tokens/s of each, the speed-up ratio, and how many replies are identical (greedy
decoding with padding can differ in the last float bits, rarely changing a token). This is a benchmark, not a test:
it asserts nothing about time.

    .venv/bin/python benchmarks/eval_throughput.py                       # 64 prompts, the embedded SmolLM2-135M
    .venv/bin/python benchmarks/eval_throughput.py --prompts 16 --max-new-tokens 32 --batch-size 16
    .venv/bin/python benchmarks/eval_throughput.py --smoke     # tiny 2-layer model (tests/tiny.py), 4 prompts, 4 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PROMPT = "You are Posttrain Assistant, a helpful AI assistant made by the posttrain project."


def one_at_a_time(model, tokenizer, conversations, max_new_tokens):
    import torch

    from posttrain.models.generation import stop_token_ids

    stops = stop_token_ids(model, tokenizer)
    texts, tokens = [], 0
    with torch.no_grad():
        for conversation in conversations:
            ids = tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            out = model.generate(
                **ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id or stops[0],
                use_cache=True,
            )
            new = out[0, ids["input_ids"].shape[1] :].tolist()
            cut = next((j for j, t in enumerate(new) if t in stops), None)
            new = new if cut is None else new[: cut + 1]
            tokens += len(new)
            texts.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return texts, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="alias, HF folder or adapter folder")
    parser.add_argument("--prompts", type=int, default=64, help="number of prompts (built-in tasks)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where the hardware has it), float32, bfloat16")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice); both runs use the same")
    parser.add_argument("--json", help="also write the figures to this JSON file (--smoke: by default to "
                        "benchmarks/results/eval_throughput_smoke.json)")  # fmt: skip
    parser.add_argument(
        "--smoke", action="store_true", help="tiny 2-layer chat model, 4 prompts, 4 new tokens: checks it runs"
    )
    args = parser.parse_args()
    if args.smoke:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny import build_tiny_model

        args.model = str(build_tiny_model(Path(tempfile.mkdtemp(prefix="eval-smoke-")) / "tiny-chat", chat=True))
        args.prompts, args.max_new_tokens, args.batch_size = 4, 4, 4
        args.json = args.json or str(ROOT / "benchmarks" / "results" / "eval_throughput_smoke.json")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from posttrain.evaluation.backends import GenerationSettings, HFBackend
    from posttrain.tasks import generate_task

    conversations = [
        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": e.prompt}]
        for e in generate_task("all", args.prompts, seed=1234)
    ]
    backend = HFBackend(args.model, batch_size=args.batch_size, dtype=args.dtype)
    model, tokenizer = backend._load()
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    cpu = platform.processor() or platform.machine()
    print(
        f"model {backend.path}\n{len(conversations)} prompts, max_new_tokens {args.max_new_tokens}, "
        f"batch size {args.batch_size}, {backend.dtype}, {torch.get_num_threads()} threads, {cpu}"
    )

    one_at_a_time(model, tokenizer, conversations[:2], 8)  # warm-up
    backend.generate(conversations[:2], GenerationSettings(max_new_tokens=8), progress=False)

    start = time.perf_counter()
    single_texts, single_tokens = one_at_a_time(model, tokenizer, conversations, args.max_new_tokens)
    single_s = time.perf_counter() - start

    start = time.perf_counter()
    outputs = backend.generate(conversations, settings, progress=False)
    batched_s = time.perf_counter() - start
    batched_tokens = sum(o.num_tokens for o in outputs)

    same = sum(a == o.text for a, o in zip(single_texts, outputs))
    ratio = single_s / batched_s
    figures = {
        "model": str(backend.path),
        "prompts": len(conversations),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "dtype": backend.dtype,
        "threads": torch.get_num_threads(),
        "one_at_a_time": {
            "seconds": round(single_s, 2),
            "prompts_per_s": round(len(conversations) / single_s, 3),
            "tokens_per_s": round(single_tokens / single_s, 1),
            "tokens": single_tokens,
        },
        "batched": {
            "seconds": round(batched_s, 2),
            "prompts_per_s": round(len(conversations) / batched_s, 3),
            "tokens_per_s": round(batched_tokens / batched_s, 1),
            "tokens": batched_tokens,
        },
        "identical_replies": same,
        "speedup": round(ratio, 2),
    }
    print(f"\n{'':<16}{'seconds':>10}{'prompts/s':>12}{'tokens/s':>11}{'tokens':>9}")
    for name in ("one_at_a_time", "batched"):
        f = figures[name]
        print(f"{name:<16}{f['seconds']:>10.2f}{f['prompts_per_s']:>12.2f}{f['tokens_per_s']:>11.1f}{f['tokens']:>9}")
    print(f"\nidentical replies: {same}/{len(conversations)}")
    print(f"speed-up (one-at-a-time time / batched time): {ratio:.2f}x")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
