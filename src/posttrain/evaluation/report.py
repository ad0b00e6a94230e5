"""Evaluation reports: read a ``results.json`` and write ``report.md`` and ``report.html``.

A consumer of results files only (training code never imports it): the HTML is one self-contained page (inline CSS
and SVG charts, no JavaScript, nothing fetched) that opens with a few held-out prompts and every model's reply side by
side, marked pass/fail (:func:`side_by_side`), then the headline scores per suite as bar charts with 95% interval
whiskers and labels (``54% [44, 64]``; Wilson intervals for all-0/all-1 rates and stop rates), the deltas between stages (base -> SFT -> DPO -> PPO) as a forest plot, tables with confidence intervals,
breakdowns, judge failure counts and example replies. Re-render any time::

    python -m posttrain.evaluation.report outputs/eval/results.json

Both files are Jinja2 templates (``templates/report.md.j2`` and ``templates/report.html.j2``, HTML autoescaped)
rendered from one context, :func:`build_context`: every number is formatted here, the templates only lay it out.
:func:`render_template`, :data:`PALETTE` and :func:`build_context` are shared with :mod:`posttrain.pipeline.report`,
whose templates render each evaluation stage with the same macros (``templates/_parts.{html,md}.j2``).
"""

from __future__ import annotations

import json
import math
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from posttrain.evaluation.overlap import overlap_line
from posttrain.storage import atomic_write_text

__all__ = [
    "PALETTE",
    "TEMPLATES_DIR",
    "bar_chart",
    "build_context",
    "chart_width",
    "delta_chart",
    "fmt",
    "fmt_ci",
    "fmt_compact",
    "load_results",
    "render_html",
    "render_markdown",
    "render_template",
    "side_by_side",
    "stop_rate",
    "wilson",
    "with_interval",
    "write_reports",
]

# Okabe-Ito: distinguishable for colour-blind readers, one colour per model (stage)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
EXAMPLES_PER_SUITE = 3
TEMPLATES_DIR = Path(__file__).with_name("templates")
SOURCE_KEYS = ("builtin", "package", "file", "distribution", "version", "licence", "num_samples")


