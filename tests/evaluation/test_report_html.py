"""Reports: report.md/report.html from a results file, HTML escaping, and the page rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from posttrain.evaluation.config import EvalArguments
from posttrain.evaluation.report import build_context, render_markdown, render_template, side_by_side, write_reports
from posttrain.evaluation.runner import evaluate
from posttrain.pipeline.report import render_html as render_pipeline_html
from posttrain.pipeline.report import render_markdown as render_pipeline_markdown
from posttrain.stats import wilson_interval

from fake_chat_server import FakeChatServer

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
    answers = {
        "base": {"2 + 2?": "5", "3 + 3?": "7", "5 + 5?": "11"},
        "sft": {"2 + 2?": HOSTILE, "3 + 3?": "6", "5 + 5?": "11"},
        "dpo": {"2 + 2?": "4", "3 + 3?": "6", "5 + 5?": "10"},
    }
    server.reply = lambda m: answers[server.requests[-1]["payload"]["model"]].get(m[-1]["content"], "ok, fine")
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "suite.yaml").write_text(SUITE)
    try:
        evaluate(
            EvalArguments(
                models=[{"label": label, "model": label, "endpoint": server.url} for label in ("base", "sft", "dpo")],
                suites=[str(tmp / "suite.yaml"), "builtin"],
                max_samples=5,
                output_dir=str(tmp / "eval"),
                progress=False,
                bootstrap_samples=200,
                concurrency=1,
            )
        )
    finally:
        server.close()
    return tmp / "eval"


def test_markdown_has_tables_with_deltas_between_stages(report_dir):
    md = (report_dir / "report.md").read_text()
    assert "| suite | score | base | sft | dpo | Δ base → sft | Δ sft → dpo |" in md
    # base fails all 4: 0% is shown with its interval (Wilson: a bootstrap of four zeros has no spread)
    assert "| html | task | 0.0% [0.0, 49.0] | " in md and "## builtin" in md
    assert "| suite | score | base | sft | dpo | Δ base → sft | Δ sft → dpo | Δ base → dpo |" in md
    results = json.loads((report_dir / "results.json").read_text())
    assert {(d["from"], d["to"]) for d in results["deltas"]} == {("base", "sft"), ("sft", "dpo"), ("base", "dpo")}


def test_html_escapes_model_output(report_dir):
    page = (report_dir / "report.html").read_text()
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;" in page


def _hostile_results(report_dir) -> dict:
    """The fixture's results with the sft model renamed to markup (everywhere the label occurs) and markup in a suite
    description, a note and a prompt."""
    text = (report_dir / "results.json").read_text().replace('"sft"', json.dumps(HOSTILE))
    results = json.loads(text)
    results["suites"][0]["description"] = "Arithmetic <b>bold</b> " + HOSTILE
    results["suites"][0]["notes"] = ["note " + HOSTILE]
    results["samples"][0]["prompt"][-1]["content"] += HOSTILE
    return results


def test_html_escapes_model_names_and_suite_text(report_dir, tmp_path):
    results = _hostile_results(report_dir)
    assert HOSTILE in [m["label"] for m in results["models"]]
    md, page = (p.read_text() for p in write_reports(results, tmp_path))
    assert "<script" not in page and "<img" not in page and "<b>bold" not in page
    assert page.count("&lt;script&gt;") >= 10  # legend, headers, chart labels, description, note, prompt, replies
    assert "Arithmetic &lt;b&gt;bold&lt;/b&gt;" in page
    # Markdown is not HTML: the text stays as written (| escaped in table cells)
    assert f"| {HOSTILE} | " in md and "Arithmetic <b>bold</b>" in md


def test_pipeline_report_escapes_user_text(report_dir):
    results = _hostile_results(report_dir)
    report = {
        "config": "pipe<script>.yaml",
        "profile": "<i>quick</i>",
        "stages": [
            {
                "name": HOSTILE,
                "stage": "sft",
                "output_dir": "out/<sft>",
                "wall_time_s": 1.5,
                "done": True,
                "curves": {"loss": [2.0, 1.0]},
                "metrics": {},
            }
        ],
        "evaluations": [{"name": "eval<x>", "results": results}],
        "exports": [
            {
                "name": "gguf",
                "verification": {"checks": [{"name": "load <x>", "status": "pass"}]},
                "commands": ["ollama run m '<hi>' && echo ok"],
                "files": {},
            }
        ],
    }
    page, md = render_pipeline_html(report), render_pipeline_markdown(report)
    assert "<script" not in page and "<img" not in page and "<i>quick" not in page and "<sft>" not in page
    assert "ollama run m &#39;&lt;hi&gt;&#39; &amp;&amp; echo ok</pre>" in page
    assert page.count("<svg") == 3  # a bar chart per suite (html, builtin) and the loss curve
    assert "| loss | 2 | 1 | 1 | 2 | 2 |" in md and "ollama run m '<hi>' && echo ok\n```" in md
    # the evaluation's pieces: scores with intervals, replies side by side (escaped), the smoke-size line
    assert "0.0% [0.0, 49.0]" in page and "0.0% [0.0, 49.0]" in md
    assert "Replies side by side (eval&lt;x&gt;)" in page and "## Replies side by side (eval<x>)" in md
    assert "&lt;script&gt;document.title=&#34;pwned&#34;" in _section(page, "Replies side by side (eval&lt;x&gt;)")
    assert "Smoke-sized run" in page and "profile <code>&lt;i&gt;quick&lt;/i&gt;</code>" in page


def test_html_and_markdown_show_the_same_figures_from_one_context(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    context = build_context(results)
    md, page = render_template("report.md.j2", context), render_template("report.html.j2", context)
    assert md == render_markdown(results)
    assert (report_dir / "report.md").read_text() == md and (report_dir / "report.html").read_text() == page
    figures = [cell for row in context["summary"] for cell in row["cells"]]
    figures += [d["text"] for row in context["summary"] for d in row["deltas"]]
    figures += [cell for suite in context["suites"] for score in suite["scores"] for cell in score["cells"]]
    figures += [d["text"] for suite in context["suites"] for score in suite["scores"] for d in score["deltas"]]
    figures += [t for suite in context["suites"] for t in suite["mean_tokens"] if t]
    assert len(figures) > 20 and any("[" in f for f in figures)  # with CIs
    for figure in figures:
        assert figure in md and figure in page, figure
    html_row = next(row for row in context["summary"] if row["name"] == "html")
    assert html_row["cells"][0] == "0.0% [0.0, 49.0]" and f'<td class="num">{html_row["cells"][2]}</td>' in page
    assert "| html | task | " + " | ".join(html_row["cells"]) + " |" in md


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
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "<title>Evaluation report</title>" in dom and dom.count("<svg") >= 3
    assert "Change between stages" in dom and "pwned" not in dom.split("<title>")[1].split("</title>")[0]
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, "--window-size=1200,1600", f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real page, not a blank one


def _section(page: str, heading: str) -> str:
    start = page.index(f">{heading}</h2>")
    return page[start : page.index("<h2", start)]


def test_every_score_is_shown_with_its_interval(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    context = build_context(results)
    md, page = (report_dir / "report.md").read_text(), (report_dir / "report.html").read_text()
    cells = [cell for row in context["summary"] for cell in row["cells"]]
    cells += [cell for suite in context["suites"] for score in suite["scores"] for cell in score["cells"]]
    assert len(cells) >= 9
    for cell in cells:  # "54.0% [44.0, 64.0]", also at 0% and 100%
        assert cell == "–" or re.fullmatch(r"-?[\d.]+%? \[-?[\d.]+, -?[\d.]+\]( \(.*\))?", cell), cell
        assert cell in md and cell in page
    # the bars: a value label with the interval over every bar, and a whisker (CI) drawn for it
    headline = context["headline_charts"][0]
    assert headline.count("<rect") - headline.count('class="range"') == 3  # three bars
    assert headline.count('class="range"') == 3 and headline.count('class="whisker"') == 9  # line + 2 caps per bar
    assert ">0% [0, 49]</text>" in headline and ">50% [0, 100]</text>" in headline
    # stop rate per model, with its interval
    html_row = next(row for row in context["summary"] if row["name"] == "html")
    assert html_row["stop_rates"] == ["100.0% [51.0, 100.0]"] * 3
    assert "| ↳ stop rate | ended in time | 100.0% [51.0, 100.0] |" in md and "↳ stop rate" in page
    # every change with its paired CI, the last stage against the first included
    deltas = [d["text"] for d in html_row["deltas"]]
    assert len(deltas) == 3 and all(re.fullmatch(r"[+-]?[\d.]+ pts \[[+-][\d.]+, [+-][\d.]+\]", d) for d in deltas)


def test_wilson_interval():
    low, high = wilson_interval(0, 4)
    assert low == 0.0 and abs(high - 0.4899) < 1e-3
    assert wilson_interval(20, 20)[1] == 1.0 and 0.83 < wilson_interval(20, 20)[0] < 0.84
    low, high = wilson_interval(5, 10)
    assert abs(low - 0.2366) < 1e-3 and abs(high - 0.7634) < 1e-3


def test_replies_side_by_side_list_every_models_reply_marked(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    items = side_by_side(results)
    assert len(items) == 6 and items == side_by_side(results)  # deterministic
    # prompts on which the models disagree come first; later picks spread over suites and tasks
    assert [(i["suite"], i["id"], i["disagree"]) for i in items[:3]] == [
        ("html", "a", True),
        ("html", "b", True),
        ("html", "d", True),
    ]
    assert not any(i["disagree"] for i in items[3:]) and {i["suite"] for i in items[3:]} == {"html", "builtin"}
    builtin = [i["group"] for i in items if i["suite"] == "builtin"]
    assert len(builtin) == len(set(builtin))  # different tasks
    first = items[0]
    assert [(r["model"], r["mark"], r["output"]) for r in first["replies"]] == [
        ("base", "✗", "5"),
        ("sft", "✓", HOSTILE),
        ("dpo", "✓", "4"),
    ]
    md, page = (report_dir / "report.md").read_text(), (report_dir / "report.html").read_text()
    assert md.index("## Replies side by side") < md.index("## Summary")
    block = md[md.index("**html · a**") : md.index("**html · b**")]
    assert "* ✗ `base`: 5\n" in block and "* ✓ `dpo`: 4\n" in block and f"* ✓ `sft`: {HOSTILE}" in block
    section = _section(page, "Replies side by side")
    assert page.index("Replies side by side") < page.index("<h2>Summary</h2>")
    row = section[section.index("html · a") : section.index("html · b")]
    assert row.count('<td class="reply') == 3 and row.count("✓ pass") == 2 and row.count("✗ fail") == 1
    assert all(f"</i>{label}</th>" in section for label in ("base", "sft", "dpo"))
    # the reply that tries to inject markup is escaped, not run
    assert (
        "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &amp; 4" in row
    )
    assert "<script" not in section and "<img" not in section


def test_side_by_side_truncates_long_replies_and_marks_missing_ones(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    record = next(r for r in results["samples"] if r["model"] == "dpo" and r["id"] == "a")
    record["output"] = "word " * 400
    results["samples"] = [r for r in results["samples"] if not (r["model"] == "base" and r["id"] == "b")]
    items = {i["id"]: i for i in side_by_side(results)}
    reply = items["a"]["replies"][2]
    assert reply["output"].endswith(" …") and len(reply["output"]) <= 322
    assert [r["mark"] for r in items["b"]["replies"]] == ["–", "✓", "✓"] and items["b"]["replies"][0]["output"] is None
    assert "(no reply)" in render_template("report.html.j2", build_context(results))
