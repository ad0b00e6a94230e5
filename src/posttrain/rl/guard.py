"""Reward-hacking guard for the online RL stages: the policy finding replies a learned reward scores high while they
get worse by every other measure.

Every step the guard records the *proxy* reward (the weighted sum of the components that are not rule checks: a
reward model, a learned or hand-made score), the *rule* pass rate (the rule-check components: the task's own check and
other checks) with the number of replies they scored, the reply length, the distinct-bigram ratio of the replies
(repetition) with the number of replies, and the KL to the start model. Each step from step ``2 * window`` on it
compares the last ``window`` steps with the first ``window`` steps (one *look*) and fires when

* the proxy reward rises while the rule pass rate falls, the fall significant by a one-sided exact test (Fisher's, on
  the pass and reply counts pooled over each window),
* replies run away in length (1.5 x longer and at 90% of the token budget: a fixed rule, not a test), or
* replies turn repetitive: the distinct-bigram ratio falls below 70% of where it started *and* the fall is significant
  by a one-sided Hoeffding bound (each reply's ratio lies in [0, 1], so the bound holds whatever its distribution).

The tests share ``alpha`` (``hacking_guard_alpha``, default 0.05): each of the two gets ``alpha / 2`` (all of it when
there is no proxy-vs-rule comparison), divided by the number of looks a run makes (Bonferroni: ``max_steps - 2 *
window + 1``; without a known ``max_steps`` look ``k`` gets ``6 / (pi^2 k^2)`` of it, which sums to at most the
whole), so a run whose pass rate and repetition do not change stops falsely with probability at most ``alpha``.

That counts replies as independent, and GRPO/RLOO's are not: the ``num_generations`` replies to one prompt pass (and
repeat) alike, an easy prompt's all, a hard one's none, so pooled counts that treat them as independent overstate the
evidence (``benchmarks/guard_calibration.py``: 4 or 8 replies to each of 2-16 prompts a step of heterogeneous
difficulty, 20 steps, 8-37% of runs without any change stopped; with the correction below 0.2-3.5%). Where the metrics carry each check's sums by prompt (``groups/<name>``, ``group_sum``,
``group_sq``, ``group_between``: :class:`posttrain.training.rl_common.GuardTally` records them), both tests divide
their sample sizes by the design effect ``1 + (m - 1) ICC`` (:func:`design_effect`: m replies a prompt, the
intra-prompt correlation estimated from both windows by one-way ANOVA; Rao and Scott's correction), between 1 (replies
to one prompt no more alike than any two) and m (all alike: a prompt counts once). PPO samples one reply a prompt and
needs none. :func:`simulate_false_stops` measures it (``benchmarks/guard_calibration.py``, 16 replies a step, ``window``
3, the proxy rising every step so that the rule test alone decides): with no change the old rule (a 0.05 fall between
the window means) stopped 38-44% of 8-step and 67-75% of 20-step runs, this one about 1%; a pass rate falling
0.6 -> 0.3 at the middle step is caught in about 75% of runs. Steps without reply counts (neither ``scored/<name>``
nor ``replies`` in the metrics) cannot be tested and never fire the rule or repetition check.

``hacking_guard: warn`` logs each finding once as a warning; ``stop`` also ends training at that step and keeps
the best adapter, and says which: the start adapter, the one of the best training rule pass rate and the last one
are scored on the held-out prompts and the best held-out task score is kept (the best training rule pass rate without
held-out prompts), in PPO, GRPO and RLOO alike (:class:`posttrain.rl.guard_stop.GuardStop`, choosing with
:class:`posttrain.rl.heldout.BestAdapter`). ``off`` records nothing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

MODES = ("off", "warn", "stop")
RULE_REWARDS = frozenset({"task"})  # plus every rule check by name; a reward model is a proxy
REPETITION_RATIO = 0.7  # the repetition check fires below this fraction of the starting distinct-bigram ratio


def distinct_bigram_ratio(token_ids: list[int]) -> float:
    """Distinct bigrams / bigrams of one reply (1.0 for replies too short to repeat)."""
    if len(token_ids) < 3:
        return 1.0
    bigrams = list(zip(token_ids, token_ids[1:]))
    return len(set(bigrams)) / len(bigrams)


def check_alpha(alpha: float, key: str = "hacking_guard_alpha") -> float:
    """``alpha`` if it is a false-alarm rate the guard accepts (0 < alpha < 0.5), else ValueError naming ``key``."""
    if not isinstance(alpha, int | float) or not 0 < alpha < 0.5:
        raise ValueError(f"{key} must be between 0 and 0.5, both excluded (got {alpha!r})")
    return float(alpha)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def drop_p_value(passes_first: int, n_first: int, passes_last: int, n_last: int) -> float:
    """One-sided p-value of Fisher's exact test that the pass rate fell from the first sample to the last: the chance,
    with no change and the total passes fixed, that the first sample holds ``passes_first`` passes or more."""
    if n_first <= 0 or n_last <= 0:
        return 1.0
    total, passes = n_first + n_last, passes_first + passes_last
    low, high = max(passes_first, passes - n_last), min(passes, n_first)
    if low > high:
        return 0.0
    denominator = _log_comb(total, n_first)
    p = sum(math.exp(_log_comb(passes, k) + _log_comb(total - passes, n_first - k) - denominator)
            for k in range(low, high + 1))  # fmt: skip
    return min(p, 1.0)


def mean_drop_p_value(mean_first: float, n_first: float, mean_last: float, n_last: float) -> float:
    """One-sided Hoeffding bound on the chance of a fall this large between the means of two samples of [0, 1]
    values (``n_first`` and ``n_last`` of them) that have the same expectation."""
    drop = mean_first - mean_last
    if not (n_first > 0 and n_last > 0) or not drop > 0:
        return 1.0
    return math.exp(-2 * drop * drop / (1 / n_first + 1 / n_last))


# the per-step metrics ``<key>/<name>`` of replies in groups (GRPO/RLOO), for the design effect
GROUP_KEYS = ("groups", "group_sum", "group_sq", "group_between")


def group_stats(scores, keys) -> dict[str, float]:
    """The sums a design effect needs of one batch's scores (``None``/NaN skipped), the replies grouped by ``keys``
    (their prompt): ``groups`` (groups with a score), ``group_sum`` (sum of scores), ``group_sq`` (sum of squared
    scores) and ``group_between`` (sum over the groups of their score sum squared over their size)."""
    sums: dict[Any, list[float]] = {}
    for score, key in zip(scores, keys, strict=True):
        if score is not None and score == score:
            total = sums.setdefault(key, [0.0, 0.0])
            total[0] += float(score)
            total[1] += 1
    return {
        "groups": float(len(sums)),
        "group_sum": sum(t for t, _ in sums.values()),
        "group_sq": sum(float(s) ** 2 for s in scores if s is not None and s == s),
        "group_between": sum(t * t / m for t, m in sums.values()),
    }


def design_effect(windows: list[tuple[float, float, float, float, float]]) -> float:
    """How many times fewer independent replies a sample of grouped replies is worth (Kish's design effect ``1 + (m -
    1) ICC``, the ICC by one-way ANOVA, each window about its own mean; Rao and Scott's correction divides the counts of
    a test by it): ``windows`` are ``(groups, replies, sum, sum of squares, sum over groups of group sum^2 / group
    size)`` of each sample. 1 for ungrouped replies; at most the mean group size (every group's replies alike)."""
    k = sum(w[0] for w in windows)
    n = sum(w[1] for w in windows)
    if k <= 0 or n <= k:
        return 1.0
    m = n / k
    between = sum(w[4] - w[2] * w[2] / w[1] for w in windows if w[1] > 0)
    within = sum(w[3] - w[4] for w in windows)
    df_between = k - sum(1 for w in windows if w[1] > 0)
    if df_between < 1:
        return m  # one group per sample: nothing shows how alike a group's replies are; assume alike
    msb, msw = max(between, 0.0) / df_between, max(within, 0.0) / (n - k)
    denominator = msb + (m - 1) * msw
    icc = (msb - msw) / denominator if denominator > 0 else 0.0
    return min(max(1 + (m - 1) * icc, 1.0), m)


def _finite(x: float) -> bool:
    return x == x and not math.isinf(x)


@dataclass
class HackingGuard:
    mode: str = "warn"
    proxy: tuple[str, ...] = ()  # reward components that are not rule checks
    rules: tuple[str, ...] = ()  # rule-check components
    weights: dict[str, float] = field(default_factory=dict)
    window: int = 3
    max_length: int | None = None
    alpha: float = 0.05  # the whole run's false-stop rate (both tests together)
    max_steps: int | None = None  # the looks the run makes (Bonferroni); None: a spending series over the looks
    history: list[dict[str, float]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.alpha = check_alpha(self.alpha)

    @classmethod
    def for_rewards(cls, names, weights, *, mode: str, window: int, max_length: int | None, rule_names,
                    alpha: float = 0.05, max_steps: int | None = None) -> HackingGuard:  # fmt: skip
        proxy = tuple(n for n in names if n not in rule_names)
        rules = tuple(n for n in names if n in rule_names)
        return cls(mode=mode, proxy=proxy, rules=rules, weights=dict(zip(names, weights, strict=True)),
                   window=window, max_length=max_length, alpha=alpha,
                   max_steps=max_steps if max_steps and max_steps > 0 else None)  # fmt: skip

    @property
    def should_stop(self) -> bool:
        return self.mode == "stop" and bool(self.findings)

    @property
    def tests(self) -> int:
        """How many tests share ``alpha``: the rule drop (with proxy and rule components) and repetition."""
        return 2 if self.proxy and self.rules else 1

    def look_alpha(self, look: int) -> float:
        """The false-alarm rate one test may spend at look ``look`` (1 = the first comparison, at step 2 x window)."""
        share = self.alpha / self.tests
        if self.max_steps:
            return share / max(self.max_steps - 2 * self.window + 1, 1)
        return share * 6 / (math.pi**2 * look**2)

    def _point(self, metrics: dict[str, float]) -> dict[str, float]:
        def get(key: str) -> float:
            value = metrics.get(key)
            return float("nan") if value is None else float(value)

        def component(name: str) -> float:
            return get(f"reward/{name}")

        replies = get("replies")
        # the replies the rule checks scored: the fewest of any check (a check may not apply to every prompt); a mean
        # of several [0, 1] checks per reply varies no more than one check's pass rate over that many replies
        scored = [get(f"scored/{n}") if _finite(get(f"scored/{n}")) else replies for n in self.rules]
        point = {
            "proxy": sum(self.weights.get(n, 1.0) * component(n) for n in self.proxy) if self.proxy else float("nan"),
            "rule": sum(component(n) for n in self.rules) / len(self.rules) if self.rules else float("nan"),
            "rule_n": min(scored) if scored else float("nan"),
            "length": get("response_length"),
            "distinct": get("distinct_2"),
            "replies": replies,
            "kl": get("kl"),
        }
        # replies in groups (GRPO/RLOO: num_generations replies a prompt): each check's group sums, for the design
        # effect that corrects the tests' sample sizes (absent for PPO's one reply a prompt)
        groups = {}
        for name in (*self.rules, "distinct_2"):
            stats = [get(f"{key}/{name}") for key in GROUP_KEYS]
            n = get(f"scored/{name}") if name != "distinct_2" else replies
            if name in self.rules and not _finite(n):
                n = replies
            if all(_finite(x) for x in (*stats, n)) and stats[0] > 0:
                groups[name] = [stats[0], n, *stats[1:]]
        if groups:
            point["groups"] = groups
        return point

    def design_effect(self, names, first: list[dict], last: list[dict]) -> float:
        """The largest design effect of the checks ``names`` between the windows ``first`` and ``last`` (1 where a
        step has no group sums: replies to different prompts, as in PPO)."""
        effects = []
        for name in names:
            windows = []
            for part in (first, last):
                rows = [p.get("groups", {}).get(name) for p in part]
                if any(r is None for r in rows):
                    return 1.0 if not effects else max(effects)
                windows.append(tuple(sum(r[i] for r in rows) for i in range(5)))
            effects.append(design_effect(windows))
        return max(effects, default=1.0)

    def _pooled(self, part: list[dict], key: str, n_key: str) -> tuple[float, float]:
        """(value sum, count) of ``key`` weighted by ``n_key`` over the steps of ``part``; count 0 if any is missing."""
        if not all(_finite(p[key]) and _finite(p[n_key]) and p[n_key] > 0 for p in part):
            return 0.0, 0.0
        return sum(p[key] * p[n_key] for p in part), sum(p[n_key] for p in part)

    def observe(self, step: int, metrics: dict[str, float]) -> list[str]:
        """Record one step's metrics; returns the new findings (each kind is reported once)."""
        if self.mode == "off":
            return []
        self.history.append({"step": step, **self._point(metrics)})
        w = self.window
        if len(self.history) < 2 * w:
            return []
        look = len(self.history) - 2 * w + 1
        level = self.look_alpha(look)

        def mean(key: str, part: list[dict]) -> float:
            return sum(p[key] for p in part) / len(part)

        first, last = self.history[:w], self.history[-w:]
        found = []
        if self.proxy and self.rules:
            proxy_up = mean("proxy", last) - mean("proxy", first)
            (pass_first, n_first), (pass_last, n_last) = (
                self._pooled(part, "rule", "rule_n") for part in (first, last)
            )
            if proxy_up > 0 and n_first and n_last:
                d = self.design_effect(self.rules, first, last)  # grouped replies count as fewer independent ones
                p = drop_p_value(round(pass_first / d), max(round(n_first / d), 1), round(pass_last / d),
                                 max(round(n_last / d), 1))  # fmt: skip
                if p <= level:
                    grouped = f", design effect {d:.2f}" if d > 1 else ""
                    found.append(("proxy_up_rules_down", f"the proxy reward rose by {proxy_up:+.3f} while the rule "
                                  f"checks' pass rate fell from {pass_first / n_first:.3f} ({n_first:.0f} replies) to "
                                  f"{pass_last / n_last:.3f} ({n_last:.0f}){grouped}, p = {p:.2g} <= "
                                  f"{level:.2g}"))  # fmt: skip
        length_first, length_last = mean("length", first), mean("length", last)
        if self.max_length and length_last >= 1.5 * length_first and length_last >= 0.9 * self.max_length:
            found.append(("length", f"replies grew from {length_first:.1f} to {length_last:.1f} tokens, at the "
                          f"{self.max_length}-token budget"))  # fmt: skip
        (d_first, dn_first), (d_last, dn_last) = (self._pooled(part, "distinct", "replies") for part in (first, last))
        if dn_first and dn_last and d_last / dn_last < REPETITION_RATIO * d_first / dn_first:
            d = self.design_effect(("distinct_2",), first, last)
            p = mean_drop_p_value(d_first / dn_first, dn_first / d, d_last / dn_last, dn_last / d)
            if p <= level:
                found.append(("repetition", f"the replies' distinct-bigram ratio fell from {d_first / dn_first:.2f} "
                              f"to {d_last / dn_last:.2f}, p <= {p:.2g} <= {level:.2g}"))  # fmt: skip
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
        return {"mode": self.mode, "proxy": list(self.proxy), "rules": list(self.rules), "alpha": self.alpha,
                "max_steps": self.max_steps, "findings": self.findings, "curves": self.history}  # fmt: skip


def old_rule_fires(first: list[float], last: list[float], proxy_up: bool, min_drop: float = 0.05) -> bool:
    """The rule this guard replaced: a fall of more than ``min_drop`` between the window means (with the proxy up)."""
    return proxy_up and sum(first) / len(first) - sum(last) / len(last) > min_drop


def simulate_false_stops(p: float, *, steps: int, replies: int = 16, window: int = 3, runs: int = 2000,
                         alpha: float = 0.05, drop_to: float | None = None, seed: int = 0,
                         proxy_rising: bool = False, group_size: int = 1,
                         concentration: float | None = None) -> dict[str, float]:  # fmt: skip
    """The share of simulated runs the proxy-vs-rule check stops, old rule and new: each step ``replies`` replies
    pass with probability ``p`` (``drop_to`` from the middle step on, for power; None: no change, for false stops),
    and the proxy reward is a step mean of ``replies`` standard-normal scores that does not change (``proxy_rising``:
    it rises every step, as under reward hacking and the worst case for false stops). Seeded, pure Python.

    ``group_size`` > 1 samples as GRPO/RLOO do: ``replies / group_size`` prompts a step, ``group_size`` replies each,
    every prompt with its own pass probability (Beta with mean ``p`` and ``concentration`` a + b: prompts of
    heterogeneous difficulty; None: all alike), so a group's replies are correlated. Then ``new_rule`` is the guard
    given the group sums (its design-effect correction) and ``new_rule_ungrouped`` the guard counting the same replies
    as independent."""
    rng = random.Random(seed)
    prompts = max(replies // group_size, 1)
    guard = HackingGuard(mode="stop", proxy=("proxy",), rules=("task",), window=window, alpha=alpha, max_steps=steps)
    plain = HackingGuard(mode="stop", proxy=("proxy",), rules=("task",), window=window, alpha=alpha, max_steps=steps)
    old = new = ungrouped = 0
    for _ in range(runs):
        guard.history, guard.findings, plain.history, plain.findings = [], [], [], []
        fired_old = False
        rates, proxies = [], []
        for step in range(1, steps + 1):
            rate = drop_to if drop_to is not None and step > steps // 2 else p
            if group_size > 1:
                scores, keys = [], []
                for prompt in range(prompts):
                    q = rng.betavariate(rate * concentration, (1 - rate) * concentration) if concentration else rate
                    scores += [float(rng.random() < q) for _ in range(group_size)]
                    keys += [prompt] * group_size
            else:
                scores, keys = [float(rng.random() < rate) for _ in range(replies)], list(range(replies))
            n = len(scores)
            rates.append(sum(scores) / n)
            proxies.append(sum(rng.gauss(0.0, 1.0) for _ in range(n)) / n if not proxy_rising else float(step))
            metrics = {"reward/proxy": proxies[-1], "reward/task": rates[-1], "replies": n,
                       "response_length": 10.0, "distinct_2": 0.9}  # fmt: skip
            plain.observe(step, metrics)
            if group_size > 1:
                metrics.update({f"{k}/task": v for k, v in group_stats(scores, keys).items()})
            guard.observe(step, metrics)
            if len(rates) >= 2 * window and not fired_old:
                up = sum(proxies[-window:]) > sum(proxies[:window])
                fired_old = old_rule_fires(rates[:window], rates[-window:], up)
        old += fired_old
        new += bool(guard.findings)
        ungrouped += bool(plain.findings)
    result = {"old_rule": old / runs, "new_rule": new / runs}
    if group_size > 1:
        result["new_rule_ungrouped"] = ungrouped / runs
    return result
