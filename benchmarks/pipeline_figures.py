#!/usr/bin/env python
"""The pipeline's figures, measured: run ``posttrain pipeline`` end to end in a scratch folder and keep what the
docs/results.md reports about it (each stage's wall time, every stage's score on the built-in tasks' sealed test pool with its
95% CI, the paired differences between consecutive stages, stop rates) in ``benchmarks/results/``.

    .venv/bin/python benchmarks/pipeline_figures.py                          # the default profile (quick)
    POSTTRAIN_PRECISION=fp32 .venv/bin/python benchmarks/pipeline_figures.py # quick-fp32, what CPUs without AVX512-BF16 run
    .venv/bin/python benchmarks/pipeline_figures.py --profile full
    .venv/bin/python benchmarks/pipeline_figures.py --from outputs/smollm2-135m   # a finished run's folder, nothing rerun
    .venv/bin/python benchmarks/pipeline_figures.py --isa-cap avx2   # an AVX512 host run as an AVX2 CPU (see below)

``--isa-cap avx2`` stands in for a CPU without AVX512 where none is at hand: the pipeline runs with PyTorch's kernels,
oneDNN and MKL capped at AVX2 (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``) and
``POSTTRAIN_PRECISION=fp32`` (the precision such a CPU gets); the file is named ``..._AVX2-capped.json`` and records
the host's class and the capped fp32 matmul rate, measured at the start. It is an approximation of that class (same
clock, caches and memory as the host; llama.cpp's own build is not capped), never a measurement on it.

Writes ``benchmarks/results/pipeline_<profile applied>_<cpu class>.json`` (machine class, CPU model, date, git commit
with each); ``benchmarks/figures.py --write`` then regenerates ``docs/results.md``.
The run happens in a scratch working directory (``--workdir``) with links to ``recipes/`` and ``accelerate_configs/``,
so ``outputs/`` here is left alone.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from figures import machine  # noqa: E402

PIPELINE = "recipes/configs/smollm2-135m/pipeline.yaml"
SUITE = "builtin"


ISA_CAPS = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "POSTTRAIN_PRECISION": "fp32",
    }
}
MATMUL_PROBE = (
    "import torch; from posttrain.planning.hardware import matmul_peak_flops; "
    "print(torch.backends.cpu.get_cpu_capability(), matmul_peak_flops('float32', 1024, 1.0) / 1e9)"
)


def matmul_rate(env: dict) -> dict:
    """The fp32 1024x1024 matmul peak (GFLOP/s, :func:`~posttrain.planning.hardware.matmul_peak_flops`) and PyTorch's
    CPU capability, in a process with ``env`` (the caps act when torch loads)."""
    out = subprocess.run([sys.executable, "-c", MATMUL_PROBE], env=env, capture_output=True, text=True, check=True)
    capability, rate = out.stdout.split()
    return {"capability": capability, "fp32_matmul_gflops": round(float(rate), 1)}


def run_pipeline(workdir: Path, profile: str | None, extra_env: dict | None = None) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("recipes", "accelerate_configs"):
        link = workdir / name
        if not link.exists():
            link.symlink_to(ROOT / name)
    argv = [sys.executable, "-m", "posttrain.cli", "pipeline", "--config", PIPELINE, "--force", "all"]
    if profile:
        argv += ["--profile", profile]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    started = time.perf_counter()
    subprocess.run(argv, cwd=workdir, env=env, check=True)
    return time.perf_counter() - started


def figures(output_dir: Path) -> dict:
    """The figures of a finished pipeline run in ``output_dir`` (its state file and its evaluation's results)."""
    state = json.loads((output_dir / "pipeline_state.json").read_text())
    results = json.loads((output_dir / "eval-stages" / "results.json").read_text())
    suite = next(s for s in results["suites"] if s["name"] == SUITE)
    primary, summary = suite["primary"], results["summary"][SUITE]
    labels = [m["label"] for m in results["models"]]
    prompts = [
        r["prompt"][-1]["content"] for r in results["samples"] if r["suite"] == SUITE and r["model"] == labels[0]
    ]

    def interval(entry: dict) -> dict:
        return {key: entry[key] for key in ("mean", "low", "high") if key in entry}

    deltas = []
    for before, after in zip(labels, labels[1:]):
        found = next(
            d
            for d in results["deltas"]
            if d["suite"] == SUITE and d["score"] == primary and d["from"] == before and d["to"] == after
        )
        deltas.append(
            {"from": before, "to": after, "delta": found["delta"], "low": found["low"], "high": found["high"]}
        )
    return {
        "export": export_figures(output_dir / "export" / "verification.json"),
        "profile": state["profile"],
        "stages": {name: entry["wall_time_s"] for name, entry in state["stages"].items()},
        "total_s": round(sum(entry["wall_time_s"] for entry in state["stages"].values()), 1),
        "evaluation": {
            "suite": SUITE,
            "pool": suite["sources"][0].get("pool"),
            "score": primary,
            "prompts": len(prompts),
            "distinct_prompts": len(set(prompts)),
            "max_new_tokens_per_task": suite.get("max_new_tokens_per_group"),
            "models": {
                label: {
                    "score": interval(summary[label][primary]),
                    "stop_rate": interval(summary[label]["stopped"]) if "stopped" in summary[label] else None,
                }
                for label in labels
            },
            "deltas": deltas,
            "consecutive_deltas_are_paired": True,
        },
    }


def export_figures(path: Path) -> dict | None:
    """The export verification's figures: each GGUF type's KL to the reference with its standard error, top-1
    agreement and perplexity, and each check's status and summary line."""
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    quality = {}
    for check in report["checks"]:
        d = check.get("details") or {}
        if check["name"].startswith("quant_quality[") and "kl_mean" in d:
            quality[check["name"][len("quant_quality[") : -1]] = {
                key: d.get(key)
                for key in ("kl_mean", "kl_se", "same_top", "same_top_se", "ppl", "ppl_se", "ppl_reference",
                            "reference", "positions")
            }  # fmt: skip
    return {
        "quant_quality": quality,
        "checks": {c["name"]: {"status": c["status"], "summary": c["summary"]} for c in report["checks"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=None, help="pipeline profile (default: the YAML's)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the pipeline runs (default: a temp dir)")
    parser.add_argument("--from", dest="source", type=Path, default=None, help="a finished run's output folder")
    parser.add_argument(
        "--output", type=Path, default=None, help="default benchmarks/results/pipeline_<profile>_<cpu>.json"
    )
    parser.add_argument("--isa-cap", choices=sorted(ISA_CAPS), default=None,
                        help="run as a CPU of this class would (an approximation: see the module docstring)")  # fmt: skip
    args = parser.parse_args()
    if args.isa_cap and args.source is not None:
        parser.error("--isa-cap applies to a run made here, not to --from")
    caps = ISA_CAPS.get(args.isa_cap, {})
    info = machine()
    if caps:
        info = {
            **info,
            "cpu_class": f"{args.isa_cap.upper()}-capped",
            "host_cpu_class": info["cpu_class"],
            "isa_cap": caps,
            "host": matmul_rate(dict(os.environ)),
            "capped": matmul_rate({**os.environ, **caps}),
        }
        print(f"ISA cap {args.isa_cap}: fp32 matmul {info['host']['fp32_matmul_gflops']:.0f} GFLOP/s on the host, "
              f"{info['capped']['fp32_matmul_gflops']:.0f} capped ({info['capped']['capability']})", flush=True)  # fmt: skip
    wall, load = None, {"start": round(os.getloadavg()[0], 2)}
    if args.source is None:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pipeline-figures-"))
        wall = run_pipeline(workdir, args.profile, caps)
        args.source = workdir / "outputs" / "smollm2-135m"
    found = figures(args.source)
    load["end"] = round(os.getloadavg()[0], 2)
    report = {
        "script": "benchmarks/pipeline_figures.py",
        "date": dt.date.today().isoformat(),
        "machine": info,
        "precision_env": caps.get("POSTTRAIN_PRECISION") or os.environ.get("POSTTRAIN_PRECISION"),
        "git_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        or None,  # fmt: skip
        "wall_s": None if wall is None else round(wall, 1),
        # 1-minute load average on this machine before and after: above the core count, other work shared it and
        # the times are upper bounds
        "load_average": load,
        **found,
    }
    output = args.output or ROOT / "benchmarks" / "results" / f"pipeline_{found['profile']}_{info['cpu_class']}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    evaluation = found["evaluation"]
    print(f"profile {found['profile']} on {info['cpu_class']} ({info['cpu_model']}): stages {found['total_s']:.0f} s")
    for label, entry in evaluation["models"].items():
        s = entry["score"]
        print(f"  {label:6} {100 * s['mean']:5.1f}% [{100 * s['low']:.1f}, {100 * s['high']:.1f}]")
    for d in evaluation["deltas"]:
        print(f"  {d['from']} -> {d['to']}: {100 * d['delta']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]")
    print(f"results: {output}")


if __name__ == "__main__":
    main()
