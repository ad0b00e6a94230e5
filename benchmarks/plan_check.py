#!/usr/bin/env python
"""The memory plan against measured peaks, as a results file: runs ``tests/planning/test_measured.py`` (each training
stage 2 steps on a ~52M-parameter Llama in one subprocess; peak resident memory above a baseline taken before each
model loads, glibc's mmap threshold fixed so that it is the live peak) and keeps each case's estimate, measurement and
ratio in ``benchmarks/results/plan_check.json`` with the machine class and the date; ``benchmarks/figures.py`` puts
the table in ``docs/results.md``.

    .venv/bin/python benchmarks/plan_check.py     # ~1-2 minutes on 2 cores

The test asserts every ratio within 25%; this script records what it measured and exits non-zero when the test fails.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine_class() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return "AVX512-BF16" if "avx512_bf16" in cpuinfo else "AVX2"


def main() -> int:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks/results/plan_check.json"
    with tempfile.TemporaryDirectory() as scratch:
        record = Path(scratch) / "cases.jsonl"
        env = {**os.environ, "POSTTRAIN_PLAN_CHECK_RECORD": str(record)}
        started = dt.datetime.now(dt.UTC)
        load = os.getloadavg()[0]
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/planning/test_measured.py"], cwd=ROOT, env=env)  # fmt: skip
        cases = [json.loads(line) for line in record.read_text().splitlines()] if record.is_file() else []
    report = {
        "benchmark": "plan_check",
        "script": "benchmarks/plan_check.py",
        "date": started.isoformat(timespec="seconds"),
        "machine": {"class": machine_class(), "cpu_count": os.cpu_count(), "loadavg_at_start": load},
        "settings": {
            "model": "Llama, hidden 1024, intermediate 2816, 4 layers, 8 heads, ~52M parameters, fp32",
            "runs": "2 steps per stage, all in one subprocess (tests/planning/measure_peak.py)",
            "measured": "peak resident memory above the baseline taken before each model loads, "
            "MALLOC_MMAP_THRESHOLD_=131072 (live peak)",
            "estimate": "posttrain plan's terms without the runtime baseline; the first run also pays the `run` term",
        },
        "cases": cases,
        "test_passed": proc.returncode == 0,
    }
    output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"[plan_check] wrote {output} ({len(cases)} cases, test {'passed' if proc.returncode == 0 else 'FAILED'})")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
