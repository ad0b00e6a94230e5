"""Every measured figure lives in ``docs/results.md``, generated from a results file under ``benchmarks/results/``
(written by a script in the repository, with its machine class and date); ``docs/results.md`` says exactly what those
files say, and the README holds no measurements (it links to ``docs/results.md``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
RESULTS_DOC = ROOT / "docs" / "results.md"
sys.path.insert(0, str(ROOT / "benchmarks"))

import figures  # noqa: E402

#: measurement-shaped text: a percentage, seconds or minutes, a rate, a multiplier or a bracketed interval
MEASUREMENT = re.compile(
    r"\b\d+(?:\.\d+)? ?(?:%|s/step|tokens/s|GFLOP/s|min\b)|\[[+-]?\d+(?:\.\d+)?, [+-]?\d+(?:\.\d+)?\]|\b\d+(?:\.\d+)?x\b"
)
#: numbers in the README that are settings, thresholds or definitions, not measurements
NOT_MEASUREMENTS = (
    "95%", "≥ 98%", "90% of it", "70% of where", "0% or 100%", "10 x", "1.5x longer",
)  # fmt: skip


def _outside_blocks(text: str) -> str:
    return re.sub(r"<!-- figures:([\w-]+) -->\n.*?<!-- /figures:\1 -->", "", text, flags=re.S)


def _measurements(text: str) -> list[str]:
    for allowed in NOT_MEASUREMENTS:
        text = text.replace(allowed, "")
    return [m.group(0) for m in MEASUREMENT.finditer(text)]


def test_results_doc_matches_the_results_files():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "figures.py"), "--check"], capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert RESULTS_DOC.read_text() == figures.render_results_doc()  # what --check compares, asserted here too


def test_the_results_doc_reports_the_pipeline_from_its_results_files():
    text = RESULTS_DOC.read_text()
    files = figures.pipeline_files()
    assert files, "no benchmarks/results/pipeline_*.json"
    block = figures.render_pipeline()
    assert block.replace("](benchmarks/", "](../benchmarks/") in text
    for name, result in files:
        assert name in block and result["machine"]["cpu_class"] in block and result["date"] in block
        for label, entry in result["evaluation"]["models"].items():
            assert f"| {label} | {100 * entry['score']['mean']:.0f}%" in block
        assert result["evaluation"]["pool"] == "test"  # reports read the sealed test pool only
        assert result["evaluation"]["prompts"] == result["evaluation"]["distinct_prompts"]


def test_the_results_doc_carries_every_section():
    text = RESULTS_DOC.read_text()
    for render in figures.SECTIONS.values():  # pipeline, export, guard, reasoning: the README's old blocks included
        assert render().replace("](benchmarks/", "](../benchmarks/").strip() in text, render.__name__


def test_the_readme_holds_no_measurement():
    text = README.read_text()
    assert "<!-- figures:" not in text, "README figure blocks belong in docs/results.md (benchmarks/figures.py)"
    assert figures.readme_blocks() == []
    found = _measurements(_outside_blocks(text))
    assert not found, f"README figures (measurements live in docs/results.md): {found[:10]}"
    assert "docs/results.md" in text  # the README links to the measurements instead


def test_a_measurement_in_the_readme_is_caught():
    for text in ("SFT scores 23% [12, 33]", "total 67.1 min", "speed ratio 3.0x", "12.5 tokens/s"):
        assert _measurements(text), text
    assert not _measurements("bootstrap 95% CIs; f16 must agree on ≥ 98% of prompts")


def test_every_results_file_names_its_machine_class_and_date():
    for path in RESULTS.glob("*.json"):
        data = json.loads(path.read_text())
        assert "date" in data, path.name
        machine = json.dumps(data.get("machine") or data.get("machine_class") or {})
        assert "AVX512-BF16" in machine or "AVX2" in machine or "avx512_bf16" in machine or "bf16" in machine, path.name


def test_a_stale_results_doc_is_caught(tmp_path, monkeypatch):
    doc = tmp_path / "results.md"
    doc.write_text(figures.render_results_doc().replace("| sft | ", "| sft | 99% [98, 100] | ", 1))
    monkeypatch.setattr(figures, "RESULTS_DOC", doc)
    expected = figures.expected()
    assert expected[doc] != doc.read_text()  # regenerated from the results files
    assert "99% [98, 100]" not in expected[doc]


def test_a_figure_block_in_the_readme_is_caught(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- figures:pipeline -->\nbase 5% [0, 11]\n<!-- /figures:pipeline -->\n")
    assert figures.readme_blocks(readme) == ["pipeline"]


def test_an_isa_capped_pipeline_run_caps_the_kernels_and_says_it_is_a_stand_in():
    import pipeline_figures

    caps = pipeline_figures.ISA_CAPS["avx2"]
    capped = pipeline_figures.matmul_rate({**os.environ, **caps})
    assert capped["capability"] == "AVX2" and capped["fp32_matmul_gflops"] > 0  # on either class: nothing above AVX2
    assert caps["POSTTRAIN_PRECISION"] == "fp32"  # the precision a CPU without AVX512-BF16 gets
    machine = {"cpu_class": "AVX2-capped", "host_cpu_class": "AVX512-BF16", "isa_cap": caps,
               "host": {"capability": "AVX512", "fp32_matmul_gflops": 200.0}, "capped": capped, "cores": 2}  # fmt: skip
    note = figures._cap_note(machine)
    assert "not a measurement on it" in note and "AVX512-BF16 host" in note and "capped at AVX2" in note
    assert figures._cap_note({"cpu_class": "AVX2"}) == ""


def test_the_reasoning_section_shows_the_sampled_score_beside_the_greedy_one(monkeypatch):
    """A ``reasoning_rl.py --samples-per-prompt`` results file: each model's sampled score and working next to its
    greedy ones, each paired difference's sampled CI (bold where it excludes zero), the selection's sampled column
    and the score the choice read; a model scored greedy only (the base) says so."""

    def ci(mean, low, high, n=120):
        return {"mean": mean, "low": low, "high": high, "n": n}

    def delta(d, low, high):
        return {"delta": d, "low": low, "high": high, "n": 120, "paired": True, "significant": low > 0 or high < 0}

    def model(score, sampled=None):
        entry = {"score": ci(*score), "shows_working": 0.97, "mean_reasoning_tokens": 44.0, "stopped": 0.98}
        if sampled:
            entry["sampled"] = {"score": ci(*sampled), "draws": 8, "shows_working": 0.95, "mean_reasoning_tokens": 41.5}
        return entry

    row = {"learning_rate": 1e-4, "steps": 24, "prompt_filter_samples": 4, "batch_multiplier": 4,
           "rollouts_per_step": 32, "score": ci(0.5, 0.4, 0.6), "delta": delta(0.01, -0.02, 0.04),
           "sampled_score": ci(0.47, 0.4, 0.55), "sampled_delta": delta(0.052, 0.021, 0.083)}  # fmt: skip
    report = {
        "script": "benchmarks/reasoning_rl.py", "date": "2026-12-06T05:00:00+00:00", "machine": {"class": "AVX2"},
        "models": {"base": model((0.16, 0.09, 0.23)), "grpo-working": model((0.46, 0.37, 0.55), (0.43, 0.35, 0.51))},
        "deltas": {"grpo-working - sft-working": {"score": delta(-0.017, -0.058, 0.025),
                                                   "sampled_score": delta(0.052, 0.021, 0.083)}},
        "selection": {"grpo": {"runs": {"grpo-working-lr0.0001-f4-b4": row}, "chosen": "grpo-working-lr0.0001-f4-b4",
                               "chosen_by": "sampled"},
                      "sft-working": ci(0.49, 0.4, 0.58), "sft-working-sampled": ci(0.46, 0.38, 0.54),
                      "suite": "reasoning-validation"},
    }  # fmt: skip
    monkeypatch.setattr(figures, "load", lambda name: report if name == "reasoning_rl.json" else None)
    text = figures.render_reasoning()
    assert "8 replies per prompt at Ollama's default sampling" in text
    assert "| grpo-working | 46.0% [37.0, 55.0] | 97% | 44.0 | 98% | 43.0% [35.0, 51.0] | 95% | 41.5 |" in text
    assert "| base | 16.0% [9.0, 23.0] | 97% | 44.0 | 98% | not sampled | | |" in text
    assert "| grpo-working - sft-working | -1.7 [-5.8, +2.5] | **+5.2 [+2.1, +8.3]** |" in text
    assert "by the sampled score; sft-working there 49.0% [40.0, 58.0], sampled 46.0%)" in text
    assert "| 50.0% | +1.0 [-2.0, +4.0] | 47.0% | +5.2 [+2.1, +8.3] | yes |" in text
    del report["models"]["grpo-working"]["sampled"]  # a greedy-only file: no sampled columns at all
    for d in report["deltas"].values():
        d.pop("sampled_score")
    for key in ("sampled_score", "sampled_delta"):
        row.pop(key)
    report["selection"]["grpo"].pop("chosen_by")
    report["selection"].pop("sft-working-sampled")
    text = figures.render_reasoning()
    assert "sampled" not in text and "by the greedy score" in text
