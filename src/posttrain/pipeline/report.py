"""The pipeline's final report: ``report.md`` and ``report.html`` in the pipeline's ``output_dir``.

Built only from what the stages wrote (``run_manifest.json`` of every stage, the evaluation's ``results.json``):
the stage-by-stage score table per suite, training curves (loss, reward, KL, ...), export verification results and
the exact commands to run the model in Ollama and llama.cpp. Re-render any time::

    python -m posttrain.pipeline.report recipes/configs/smollm2-135m/pipeline.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from posttrain.manifest import read_manifest
from posttrain.evaluation.report import _CSS, PALETTE, _esc, _fmt, bar_chart

__all__ = ["collect", "line_chart", "render_html", "render_markdown", "write_pipeline_report"]

REPORT_MD, REPORT_HTML = "report.md", "report.html"


def _curves(manifest: dict[str, Any]) -> dict[str, list[float]]:
    curves = {}
    if manifest.get("loss_curve"):
        curves["loss"] = manifest["loss_curve"]
    for key, values in manifest.items():  # reward_curve, kl_curve, ... (see the stages' finish_run fields)
        if key.endswith("_curve") and key != "loss_curve" and isinstance(values, list) and values:
            curves[key[: -len("_curve")]] = values
    return {k: [float(v) for v in vals if isinstance(v, (int, float))] for k, vals in curves.items()}


def collect(pipeline) -> dict[str, Any]:
    """Everything the report shows, read from the stages' outputs (missing pieces are simply left out)."""
    from posttrain.pipeline.state import read_state

    state = read_state(pipeline)
    stages, evaluations, exports = [], [], []
    for stage in pipeline.stages:
        out = stage.output_dir
        manifest = read_manifest(out) or {}
        record = {"name": stage.name, "stage": stage.stage, "output_dir": str(out),
                  "wall_time_s": state.get("stages", {}).get(stage.name, {}).get("wall_time_s"),
                  "done": bool(manifest), "curves": _curves(manifest), "metrics": manifest.get("metrics") or {}}
        stages.append(record)
        results = out / "results.json"
        if stage.stage in ("evaluate", "eval") and results.is_file():
            evaluations.append({"name": stage.name, "results": json.loads(results.read_text(encoding="utf-8"))})
        if manifest.get("verification") or manifest.get("commands"):
            exports.append({"name": stage.name, "verification": manifest.get("verification") or {},
                            "commands": manifest.get("commands") or [], "files": manifest.get("files") or {}})
    return {"config": str(pipeline.source), "profile": pipeline.profile, "stages": stages,
            "evaluations": evaluations, "exports": exports}


def _score_rows(results: dict) -> tuple[list[str], list[tuple[str, str, bool, list[dict | None]]]]:
    labels = [m["label"] for m in results["models"]]
    rows = []
    for suite in results["suites"]:
        primary = suite["primary"]
        percent = next((s.get("percent", False) for s in suite["scores"] if s["name"] == primary), False)
        stats = [results["summary"].get(suite["name"], {}).get(label, {}).get(primary) for label in labels]
        rows.append((suite["name"], primary, percent, stats))
    return labels, rows


def line_chart(title: str, values: list[float], *, width: int = 320, height: int = 200, color: str = PALETTE[0]) -> str:
    """An SVG line chart of one logged series (x: logging step index)."""
    left, right, top, bottom = 48, 10, 28, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    lo, hi = min(values), max(values)
    span = (hi - lo) or abs(hi) or 1.0

    def xy(i: int, v: float) -> str:
        x = left + plot_w * (i / max(1, len(values) - 1))
        y = top + plot_h * (1 - (v - lo) / span)
        return f"{x:.1f},{y:.1f}"

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" class="title">{_esc(title)}</text>']
    for k in range(3):
        v = lo + span * k / 2
        y = top + plot_h * (1 - k / 2)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="tick">{v:.3g}</text>')
    points = " ".join(xy(i, v) for i, v in enumerate(values))
    out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" class="tick">logging step '
               f'(n={len(values)}) · first {values[0]:.3g} → last {values[-1]:.3g}</text>')
    out.append("</svg>")
    return "".join(out)


def _verification_rows(verification: dict) -> list[tuple[str, str, str]]:
    if isinstance(verification.get("checks"), list):  # posttrain.export.verify's report
        return [(c["name"], c["status"], c.get("summary", "")) for c in verification["checks"]]
    rows = []
    for name, value in verification.items():
        if isinstance(value, dict):
            status = value.get("passed")
            detail = ", ".join(f"{k}={v}" for k, v in value.items() if k != "passed" and not isinstance(v, (dict, list)))
        else:
            status, detail = None, str(value)
        rows.append((name, "pass" if status is True else "FAIL" if status is False else "–", detail))
    return rows