def load_results(results: str | Path | dict) -> dict:
    if isinstance(results, dict):
        return results
    return json.loads(Path(results).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------ formatting


def _ok(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, percent: bool, *, signed: bool = False) -> str:
    """A score for a table: ``12.3%`` (``+4.5 pts`` when signed) for rates, ``0.12`` otherwise, ``–`` if missing."""
    if not _ok(value):
        return "–"
    sign = "+" if signed and value > 0 else ""
    if percent:
        return f"{sign}{100 * value:.1f}" + (" pts" if signed else "%")
    return f"{sign}{value:.2f}"


def fmt_ci(stat: dict | None, percent: bool, *, signed: bool = False) -> str:
    """:func:`fmt` of a summary statistic (``mean``) or delta (``delta``) with its 95% CI in brackets (always, when
    the statistic has one: a CI of one point is shown as such rather than hidden)."""
    if not stat:
        return "–"
    value = stat.get("delta", stat.get("mean"))
    if not _ok(value):
        return "–"
    text = fmt(value, percent, signed=signed)
    if _ok(stat.get("low")) and _ok(stat.get("high")):
        scale, spec = (100, ".1f") if percent else (1, ".2f")
        spec = ("+" if signed else "") + spec
        text += f" [{stat['low'] * scale:{spec}}, {stat['high'] * scale:{spec}}]"
    return text


def fmt_compact(stat: dict | None, percent: bool) -> str:
    """A chart label: ``54% [44, 64]`` (whole percentage points) or ``6.25 [5.80, 6.70]`` for other scores."""
    value = (stat or {}).get("delta", (stat or {}).get("mean"))
    if not _ok(value):
        return "–"

    def one(v: float) -> str:
        return f"{100 * v:.0f}" if percent else f"{v:.2f}"

    text = one(value) + ("%" if percent else "")
    if _ok(stat.get("low")) and _ok(stat.get("high")):
        text += f" [{one(stat['low'])}, {one(stat['high'])}]"
    return text


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion ``successes / n`` (sensible at 0% and 100%, unlike a
    bootstrap, which has no spread there)."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (0.0 if successes == 0 else max(0.0, centre - half)), (1.0 if successes == n else min(1.0, centre + half))


def with_interval(stat: dict | None, info: dict) -> dict | None:
    """``stat`` with a usable 95% interval: a rate on which every sample scored the same (all 0 or all 1: the
    bootstrap interval is the single point [0, 0]) gets the Wilson score interval of its ``n`` samples instead,
    marked ``"interval": "wilson"``. Anything else is returned as it is."""
    if not stat or not info.get("percent"):
        return stat
    mean, n = stat.get("mean"), stat.get("n")
    if (
        _ok(mean)
        and mean in (0.0, 1.0)
        and isinstance(n, int)
        and n > 0
        and (not _ok(stat.get("low")) or stat.get("low") == stat.get("high"))
    ):
        low, high = wilson(round(mean * n), n)
        return {**stat, "low": low, "high": high, "interval": "wilson"}
    return stat


def stop_rate(generation: dict | None) -> dict | None:
    """A model's stop rate on a suite (``summary[suite][label]["_generation"]``: the share of replies that ended
    before the token budget) as a statistic with its 95% Wilson interval."""
    if not generation or not generation.get("samples") or not _ok(generation.get("stop_rate")):
        return None
    n = int(generation["samples"])
    stopped = round(generation["stop_rate"] * n)
    low, high = wilson(stopped, n)
    return {"mean": generation["stop_rate"], "low": low, "high": high, "n": n, "stopped": stopped}


def _score_info(suite: dict, name: str) -> dict:
    return next((s for s in suite["scores"] if s["name"] == name), {"percent": False})


def _labels(results: dict) -> list[str]:
    return [m["label"] for m in results["models"]]


def _invalid_note(stat: dict | None) -> str:
    if stat and stat.get("invalid"):
        return f" ({stat['invalid']} of {stat['total']} invalid)"
    return ""


def _consecutive(results: dict) -> list[tuple[str, str]]:
    """The changes the tables show: each stage against the one before it, and with three or more models the last
    against the first (the baseline: what the whole pipeline changed)."""
    labels = _labels(results)
    pairs = [(labels[i - 1], labels[i]) for i in range(1, len(labels))]
    if len(labels) >= 3:
        pairs.append((labels[0], labels[-1]))
    return pairs


def _find_delta(results: dict, suite: str, score: str, before: str, after: str) -> dict | None:
    return next(
        (
            d
            for d in results.get("deltas", [])
            if d["suite"] == suite and d["score"] == score and d["from"] == before and d["to"] == after
        ),
        None,
    )


def _examples(results: dict, suite: dict) -> list[tuple[str, list[dict]]]:
    by_id: dict[str, list[dict]] = {}
    for record in results["samples"]:
        if record["suite"] == suite["name"]:
            by_id.setdefault(record["id"], []).append(record)
    order = {label: i for i, label in enumerate(_labels(results))}
    picked = list(by_id.items())[:EXAMPLES_PER_SUITE]
    return [(sid, sorted(rs, key=lambda r: order.get(r["model"], 0))) for sid, rs in picked]


def _passed(value: Any, info: dict) -> bool | None:
    """Whether one reply passes on a score: at least 0.5 for rates (checks: 1 passes, 0 fails), at least the middle
    of the range for ranged scores (a judge's 1-10: 5.5), None when unscored or the score has no range."""
    if not _ok(value):
        return None
    if info.get("percent"):
        return value >= 0.5
    if info.get("range"):
        return value >= (info["range"][0] + info["range"][1]) / 2
    return None


def _prompt_text(prompt: Any) -> str:
    """The last message of a sample's prompt (the question the model answered), as text."""
    if isinstance(prompt, list) and prompt:
        content = prompt[-1].get("content") if isinstance(prompt[-1], dict) else prompt[-1]
    else:
        content = prompt
    if isinstance(content, list):  # content parts
        content = " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


SIDE_BY_SIDE = 6
MARKS = {True: ("✓", "pass"), False: ("✗", "fail"), None: ("–", "unscored")}


def side_by_side(results: dict, count: int = SIDE_BY_SIDE, *, limit: int = 320) -> list[dict[str, Any]]:
    """A few held-out prompts with every model's reply, each marked pass/fail on its suite's headline score.

    Deterministic: the prompts on which the models disagree (some pass, some fail) first, then the others; each
    lot picked round-robin over the suites and, within a suite, over its groups (tasks), in the order of
    ``results["samples"]``. Replies are cut to ``limit`` characters with an ellipsis."""
    labels = _labels(results)
    suites = {s["name"]: s for s in results["suites"]}
    by_prompt: dict[tuple[str, str], dict[str, dict]] = {}
    for record in results.get("samples", []):
        if record.get("suite") in suites and record.get("model") in labels:
            by_prompt.setdefault((record["suite"], str(record["id"])), {})[record["model"]] = record
    candidates = []  # (disagree, suite name, group, sample id, records), in the order of the samples
    for (suite_name, sid), records in by_prompt.items():
        suite = suites[suite_name]
        info = _score_info(suite, suite["primary"])
        marks = [
            _passed(records[label]["scores"].get(suite["primary"]), info) if label in records else None
            for label in labels
        ]
        group = next((r.get("group") for r in records.values() if r.get("group") is not None), None)
        candidates.append((len({m for m in marks if m is not None}) > 1, suite_name, group, sid, records))
    picked = []
    for disagree in (True, False):  # every disagreement before any agreement
        by_suite: dict[str, dict[Any, list]] = {}
        for c in candidates:
            if c[0] == disagree:
                by_suite.setdefault(c[1], {}).setdefault(str(c[2]), []).append(c)
        picked += _interleave([_interleave(list(groups.values())) for groups in by_suite.values()])
    picked = picked[:count]
    out = []
    for disagree, suite_name, group, sid, records in picked:
        suite = suites[suite_name]
        info = _score_info(suite, suite["primary"])
        first = next(iter(records.values()))
        replies = []
        for label in labels:
            record = records.get(label)
            if record is None:
                replies.append(
                    {"model": label, "output": None, "mark": "–", "cls": "unscored", "score": "", "cut": False}
                )
                continue
            value = record["scores"].get(suite["primary"])
            passed = _passed(value, info)
            mark, cls = MARKS[passed]
            binary = info.get("percent") and passed is not None and value in (0, 1)
            replies.append(
                {
                    "model": label,
                    "output": _short((record.get("output") or "").strip(), limit),
                    "mark": mark,
                    "cls": cls,
                    "score": "" if binary else fmt(value, info.get("percent", False)),
                    "cut": record.get("finished") is False,
                }
            )
        answer = first.get("answer")
        out.append(
            {
                "suite": suite["name"],
                "id": sid,
                "group": None if group is None else str(group),
                "score": suite["primary"],
                "prompt": _short(_prompt_text(first.get("prompt")), 500),
                "answer": None if answer is None else _short(str(answer), 200),
                "disagree": disagree,
                "replies": replies,
            }
        )
    return out


def _interleave(lists: list[list]) -> list:
    """Round-robin: the first of each list, then the second of each, ..."""
    out = []
    for k in range(max((len(x) for x in lists), default=0)):
        out += [x[k] for x in lists if k < len(x)]
    return out


def _short(text: str | None, limit: int = 400) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ------------------------------------------------------------------------------------------------- templates


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html", "html.j2"], default_for_string=False, default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md"] = _md_cell  # a Markdown table cell: | escaped, newlines flattened
    env.filters["short"] = _short  # the first N characters and an ellipsis
    return env


