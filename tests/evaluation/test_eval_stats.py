"""Bootstrap confidence intervals: per-suite means and paired deltas between stages."""

from __future__ import annotations

import math
import random

from posttrain.stats import delta_ci, mean_ci


def test_mean_ci_covers_the_mean_and_shrinks_with_more_data():
    small = mean_ci([1, 0] * 10)
    large = mean_ci([1, 0] * 200)
    assert small["low"] < 0.5 < small["high"] and small["n"] == 20
    assert large["high"] - large["low"] < small["high"] - small["low"]


def test_mean_ci_edge_cases():
    assert mean_ci([])["n"] == 0 and math.isnan(mean_ci([])["mean"])
    assert mean_ci([None, float("nan"), 3.0]) == {"mean": 3.0, "low": 3.0, "high": 3.0, "n": 1}
    assert mean_ci([1, 1, 1]) == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 3}
    assert mean_ci([0, 1, 1, 0], seed=1) == mean_ci([0, 1, 1, 0], seed=1)  # reproducible


def test_paired_delta_detects_a_consistent_gain_that_unpaired_misses():
    rng = random.Random(0)
    difficulty = [rng.uniform(0, 10) for _ in range(40)]  # samples differ a lot from each other
    before = {f"s{i}": d for i, d in enumerate(difficulty)}
    after = {f"s{i}": d + 0.5 for i, d in enumerate(difficulty)}  # every sample gains 0.5
    paired = delta_ci(before, after)
    assert paired["paired"] and math.isclose(paired["delta"], 0.5) and paired["significant"]
    unpaired = delta_ci(before, {f"other{i}": v for i, v in enumerate(after.values())})
    assert not unpaired["paired"] and not unpaired["significant"]


def test_delta_of_identical_scores_is_zero_and_invalid_scores_are_left_out():
    scores = {"a": 1.0, "b": 0.0, "c": 1.0}
    d = delta_ci(scores, dict(scores))
    assert d["delta"] == 0 and d["low"] == d["high"] == 0 and not d["significant"]
    with_invalid = delta_ci({"a": 1.0, "b": None}, {"a": 1.0, "b": 0.0})
    assert not with_invalid["paired"]  # different valid ids: compared as independent samples
    assert delta_ci({}, {"a": 1.0})["n"] == 0
