#!/usr/bin/env python
"""``docs/results.md``: every measured figure, generated from the results files in ``benchmarks/results/``.

    .venv/bin/python benchmarks/figures.py --write    # regenerate docs/results.md
    .venv/bin/python benchmarks/figures.py --check    # exit 1 if it differs from what the results files say

Measurements live in ``docs/results.md`` only; the README and the other docs pages link to it. Each figure names the
script that wrote its results file, its machine class and date. ``--check`` also fails when the README holds a
generated figure block (``<!-- figures:NAME -->``): the README carries no measurements. ``tests/e2e/test_figures.py``
runs ``--check``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
RESULTS_DOC = ROOT / "docs" / "results.md"


def machine() -> dict:
    """The CPU class (``AVX512-BF16`` or ``AVX2``), CPU model and core count of this machine."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    return {
        "cpu_class": "AVX512-BF16" if "avx512_bf16" in cpuinfo else "AVX2",
        "cpu_model": model or platform.processor(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _ci(entry: dict, signed: bool = False) -> str:
    fmt = "{:+.0f}" if signed else "{:.0f}"
    return f"[{fmt.format(100 * entry['low'])}, {fmt.format(100 * entry['high'])}]"


def _delta(d: dict, bold: bool = False) -> str:
    """A paired difference in points, ``+x.x [+lo, +hi]``; ``bold``: in bold where its CI excludes zero upwards."""
    text = f"{100 * d['delta']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    return f"**{text}**" if bold and d["low"] > 0 else text


def pipeline_files() -> list[tuple[str, dict]]:
    """Every pipeline results file, quick profiles first."""
    order = {"quick": 0, "quick-fp32": 1, "full": 2}
    found = [(p.name, json.loads(p.read_text())) for p in sorted(RESULTS.glob("pipeline_*.json"))]
    return sorted(found, key=lambda item: (order.get(item[1]["profile"], 9), item[0]))


def _load_note(r: dict) -> str:
    load = r.get("load_average") or {}
    cores = r["machine"]["cores"]
    if max(load.values(), default=0) > cores:
        return (
            f" (the machine was shared: load average {load.get('start')} at the start, {load.get('end')} at the end, "
            f"on {cores} cores, so these times are upper bounds)"
        )
    return ""


def _cap_note(m: dict) -> str:
    """For a run with its kernels capped at a lower ISA: what it stands in for, and what it is not."""
    if not m.get("isa_cap"):
        return ""
    host, capped = m["host"], m["capped"]
    return (
        f" A stand-in for that class, not a measurement on it: an {m['host_cpu_class']} host with PyTorch, oneDNN and "
        f"MKL capped at {capped['capability']} (`--isa-cap`), fp32 matmul {capped['fp32_matmul_gflops']:.0f} GFLOP/s "
        f"capped against {host['fp32_matmul_gflops']:.0f} uncapped on {m['cores']} threads; same clock, caches and memory as the "
        "host, llama.cpp not capped. A CPU of that class with a lower fp32 matmul rate takes longer."
    )


def render_pipeline() -> str:
    """Per results file: the stages' wall times, then every stage's test-pool score with its CI and the paired
    difference to the stage before."""
    files = pipeline_files()
    if not files:
        return "No pipeline run has been measured yet (`benchmarks/pipeline_figures.py`).\n"
    lines = []
    for name, r in files:
        m, e = r["machine"], r["evaluation"]
        stages = r["stages"]
        lines += [
            f"**Profile `{r['profile']}`, {m['cpu_class']}** ({m['cpu_model']}, {m['cores']} cores; {r['date']}, "
            f"[`benchmarks/results/{name}`](benchmarks/results/{name}), `{r['script']}`"
            + (f", `POSTTRAIN_PRECISION={r['precision_env']}`" if r.get("precision_env") else "")
            + "): stages "
            + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in stages.items())
            + f"; **total {r['total_s'] / 60:.1f} min**"
            + _load_note(r)
            + "."
            + _cap_note(m),
            "",
            f"| stage | `{e['suite']}` ({e['pool']} pool, {e['distinct_prompts']} distinct prompts) | vs previous stage "
            "(paired) | stop rate |",
            "|---|---|---|---|",
        ]
        deltas = {d["to"]: d for d in e["deltas"]}
        for label, entry in e["models"].items():
            s, stop, d = entry["score"], entry["stop_rate"], deltas.get(label)
            change = f"{100 * d['delta']:+.0f} {_ci(d, signed=True)}" if d else ""
            if d and d["low"] > 0:
                change = f"**{change}**"
            stop_text = f"{_pct(stop['mean'])} {_ci(stop)}" if stop else ""
            lines.append(f"| {label} | {_pct(s['mean'])} {_ci(s)} | {change} | {stop_text} |")
        lines.append("")
    return "\n".join(lines)


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{100 * low:.1f}%" if round(100 * low, 1) == round(100 * high, 1) else f"{100 * low:.1f}-{100 * high:.1f}%"


