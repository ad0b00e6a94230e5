"""Evaluation reports: read a ``results.json`` and write ``report.md`` and ``report.html``.

A consumer of results files only (training code never imports it): the HTML is one self-contained page (inline CSS
and SVG charts, no JavaScript, nothing fetched) that opens with a few held-out prompts and every model's reply side by
side, marked pass/fail (:func:`side_by_side`), then the headline scores per suite as bar charts with 95% interval
whiskers and labels (``54% [44, 64]``; Wilson intervals for all-0/all-1 rates and stop rates), the deltas between
stages (base -> SFT -> DPO -> PPO) as a forest plot, tables with confidence intervals, breakdowns, judge failure
counts and example replies. Re-render any time::

    python -m posttrain.evaluation.report outputs/eval/results.json

Both files are Jinja2 templates (``templates/report.md.j2`` and ``templates/report.html.j2``, HTML autoescaped)
rendered from one context, :func:`build_context`: every number is formatted here (with
:mod:`posttrain.evaluation.formatting`; charts from :mod:`posttrain.evaluation.charts`), the templates only lay it
out. :func:`render_template` and :func:`build_context` are shared with :mod:`posttrain.pipeline.report`, whose
templates render each evaluation stage with the same macros (``templates/_parts.{html,md}.j2``).
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from posttrain.evaluation.charts import PALETTE, bar_chart, chart_width, delta_chart
from posttrain.evaluation.formatting import fmt, fmt_ci, is_number, score_info, stop_rate, with_interval
from posttrain.evaluation.overlap import overlap_line
from posttrain.storage import atomic_write_text

__all__ = [
    "TEMPLATES_DIR",
    "build_context",
    "load_results",
    "reasoning_cell",
    "render_html",
    "render_markdown",
    "render_template",
    "side_by_side",
    "write_reports",
]

EXAMPLES_PER_SUITE = 3
TEMPLATES_DIR = Path(__file__).with_name("templates")
SOURCE_KEYS = ("builtin", "package", "file", "distribution", "version", "licence", "num_samples")


def load_results(results: str | Path | dict) -> dict:
    if isinstance(results, dict):
        return results
    return json.loads(Path(results).read_text(encoding="utf-8"))


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
    if not is_number(value):
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
        info = score_info(suite, suite["primary"])
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
        info = score_info(suite, suite["primary"])
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
    if is_number(stat.get("mean_tokens")):
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


def _stop_cells(results: dict, suite: str, labels: list[str]) -> list[str] | None:
    stops = [stop_rate(results["summary"].get(suite, {}).get(label, {}).get("_generation")) for label in labels]
    return [fmt_ci(s, True) for s in stops] if any(stops) else None


def _group_rows(results: dict, suite: dict, labels: list[str]) -> list[dict[str, Any]]:
    """The headline score per group (task) of the suite and model; none when the suite has a single group."""
    groups = results.get("groups", {}).get(suite["name"], {})
    group_names = sorted({g for label in labels for g in groups.get(label, {})})
    if len(group_names) <= 1:
        return []
    percent = score_info(suite, suite["primary"])["percent"]
    return [
        {"name": g, "cells": [fmt(groups.get(label, {}).get(g, {}).get("mean"), percent) for label in labels]}
        for g in group_names
    ]


def _example_replies(results: dict, suite: dict) -> list[dict[str, Any]]:
    """The suite's first few prompts with every model's reply, its scores and the judge's rationale."""
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
                        {"name": k, "value": fmt(v, score_info(suite, k)["percent"])} for k, v in r["scores"].items()
                    ],
                }
            )
        examples.append({"id": sid, "prompt": records[0]["prompt"][-1]["content"], "replies": replies})
    return examples


def _suite_context(results: dict, suite: dict, labels: list[str], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """One suite's section: every score per model with its CI and deltas, charts, generation and reasoning lengths,
    pairwise outcomes, per-group scores and example replies."""
    name = suite["name"]
    summary = results["summary"].get(name, {})
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
    deltas = [
        {
            "score": d["score"],
            "before": d["from"],
            "after": d["to"],
            **_delta(d, score_info(suite, d["score"])["percent"]),
            "n": d["n"],
            "paired": bool(d["paired"]),
        }
        for d in results.get("deltas", [])
        if d["suite"] == name
    ]
    outcomes = [(label, summary.get(label, {}).get("_pairwise_outcomes")) for label in labels]
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
        "stop_rates": _stop_cells(results, name, labels),
        "reasoning": _reasoning_cells(summary, labels),
        "deltas": deltas,
        "pairwise": [
            {"label": label, **{k: o[k] for k in ("win", "tie", "loss", "inconsistent", "invalid")}}
            for label, o in outcomes
            if o
        ],
        "groups": _group_rows(results, suite, labels),
        "examples": _example_replies(results, suite),
    }


def build_context(results: dict) -> dict[str, Any]:
    """Everything both reports show, formatted once: the Markdown and the HTML template render this same dict."""
    labels = _labels(results)
    pairs = _consecutive(results)
    summary, headline_charts, delta_rows = [], [], []
    for suite in results["suites"]:
        name, primary = suite["name"], suite["primary"]
        info = score_info(suite, primary)
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
