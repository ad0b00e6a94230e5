"""How reports show numbers: scores and rates, their 95% intervals, chart labels, Wilson intervals for rates
(:func:`posttrain.stats.wilson_interval`).

Shared by :mod:`posttrain.evaluation.report` (tables) and :mod:`posttrain.evaluation.charts` (SVG labels).
"""

from __future__ import annotations

import math
from typing import Any

from posttrain.stats import wilson_interval

__all__ = ["fmt", "fmt_ci", "fmt_compact", "is_number", "score_info", "stop_rate", "with_interval"]


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): something a table or chart can show."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, percent: bool, *, signed: bool = False) -> str:
    """A score for a table: ``12.3%`` (``+4.5 pts`` when signed) for rates, ``0.12`` otherwise, ``–`` if missing."""
    if not is_number(value):
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
    if not is_number(value):
        return "–"
    text = fmt(value, percent, signed=signed)
    if is_number(stat.get("low")) and is_number(stat.get("high")):
        scale, spec = (100, ".1f") if percent else (1, ".2f")
        spec = ("+" if signed else "") + spec
        text += f" [{stat['low'] * scale:{spec}}, {stat['high'] * scale:{spec}}]"
    return text


def fmt_compact(stat: dict | None, percent: bool) -> str:
    """A chart label: ``54% [44, 64]`` (whole percentage points) or ``6.25 [5.80, 6.70]`` for other scores."""
    value = (stat or {}).get("delta", (stat or {}).get("mean"))
    if not is_number(value):
        return "–"

    def one(v: float) -> str:
        return f"{100 * v:.0f}" if percent else f"{v:.2f}"

    text = one(value) + ("%" if percent else "")
    if is_number(stat.get("low")) and is_number(stat.get("high")):
        text += f" [{one(stat['low'])}, {one(stat['high'])}]"
    return text


def with_interval(stat: dict | None, info: dict) -> dict | None:
    """``stat`` with a usable 95% interval: a rate on which every sample scored the same (all 0 or all 1: the
    bootstrap interval is the single point [0, 0]) gets the Wilson score interval of its ``n`` samples instead,
    marked ``"interval": "wilson"``. Anything else is returned as it is."""
    if not stat or not info.get("percent"):
        return stat
    mean, n = stat.get("mean"), stat.get("n")
    if (
        is_number(mean)
        and mean in (0.0, 1.0)
        and isinstance(n, int)
        and n > 0
        and (not is_number(stat.get("low")) or stat.get("low") == stat.get("high"))
    ):
        low, high = wilson_interval(round(mean * n), n)
        return {**stat, "low": low, "high": high, "interval": "wilson"}
    return stat


def stop_rate(generation: dict | None) -> dict | None:
    """A model's stop rate on a suite (``summary[suite][label]["_generation"]``: the share of replies that ended
    before the token budget) as a statistic with its 95% Wilson interval."""
    if not generation or not generation.get("samples") or not is_number(generation.get("stop_rate")):
        return None
    n = int(generation["samples"])
    stopped = round(generation["stop_rate"] * n)
    low, high = wilson_interval(stopped, n)
    return {"mean": generation["stop_rate"], "low": low, "high": high, "n": n, "stopped": stopped}


def score_info(suite: dict, name: str) -> dict:
    """How suite ``suite`` (an entry of ``results["suites"]``) shows score ``name``: percent or not, its range."""
    return next((s for s in suite["scores"] if s["name"] == name), {"percent": False})