def render_guard() -> str:
    """The reward-hacking guard's calibration (simulated false stops and power) and its live run."""
    r = load("guard_calibration.json")
    if r is None:
        return "Not measured yet (`benchmarks/guard_calibration.py`).\n"
    rows = r["results"]
    settings = r["settings"]
    lines = [
        f"Simulated by `benchmarks/guard_calibration.py` ([`benchmarks/results/guard_calibration.json`]"
        f"(benchmarks/results/guard_calibration.json), {r['date'][:10]}; {settings['runs']} runs per scenario, "
        f"{settings['replies_per_step']} replies a step, window {settings['window']}):",
        "",
        "| scenario | old 0.05-drop rule | calibrated rule | calibrated, replies counted as independent |",
        "|---|---|---|---|",
    ]
    for steps in sorted({x["steps"] for x in rows if x["kind"] == "false stops"}):
        part = [x for x in rows if x["kind"] == "false stops" and x["steps"] == steps]
        lines.append(f"| no change, {steps} steps (false stops) | {_span([x['old_rule'] for x in part])} | "
                     f"{_span([x['new_rule'] for x in part])} | |")  # fmt: skip
    for steps in sorted({x["steps"] for x in rows if x["kind"] == "power"}):
        part = [x for x in rows if x["kind"] == "power" and x["steps"] == steps]
        lines.append(f"| pass rate falls halfway, {steps} steps (caught) | {_span([x['old_rule'] for x in part])} | "
                     f"{_span([x['new_rule'] for x in part])} | |")  # fmt: skip
    grouped = [x for x in rows if x["kind"] == "grouped false stops"]
    if grouped:
        sizes = "/".join(str(g) for g in sorted({x["group_size"] for x in grouped}))
        lines.append(f"| GRPO-like groups of {sizes} replies, no change (false stops) | "
                     f"{_span([x['old_rule'] for x in grouped])} | {_span([x['new_rule'] for x in grouped])} | "
                     f"{_span([x['new_rule_ungrouped'] for x in grouped])} |")  # fmt: skip
    power = [x for x in rows if x["kind"] == "grouped power"]
    if power:
        lines.append(f"| GRPO-like groups, pass rate falls (caught) | {_span([x['old_rule'] for x in power])} | "
                     f"{_span([x['new_rule'] for x in power])} | {_span([x['new_rule_ungrouped'] for x in power])} |")  # fmt: skip
    live = load("guard_live.json")
    if live is not None:
        lines += [
            "",
            f"On a real PPO run of the embedded model rewarded for repetition alone (`benchmarks/guard_live.py`, "
            f"[`benchmarks/results/guard_live.json`](benchmarks/results/guard_live.json), {live['date'][:10]}, "
            f"{live['machine']}), the guard "
            + (
                f"fired at step {live['fired_at_step']} of {live['settings'].get('max_steps', '?')}: "
                f"{live['finding']['message']}; it kept the adapter of step {live['restored_step']} "
                f"({live['restored_by']})"
                if live["fired"]
                else "did not fire"
            )
            + (
                ". Every candidate adapter scored the same on the held-out prompts, so this run does not show the "
                "restore telling adapters apart (the tiny-model test `tests/rl/test_guard_live.py` does)."
                if len(set(live.get("heldout_task_scores", {}).values())) == 1
                else "."
            ),
        ]
    return "\n".join(lines) + "\n"


