"""Evaluation reports: read a ``results.json`` and write ``report.md`` and ``report.html``.

A consumer of results files only (training code never imports it): the HTML is one self-contained page (inline CSS
and SVG charts, no JavaScript, nothing fetched) with the headline scores per suite as bar charts with 95% bootstrap
whiskers, the deltas between stages (base -> SFT -> DPO -> PPO) as a forest plot, tables with confidence intervals,
breakdowns, judge failure counts and example replies. Re-render any time::

    python -m posttrain.evaluation.report outputs/eval/results.json
"""

from __future__ import annotations

import html
import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["load_results", "render_html", "render_markdown", "write_reports"]

# Okabe-Ito: distinguishable for colour-blind readers, one colour per model (stage)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
EXAMPLES_PER_SUITE = 3


def load_results(results: str | Path | dict) -> dict:
    if isinstance(results, dict):
        return results
    return json.loads(Path(results).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------ formatting


def _ok(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any, percent: bool, *, signed: bool = False) -> str:
    if not _ok(value):
        return "–"
    sign = "+" if signed and value > 0 else ""
    if percent:
        return f"{sign}{100 * value:.1f}" + (" pts" if signed else "%")
    return f"{sign}{value:.2f}"


def _fmt_ci(stat: dict | None, percent: bool, *, signed: bool = False) -> str:
    if not stat:
        return "–"
    value = stat.get("delta", stat.get("mean"))
    if not _ok(value):
        return "–"
    text = _fmt(value, percent, signed=signed)
    if _ok(stat.get("low")) and _ok(stat.get("high")) and stat["low"] != stat["high"]:
        scale, spec = (100, ".1f") if percent else (1, ".2f")
        spec = ("+" if signed else "") + spec
        text += f" [{stat['low'] * scale:{spec}}, {stat['high'] * scale:{spec}}]"
    return text


def _score_info(suite: dict, name: str) -> dict:
    return next((s for s in suite["scores"] if s["name"] == name), {"percent": False})


def _labels(results: dict) -> list[str]:
    return [m["label"] for m in results["models"]]


def _invalid_note(stat: dict | None) -> str:
    if stat and stat.get("invalid"):
        return f" ({stat['invalid']} of {stat['total']} invalid)"
    return ""


def _primary_deltas(results: dict, suite: dict) -> list[dict]:
    return [d for d in results.get("deltas", []) if d["suite"] == suite["name"] and d["score"] == suite["primary"]]


def _consecutive(results: dict) -> list[tuple[str, str]]:
    labels = _labels(results)
    return [(labels[i - 1], labels[i]) for i in range(1, len(labels))]


def _find_delta(results: dict, suite: str, score: str, before: str, after: str) -> dict | None:
    return next((d for d in results.get("deltas", []) if d["suite"] == suite and d["score"] == score
                 and d["from"] == before and d["to"] == after), None)


def _examples(results: dict, suite: dict) -> list[tuple[str, list[dict]]]:
    by_id: dict[str, list[dict]] = {}
    for record in results["samples"]:
        if record["suite"] == suite["name"]:
            by_id.setdefault(record["id"], []).append(record)
    order = {label: i for i, label in enumerate(_labels(results))}
    picked = list(by_id.items())[:EXAMPLES_PER_SUITE]
    return [(sid, sorted(rs, key=lambda r: order.get(r["model"], 0))) for sid, rs in picked]


def _short(text: str, limit: int = 400) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


# -------------------------------------------------------------------------------------------------- markdown


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(results: dict) -> str:
    labels = _labels(results)
    lines = ["# Evaluation report", ""]
    if results.get("status") != "complete":
        lines += [f"> **Partial results** ({results.get('status')}): {results.get('error')}", ""]
    lines += [f"Created {results.get('created', '?')} by posttrain {results.get('posttrain_version', '?')}; "
              f"baseline for pairwise comparisons: `{results.get('baseline')}`.", ""]
    lines += ["| model | stage | kind | source |", "|---|---|---|---|"]
    for m in results["models"]:
        lines.append(f"| {_md_cell(m['label'])} | {_md_cell(m.get('stage', ''))} | {m['kind']} | "
                     f"`{_md_cell(m['source'])}` |")
    if results.get("judge"):
        lines += ["", f"Judge: `{_md_cell(results['judge']['source'])}` ({results['judge']['kind']})."]
    lines += ["", "## Summary", "",
              "Headline score of each suite, mean with 95% bootstrap CI; Δ between consecutive stages with a paired "
              "bootstrap CI (✓ when the CI excludes 0).", ""]
    pairs = _consecutive(results)
    header = ["suite", "score", *labels, *[f"Δ {b} → {a}" for b, a in pairs]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for suite in results["suites"]:
        info = _score_info(suite, suite["primary"])
        row = [suite["name"], suite["primary"]]
        for label in labels:
            stat = results["summary"].get(suite["name"], {}).get(label, {}).get(suite["primary"])
            row.append(_fmt_ci(stat, info["percent"]) + _invalid_note(stat))
        for before, after in pairs:
            d = _find_delta(results, suite["name"], suite["primary"], before, after)
            row.append((_fmt_ci(d, info["percent"], signed=True) + (" ✓" if d and d["significant"] else ""))
                       if d else "–")
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")

    for suite in results["suites"]:
        name = suite["name"]
        lines += ["", f"## {name}", ""]
        if suite.get("description"):
            lines += [suite["description"], ""]
        for source in suite.get("sources", []):
            bits = [f"{k}: {v}" for k, v in source.items() if k in ("builtin", "package", "file", "distribution",
                                                                     "version", "licence", "num_samples")]
            lines.append("* data — " + "; ".join(bits))
        for note in suite.get("notes", []):
            lines.append(f"* note — {note}")
        lines += ["", "| score | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for score in suite["scores"]:
            cells = []
            for label in labels:
                stat = results["summary"].get(name, {}).get(label, {}).get(score["name"])
                cells.append(_fmt_ci(stat, score["percent"]) + _invalid_note(stat))
            lines.append(f"| {score['name']} | " + " | ".join(_md_cell(c) for c in cells) + " |")
        gen = [results["summary"].get(name, {}).get(label, {}).get("_generation") for label in labels]
        lines.append("| mean reply tokens | " + " | ".join(f"{g['mean_tokens']:.1f}" if g else "–" for g in gen) + " |")
        deltas = [d for d in results.get("deltas", []) if d["suite"] == name]
        if deltas:
            lines += ["", "| score | change | Δ [95% CI] | n | paired |", "|---|---|---|---|---|"]
            for d in deltas:
                info = _score_info(suite, d["score"])
                lines.append(f"| {d['score']} | {d['from']} → {d['to']} | "
                             f"{_fmt_ci(d, info['percent'], signed=True)}{' ✓' if d['significant'] else ''} | "
                             f"{d['n']} | {'yes' if d['paired'] else 'no'} |")
        outcomes = {label: results["summary"].get(name, {}).get(label, {}).get("_pairwise_outcomes")
                    for label in labels}
        if any(outcomes.values()):
            lines += ["", f"Pairwise against `{results.get('baseline')}` (both orders):", "",
                      "| model | win | tie | loss | inconsistent | invalid |", "|---|---|---|---|---|---|"]
            for label, o in outcomes.items():
                if o:
                    lines.append(f"| {label} | {o['win']} | {o['tie']} | {o['loss']} | {o['inconsistent']} | "
                                 f"{o['invalid']} |")
        groups = results.get("groups", {}).get(name, {})
        group_names = sorted({g for label in labels for g in groups.get(label, {})})
        if len(group_names) > 1:
            info = _score_info(suite, suite["primary"])
            lines += ["", f"By group ({suite['primary']}):", "", "| group | " + " | ".join(labels) + " |",
                      "|---|" + "---|" * len(labels)]
            for g in group_names:
                cells = [_fmt(groups.get(label, {}).get(g, {}).get("mean"), info["percent"]) for label in labels]
                lines.append(f"| {_md_cell(g)} | " + " | ".join(cells) + " |")
        examples = _examples(results, suite)
        if examples:
            lines += ["", "<details><summary>Examples</summary>", ""]
            for sid, recs in examples:
                lines += [f"**{sid}** — {_md_cell(_short(recs[0]['prompt'][-1]['content'], 300))}", ""]
                for r in recs:
                    scores = ", ".join(f"{k}={_fmt(v, _score_info(suite, k)['percent'])}" for k, v in
                                       r["scores"].items())
                    lines.append(f"* `{r['model']}` ({scores}): {_md_cell(_short(r['output']))}")
                lines.append("")
            lines.append("</details>")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------ SVG


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _axis_range(info: dict, values: list[float]) -> tuple[float, float]:
    if info.get("range"):
        return float(info["range"][0]), float(info["range"][1])
    finite = [v for v in values if _ok(v)] or [0.0, 1.0]
    low, high = min(0.0, *finite), max(0.0, *finite)
    pad = (high - low) * 0.1 or 1.0
    return low - (pad if low < 0 else 0), high + pad


def bar_chart(title: str, labels: list[str], stats: list[dict | None], info: dict, *, width: int = 320,
              height: int = 220) -> str:
    """An SVG bar chart: one bar per model with its 95% CI whisker and value."""
    left, right, top, bottom = 44, 10, 30, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    means = [s.get("mean") if s else None for s in stats]
    lo, hi = _axis_range(info, [v for s in stats if s for v in (s.get("low"), s.get("high"), s.get("mean"))])
    span = (hi - lo) or 1.0

    def y(v: float) -> float:
        return top + plot_h * (1 - (min(max(v, lo), hi) - lo) / span)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" class="title">{_esc(title)}</text>']
    for k in range(5):
        v = lo + span * k / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>')
        out.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end" class="tick">'
                   f'{_esc(_fmt(v, info.get("percent", False)).replace(".0%", "%"))}</text>')
    slot = plot_w / max(1, len(labels))
    bar_w = min(48.0, slot * 0.6)
    base = y(max(lo, 0.0)) if lo < 0 < hi else y(lo)
    for i, (label, stat) in enumerate(zip(labels, stats)):
        cx = left + slot * (i + 0.5)
        color = PALETTE[i % len(PALETTE)]
        mean = means[i]
        if _ok(mean):
            top_y = min(y(mean), base)
            out.append(f'<rect x="{cx - bar_w / 2:.1f}" y="{top_y:.1f}" width="{bar_w:.1f}" '
                       f'height="{abs(base - y(mean)):.1f}" fill="{color}"><title>{_esc(label)}: '
                       f'{_esc(_fmt_ci(stat, info.get("percent", False)))}</title></rect>')
            if _ok(stat.get("low")) and _ok(stat.get("high")):
                y1, y2 = y(stat["low"]), y(stat["high"])
                out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" class="whisker"/>')
                for yy in (y1, y2):
                    out.append(f'<line x1="{cx - 6:.1f}" x2="{cx + 6:.1f}" y1="{yy:.1f}" y2="{yy:.1f}" '
                               'class="whisker"/>')
            label_y = min(y(stat["high"]) if _ok(stat.get("high")) else y(mean), top_y) - 4
            out.append(f'<text x="{cx:.1f}" y="{label_y:.1f}" text-anchor="middle" class="value">'
                       f'{_esc(_fmt(mean, info.get("percent", False)))}</text>')
        else:
            out.append(f'<text x="{cx:.1f}" y="{base - 4:.1f}" text-anchor="middle" class="tick">n/a</text>')
        out.append(f'<text x="{cx:.1f}" y="{height - bottom + 16}" text-anchor="middle" class="label">'
                   f'{_esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def delta_chart(rows: list[tuple[str, dict, bool]], *, width: int = 660) -> str:
    """A forest plot of deltas: one row per (suite, change) with the 95% CI as a line, 0 marked. ``rows`` are
    ``(label, delta, percent)``; values are drawn in points for percentages."""
    row_h, left, right, top = 26, 230, 70, 28
    height = top + row_h * len(rows) + 24
    values = [d[k] * (100 if pct else 1) for _, d, pct in rows for k in ("low", "high", "delta") if _ok(d.get(k))]
    extent = max([abs(v) for v in values] + [1.0]) * 1.1
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + plot_w * (v + extent) / (2 * extent)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="Deltas between stages">',
           f'<text x="{left + plot_w / 2}" y="16" text-anchor="middle" class="title">Change between stages '
           '(95% CI; points for rates)</text>',
           f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 4}" y2="{height - 20}" class="zero"/>']
    for i, (label, d, pct) in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        scale = 100 if pct else 1
        color = "#009E73" if d["significant"] and d["delta"] > 0 else "#D55E00" if d["significant"] else "#777777"
        out.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" text-anchor="end" class="label">{_esc(label)}</text>')
        if _ok(d.get("low")) and _ok(d.get("high")):
            out.append(f'<line x1="{x(d["low"] * scale):.1f}" x2="{x(d["high"] * scale):.1f}" y1="{cy:.1f}" '
                       f'y2="{cy:.1f}" stroke="{color}" stroke-width="3"/>')
        out.append(f'<circle cx="{x(d["delta"] * scale):.1f}" cy="{cy:.1f}" r="5" fill="{color}"><title>'
                   f'{_esc(label)}: {_esc(_fmt_ci(d, pct, signed=True))}</title></circle>')
        out.append(f'<text x="{width - right + 6}" y="{cy + 4:.1f}" class="value">'
                   f'{_esc(_fmt(d["delta"], pct, signed=True).replace(" pts", ""))}</text>')
    for v in (-extent / 1.1, 0.0, extent / 1.1):
        out.append(f'<text x="{x(v):.1f}" y="{height - 6}" text-anchor="middle" class="tick">{v:+.1f}</text>')
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin-top:36px;border-bottom:2px solid #e3e5e8;padding-bottom:4px}
.meta{color:#555}.banner{background:#fff3cd;border:1px solid #e0c36b;padding:10px 14px;border-radius:6px}
table{border-collapse:collapse;margin:10px 0;background:#fff;font-variant-numeric:tabular-nums}
th,td{border:1px solid #dde0e4;padding:5px 9px;text-align:left;vertical-align:top}
th{background:#eef0f3}td.num{text-align:right;white-space:nowrap}
.up{color:#007a5a;font-weight:600}.down{color:#b8400b;font-weight:600}.flat{color:#666}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #dde0e4;border-radius:6px}
.chart .title{font-size:13px;font-weight:600}.chart .tick{font-size:10px;fill:#666}
.chart .label{font-size:11px}.chart .value{font-size:10px;fill:#333}.chart .grid{stroke:#eceef1}
.chart .whisker{stroke:#222;stroke-width:1.4}.chart .zero{stroke:#999;stroke-dasharray:4 3}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;
margin-right:5px;vertical-align:-1px;border-radius:2px}
details{background:#fff;border:1px solid #dde0e4;border-radius:6px;padding:6px 12px;margin:10px 0}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:13px/1.4 ui-monospace,monospace}
.small{font-size:13px;color:#555}
"""


def _delta_cell(d: dict | None, percent: bool) -> str:
    if not d:
        return '<td class="num flat">–</td>'
    cls = "up" if d["significant"] and d["delta"] > 0 else "down" if d["significant"] else "flat"
    return f'<td class="num {cls}">{_esc(_fmt_ci(d, percent, signed=True))}</td>'


def render_html(results: dict) -> str:
    labels = _labels(results)
    pairs = _consecutive(results)
    h = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>Evaluation report</title><style>{_CSS}</style></head><body><main>",
         "<h1>Evaluation report</h1>",
         f'<p class="meta">Created {_esc(results.get("created", "?"))} by posttrain '
         f'{_esc(results.get("posttrain_version", "?"))} · baseline for pairwise: '
         f'<b>{_esc(results.get("baseline"))}</b>'
         + (f' · judge: <code>{_esc(results["judge"]["source"])}</code>' if results.get("judge") else "")
         + "</p>"]
    if results.get("status") != "complete":
        h.append(f'<p class="banner"><b>Partial results</b> ({_esc(results.get("status"))}): '
                 f'{_esc(results.get("error"))}</p>')
    h.append('<p class="legend">' + "".join(
        f'<span><i style="background:{PALETTE[i % len(PALETTE)]}"></i>{_esc(m["label"])} '
        f'<span class="small">({_esc(m["kind"])}: {_esc(m["source"])})</span></span>'
        for i, m in enumerate(results["models"])) + "</p>")

    h.append("<h2>Headline scores</h2><div class=\"charts\">")
    for suite in results["suites"]:
        info = _score_info(suite, suite["primary"])
        stats = [results["summary"].get(suite["name"], {}).get(label, {}).get(suite["primary"]) for label in labels]
        h.append(bar_chart(f"{suite['name']} · {suite['primary']}", labels, stats, info))
    h.append("</div>")
    rows = []
    for suite in results["suites"]:
        info = _score_info(suite, suite["primary"])
        for before, after in pairs:
            d = _find_delta(results, suite["name"], suite["primary"], before, after)
            if d:
                rows.append((f"{suite['name']}: {before} → {after}", d, info["percent"]))
    if rows:
        h.append(delta_chart(rows))

    h.append("<h2>Summary</h2><table><tr><th>suite</th><th>score</th>"
             + "".join(f"<th>{_esc(label)}</th>" for label in labels)
             + "".join(f"<th>Δ {_esc(b)} → {_esc(a)}</th>" for b, a in pairs) + "</tr>")
    for suite in results["suites"]:
        info = _score_info(suite, suite["primary"])
        h.append(f'<tr><td><a href="#suite-{_esc(suite["name"])}">{_esc(suite["name"])}</a></td>'
                 f'<td>{_esc(suite["primary"])}</td>')
        for label in labels:
            stat = results["summary"].get(suite["name"], {}).get(label, {}).get(suite["primary"])
            h.append(f'<td class="num">{_esc(_fmt_ci(stat, info["percent"]) + _invalid_note(stat))}</td>')
        for before, after in pairs:
            h.append(_delta_cell(_find_delta(results, suite["name"], suite["primary"], before, after),
                                 info["percent"]))
        h.append("</tr>")
    h.append('</table><p class="small">Mean with 95% bootstrap CI in brackets; Δ uses a paired bootstrap over the '
             "same samples. Green/orange: the CI excludes 0.</p>")

    for suite in results["suites"]:
        name = suite["name"]
        h.append(f'<h2 id="suite-{_esc(name)}">{_esc(name)}</h2>')
        if suite.get("description"):
            h.append(f"<p>{_esc(suite['description'])}</p>")
        src = []
        for source in suite.get("sources", []):
            src.append("; ".join(f"{_esc(k)}: {_esc(v)}" for k, v in source.items()
                                 if k in ("builtin", "package", "file", "distribution", "version", "licence",
                                          "num_samples")))
        if src or suite.get("notes"):
            h.append('<ul class="small">' + "".join(f"<li>data — {s}</li>" for s in src)
                     + "".join(f"<li>{_esc(n)}</li>" for n in suite.get("notes", [])) + "</ul>")
        charts = []
        for score in suite["scores"]:
            stats = [results["summary"].get(name, {}).get(label, {}).get(score["name"]) for label in labels]
            if any(stats):
                charts.append(bar_chart(score["name"], labels, stats, score, width=260, height=200))
        h.append('<div class="charts">' + "".join(charts) + "</div>")
        h.append("<table><tr><th>score</th>" + "".join(f"<th>{_esc(label)}</th>" for label in labels)
                 + "".join(f"<th>Δ {_esc(b)} → {_esc(a)}</th>" for b, a in pairs) + "</tr>")
        for score in suite["scores"]:
            h.append(f"<tr><td>{_esc(score['name'])}</td>")
            for label in labels:
                stat = results["summary"].get(name, {}).get(label, {}).get(score["name"])
                h.append(f'<td class="num">{_esc(_fmt_ci(stat, score["percent"]) + _invalid_note(stat))}</td>')
            for before, after in pairs:
                h.append(_delta_cell(_find_delta(results, name, score["name"], before, after), score["percent"]))
            h.append("</tr>")
        gen = [results["summary"].get(name, {}).get(label, {}).get("_generation") for label in labels]
        h.append("<tr><td>mean reply tokens</td>" + "".join(
            f'<td class="num">{g["mean_tokens"]:.1f}</td>' if g else "<td>–</td>" for g in gen)
            + "<td></td>" * len(pairs) + "</tr></table>")
        outcomes = {label: results["summary"].get(name, {}).get(label, {}).get("_pairwise_outcomes")
                    for label in labels}
        if any(outcomes.values()):
            h.append(f"<p>Pairwise against <b>{_esc(results.get('baseline'))}</b>, judged in both orders:</p>"
                     "<table><tr><th>model</th><th>win</th><th>tie</th><th>loss</th><th>inconsistent</th>"
                     "<th>invalid verdicts</th></tr>")
            for label, o in outcomes.items():
                if o:
                    h.append(f"<tr><td>{_esc(label)}</td>" + "".join(
                        f'<td class="num">{o[k]}</td>' for k in ("win", "tie", "loss", "inconsistent", "invalid"))
                        + "</tr>")
            h.append("</table>")
        groups = results.get("groups", {}).get(name, {})
        group_names = sorted({g for label in labels for g in groups.get(label, {})})
        if len(group_names) > 1:
            info = _score_info(suite, suite["primary"])
            h.append(f"<details><summary>By group ({_esc(suite['primary'])})</summary><table><tr><th>group</th>"
                     + "".join(f"<th>{_esc(label)}</th>" for label in labels) + "</tr>")
            for g in group_names:
                h.append(f"<tr><td>{_esc(g)}</td>" + "".join(
                    f'<td class="num">{_esc(_fmt(groups.get(label, {}).get(g, {}).get("mean"), info["percent"]))}'
                    f'</td>' for label in labels) + "</tr>")
            h.append("</table></details>")
        examples = _examples(results, suite)
        if examples:
            h.append("<details><summary>Example replies</summary>")
            for sid, recs in examples:
                h.append(f"<p><b>{_esc(sid)}</b></p><pre>{_esc(_short(recs[0]['prompt'][-1]['content'], 600))}</pre>"
                         "<table><tr><th>model</th><th>reply</th><th>scores</th></tr>")
                for r in recs:
                    scores = "<br>".join(f"{_esc(k)}: {_esc(_fmt(v, _score_info(suite, k)['percent']))}"
                                         for k, v in r["scores"].items())
                    rationale = next((d.get("rationale") for d in r.get("details", {}).values()
                                      if isinstance(d, dict) and d.get("rationale")), None)
                    if rationale:
                        scores += f'<br><span class="small">judge: {_esc(_short(rationale, 300))}</span>'
                    h.append(f"<tr><td>{_esc(r['model'])}</td><td><pre>{_esc(_short(r['output'], 800))}</pre></td>"
                             f"<td class=\"small\">{scores}</td></tr>")
                h.append("</table>")
            h.append("</details>")
    h.append("</main></body></html>")
    return "\n".join(h)


def write_reports(results: str | Path | dict, output_dir: str | Path | None = None) -> list[Path]:
    """Write report.md and report.html (beside results.json unless ``output_dir`` is given)."""
    if output_dir is None:
        if isinstance(results, dict):
            raise ValueError("output_dir is needed when results are given as a dict")
        output_dir = Path(results).parent
    data = load_results(results)
    output_dir = Path(output_dir)
    md, page = output_dir / "report.md", output_dir / "report.html"
    md.write_text(render_markdown(data), encoding="utf-8")
    page.write_text(render_html(data), encoding="utf-8")
    return [md, page]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m posttrain.evaluation.report RESULTS.json", file=sys.stderr)
        sys.exit(2)
    for written in write_reports(sys.argv[1]):
        print(written)
