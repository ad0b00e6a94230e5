"""Confidence intervals: bootstrap ones for per-suite means and for differences between models (stages), and the
Wilson score interval of a proportion (:func:`wilson_interval`).

Percentile bootstrap with a fixed seed, so a report is reproducible. A difference between two models is a *paired*
bootstrap when they were scored on the same samples (resampling sample ids, keeping each sample's two scores
together), which is much tighter than resampling the two models independently (used otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["delta_ci", "mean_ci", "wilson_interval"]

#: z of a two-sided 95% interval
Z95 = 1.959964


def _finite(values) -> np.ndarray:
    array = np.asarray([v for v in values if v is not None], dtype=float)
    return array[np.isfinite(array)]


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return float(low), float(high)


def mean_ci(
    values: Sequence[float | None], *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """``{"mean", "low", "high", "n"}`` for the mean of ``values`` (``None``/NaN are left out; ``n`` counts the
    rest). With fewer than two values the interval is the mean itself (or NaN without values)."""
    data = _finite(values)
    if data.size == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean = float(data.mean())
    if data.size == 1 or np.all(data == data[0]):
        return {"mean": mean, "low": mean, "high": mean, "n": int(data.size)}
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_resamples, data.size))].mean(axis=1)
    low, high = _interval(means, confidence)
    return {"mean": mean, "low": low, "high": high, "n": int(data.size)}


def delta_ci(
    before: Mapping[str, float | None],
    after: Mapping[str, float | None],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """CI of ``mean(after) - mean(before)``; arguments map sample id -> score.

    Paired over the ids both have a finite score for when the two id sets (with scores) are the same; otherwise
    the two means are resampled independently. Returns ``{"delta", "low", "high", "n", "paired", "significant"}``
    where ``significant`` says the interval excludes 0.
    """

    def ok(v):
        return v is not None and math.isfinite(v)

    a = {k: float(v) for k, v in before.items() if ok(v)}
    b = {k: float(v) for k, v in after.items() if ok(v)}
    rng = np.random.default_rng(seed)
    if a and set(a) == set(b):
        ids = sorted(a)
        diffs = np.array([b[i] - a[i] for i in ids])
        delta = float(diffs.mean())
        if np.all(diffs == diffs[0]):
            low = high = delta
        else:
            means = diffs[rng.integers(0, diffs.size, size=(n_resamples, diffs.size))].mean(axis=1)
            low, high = _interval(means, confidence)
        paired, n = True, len(ids)
    elif a and b:
        xa, xb = np.array(list(a.values())), np.array(list(b.values()))
        delta = float(xb.mean() - xa.mean())
        ma = xa[rng.integers(0, xa.size, size=(n_resamples, xa.size))].mean(axis=1)
        mb = xb[rng.integers(0, xb.size, size=(n_resamples, xb.size))].mean(axis=1)
        low, high = _interval(mb - ma, confidence)
        paired, n = False, min(xa.size, xb.size)
    else:
        return {"delta": math.nan, "low": math.nan, "high": math.nan, "n": 0, "paired": False, "significant": False}
    return {
        "delta": delta,
        "low": low,
        "high": high,
        "n": n,
        "paired": paired,
        "significant": bool(low > 0 or high < 0),
    }


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion ``successes / n``: sound for small ``n`` and at 0%
    and 100%, where a bootstrap interval collapses to a point. NaNs without samples."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (0.0 if successes == 0 else max(0.0, centre - half)), (1.0 if successes == n else min(1.0, centre + half))