def render_export() -> str:
    """The pipeline export's quantization quality (KL of each GGUF type to the float32 HF model) and greedy
    agreement, per pipeline results file."""
    lines = []
    for name, r in pipeline_files():
        export = r.get("export")
        if not export:
            continue
        m = r["machine"]
        lines += [
            f"Profile `{r['profile']}`, {m['cpu_class']} ({r['date']}, [`benchmarks/results/{name}`]"
            f"(benchmarks/results/{name})):",
            "",
            "| type | mean KL (nats) | same top-1 | perplexity (reference) |",
            "|---|---|---|---|",
        ]
        for gtype, q in export["quant_quality"].items():
            lines.append(
                f"| {gtype} | {q['kl_mean']:.2g} ± {q['kl_se']:.1g} | {100 * q['same_top']:.1f}% | "
                f"{q['ppl']:.3f} ({q['ppl_reference']:.3f}) |"
            )
        agreement = [(n, c) for n, c in export["checks"].items() if n.startswith("generation")]
        for check_name, check in agreement:
            lines.append(f"\n* `{check_name}` ({check['status']}): {check['summary']}")
        lines.append("")
    return (
        "\n".join(lines) if lines else "No pipeline export has been measured yet (`benchmarks/pipeline_figures.py`).\n"
    )


def _selection_table(selection: dict) -> list[str]:
    """The validation-pool table of ``reasoning_rl.py``'s grid points, per RL stage."""

    def _filter_cell(row: dict) -> str:
        samples = row.get("prompt_filter_samples", 0)
        return f"{samples} samples" if samples else "off"

    def _per_step(row: dict) -> str:  # (recorded since 2026-12-06)
        return f" ({row['rollouts_per_step']} per step)" if "rollouts_per_step" in row else ""

    sampled = any(
        "sampled_delta" in row
        for stage in ("grpo", "ppo")
        for row in (selection.get(stage) or {}).get("runs", {}).values()
    )
    lines = [
        "| RL stage | learning rate | steps | prompt filter | batch | validation score | vs sft-working, paired "
        "[95% CI] |" + (" sampled score | sampled vs sft-working [95% CI] |" if sampled else "") + " chosen |",
        "|---|---|---|---|---|---|---|" + ("---|---|" if sampled else "") + "---|",
    ]
    for stage in ("grpo", "ppo"):
        for label, row in (selection.get(stage) or {}).get("runs", {}).items():
            s, d = row["score"], row["delta"]
            extra = ""
            if sampled:
                ss, sd = row["sampled_score"], row["sampled_delta"]
                extra = f" {100 * ss['mean']:.1f}% | {_delta(sd)} |"
            lines.append(
                f"| {stage} | {row['learning_rate']:g} | {row['steps']} | {_filter_cell(row)} | "
                f"x{row.get('batch_multiplier', 1)}{_per_step(row)} | {100 * s['mean']:.1f}% | "
                f"{_delta(d)} |{extra} "
                f"{'yes' if label == selection[stage]['chosen'] else ''} |"
            )
    return lines


def _chosen_by(selection: dict) -> str:
    """The score the validation choice read (``greedy`` in runs from before the sampled score)."""
    return next((v["chosen_by"] for v in selection.values() if isinstance(v, dict) and "chosen_by" in v), "greedy")


def render_reasoning_explorations() -> str:
    """``reasoning_rl.py --select-only`` runs: grid points scored on the validation pool only."""
    out = []
    for path in sorted(RESULTS.glob("reasoning_rl_*.json")):
        r = json.loads(path.read_text())
        if not r.get("script", "").endswith("--select-only"):
            continue
        sft = r["selection"]["sft-working"]
        out += [
            f"`{r['script']}` ([`benchmarks/results/{path.name}`](benchmarks/results/{path.name}), {r['date'][:10]}, "
            f"{r['machine'].get('class')}; {r['settings']['selection']}; sft-working there {100 * sft['mean']:.1f}% "
            f"[{100 * sft['low']:.1f}, {100 * sft['high']:.1f}]):",
            "",
            *_selection_table(r["selection"]),
            "",
            *(f"* {note}" for note in r.get("notes", [])),
            "",
        ]
    return "\n".join(out) if out else "None yet.\n"


