"""The reports' SVG charts: bars with 95% interval whiskers, a forest plot of deltas, line charts of training curves.

Each chart is one inline ``<svg>`` (no JavaScript, nothing fetched), escaped and returned as :class:`Markup` ready for
a template. Used by the evaluation report (:mod:`posttrain.evaluation.report`: bars and deltas) and the pipeline
report (:mod:`posttrain.pipeline.report`: training curves); one colour per model or curve from :data:`PALETTE`.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from posttrain.evaluation.formatting import fmt, fmt_ci, fmt_compact, is_number

__all__ = ["PALETTE", "bar_chart", "chart_width", "delta_chart", "line_chart"]

# Okabe-Ito: distinguishable for colour-blind readers, one colour per model (stage)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _svg(width: int, height: int, label: str) -> str:
    """The opening ``<svg>`` tag of a chart (``label``: what a screen reader says)."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
    )


def _title(x: float, text: str) -> str:
    return f'<text x="{x}" y="16" text-anchor="middle" class="title">{escape(text)}</text>'


def chart_width(labels: list[str], minimum: int = 320) -> int:
    """Wide enough for every bar's ``54% [44, 64]`` label."""
    return max(minimum, 64 + 86 * len(labels))


def _axis_range(info: dict, values: list[float]) -> tuple[float, float]:
    if info.get("range"):
        return float(info["range"][0]), float(info["range"][1])
    finite = [v for v in values if is_number(v)] or [0.0, 1.0]
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
        _svg(width, height, title),
        _title(width / 2, title),
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
        if is_number(mean):
            top_y = min(y(mean), base)
            bar_h = abs(base - y(mean))
            if bar_h < 2:  # a score at the axis (0%) still shows a sliver of its colour
                top_y, bar_h = top_y - (2 - bar_h), 2.0
            out.append(
                f'<rect x="{cx - bar_w / 2:.1f}" y="{top_y:.1f}" width="{bar_w:.1f}" '
                f'height="{bar_h:.1f}" fill="{color}"><title>{escape(label)}: '
                f"{escape(fmt_ci(stat, info.get('percent', False)))}</title></rect>"
            )
            if is_number(stat.get("low")) and is_number(stat.get("high")):
                y1, y2 = y(stat["low"]), y(stat["high"])
                out.append(
                    f'<rect x="{cx - 3:.1f}" y="{y2:.1f}" width="6" height="{max(y1 - y2, 0.0):.1f}" class="range"/>'
                )
                out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" class="whisker"/>')
                for yy in (y1, y2):
                    out.append(
                        f'<line x1="{cx - 6:.1f}" x2="{cx + 6:.1f}" y1="{yy:.1f}" y2="{yy:.1f}" class="whisker"/>'
                    )
            label_y = min(y(stat["high"]) if is_number(stat.get("high")) else y(mean), top_y) - 4
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
    values = [d[k] * (100 if pct else 1) for _, d, pct in rows for k in ("low", "high", "delta") if is_number(d.get(k))]
    extent = max([abs(v) for v in values] + [1.0]) * 1.1
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + plot_w * (v + extent) / (2 * extent)

    out = [
        _svg(width, height, "Deltas between stages"),
        _title(left + plot_w / 2, "Change between stages (95% CI; points for rates)"),
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 4}" y2="{height - 20}" class="zero"/>',
    ]
    for i, (label, d, pct) in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        scale = 100 if pct else 1
        color = "#009E73" if d["significant"] and d["delta"] > 0 else "#D55E00" if d["significant"] else "#777777"
        out.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" text-anchor="end" class="label">{escape(label)}</text>')
        if is_number(d.get("low")) and is_number(d.get("high")):
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


def line_chart(
    title: str, values: list[float], *, width: int = 320, height: int = 200, color: str = PALETTE[0]
) -> Markup:
    """An SVG line chart of one logged series (x: logging step index)."""
    left, right, top, bottom = 48, 10, 28, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    lo, hi = min(values), max(values)
    span = (hi - lo) or abs(hi) or 1.0

    def xy(i: int, v: float) -> str:
        x = left + plot_w * (i / max(1, len(values) - 1))
        y = top + plot_h * (1 - (v - lo) / span)
        return f"{x:.1f},{y:.1f}"

    out = [
        _svg(width, height, title),
        _title(width / 2, title),
    ]
    for k in range(3):
        v = lo + span * k / 2
        y = top + plot_h * (1 - k / 2)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="tick">{v:.3g}</text>')
    points = " ".join(xy(i, v) for i, v in enumerate(values))
    out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
    out.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" class="tick">logging step '
        f"(n={len(values)}) · first {values[0]:.3g} → last {values[-1]:.3g}</text>"
    )
    out.append("</svg>")
    return Markup("".join(out))
