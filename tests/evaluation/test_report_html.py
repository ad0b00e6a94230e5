"""Reports: report.md/report.html from a results file, HTML escaping, and the page rendered in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from fake_chat_server import FakeChatServer

from posttrain.evaluation.config import EvalArguments
from posttrain.evaluation.runner import evaluate
from posttrain.evaluation.report import write_reports

SUITE = """
name: html
data:
  - samples:
      - {id: a, prompt: "2 + 2?", answer: "4", check: numeric_match}
      - {id: b, prompt: "3 + 3?", answer: "6", check: numeric_match}
      - {id: c, prompt: "Reply without commas.", instructions: [{id: no_commas}]}
      - {id: d, prompt: "5 + 5?", answer: "10", check: numeric_match}
scoring: [task, stopped]
"""

HOSTILE = '<script>document.title="pwned"</script><img src=x onerror=alert(1)> & 4'


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """Three stages of an endpoint model whose replies improve, one reply trying to inject HTML."""
    server = FakeChatServer()
    answers = {"base": {"2 + 2?": "5", "3 + 3?": "7", "5 + 5?": "11"},
               "sft": {"2 + 2?": HOSTILE, "3 + 3?": "6", "5 + 5?": "11"},
               "dpo": {"2 + 2?": "4", "3 + 3?": "6", "5 + 5?": "10"}}
    server.reply = lambda m: answers[server.requests[-1]["payload"]["model"]].get(m[-1]["content"], "ok, fine")
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "suite.yaml").write_text(SUITE)
    try:
        evaluate(EvalArguments(
            models=[{"label": label, "model": label, "endpoint": server.url} for label in ("base", "sft", "dpo")],
            suites=[str(tmp / "suite.yaml"), "builtin"], max_samples=5, output_dir=str(tmp / "eval"), progress=False,
            bootstrap_samples=200, concurrency=1))
    finally:
        server.close()
    return tmp / "eval"


def test_markdown_has_tables_with_deltas_between_stages(report_dir):
    md = (report_dir / "report.md").read_text()
    assert "| suite | score | base | sft | dpo | Δ base → sft | Δ sft → dpo |" in md
    assert "| html | task | 0.0% | " in md and "## builtin" in md
    results = json.loads((report_dir / "results.json").read_text())
    assert {(d["from"], d["to"]) for d in results["deltas"]} == {("base", "sft"), ("sft", "dpo"), ("base", "dpo")}


def test_html_escapes_model_output(report_dir):
    page = (report_dir / "report.html").read_text()
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;" in page


def test_reports_can_be_rerendered_from_results_json(report_dir, tmp_path):
    copy = tmp_path / "results.json"
    shutil.copy(report_dir / "results.json", copy)
    written = write_reports(copy)
    assert [p.name for p in written] == ["report.md", "report.html"]
    assert written[1].read_text() == (report_dir / "report.html").read_text()


def test_html_renders_in_headless_chromium(report_dir, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the HTML report test needs Debian's chromium: apt-get install -y chromium"
    url = (report_dir / "report.html").resolve().as_uri()
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "<title>Evaluation report</title>" in dom and dom.count("<svg") >= 3
    assert "Change between stages" in dom and "pwned" not in dom.split("<title>")[1].split("</title>")[0]
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1200,1600", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120, check=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real page, not a blank one