def render_reasoning() -> str:
    """RL on think-then-answer SFT vs answer-only SFT (``benchmarks/reasoning_rl.py``)."""
    r = load("reasoning_rl.json")
    if r is None:
        return "Not measured yet (`benchmarks/reasoning_rl.py`).\n"
    m = r["machine"]
    draws = next((e["sampled"]["draws"] for e in r["models"].values() if "sampled" in e), 0)
    lines = [
        f"`{r['script']}` ([`benchmarks/results/reasoning_rl.json`](benchmarks/results/reasoning_rl.json), "
        f"{r['date'][:10]}, {m.get('class')}; the `reasoning` suite on the test pool, "
        f"{next(iter(r['models'].values()))['score']['n']} prompts per model; greedy"
        + (
            f", and sampled: {draws} replies per prompt at Ollama's default sampling (temperature 0.8, top_p 0.9), "
            "each prompt's pass rate over its replies"
            if draws
            else ""
        )
        + "):",
        "",
        "| model | greedy score [95% CI] | replies showing working | reasoning tokens (mean) | stop rate |"
        + (" sampled score [95% CI] | sampled replies showing working | sampled reasoning tokens |" if draws else ""),
        "|---|---|---|---|---|" + ("---|---|---|" if draws else ""),
    ]
    for label, entry in r["models"].items():
        s = entry["score"]
        row = (
            f"| {label} | {100 * s['mean']:.1f}% [{100 * s['low']:.1f}, {100 * s['high']:.1f}] | "
            f"{100 * entry['shows_working']:.0f}% | {entry['mean_reasoning_tokens']:.1f} | {100 * entry['stopped']:.0f}% |"
        )
        if draws:
            d = entry.get("sampled")
            row += (
                f" {100 * d['score']['mean']:.1f}% [{100 * d['score']['low']:.1f}, {100 * d['score']['high']:.1f}] | "
                f"{100 * d['shows_working']:.0f}% | {d['mean_reasoning_tokens']:.1f} |"
                if d
                else " not sampled | | |"
            )
        lines.append(row)

    def _cell(d: dict | None) -> str:
        return "" if d is None else _delta(d, bold=True)

    lines += [
        "",
        "| paired difference | greedy score [95% CI] |" + (" sampled score [95% CI] |" if draws else ""),
        "|---|---|" + ("---|" if draws else ""),
    ]
    for name, d in r["deltas"].items():
        lines.append(f"| {name} | {_cell(d['score'])} |" + (f" {_cell(d.get('sampled_score'))} |" if draws else ""))
    selection = r.get("selection")
    if selection:
        sft = selection["sft-working"]
        lines += [
            "",
            f"Learning rate, steps and prompt filter chosen on the `{selection['suite']}` suite (validation pool, "
            f"by the {_chosen_by(selection)} score; "
            f"sft-working there {100 * sft['mean']:.1f}% [{100 * sft['low']:.1f}, {100 * sft['high']:.1f}]"
            + (
                f", sampled {100 * selection['sft-working-sampled']['mean']:.1f}%"
                if "sft-working-sampled" in selection
                else ""
            )
            + "), never on "
            "the test pool above:",
            "",
            *_selection_table(selection),
        ]
    lines += ["", *(f"* {note}" for note in r.get("notes", []))]
    return "\n".join(lines) + "\n"