def render_template(name: str, context: dict[str, Any]) -> str:
    """Render ``templates/<name>`` with ``context``; ``*.html.j2`` templates are autoescaped, Markdown ones not."""
    return _environment().get_template(name).render(context)


# ------------------------------------------------------------------------------------------------------ SVG


def _axis_range(info: dict, values: list[float]) -> tuple[float, float]:
    if info.get("range"):
        return float(info["range"][0]), float(info["range"][1])
    finite = [v for v in values if _ok(v)] or [0.0, 1.0]
    low, high = min(0.0, *finite), max(0.0, *finite)
    pad = (high - low) * 0.1 or 1.0
    return low - (pad if low < 0 else 0), high + pad


def bar_chart(
    title: str, labels: list[str], stats: list[dict | None], info: dict, *, width: int = 320, height: int = 220
) -> Markup:
    """An SVG bar chart: one bar per model with its 95% CI drawn as a whisker with caps over a shaded range, and
    the value with its interval above (``54% [44, 64]``); escaped, ready for a template."""
    left, right, top, bottom = 44, 10, 40, 36  # room above the plot for a 100% bar's label
    plot_w, plot_h = width - left - right, height - top - bottom
    means = [s.get("mean") if s else None for s in stats]
    lo, hi = _axis_range(info, [v for s in stats if s for v in (s.get("low"), s.get("high"), s.get("mean"))])
    span = (hi - lo) or 1.0

    def y(v: float) -> float:
        return top + plot_h * (1 - (min(max(v, lo), hi) - lo) / span)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" class="title">{escape(title)}</text>',
    ]
    for k in range(5):
        v = lo + span * k / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>')
        out.append(
            f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(fmt(v, info.get('percent', False)).replace('.0%', '%'))}</text>"
        )
    slot = plot_w / max(1, len(labels))
    bar_w = min(48.0, slot * 0.6)
    base = y(max(lo, 0.0)) if lo < 0 < hi else y(lo)
    for i, (label, stat) in enumerate(zip(labels, stats)):
        cx = left + slot * (i + 0.5)
        color = PALETTE[i % len(PALETTE)]
        mean = means[i]
        if _ok(mean):
            top_y = min(y(mean), base)
            bar_h = abs(base - y(mean))
            if bar_h < 2:  # a score at the axis (0%) still shows a sliver of its colour
                top_y, bar_h = top_y - (2 - bar_h), 2.0
            out.append(
                f'<rect x="{cx - bar_w / 2:.1f}" y="{top_y:.1f}" width="{bar_w:.1f}" '
                f'height="{bar_h:.1f}" fill="{color}"><title>{escape(label)}: '
                f"{escape(fmt_ci(stat, info.get('percent', False)))}</title></rect>"
            )
            if _ok(stat.get("low")) and _ok(stat.get("high")):
                y1, y2 = y(stat["low"]), y(stat["high"])
                out.append(
                    f'<rect x="{cx - 3:.1f}" y="{y2:.1f}" width="6" height="{max(y1 - y2, 0.0):.1f}" class="range"/>'
                )
                out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" class="whisker"/>')
                for yy in (y1, y2):
                    out.append(
                        f'<line x1="{cx - 6:.1f}" x2="{cx + 6:.1f}" y1="{yy:.1f}" y2="{yy:.1f}" class="whisker"/>'
                    )
            label_y = min(y(stat["high"]) if _ok(stat.get("high")) else y(mean), top_y) - 4
            out.append(
                f'<text x="{cx:.1f}" y="{label_y:.1f}" text-anchor="middle" class="value">'
                f"{escape(fmt_compact(stat, info.get('percent', False)))}</text>"
            )
        else:
            out.append(f'<text x="{cx:.1f}" y="{base - 4:.1f}" text-anchor="middle" class="tick">n/a</text>')
        out.append(
            f'<text x="{cx:.1f}" y="{height - bottom + 16}" text-anchor="middle" class="label">{escape(label)}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))


def delta_chart(rows: list[tuple[str, dict, bool]], *, width: int = 660) -> Markup:
    """A forest plot of deltas: one row per (suite, change) with the 95% CI as a line, 0 marked. ``rows`` are
    ``(label, delta, percent)``; values are drawn in points for percentages."""
    row_h, left, right, top = 26, 230, 70, 28
    height = top + row_h * len(rows) + 24
    values = [d[k] * (100 if pct else 1) for _, d, pct in rows for k in ("low", "high", "delta") if _ok(d.get(k))]
    extent = max([abs(v) for v in values] + [1.0]) * 1.1
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + plot_w * (v + extent) / (2 * extent)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Deltas between stages">',
        f'<text x="{left + plot_w / 2}" y="16" text-anchor="middle" class="title">Change between stages '
        "(95% CI; points for rates)</text>",
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 4}" y2="{height - 20}" class="zero"/>',
    ]
    for i, (label, d, pct) in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        scale = 100 if pct else 1
        color = "#009E73" if d["significant"] and d["delta"] > 0 else "#D55E00" if d["significant"] else "#777777"
        out.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" text-anchor="end" class="label">{escape(label)}</text>')
        if _ok(d.get("low")) and _ok(d.get("high")):
            out.append(
                f'<line x1="{x(d["low"] * scale):.1f}" x2="{x(d["high"] * scale):.1f}" y1="{cy:.1f}" '
                f'y2="{cy:.1f}" stroke="{color}" stroke-width="3"/>'
            )
        out.append(
            f'<circle cx="{x(d["delta"] * scale):.1f}" cy="{cy:.1f}" r="5" fill="{color}"><title>'
            f"{escape(label)}: {escape(fmt_ci(d, pct, signed=True))}</title></circle>"
        )
        out.append(
            f'<text x="{width - right + 6}" y="{cy + 4:.1f}" class="value">'
            f"{escape(fmt(d['delta'], pct, signed=True).replace(' pts', ''))}</text>"
        )
    for v in (-extent / 1.1, 0.0, extent / 1.1):
        out.append(f'<text x="{x(v):.1f}" y="{height - 6}" text-anchor="middle" class="tick">{v:+.1f}</text>')
    out.append("</svg>")
    return Markup("".join(out))


