#!/usr/bin/env python
"""Evaluation throughput: posttrain's batched generation versus one prompt at a time, or (``--compare compact``)
the compact loop, where finished replies leave the batch, versus ``model.generate`` on whole batches.

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

``--compare compact`` measures what :func:`posttrain.models.generation.generate` gains from letting finished rows
leave the batch (``compact=True``, the default of evaluation and preference pairs) over ``model.generate`` on the
whole batch until its longest reply ends or ``max_new_tokens`` (``compact=False``, what PPO rollouts keep): same
loaded model, same prompts, sorted and batched alike, greedy. The gain grows with the spread of reply lengths in a
batch, so it runs with replies long enough to differ. It checks that both paths give the same token ids, prints
wall time and generated tokens/s of each and the speed-up, and writes ``benchmarks/results/eval_throughput.json``
with the machine class (AVX512-BF16 or AVX2) and the date:

    .venv/bin/python benchmarks/eval_throughput.py --compare compact --prompts 32 --batch-size 16 --max-new-tokens 128

On a CPU shared with busy processes add ``--threads 1`` (results/eval_throughput.json was measured so: with 2 threads
on 2 loaded cores both paths ran about ten times slower and the ratio was noise).
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


def machine_class() -> str:
    """AVX512-BF16 where the CPU has bf16 dot products (``avx512_bf16`` in /proc/cpuinfo), else AVX2."""
    try:
        return "AVX512-BF16" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "AVX2"
    except OSError:
        return "AVX2"


def compare_compact(args, backend, model, tokenizer, conversations) -> dict:
    """``generate(compact=False)`` (model.generate on whole batches) and ``generate(compact=True)``, timed."""
    import torch

    from posttrain.chat_templates import encode_rendered
    from posttrain.models.generation import generate, render_prompt

    kwargs = dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, progress=False)
    generate(model, tokenizer, conversations[:2], **dict(kwargs, max_new_tokens=8), compact=False)  # warm-up
    generate(model, tokenizer, conversations[:2], **dict(kwargs, max_new_tokens=8), compact=True)
    # the batches generate() forms (prompts sorted by length), each run by both paths back to back, in alternating
    # order, so that load from other processes on a shared machine falls on both alike
    prompt_lengths = [len(encode_rendered(tokenizer, render_prompt(tokenizer, c))["input_ids"]) for c in conversations]
    order = sorted(range(len(conversations)), key=lambda i: prompt_lengths[i])
    batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    paths = (("full_batch", False), ("compact", True))
    seconds = {name: 0.0 for name, _ in paths}
    completions = {name: [None] * len(conversations) for name, _ in paths}
    for k, batch in enumerate(batches):
        for name, compact in paths if k % 2 == 0 else paths[::-1]:
            start = time.perf_counter()
            results = generate(model, tokenizer, [conversations[i] for i in batch], **kwargs, compact=compact)
            seconds[name] += time.perf_counter() - start
            for i, [completion] in zip(batch, results):
                completions[name][i] = completion
    timed = {name: (seconds[name], completions[name]) for name, _ in paths}
    full_s, full = timed["full_batch"]
    compact_s, compact = timed["compact"]
    same = sum(a.token_ids == b.token_ids for a, b in zip(full, compact))
    lengths = [c.num_tokens for c in full]
    figures = {
        "comparison": "compact (finished rows leave the batch) vs full_batch (model.generate, compact=False)",
        "model": str(backend.path),
        "machine_class": machine_class(),
        "date": time.strftime("%Y-%m-%d"),
        "prompts": len(conversations),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "dtype": backend.dtype,
        "threads": torch.get_num_threads(),
        "reply_tokens": {
            "min": min(lengths),
            "max": max(lengths),
            "mean": round(sum(lengths) / len(lengths), 1),
            "cut_at_max_new_tokens": sum(not c.finished for c in full),
        },  # fmt: skip
    }
    for name, (seconds, completions) in timed.items():
        tokens = sum(c.num_tokens for c in completions)
        figures[name] = {
            "seconds": round(seconds, 2),
            "prompts_per_s": round(len(conversations) / seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1),
            "tokens": tokens,
        }
    figures["identical_token_ids"] = same
    figures["speedup"] = round(full_s / compact_s, 2)
    print(f"\n{'':<16}{'seconds':>10}{'prompts/s':>12}{'tokens/s':>11}{'tokens':>9}")
    for name in ("full_batch", "compact"):
        f = figures[name]
        print(f"{name:<16}{f['seconds']:>10.2f}{f['prompts_per_s']:>12.2f}{f['tokens_per_s']:>11.1f}{f['tokens']:>9}")
    r = figures["reply_tokens"]
    print(f"\nreply tokens: min {r['min']}, mean {r['mean']}, max {r['max']}, {r['cut_at_max_new_tokens']} cut")
    print(f"identical greedy token ids: {same}/{len(conversations)}")
    if same != len(conversations):
        differ = [i for i, (a, b) in enumerate(zip(full, compact)) if a.token_ids != b.token_ids]
        print(f"WARNING: replies {differ} differ between the paths (float rounding with a smaller batch?)")
    print(f"speed-up (full_batch time / compact time): {figures['speedup']:.2f}x  [{figures['machine_class']}]")
    return figures


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
    parser.add_argument("--compare", choices=("single", "compact"), default="single",
                        help="single: batched vs one prompt at a time; compact: finished rows leaving the batch vs "
                        "model.generate on whole batches (writes benchmarks/results/eval_throughput.json)")  # fmt: skip
    args = parser.parse_args()
    if args.compare == "compact" and not args.smoke:
        args.json = args.json or str(ROOT / "benchmarks" / "results" / "eval_throughput.json")
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

    if args.compare == "compact":
        figures = compare_compact(args, backend, model, tokenizer, conversations)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=2)
        return

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
