"""Reward-hacking guard for the online RL stages: the policy finding replies a learned reward scores high while they
get worse by every other measure.

Every step the guard records the *proxy* reward (the weighted sum of the components that are not rule checks: a
reward model, a learned or hand-made score), the *rule* pass rate (the rule-check components: the task's own check and
other checks), the reply length, the distinct-bigram ratio of the replies (repetition) and the KL to the start model.
Comparing the mean of the last ``window`` steps with the first ``window`` steps, it fires when

* the proxy reward rises while the rule pass rate falls (by more than ``min_drop``),
* replies run away in length (1.5 x longer and at 90% of the token budget), or
* replies turn repetitive (the distinct-bigram ratio falls below 70% of where it started).

``hacking_guard: warn`` prints each finding once (and logs it); ``stop`` also ends training at that step and keeps
the best adapter, and says which: the start adapter, the one of the best training rule pass rate and the last one
are scored on the held-out prompts and the best held-out task score is kept (the best training rule pass rate without
held-out prompts), in PPO, GRPO and RLOO alike (:class:`posttrain.rl.heldout.BestAdapter`). ``off`` records
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODES = ("off", "warn", "stop")
RULE_REWARDS = frozenset({"task"})  # plus every rule check by name; a reward model is a proxy


def distinct_bigram_ratio(token_ids: list[int]) -> float:
    """Distinct bigrams / bigrams of one reply (1.0 for replies too short to repeat)."""
    if len(token_ids) < 3:
        return 1.0
    bigrams = list(zip(token_ids, token_ids[1:]))
    return len(set(bigrams)) / len(bigrams)


@dataclass
class HackingGuard:
    mode: str = "warn"
    proxy: tuple[str, ...] = ()  # reward components that are not rule checks
    rules: tuple[str, ...] = ()  # rule-check components
    weights: dict[str, float] = field(default_factory=dict)
    window: int = 3
    max_length: int | None = None
    min_drop: float = 0.05
    history: list[dict[str, float]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def for_rewards(cls, names, weights, *, mode: str, window: int, max_length: int | None, rule_names) -> HackingGuard:
        proxy = tuple(n for n in names if n not in rule_names)
        rules = tuple(n for n in names if n in rule_names)
        return cls(mode=mode, proxy=proxy, rules=rules, weights=dict(zip(names, weights, strict=True)),
                   window=window, max_length=max_length)  # fmt: skip

    @property
    def should_stop(self) -> bool:
        return self.mode == "stop" and bool(self.findings)

    def _point(self, metrics: dict[str, float]) -> dict[str, float]:
        def component(name: str) -> float:
            return float(metrics.get(f"reward/{name}", float("nan")))

        point = {
            "proxy": sum(self.weights.get(n, 1.0) * component(n) for n in self.proxy) if self.proxy else float("nan"),
            "rule": sum(component(n) for n in self.rules) / len(self.rules) if self.rules else float("nan"),
            "length": float(metrics.get("response_length", float("nan"))),
            "distinct": float(metrics.get("distinct_2", float("nan"))),
            "kl": float(metrics.get("kl", float("nan"))),
        }
        return point

    def observe(self, step: int, metrics: dict[str, float]) -> list[str]:
        """Record one step's metrics; returns the new findings (each kind is reported once)."""
        if self.mode == "off":
            return []
        self.history.append({"step": step, **self._point(metrics)})
        w = self.window
        if len(self.history) < 2 * w:
            return []

        def mean(key: str, part: list[dict]) -> float:
            return sum(p[key] for p in part) / len(part)

        first, last = self.history[:w], self.history[-w:]
        found = []
        if self.proxy and self.rules:
            proxy_up = mean("proxy", last) - mean("proxy", first)
            rule_down = mean("rule", first) - mean("rule", last)
            if proxy_up > 0 and rule_down > self.min_drop:
                found.append(("proxy_up_rules_down", f"the proxy reward rose by {proxy_up:+.3f} while the rule checks' "
                              f"pass rate fell by {rule_down:.3f}"))  # fmt: skip
        length_first, length_last = mean("length", first), mean("length", last)
        if self.max_length and length_last >= 1.5 * length_first and length_last >= 0.9 * self.max_length:
            found.append(("length", f"replies grew from {length_first:.1f} to {length_last:.1f} tokens, at the "
                          f"{self.max_length}-token budget"))  # fmt: skip
        distinct_first, distinct_last = mean("distinct", first), mean("distinct", last)
        if distinct_last < 0.7 * distinct_first:
            found.append(("repetition", f"the replies' distinct-bigram ratio fell from {distinct_first:.2f} to "
                          f"{distinct_last:.2f}"))  # fmt: skip
        reported = {f["kind"] for f in self.findings}
        new = [(kind, text) for kind, text in found if kind not in reported]
        for kind, text in new:
            self.findings.append({"step": step, "kind": kind, "message": text})
        return [f"step {step}: possible reward hacking: {text}" for _, text in new]

    def best_step(self) -> int | None:
        """The step with the highest rule pass rate so far (the one ``stop`` restores)."""
        scored = [p for p in self.history if p["rule"] == p["rule"]]
        return max(scored, key=lambda p: p["rule"])["step"] if scored else None

    def summary(self) -> dict[str, Any]:
        return {"mode": self.mode, "proxy": list(self.proxy), "rules": list(self.rules), "findings": self.findings,
                "curves": self.history}  # fmt: skip