# --------------------------------------------------------------------------------------------------- context


def _delta(d: dict | None, percent: bool) -> dict[str, Any]:
    """A delta cell: its text with CI, whether the CI excludes 0 and the HTML class (up/down/flat)."""
    if not d:
        return {"text": "–", "significant": False, "cls": "flat"}
    cls = "up" if d["significant"] and d["delta"] > 0 else "down" if d["significant"] else "flat"
    return {"text": fmt_ci(d, percent, signed=True), "significant": bool(d["significant"]), "cls": cls}


def reasoning_cell(stat: dict | None) -> str:
    """A model's reasoning length on a suite (``summary[suite][label]["_reasoning"]``): the share of replies with
    reasoning, the mean reasoning length over all replies (tokens where counted, else characters) and the share cut
    inside their reasoning (no answer to score)."""
    if not stat:
        return "–"
    if _ok(stat.get("mean_tokens")):
        length = f"{stat['mean_tokens']:.0f} tokens"
    else:
        length = f"{stat.get('mean_chars', 0):.0f} chars"
    text = f"{100 * stat['with_reasoning']:.0f}% · {length}"
    if stat.get("unclosed"):
        text += f" · {100 * stat['unclosed']:.0f}% unclosed"
    return text


def _reasoning_cells(summary: dict, labels: list[str]) -> list[str] | None:
    """One :func:`reasoning_cell` per model, or None when no model's replies were split (plain models only)."""
    stats = [summary.get(label, {}).get("_reasoning") for label in labels]
    return [reasoning_cell(s) for s in stats] if any(stats) else None