def render_dpo_sweep(r: dict | None = None) -> str:
    """DPO's beta and learning rate, chosen on the validation pool, the chosen point on the test pool
    (``benchmarks/dpo_sweep.py``; ``r``: its results, default the committed file)."""
    r = r or load("dpo_sweep.json")
    if r is None:
        return "Not measured yet (`benchmarks/dpo_sweep.py`).\n"
    m, runs, sv = r["machine"], r["runs"], r["sft_validation"]

    lines = [
        f"`{r['script']}` ([`benchmarks/results/dpo_sweep.json`](benchmarks/results/dpo_sweep.json), "
        f"{r['date'][:10]}, {m.get('cpu_class')}; `{r['settings']['config']}` from `{r['settings']['start_model']}`, "
        f"{r['settings']['max_steps']} steps, only beta and the learning rate changed; greedy):",
        "",
        f"Chosen on `{r['selection_suite']}` (the validation pool, {sv['total']} prompts; SFT there "
        f"{100 * sv['mean']:.1f}% [{100 * sv['low']:.1f}, {100 * sv['high']:.1f}]):",
        "",
        "| beta | learning rate | validation score [95% CI] | vs SFT, paired [95% CI] | stop rate | wall s | chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        if run["precompute_ref_log_probs"]:
            continue
        v = run["validation"]
        s = v["score"]
        lines.append(
            f"| {run['beta']:g} | {run['learning_rate']:g} | {100 * s['mean']:.1f}% [{100 * s['low']:.1f}, "
            f"{100 * s['high']:.1f}] | {_delta(v['delta'], bold=True)} | {100 * v['stop_rate']:.0f}% | {run['seconds']:.0f} | "
            f"{'yes' if name == r['best'] else ''} |"
        )
    best, sft = runs[r["best"]], r["sft"]
    s = best["score"]
    lines += [
        "",
        f"The chosen point on `{r['report_suite']}` (the sealed test pool, {sft['total']} prompts, read once): SFT "
        f"{100 * sft['mean']:.1f}% [{100 * sft['low']:.1f}, {100 * sft['high']:.1f}], DPO (beta {best['beta']:g}, "
        f"lr {best['learning_rate']:g}) {100 * s['mean']:.1f}% [{100 * s['low']:.1f}, {100 * s['high']:.1f}], "
        f"paired difference {_delta(best['delta'], bold=True)}, stop rate {100 * best['stop_rate']:.0f}%.",
        "",
        f"`precompute_ref_log_probs: true` at the default point: wall time without / with = "
        f"{r['precompute_ratio']:.2f}x.",
    ]
    lines += ["", *(f"* {note}" for note in r.get("notes", []))]
    return "\n".join(lines) + "\n"


def render_preference_methods() -> str:
    """DPO, KTO, ORPO and SimPO from the same SFT on the same pairs (``benchmarks/preference_methods.py``)."""
    r = load("preference_methods.json")
    if r is None:
        return "Not measured yet (`benchmarks/preference_methods.py`).\n"
    m, sft = r["machine"], r["sft"]
    lines = [
        f"`{r['script']}` ([`benchmarks/results/preference_methods.json`](benchmarks/results/preference_methods.json), "
        f"{r['date'][:10]}, {m.get('class')}; greedy, the `builtin` suite on the test pool, {sft['total']} prompts; "
        f"SFT start {100 * sft['mean']:.1f}% [{100 * sft['low']:.1f}, {100 * sft['high']:.1f}]):",
        "",
        "| method | steps | score [95% CI] | vs SFT, paired [95% CI] | margin, start -> trained (rows) | wall s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in r["runs"].items():
        s, d, margin = run["score"], run["delta"], run.get("heldout_margin") or {}
        moved = (f"{margin['reference']:+.2f} -> {margin['policy']:+.2f} ({margin.get('split') or 'not recorded'})"
                 if margin.get("reference") is not None and margin.get("policy") is not None else "-")  # fmt: skip
        lines.append(
            f"| {name} | {run['steps']} | {100 * s['mean']:.1f}% [{100 * s['low']:.1f}, {100 * s['high']:.1f}] | "
            f"{_delta(d, bold=True)} | {moved} | {run['seconds']:.0f} | "
            f"{run['peak_rss_mib']:.0f} |"
        )
    lines += ["", *(f"* {note}" for note in r.get("notes", []))]
    return "\n".join(lines) + "\n"


def render_plan_check() -> str:
    """``posttrain plan``'s memory estimate against measured peaks (``benchmarks/plan_check.py``)."""
    r = load("plan_check.json")
    if r is None:
        return "Not measured yet (`benchmarks/plan_check.py`).\n"
    lines = [
        f"`{r['script']}` ([`benchmarks/results/plan_check.json`](benchmarks/results/plan_check.json), "
        f"{r['date'][:10]}, {r['machine']['class']}; {r['settings']['model']}, {r['settings']['runs']}):",
        "",
        "| stage | estimated MiB | measured MiB | estimated / measured |",
        "|---|---|---|---|",
    ]
    for case in r["cases"]:
        lines.append(
            f"| {case['case']} | {case['estimated_bytes'] / 2**20:.0f} | {case['measured_bytes'] / 2**20:.0f} | "
            f"{case['ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


#: name -> renderer of a section of docs/results.md that has its own renderer
SECTIONS: dict[str, Callable[[], str]] = {
    "pipeline": render_pipeline,
    "export": render_export,
    "guard": render_guard,
    "reasoning": render_reasoning,
    "reasoning_explorations": render_reasoning_explorations,
    "preference_methods": render_preference_methods,
    "dpo_sweep": render_dpo_sweep,
    "plan_check": render_plan_check,
}
#: a generated figure block in a Markdown file (the README had some; it must hold none now)
FIGURE_BLOCK = re.compile(r"<!-- figures:([\w-]+) -->")


def render_results_doc() -> str:
    """``docs/results.md``: every results file, by the script that wrote it."""
    out = [
        "# Measured results",
        "",
        "Generated by `benchmarks/figures.py --write` from the files in `benchmarks/results/` (do not edit by hand).",
        "Each figure names the script that measured it, the machine class and the date.",
        "",
        "## Pipeline",
        "",
        "Measured by `benchmarks/pipeline_figures.py` (the whole pipeline in a scratch folder, `--force all`), per",
        "profile and CPU class; each line names its results file. What the stages change is in the table: SFT's gain",
        "over the base model is the effect the quick profile is sized to show; the preference stages are smoke-sized",
        "there. How the pipeline runs and what its report scores: [pipeline.md](pipeline.md).",
        "",
        SECTIONS["pipeline"](),
        "## Export: quantization quality",
        "",
        "Measured by `benchmarks/pipeline_figures.py` on the pipeline's export (quick profile: f16 and Q4_K_M, the",
        "reference float32 HF model). KL is the primary figure; greedy agreement is the secondary one (a long reply",
        "survives a high per-token agreement only part of the time; a 135M model's greedy path flips easily under",
        "quantization). What each check measures: [export.md](export.md#verification).",
        "",
        SECTIONS["export"](),
        "## Reward-hacking guard",
        "",
        "What the guard watches and how its tests are calibrated: [rl.md](rl.md#reward-hacking-guard).",
        "",
        SECTIONS["guard"](),
        "## RL on reasoning: think-then-answer SFT vs answer-only SFT",
        "",
        SECTIONS["reasoning"](),
        "### Explorations on the validation pool",
        "",
        "`benchmarks/reasoning_rl.py --select-only`: grid points tried on the validation pool alone (the test pool",
        "not read), to find whether a setting is worth a full run.",
        "",
        SECTIONS["reasoning_explorations"](),
        "## Preference methods: DPO, KTO, ORPO, SimPO",
        "",
        "The methods and when to choose each: [preference-methods.md](preference-methods.md).",
        "",
        SECTIONS["preference_methods"](),
        "## DPO's beta and learning rate",
        "",
        "How the sweep runs and what it chose: [dpo-sweep.md](dpo-sweep.md).",
        "",
        SECTIONS["dpo_sweep"](),
        "## Memory plan against measured peaks",
        "",
        "What `posttrain plan` estimates and how: [plan.md](plan.md).",
        "",
        SECTIONS["plan_check"](),
    ]
    shown = {"guard_calibration.json", "guard_live.json", "reasoning_rl.json", "preference_methods.json",
             "plan_check.json", "dpo_sweep.json"}  # fmt: skip
    for path in sorted(RESULTS.glob("*.json")):
        if path.name.startswith("pipeline_") or path.name in shown:
            continue
        data = json.loads(path.read_text())
        if data.get("script", "").endswith("--select-only"):
            continue  # (rendered with the reasoning section)
        meta = {k: data[k] for k in ("script", "date", "machine", "cpu_class", "machine_class") if k in data}
        out += [f"## `{path.name}`", "", "```json", json.dumps(meta, indent=2) if meta else "{}", "```", ""]
        out.append(f"Full figures: [`benchmarks/results/{path.name}`](../benchmarks/results/{path.name}).")
        out.append("")
    text = "\n".join(out).rstrip() + "\n"
    return text.replace("](benchmarks/", "](../benchmarks/").replace("](docs/", "](")  # links relative to docs/


def expected() -> dict[Path, str]:
    return {RESULTS_DOC: render_results_doc()}


def readme_blocks(path: Path = README) -> list[str]:
    """The names of generated figure blocks in the README (there must be none: measurements live in
    docs/results.md)."""
    return FIGURE_BLOCK.findall(path.read_text()) if path.is_file() else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true")
    group.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for path, text in expected().items():
        if args.write:
            path.write_text(text)
        elif not path.is_file() or path.read_text() != text:
            stale.append(str(path.relative_to(ROOT)))
    if stale:
        print(f"figures: {', '.join(stale)} differ from benchmarks/results/; run benchmarks/figures.py --write")
        return 1
    blocks = readme_blocks()
    if blocks:
        print(f"figures: README.md holds figure blocks ({', '.join(blocks)}); measurements live in docs/results.md")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
