#!/usr/bin/env python
"""RL that keeps the reasoning: does GRPO/PPO with the rule reward raise the test score of a think-then-answer model
while its working stays, and does thinking first help compared with answer-only SFT under the same RL?

1. **SFT**, twice, of the embedded SmolLM2-135M-Instruct (``posttrain sft``, each in its own process) on the same
   ``train``-pool prompts of ``letter_count``, ``arithmetic`` and ``decimal_compare``
   (``recipes/configs/smollm2-135m/reasoning/sft-working.yaml`` and ``sft-answer.yaml``): ``reply: working`` (the
   worked solution, then ``Answer: X``) and ``reply: answer`` (``Answer: X`` alone), same examples, same epochs.
2. **RL** from each SFT adapter: GRPO (``reasoning/grpo.yaml``) and PPO (``reasoning/ppo.yaml``), rewarded by the
   tasks' rule checks alone, on the tasks' ``train`` pools.
3. **Evaluation** (``posttrain evaluate``, greedy) of the base model and the six trained ones on the ``reasoning``
   suite: the three tasks' sealed ``test`` pool, with a generation budget that fits the working. With
   ``--samples-per-prompt k``, the trained models are also scored ``k`` times sampled as Ollama samples
   (:data:`OLLAMA_SAMPLING`, one seed per draw): each prompt's pass rate over its ``k`` replies, the expected reward
   RL optimizes and what a user of the exported model meets; the validation choice then reads this score.
4. ``--output`` (default ``benchmarks/results/reasoning_rl.json``): per model the task score with its 95% bootstrap
   CI (overall and per task), the share of replies showing working and the mean reasoning length in tokens before
   the final answer line (:mod:`posttrain.tasks.working`), the paired 95% CIs of RL - its SFT (score and share
   showing working), of SFT - base and of working - answer-only at each stage, the machine class, date and wall times.

**Selection** (``--grpo-grid`` / ``--ppo-grid``, each a comma-separated list of
``learning_rate[:steps[:filter[:batch]]]`` points, steps defaulting to ``--rl-steps``, filter the stage's
``prompt_filter_samples`` -- replies sampled per training prompt to keep only those the SFT model sometimes solves,
:mod:`posttrain.rl.difficulty` -- defaulting to the recipe's, batch a multiplier of the recipe's prompts per step
(:data:`BATCH_KEYS`; the optimizer updates per step stay), default 1): each RL stage runs from the think-then-answer
SFT once per point, every run is evaluated on the ``reasoning-validation`` suite (the tasks' validation pool), and the
point with the best paired gain over SFT there (mean, then CI low end) is the one both styles' final runs use; that
working-style run is the final model itself. The test pool is read once, by the final evaluation, which nothing was
chosen on. Without the lists the recipes' rates are used and nothing is chosen. ``--select-only`` stops after the
selection (the answer-only SFT and the test pool untouched): an exploration whose results file holds the validation
table alone.

Run it from the repository root::

    .venv/bin/python benchmarks/reasoning_rl.py --sft-samples 128 --sft-epochs 2 --rl-samples 64 --rl-steps 24 \
        --eval-samples 40 --grpo-grid 5e-5,1e-4:24:4:4 --ppo-grid 5e-5 --samples-per-prompt 4   # as recorded
    .venv/bin/python benchmarks/reasoning_rl.py --smoke    # the tests' tiny model, 1 step each: checks it all runs

A benchmark, not a test: it measures and reports; it exits non-zero only when a stage fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MODEL_ALIAS = "smollm2-135m-instruct"
RECIPES = REPO / "recipes" / "configs" / "smollm2-135m" / "reasoning"
SUITE = "reasoning"
SELECT_SUITE = "reasoning-validation"
STYLES = ("working", "answer")
RL_STAGES = ("grpo", "ppo")
LABELS = ("base", *(f"{stage}-{style}" for style in STYLES for stage in ("sft", *RL_STAGES)))


def machine_class() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return "AVX512-BF16" if "avx512_bf16" in cpuinfo else "AVX2"


def recipe(name: str) -> dict:
    return yaml.safe_load((RECIPES / f"{name}.yaml").read_text())


def stage(name: str, config: dict, work: Path, label: str, in_process: bool = False) -> float:
    """Run ``python -m posttrain.stages <name> --config <yaml>`` (``in_process``: :func:`posttrain.stages.run_stage`
    in this process, its output to the log: no second import of torch and TRL); its wall time (exits on failure)."""
    path = work / f"{label}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.monotonic()
    command = [PYTHON, "-m", "posttrain.stages", name, "--config", str(path)]
    print(f"[reasoning_rl] {label}: {' '.join(command)}{' (in process)' if in_process else ''}", flush=True)
    if in_process:
        import contextlib

        from posttrain.stages import run_stage

        with open(work / f"{label}.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            run_stage(name, ["--config", str(path)])
    else:
        proc = subprocess.run(command, cwd=REPO, text=True, capture_output=True)
        (work / f"{label}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            sys.exit(f"[reasoning_rl] {label} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    elapsed = time.monotonic() - started
    print(f"[reasoning_rl] {label}: {elapsed:.0f} s", flush=True)
    return elapsed


def run_all(jobs: list[tuple[str, dict, str]], work: Path, in_process: bool, reuse: bool = False) -> dict[str, float]:
    """Run the stages one after the other, each alone on the machine (its wall time is its own). ``reuse``: a stage
    whose output folder holds a finished run with the same config is kept (its recorded wall time)."""
    timings = {}
    for name, config, label in jobs:
        manifest = Path(config["output_dir"]) / "run_manifest.json"
        same = (work / f"{label}.yaml").is_file() and yaml.safe_load((work / f"{label}.yaml").read_text()) == config
        if reuse and same and manifest.is_file():
            timings[label] = json.loads(manifest.read_text()).get("wall_time_s") or 0.0
            print(f"[reasoning_rl] {label}: kept the finished run in {config['output_dir']}", flush=True)
            continue
        timings[label] = stage(name, config, work, label, in_process)
    return timings


def sft_config(args, style: str, output_dir: Path) -> dict:
    config = recipe(f"sft-{style}")
    for spec in config["datasets"]:
        spec["num_samples"] = args.sft_samples
    config.update(
        model_name_or_path=args.model, output_dir=str(output_dir), seed=args.seed, num_train_epochs=args.sft_epochs,
        show_example=False,
    )  # fmt: skip
    if args.smoke:
        config.update(max_steps=1, max_length=256)
    return config


def rl_config(
    args, stage_name: str, start: Path, output_dir: Path, point: tuple[float, int, int, int] | None = None
) -> dict:
    """The RL recipe from ``start``; ``point``: a ``(learning_rate, steps, prompt_filter_samples, batch multiplier)``
    that replaces the recipe's rate and filter and ``--rl-steps`` and multiplies its batch sizes
    (:data:`BATCH_KEYS`)."""
    config = recipe(stage_name)
    steps = args.rl_steps if point is None else point[1]
    if point is not None:
        config["learning_rate"] = point[0]
        if point[2] != config.get("prompt_filter_samples", 0):  # (unchanged recipes keep earlier runs' configs)
            config["prompt_filter_samples"] = point[2]
    for spec in config["datasets"]:
        spec["num_samples"] = args.rl_samples
    config.pop("test_split_size", None)  # no held-out pass inside RL: the evaluation below measures every model
    config.update(
        model_name_or_path=str(start), output_dir=str(output_dir), seed=args.seed, max_steps=steps,
        max_completion_length=args.completion_length,
    )  # fmt: skip
    if args.smoke:  # (the tiny random model solves no prompt, so a prompt filter would keep none: off)
        config.pop("prompt_filter_samples", None)
        if stage_name == "grpo":
            config.update(per_device_train_batch_size=4, num_generations=2)
        else:
            config.update(rollout_batch_size=4, generation_batch_size=4, forward_batch_size=4,
                          per_device_train_batch_size=2, num_ppo_epochs=1)  # fmt: skip
    for key in BATCH_KEYS[stage_name] if point is not None and point[3] != 1 else ():  # (after the smoke sizes)
        config[key] *= point[3]
    return config


#: how Ollama samples a model whose Modelfile sets no sampling parameters (its documented defaults: temperature 0.8,
#: top_p 0.9; top_k 40 there, the generation config's -- HF's 50 for SmolLM2 -- here)
OLLAMA_SAMPLING = {"temperature": 0.8, "top_p": 0.9}


def eval_config(
    args, models: dict[str, Path | str], output_dir: Path, suite: str = SUITE, sample_seed: int | None = None
) -> dict:
    """The ``posttrain evaluate`` config: greedy, or (``sample_seed``) one sampled reply per prompt at
    :data:`OLLAMA_SAMPLING` with that seed."""
    config = {
        "models": [{"label": label, "path": str(path)} for label, path in models.items()],
        "suites": [suite],
        "system_prompt": recipe("sft-working")["system_prompt"],
        "max_samples": args.eval_samples,
        "batch_size": 16,
        "do_sample": sample_seed is not None,
        **(OLLAMA_SAMPLING if sample_seed is not None else {}),
        "seed": args.seed if sample_seed is None else sample_seed,
        "baseline": next(iter(models), "base"),
        "bootstrap_samples": 2000,
        "output_dir": str(output_dir),
        "progress": False,
    }
    if args.smoke:
        config["max_new_tokens"] = 24
    return config


def token_counter(model_path: str):
    """``count(texts) -> token counts`` with the base model's tokenizer (the same for every model here)."""
    from transformers import AutoTokenizer

    from posttrain.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model_path))
    return lambda texts: [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def score_suite(
    args,
    work: Path,
    models: dict[str, Path | str],
    suite: str,
    name: str,
    folder: str,
    sampled_models: list[str] | None = None,
) -> tuple[list[dict], list[dict], dict[str, float]]:
    """Evaluate ``models`` on ``suite``: once greedy, then ``--samples-per-prompt`` times sampled
    (:data:`OLLAMA_SAMPLING`, seeds ``--seed`` + 1, + 2, ...; ``sampled_models``: only those). ``(greedy records,
    sampled records, wall times)``; each record as ``results.json`` has it, the sampled ones with their ``draw``. The
    results go to ``work/folder`` (greedy) and ``work/folder-sampled<draw>``; the wall times are named ``name``..."""
    timings = {}
    out = work / folder
    timings[name] = stage("evaluate", eval_config(args, models, out, suite), work, name, args.smoke)
    greedy = [r for r in json.loads((out / "results.json").read_text())["samples"] if r["suite"] == suite]
    sampled = []
    subset = {k: v for k, v in models.items() if sampled_models is None or k in sampled_models}
    for draw in range(args.samples_per_prompt):
        label, out = f"{name}-sampled{draw + 1}", work / f"{folder}-sampled{draw + 1}"
        config = eval_config(args, subset, out, suite, sample_seed=args.seed + 1 + draw)
        timings[label] = stage("evaluate", config, work, label, args.smoke)
        records = json.loads((out / "results.json").read_text())["samples"]
        sampled += [{**r, "draw": draw} for r in records if r["suite"] == suite]
    return greedy, sampled, timings


def scoring(args) -> str:
    """How the models are scored, in words."""
    if not args.samples_per_prompt:
        return "greedy"
    return (
        f"greedy, and {args.samples_per_prompt} replies per prompt sampled as Ollama's defaults (temperature "
        f"{OLLAMA_SAMPLING['temperature']}, top_p {OLLAMA_SAMPLING['top_p']}; the sampled score: each prompt's pass "
        "rate over its replies, averaged over prompts)"
    )


def per_prompt(records: list[dict], value) -> dict[str, dict[str, float]]:
    """model -> sample id -> the mean of ``value(record)`` over that prompt's records (one greedy reply, or the
    sampled draws)."""
    sums: dict[str, dict[str, list[float]]] = {}
    for r in records:
        v = value(r)
        if v is not None:
            sums.setdefault(r["model"], {}).setdefault(r["id"], []).append(float(v))
    return {m: {i: sum(vs) / len(vs) for i, vs in ids.items()} for m, ids in sums.items()}


def _task_score(r: dict) -> float | None:
    return r["scores"].get("task")


def _working(records: list[dict], task: str, count_tokens) -> dict:
    from posttrain.tasks.working import working_stats

    stats = working_stats([(r["group"], r["output"]) for r in records if r["group"] == task], count_tokens)
    return {"shows_working": stats.shows_working, "mean_reasoning_tokens": stats.mean_reasoning_length}


def analyse(greedy: list[dict], count_tokens, sampled: list[dict] = ()) -> dict:
    """Per model: score (overall, per task), working stats; paired deltas between the models that matter. With
    ``sampled`` records: per model ``sampled`` (the per-prompt pass rate over the draws: its mean with CI, per task,
    and the working stats over every sampled reply) and per delta ``sampled_score`` (paired over prompts)."""
    from posttrain.stats import delta_ci, mean_ci
    from posttrain.tasks.working import reasoning_length, shows_working, working_stats

    records: dict[str, list[dict]] = {}
    for record in greedy:
        records.setdefault(record["model"], []).append(record)
    draws = per_prompt(sampled, _task_score)
    groups = {r["id"]: r["group"] for r in sampled}

    def per_id(label: str, value) -> dict[str, float]:
        return {r["id"]: value(r) for r in records.get(label, [])}

    def working(r):
        return float(shows_working(r["group"], r["output"]))

    def length(r):
        return float(reasoning_length(r["output"], count_tokens))

    models = {}
    for label in records:
        rs = records[label]
        stats = working_stats([(r["group"], r["output"]) for r in rs], count_tokens)
        tasks = sorted({r["group"] for r in rs})
        models[label] = {
            "score": mean_ci([_task_score(r) for r in rs]),
            "per_task": {t: mean_ci([_task_score(r) for r in rs if r["group"] == t], n_resamples=500) for t in tasks},
            "shows_working": stats.shows_working,
            "mean_reasoning_tokens": stats.mean_reasoning_length,
            "answer_line": stats.answer_line,
            "stopped": sum(bool(r["scores"].get("stopped")) for r in rs) / len(rs),
            "mean_reply_tokens": sum(r["num_tokens"] or 0 for r in rs) / len(rs),
            "working_per_task": {t: _working(rs, t, count_tokens) for t in tasks},
            "example": {"prompt": rs[0]["prompt"][-1]["content"], "reply": rs[0]["output"]},
        }
        if label in draws:
            replies = [r for r in sampled if r["model"] == label]
            drawn = working_stats([(r["group"], r["output"]) for r in replies], count_tokens)
            rates = draws[label]
            models[label]["sampled"] = {
                "score": mean_ci(list(rates.values())),
                "per_task": {
                    t: mean_ci([v for i, v in rates.items() if groups[i] == t], n_resamples=500) for t in tasks
                },
                "draws": len(replies) // max(len(rates), 1),
                "shows_working": drawn.shows_working,
                "mean_reasoning_tokens": drawn.mean_reasoning_length,
                "stopped": sum(bool(r["scores"].get("stopped")) for r in replies) / len(replies),
            }

    def delta(before: str, after: str) -> dict:
        return {
            "score": delta_ci(per_id(before, _task_score), per_id(after, _task_score)),
            "shows_working": delta_ci(per_id(before, working), per_id(after, working)),
            "reasoning_tokens": delta_ci(per_id(before, length), per_id(after, length)),
            **({"sampled_score": delta_ci(draws[before], draws[after])} if before in draws and after in draws else {}),
        }

    pairs = {f"{rl}-{style} - sft-{style}": (f"sft-{style}", f"{rl}-{style}") for style in STYLES for rl in RL_STAGES}
    pairs |= {f"sft-{style} - base": ("base", f"sft-{style}") for style in STYLES}
    pairs |= {f"{s}-working - {s}-answer": (f"{s}-answer", f"{s}-working") for s in ("sft", *RL_STAGES)}
    deltas = {name: delta(*pair) for name, pair in pairs.items() if all(p in records for p in pair)}
    return {"models": models, "deltas": deltas}


#: the batch sizes a grid point's batch multiplier scales (prompts per step; the number of optimizer updates per
#: step and GRPO's replies per prompt stay as the recipe has them)
BATCH_KEYS = {
    "grpo": ("per_device_train_batch_size",),
    "ppo": ("rollout_batch_size", "generation_batch_size", "forward_batch_size", "per_device_train_batch_size"),
}


def grid(text: str | None, default_steps: int, default_filter: int = 0) -> list[tuple[float, int, int, int]]:
    """``"5e-5,2e-4:48,5e-5:24:4,1e-4:24:4:4"`` -> ``[(5e-05, default_steps, default_filter, 1), (0.0002, 48,
    default_filter, 1), (5e-05, 24, 4, 1), (0.0001, 24, 4, 4)]``: learning rate, steps, prompt_filter_samples, batch
    multiplier (prompts per step times the recipe's)."""
    points = []
    for item in (text or "").split(","):
        if item.strip():
            lr, steps, samples, batch = (item.strip().split(":") + ["", "", ""])[:4]
            point = (float(lr), int(steps or default_steps), int(samples or default_filter), int(batch or 1))
            if point[3] < 1:
                raise SystemExit(f"reasoning_rl: grid point {item.strip()!r}: the batch multiplier must be >= 1")
            points.append(point)
    return points


def sweep_label(args, stage_name: str, point: tuple[float, int, int, int]) -> str:
    lr, steps, samples, batch = point
    return (
        f"{stage_name}-working-lr{lr:g}"
        + (f"-s{steps}" if steps != args.rl_steps else "")
        + (f"-f{samples}" if samples != recipe(stage_name).get("prompt_filter_samples", 0) else "")
        + (f"-b{batch}" if batch != 1 else "")
    )


def select(
    args, work: Path, sft_dir: Path, sweeps: dict[str, list[tuple[float, int, int, int]]]
) -> tuple[dict, dict, dict]:
    """Run each RL stage from the working SFT at each candidate point, evaluate them all on the validation suite,
    and choose per stage the point with the best paired gain over SFT there. ``(chosen point per stage, the sweep
    table, wall times)``."""
    from posttrain.evaluation.suites import check_selection_suite, load_suite
    from posttrain.stats import delta_ci, mean_ci

    check_selection_suite(load_suite(SELECT_SUITE), "SELECT_SUITE")  # choosing never reads the sealed test pool
    jobs = [
        (rl, rl_config(args, rl, sft_dir, work / sweep_label(args, rl, point), point), sweep_label(args, rl, point))
        for rl, points in sweeps.items()
        for point in points
    ]
    timings = run_all(jobs, work, args.smoke, args.reuse)
    configs = {label: config for _, config, label in jobs}  # what each run trained with, as recorded below
    models = {"sft-working": sft_dir, **{label: work / label for _, _, label in jobs}}
    greedy, sampled, eval_timings = score_suite(args, work, models, SELECT_SUITE, "select-evaluate", "select")
    timings |= eval_timings
    scores, rates = per_prompt(greedy, _task_score), per_prompt(sampled, _task_score)
    table, chosen = {}, {}
    for rl, points in sweeps.items():
        rows = {}
        for lr, steps, samples, batch in points:
            label = sweep_label(args, rl, (lr, steps, samples, batch))
            rows[label] = {
                "learning_rate": lr,
                "steps": steps,
                "prompt_filter_samples": configs[label].get("prompt_filter_samples", 0),
                "batch_multiplier": batch,
                "rollouts_per_step": configs[label][BATCH_KEYS[rl][0]],  # replies (GRPO) / prompts (PPO)
                "score": mean_ci(list(scores[label].values())),
                "delta": delta_ci(scores["sft-working"], scores[label]),
            }
            if rates:
                rows[label]["sampled_score"] = mean_ci(list(rates[label].values()))
                rows[label]["sampled_delta"] = delta_ci(rates["sft-working"], rates[label])
        key = "sampled_delta" if rates else "delta"  # the metric the choice reads
        best = max(rows, key=lambda k: (rows[k][key]["delta"], rows[k][key]["low"]))
        chosen[rl] = next(point for point in points if sweep_label(args, rl, point) == best)
        table[rl] = {"runs": rows, "chosen": best, "chosen_by": "sampled" if rates else "greedy"}
        for label, row in rows.items():
            d = row["delta"]
            sampled_text = (
                f"  sampled {row['sampled_score']['mean']:.3f}, vs SFT {row['sampled_delta']['delta']:+.3f} "
                f"[{row['sampled_delta']['low']:+.3f}, {row['sampled_delta']['high']:+.3f}]"
                if rates
                else ""
            )
            print(
                f"[reasoning_rl] validation {label:28s}: greedy {row['score']['mean']:.3f}, vs SFT {d['delta']:+.3f} "
                f"[{d['low']:+.3f}, {d['high']:+.3f}]{sampled_text}{'  <- chosen' if label == best else ''}",
                flush=True,
            )
    table["sft-working"] = mean_ci(list(scores["sft-working"].values()))
    if rates:
        table["sft-working-sampled"] = mean_ci(list(rates["sft-working"].values()))
    table["suite"] = SELECT_SUITE
    return chosen, table, timings


def write_report(args, report: dict, timings: dict[str, float], clock: float) -> float:
    """Add the wall times to ``report``, write it to ``--output``; the total seconds."""
    report["timings_s"] = {**{k: round(v, 1) for k, v in timings.items()}, "total": round(time.monotonic() - clock, 1)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return report["timings_s"]["total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=MODEL_ALIAS)
    parser.add_argument("--sft-samples", type=int, default=64, help="train-pool examples per task for each SFT")
    parser.add_argument("--sft-epochs", type=float, default=1.0)
    parser.add_argument("--rl-samples", type=int, default=32, help="train-pool prompts per task for RL")
    parser.add_argument("--rl-steps", type=int, default=12)
    parser.add_argument("--completion-length", type=int, default=128, help="RL completion budget in tokens")
    parser.add_argument("--eval-samples", type=int, default=20, help="test-pool prompts per task")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--samples-per-prompt",
        type=int,
        default=0,
        help="besides the greedy pass, score each model this many times sampled as Ollama samples (temperature "
        "0.8, top_p 0.9; seeds --seed + 1, + 2, ...): the per-prompt pass rate; the validation choice then reads it",
    )
    parser.add_argument(
        "--grpo-grid", default=None, help="GRPO points lr[:steps[:filter[:batch]]],... to choose from on validation"
    )
    parser.add_argument(
        "--ppo-grid", default=None, help="PPO points lr[:steps[:filter[:batch]]],... to choose from on validation"
    )
    parser.add_argument(
        "--select-only",
        action="store_true",
        help="train the working SFT and the grid points, score them on the validation pool and stop: the test pool "
        "is not read and the results file holds the selection table alone",
    )
    parser.add_argument("--smoke", action="store_true", help="the tests' tiny model, 1 step each, 2 prompts per task")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="keep finished stages in --work run with the same config")
    args = parser.parse_args()
    if args.select_only and not (args.grpo_grid or args.ppo_grid):
        parser.error("--select-only needs --grpo-grid or --ppo-grid")
    if args.samples_per_prompt < 0:
        parser.error(f"--samples-per-prompt must be >= 0 (got {args.samples_per_prompt})")
    args.output = args.output or REPO / f"benchmarks/results/reasoning_rl{'_smoke' if args.smoke else ''}.json"
    work = args.work or Path(tempfile.mkdtemp(prefix="reasoning_rl-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.smoke:  # the same runs on the tests' tiny chat Llama
        sys.path.insert(0, str(REPO / "tests"))
        from tiny import build_tiny_model

        args.model = str(build_tiny_model(work / "tiny-chat", chat=True))
        args.sft_samples, args.rl_samples, args.rl_steps, args.eval_samples = 4, 4, 1, 2
        args.samples_per_prompt = min(args.samples_per_prompt, 2)
        args.completion_length = 16
    started = dt.datetime.now(dt.UTC)
    clock = time.monotonic()
    load_at_start = os.getloadavg()[0]

    host = {
        "class": machine_class(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": load_at_start,
        "omp": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
    }
    sft_dirs = {style: work / f"sft-{style}" for style in STYLES}
    timings = run_all(
        [
            ("sft", sft_config(args, style, sft_dirs[style]), f"sft-{style}")
            for style in (("working",) if args.select_only else STYLES)
        ],
        work,
        args.smoke,
        args.reuse,
    )
    sweeps = {
        rl: grid(text, args.rl_steps, recipe(rl).get("prompt_filter_samples", 0))
        for rl, text in (("grpo", args.grpo_grid), ("ppo", args.ppo_grid))
        if text
    }
    chosen, selection = {}, None
    if sweeps:
        chosen, selection, sweep_timings = select(args, work, sft_dirs["working"], sweeps)
        timings |= sweep_timings
    if args.select_only:  # a validation-only exploration: nothing reads the test pool
        report = {
            "benchmark": "reasoning_rl (validation only)",
            "script": "benchmarks/reasoning_rl.py --select-only",
            "date": started.isoformat(timespec="seconds"),
            "machine": host,
            "settings": {
                "sft": f"{args.sft_samples} train-pool examples per task x 3 tasks, {args.sft_epochs} epoch(s); "
                "reply: working",
                "rl": f"{args.rl_samples} train-pool prompts per task, rule reward `task` only, max_completion_length "
                f"{args.completion_length}; recipes/configs/smollm2-135m/reasoning/{{grpo,ppo}}.yaml with each grid "
                "point's changes",
                "selection": f"{SELECT_SUITE}: {args.eval_samples} validation-pool prompts per task, {scoring(args)}; "
                "the test pool is not read",
                "seed": args.seed,
                "smoke": args.smoke,
            },
            "selection": selection,
        }
        total = write_report(args, report, timings, clock)
        print(f"[reasoning_rl] wrote {args.output} (validation only, {total:.0f} s)")
        return
    rl_dirs = {f"{rl}-{style}": work / f"{rl}-{style}" for style in STYLES for rl in RL_STAGES}
    for rl, point in chosen.items():  # the chosen validation run is the final working-style model
        rl_dirs[f"{rl}-working"] = work / sweep_label(args, rl, point)
        timings[f"{rl}-working"] = timings[sweep_label(args, rl, point)]
    timings |= run_all(
        [
            (rl, rl_config(args, rl, sft_dirs[style], rl_dirs[f"{rl}-{style}"], chosen.get(rl)), f"{rl}-{style}")
            for style in STYLES
            for rl in RL_STAGES
            if not (style == "working" and rl in chosen)
        ],
        work,
        args.smoke,
        args.reuse,
    )
    models = {"base": args.model, **{f"sft-{s}": sft_dirs[s] for s in STYLES}, **rl_dirs}
    models = {label: models[label] for label in LABELS}
    eval_dir = work / "eval"
    greedy, sampled, eval_timings = score_suite(
        args, work, models, SUITE, "evaluate", "eval", [m for m in models if m != "base"]
    )
    timings |= eval_timings
    analysis = analyse(greedy, token_counter(args.model), sampled)

    training = {}
    for label in models:
        manifest_path = Path(models[label]) / "run_manifest.json"
        if label != "base" and manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            metrics = manifest.get("metrics") or {}
            training[label] = {
                "wall_time_s": manifest.get("wall_time_s"),
                **{k: metrics[k] for k in ("train_runtime", "train_loss", "global_step") if k in metrics},
            }
    sft = recipe("sft-working")
    report = {
        "benchmark": "reasoning_rl",
        "script": "benchmarks/reasoning_rl.py",
        "date": started.isoformat(timespec="seconds"),
        "machine": host,
        "settings": {
            "model": args.model if not args.smoke else "tests/tiny.py chat Llama",
            "sft": f"{args.sft_samples} train-pool examples per task x 3 tasks, {args.sft_epochs} epoch(s), lr "
            f"{sft['learning_rate']}, LoRA r{sft['lora_r']} on the full-precision base; reply: working vs answer",
            "rl": f"{args.rl_steps} steps, {args.rl_samples} train-pool prompts per task, rule reward `task` only, "
            f"max_completion_length {args.completion_length}; grpo/ppo settings of recipes/configs/smollm2-135m/"
            "reasoning/{grpo,ppo}.yaml"
            + "".join(
                f"; {rl}: lr {lr:g}, {steps} steps, prompt_filter_samples {samples}, batch x{batch} (chosen on "
                "validation)"
                for rl, (lr, steps, samples, batch) in chosen.items()
            ),
            "eval": f"suite {SUITE}: test pool, {args.eval_samples} prompts per task, {scoring(args)}, max_new_tokens "
            f"{eval_config(args, {}, eval_dir).get('max_new_tokens') or 160}",
            "reasoning_tokens": "tokens (base tokenizer) before the final answer line (posttrain.tasks.working)",
            "selection": (
                f"each swept RL stage's learning rate, steps and prompt filter, on the {SELECT_SUITE} suite ({args.eval_samples} validation-pool "
                f"prompts per task, paired gain over the working SFT, {'sampled' if args.samples_per_prompt else 'greedy'} "
                "score); the test pool is read once, here"
                if sweeps
                else "none: no setting was chosen from a measurement; the test pool is read once, here"
            ),
            "seed": args.seed,
            "smoke": args.smoke,
        },
        **analysis,
        "selection": selection,
        "training": training,
    }
    write_report(args, report, timings, clock)
    for label, m in report["models"].items():
        s = m["score"]
        print(
            f"[reasoning_rl] {label:14s} task {s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}] n={s['n']}  "
            f"working {m['shows_working']:.2f}  reasoning {m['mean_reasoning_tokens']:.1f} tok"
        )
    for name, d in report["deltas"].items():
        s, w, r = d["score"], d["shows_working"], d.get("sampled_score")
        print(
            f"[reasoning_rl] {name:28s} score {s['delta']:+.3f} [{s['low']:+.3f}, {s['high']:+.3f}]  "
            f"working {w['delta']:+.2f} [{w['low']:+.2f}, {w['high']:+.2f}]"
            + (f"  sampled {r['delta']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]" if r else "")
        )
    print(f"[reasoning_rl] wrote {args.output} ({report['timings_s']['total']:.0f} s)")


if __name__ == "__main__":
    main()