def _stat_cell(stat: dict | None, percent: bool) -> str:
    return fmt_ci(stat, percent) + _invalid_note(stat)


def chart_width(labels: list[str], minimum: int = 320) -> int:
    """Wide enough for every bar's ``54% [44, 64]`` label."""
    return max(minimum, 64 + 86 * len(labels))


def _stop_cells(results: dict, suite: str, labels: list[str]) -> list[str] | None:
    stops = [stop_rate(results["summary"].get(suite, {}).get(label, {}).get("_generation")) for label in labels]
    return [fmt_ci(s, True) for s in stops] if any(stops) else None


def _suite_context(results: dict, suite: dict, labels: list[str], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    name = suite["name"]
    summary = results["summary"].get(name, {})
    primary = _score_info(suite, suite["primary"])
    scores, charts = [], []
    for score in suite["scores"]:
        stats = [with_interval(summary.get(label, {}).get(score["name"]), score) for label in labels]
        scores.append(
            {
                "name": score["name"],
                "cells": [_stat_cell(s, score["percent"]) for s in stats],
                "deltas": [_delta(_find_delta(results, name, score["name"], b, a), score["percent"]) for b, a in pairs],
            }
        )
        if any(stats):
            charts.append(bar_chart(score["name"], labels, stats, score, width=chart_width(labels, 260), height=200))
    generation = [summary.get(label, {}).get("_generation") for label in labels]
    stops = [stop_rate(g) for g in generation]
    deltas = [
        {
            "score": d["score"],
            "before": d["from"],
            "after": d["to"],
            **_delta(d, _score_info(suite, d["score"])["percent"]),
            "n": d["n"],
            "paired": bool(d["paired"]),
        }
        for d in results.get("deltas", [])
        if d["suite"] == name
    ]
    outcomes = [(label, summary.get(label, {}).get("_pairwise_outcomes")) for label in labels]
    groups = results.get("groups", {}).get(name, {})
    group_names = sorted({g for label in labels for g in groups.get(label, {})})
    examples = []
    for sid, records in _examples(results, suite):
        replies = []
        for r in records:
            rationale = next(
                (
                    d.get("rationale")
                    for d in r.get("details", {}).values()
                    if isinstance(d, dict) and d.get("rationale")
                ),
                None,
            )
            replies.append(
                {
                    "model": r["model"],
                    "output": r["output"],
                    "reasoning": r.get("reasoning") or None,
                    "rationale": rationale,
                    "scores": [
                        {"name": k, "value": fmt(v, _score_info(suite, k)["percent"])} for k, v in r["scores"].items()
                    ],
                }
            )
        examples.append({"id": sid, "prompt": records[0]["prompt"][-1]["content"], "replies": replies})
    return {
        "name": name,
        "primary": suite["primary"],
        "description": suite.get("description") or "",
        "sources": [
            "; ".join(f"{k}: {v}" for k, v in source.items() if k in SOURCE_KEYS) for source in suite.get("sources", [])
        ],
        "notes": list(suite.get("notes", [])),
        "charts": charts,
        "scores": scores,
        "mean_tokens": [f"{g['mean_tokens']:.1f}" if g else None for g in generation],
        "stop_rates": [fmt_ci(s, True) for s in stops] if any(stops) else None,
        "reasoning": _reasoning_cells(summary, labels),
        "deltas": deltas,
        "pairwise": [
            {"label": label, **{k: o[k] for k in ("win", "tie", "loss", "inconsistent", "invalid")}}
            for label, o in outcomes
            if o
        ],
        "groups": [
            {
                "name": g,
                "cells": [fmt(groups.get(label, {}).get(g, {}).get("mean"), primary["percent"]) for label in labels],
            }
            for g in group_names
        ]
        if len(group_names) > 1
        else [],
        "examples": examples,
    }


def build_context(results: dict) -> dict[str, Any]:
    """Everything both reports show, formatted once: the Markdown and the HTML template render this same dict."""
    labels = _labels(results)
    pairs = _consecutive(results)
    summary, headline_charts, delta_rows = [], [], []
    for suite in results["suites"]:
        name, primary = suite["name"], suite["primary"]
        info = _score_info(suite, primary)
        stats = [with_interval(results["summary"].get(name, {}).get(label, {}).get(primary), info) for label in labels]
        found = [_find_delta(results, name, primary, b, a) for b, a in pairs]
        summary.append(
            {
                "name": name,
                "primary": primary,
                "cells": [_stat_cell(s, info["percent"]) for s in stats],
                "deltas": [_delta(d, info["percent"]) for d in found],
                "reasoning": _reasoning_cells(results["summary"].get(name, {}), labels),
                "stop_rates": _stop_cells(results, name, labels),
            }
        )
        headline_charts.append(bar_chart(f"{name} · {primary}", labels, stats, info, width=chart_width(labels)))
        delta_rows += [(f"{name}: {b} → {a}", d, info["percent"]) for (b, a), d in zip(pairs, found) if d]
    judge = results.get("judge")
    return {
        "created": str(results.get("created", "?")),
        "version": str(results.get("posttrain_version", "?")),
        "complete": results.get("status") == "complete",
        "status": str(results.get("status")),
        "error": str(results.get("error")),
        "baseline": str(results.get("baseline")),
        "overlap": overlap_line(results.get("overlap")),
        "judge": {"source": str(judge["source"]), "kind": str(judge["kind"])} if judge else None,
        "models": [
            {
                "label": m["label"],
                "stage": m.get("stage", ""),
                "kind": m["kind"],
                "source": m["source"],
                "color": PALETTE[i % len(PALETTE)],
            }
            for i, m in enumerate(results["models"])
        ],
        "labels": labels,
        "pairs": [{"before": b, "after": a} for b, a in pairs],
        "headline_charts": headline_charts,
        "delta_chart": delta_chart(delta_rows) if delta_rows else None,
        "summary": summary,
        "wilson": any(
            (with_interval(stat, score) or {}).get("interval") == "wilson"
            for suite in results["suites"]
            for score in suite["scores"]
            for stat in (
                results["summary"].get(suite["name"], {}).get(label, {}).get(score["name"]) for label in labels
            )
        ),
        "side_by_side": side_by_side(results),
        "suites": [_suite_context(results, s, labels, pairs) for s in results["suites"]],
    }


# -------------------------------------------------------------------------------------------------- rendering


def render_markdown(results: dict) -> str:
    return render_template("report.md.j2", build_context(results))


def render_html(results: dict) -> str:
    return render_template("report.html.j2", build_context(results))


def write_reports(results: str | Path | dict, output_dir: str | Path | None = None) -> list[Path]:
    """Write report.md and report.html (beside results.json unless ``output_dir`` is given)."""
    if output_dir is None:
        if isinstance(results, dict):
            raise ValueError("output_dir is needed when results are given as a dict")
        output_dir = Path(results).parent
    context = build_context(load_results(results))
    output_dir = Path(output_dir)
    return [
        atomic_write_text(output_dir / "report.md", render_template("report.md.j2", context)),
        atomic_write_text(output_dir / "report.html", render_template("report.html.j2", context)),
    ]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m posttrain.evaluation.report RESULTS.json", file=sys.stderr)
        sys.exit(2)
    for written in write_reports(sys.argv[1]):
        print(written)
