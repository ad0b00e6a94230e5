"""Per-suite, per-model aggregates of the scored records: means with bootstrap 95% CIs, per-group means, generation
and reasoning lengths, pairwise outcomes, and the deltas between stages (paired where the samples match).

:func:`summarize` fills ``results["summary"]``, ``["groups"]`` and ``["deltas"]`` from ``results["samples"]``; the
statistics are :mod:`posttrain.stats`'.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from posttrain.stats import delta_ci, mean_ci

__all__ = ["summarize"]


def summarize(results: dict, *, n_resamples: int = 2000, seed: int = 0) -> None:
    """Fill ``results["summary"]``, ``["groups"]`` and ``["deltas"]`` from ``results["samples"]``."""
    labels = [m["label"] for m in results["models"]]
    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in results["samples"]:
        by_key[(record["suite"], record["model"])].append(record)
    summary: dict[str, dict] = {}
    groups: dict[str, dict] = {}
    deltas: list[dict] = []
    for suite in results["suites"]:
        name = suite["name"]
        summary[name], groups[name] = {}, {}
        for label in labels:
            records = by_key.get((name, label), [])
            summary[name][label] = _model_stats(suite, records, n_resamples=n_resamples, seed=seed)
            groups[name][label] = _group_stats(suite, records, seed=seed)
        deltas += _deltas(suite, labels, by_key, n_resamples=n_resamples, seed=seed)
    results["summary"], results["groups"], results["deltas"] = summary, groups, deltas


def _model_stats(suite: dict, records: list[dict], *, n_resamples: int, seed: int) -> dict[str, Any]:
    """One model on one suite: each score's mean with its CI (and how many values were invalid), then
    ``_generation`` (reply lengths, stop rate), ``_reasoning`` and ``_pairwise_outcomes`` where they apply."""
    stats = {}
    for score in suite["scores"]:
        values = [r["scores"].get(score["name"]) for r in records if score["name"] in r["scores"]]
        if not values:
            continue
        ci = mean_ci(values, n_resamples=n_resamples, seed=seed)
        invalid = sum(1 for v in values if v is None or (isinstance(v, float) and math.isnan(v)))
        stats[score["name"]] = {**ci, "total": len(values), "invalid": invalid}
    if not records:
        return stats
    stats["_generation"] = {
        "samples": len(records),
        "mean_tokens": sum(r["num_tokens"] for r in records) / len(records),
        "stop_rate": sum(bool(r["finished"]) for r in records) / len(records),
    }
    reasoning = _reasoning_summary(records)
    if reasoning is not None:
        stats["_reasoning"] = reasoning
    outcomes = [
        r["details"].get(s["name"], {}).get("outcome")
        for r in records
        for s in suite["scores"]
        if s["kind"] == "pairwise" and s["name"] in r["details"]
    ]
    if outcomes:
        stats["_pairwise_outcomes"] = {o: outcomes.count(o) for o in ("win", "tie", "loss", "inconsistent")}
        stats["_pairwise_outcomes"]["invalid"] = outcomes.count(None)
    return stats


def _group_stats(suite: dict, records: list[dict], *, seed: int) -> dict[str, dict]:
    """The headline score's mean and CI per group (a builtin suite's task) of one model's records."""
    per_group: dict[str, list] = defaultdict(list)
    for r in records:
        if r.get("group") is not None:
            per_group[str(r["group"])].append(r["scores"].get(suite["primary"]))
    return {g: mean_ci(v, n_resamples=200, seed=seed) for g, v in sorted(per_group.items())}


def _deltas(suite: dict, labels: list[str], by_key: dict, *, n_resamples: int, seed: int) -> list[dict]:
    """Every score's change from each model to the next, and from the first (the baseline) to each later one."""
    name = suite["name"]
    pairs = [(labels[i - 1], labels[i]) for i in range(1, len(labels))]
    pairs += [(labels[0], labels[i]) for i in range(2, len(labels))]
    deltas = []
    for before, after in pairs:
        for score in suite["scores"]:
            a = {r["id"]: r["scores"].get(score["name"]) for r in by_key.get((name, before), [])}
            b = {r["id"]: r["scores"].get(score["name"]) for r in by_key.get((name, after), [])}
            d = delta_ci(a, b, n_resamples=n_resamples, seed=seed)
            if d["n"]:
                deltas.append({"suite": name, "score": score["name"], "from": before, "to": after, **d})
    return deltas


def _reasoning_summary(records: list[dict]) -> dict[str, Any] | None:
    """Reasoning length of a model's replies: the share with reasoning, mean characters and tokens over all replies
    (0 for replies without: comparable between thinking on and off) and the share cut inside their reasoning."""
    if not any("reasoning" in r for r in records):
        return None
    n = len(records)
    tokens = [r.get("reasoning_tokens") for r in records]
    return {
        "with_reasoning": sum(bool(r.get("reasoning")) for r in records) / n,
        "mean_chars": sum(r.get("reasoning_chars", 0) for r in records) / n,
        "mean_tokens": sum(tokens) / n if all(t is not None for t in tokens) else None,
        "unclosed": sum(r.get("reasoning_closed") is False for r in records) / n,
    }
