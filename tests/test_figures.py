"""Every figure the README reports comes from a results file under ``benchmarks/results/`` (written by a script in
the repository, with its machine class and date), and the README's figure blocks say exactly what those files say."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
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


def test_readme_figure_blocks_and_results_doc_match_the_results_files():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "figures.py"), "--check"], capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_readme_reports_the_pipeline_from_its_results_files():
    text = (ROOT / "README.md").read_text()
    assert "<!-- figures:pipeline -->" in text
    files = figures.pipeline_files()
    assert files, "no benchmarks/results/pipeline_*.json"
    block = figures.render_pipeline()
    for name, result in files:
        assert name in block and result["machine"]["cpu_class"] in block and result["date"] in block
        for label, entry in result["evaluation"]["models"].items():
            assert f"| {label} | {100 * entry['score']['mean']:.0f}%" in block
        assert result["evaluation"]["pool"] == "test"  # reports read the sealed test pool only
        assert result["evaluation"]["prompts"] == result["evaluation"]["distinct_prompts"]


def test_no_measurement_outside_a_figure_block_in_the_readme():
    text = _outside_blocks((ROOT / "README.md").read_text())
    for allowed in NOT_MEASUREMENTS:
        text = text.replace(allowed, "")
    found = [m.group(0) for m in MEASUREMENT.finditer(text)]
    assert not found, f"README figures outside a generated block (no results file backs them): {found[:10]}"


def test_every_results_file_names_its_machine_class_and_date():
    for path in RESULTS.glob("*.json"):
        data = json.loads(path.read_text())
        assert "date" in data, path.name
        machine = json.dumps(data.get("machine") or data.get("machine_class") or {})
        assert "AVX512-BF16" in machine or "AVX2" in machine or "avx512_bf16" in machine or "bf16" in machine, path.name


def test_a_stale_figure_block_is_caught(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- figures:pipeline -->\nbase 99% [98, 100]\n<!-- /figures:pipeline -->\n")
    monkeypatch.setattr(figures, "README", readme)
    monkeypatch.setattr(figures, "RESULTS_DOC", tmp_path / "results.md")
    expected = figures.expected()
    assert expected[readme] != readme.read_text()  # the block is regenerated from the results files
    assert "base 99%" not in expected[readme]