def render_markdown(report: dict) -> str:
    lines = ["# posttrain pipeline report", "",
             f"Config `{report['config']}`" + (f", profile `{report['profile']}`" if report["profile"] else ""), "",
             "## Stages", "", "| stage | output | wall time | done |", "|---|---|---|---|"]
    for s in report["stages"]:
        wall = f"{s['wall_time_s']} s" if s["wall_time_s"] is not None else "–"
        lines.append(f"| {s['name']} | `{s['output_dir']}` | {wall} | {'yes' if s['done'] else 'no'} |")
    for ev in report["evaluations"]:
        labels, rows = _score_rows(ev["results"])
        lines += ["", f"## Scores by stage ({ev['name']})", "",
                  "| suite | score | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
        for suite, primary, percent, stats in rows:
            cells = [_fmt(s.get("mean") if s else None, percent) for s in stats]
            lines.append(f"| {suite} | {primary} | " + " | ".join(cells) + " |")
    curves = [(s["name"], name, vals) for s in report["stages"] for name, vals in s["curves"].items() if vals]
    if curves:
        lines += ["", "## Training curves", "", "| stage | series | first | last | min | max | points |",
                  "|---|---|---|---|---|---|---|"]
        for stage, name, vals in curves:
            lines.append(f"| {stage} | {name} | {vals[0]:.4g} | {vals[-1]:.4g} | {min(vals):.4g} | {max(vals):.4g} "
                         f"| {len(vals)} |")
    for ex in report["exports"]:
        if ex["verification"]:
            lines += ["", f"## Export verification ({ex['name']})", "", "| check | result | detail |", "|---|---|---|"]
            lines += [f"| {n} | {r} | {d} |" for n, r, d in _verification_rows(ex["verification"])]
        if ex["commands"]:
            lines += ["", "## Run it", "", "```bash", *ex["commands"], "```"]
    return "\n".join(lines) + "\n"


def render_html(report: dict) -> str:
    h = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>posttrain pipeline report</title><style>{_CSS}</style></head><body><main>",
         "<h1>posttrain pipeline report</h1>",
         f'<p class="meta">Config <code>{_esc(report["config"])}</code>'
         + (f' · profile <b>{_esc(report["profile"])}</b>' if report["profile"] else "") + "</p>",
         "<h2>Stages</h2><table><tr><th>stage</th><th>output</th><th>wall time</th><th>done</th></tr>"]
    for s in report["stages"]:
        wall = f"{s['wall_time_s']} s" if s["wall_time_s"] is not None else "–"
        h.append(f"<tr><td>{_esc(s['name'])}</td><td><code>{_esc(s['output_dir'])}</code></td>"
                 f'<td class="num">{_esc(wall)}</td><td>{"yes" if s["done"] else "no"}</td></tr>')
    h.append("</table>")
    for ev in report["evaluations"]:
        labels, rows = _score_rows(ev["results"])
        h.append(f"<h2>Scores by stage ({_esc(ev['name'])})</h2><div class=\"charts\">")
        for suite, primary, percent, stats in rows:
            h.append(bar_chart(f"{suite} · {primary}", labels, stats, {"percent": percent}))
        h.append("</div><table><tr><th>suite</th><th>score</th>"
                 + "".join(f"<th>{_esc(label)}</th>" for label in labels) + "</tr>")
        for suite, primary, percent, stats in rows:
            h.append(f"<tr><td>{_esc(suite)}</td><td>{_esc(primary)}</td>" + "".join(
                f'<td class="num">{_esc(_fmt(s.get("mean") if s else None, percent))}</td>' for s in stats) + "</tr>")
        h.append("</table>")
    curves = [(s["name"], name, vals) for s in report["stages"] for name, vals in s["curves"].items() if len(vals) > 1]
    if curves:
        h.append('<h2>Training curves</h2><div class="charts">')
        for i, (stage, name, vals) in enumerate(curves):
            h.append(line_chart(f"{stage} · {name}", vals, color=PALETTE[i % len(PALETTE)]))
        h.append("</div>")
    for ex in report["exports"]:
        if ex["verification"]:
            h.append(f"<h2>Export verification ({_esc(ex['name'])})</h2><table><tr><th>check</th><th>result</th>"
                     "<th>detail</th></tr>")
            for n, r, d in _verification_rows(ex["verification"]):
                h.append(f"<tr><td>{_esc(n)}</td><td>{_esc(r)}</td><td>{_esc(d)}</td></tr>")
            h.append("</table>")
        if ex["commands"]:
            h.append("<h2>Run it</h2><pre>" + _esc("\n".join(ex["commands"])) + "</pre>")
    h.append("</main></body></html>")
    return "".join(h)


def write_pipeline_report(pipeline) -> list[Path]:
    report = collect(pipeline)
    out = Path(pipeline.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in ((REPORT_MD, render_markdown(report)), (REPORT_HTML, render_html(report))):
        path = out / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    from posttrain.pipeline.config import load_pipeline

    for p in write_pipeline_report(load_pipeline(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)):
        print(p)
