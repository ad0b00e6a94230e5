"""Held-out reward of an RL stage (PPO, GRPO, RLOO): one function, so the three stages report comparable figures.

Greedy replies of the reference (the adapter disabled: the start model) and of the trained policy to the held-out
prompts (from the built-in tasks' validation pool, see :mod:`posttrain.tasks.base`) are scored by every reward
component on its own and by their weighted total, which includes the missing-EOS penalty where the stage trains with
one. Each difference policy - reference comes with a paired bootstrap 95% CI over the prompts, each mean with its own
95% CI. Processes generate their share of the prompts and the scores are gathered, so every process returns the same
figures. :func:`heldout_series` flattens one evaluation into the tracker's series (:mod:`posttrain.tracking`).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

from posttrain.models import generation
from posttrain.stats import delta_ci, mean_ci

TOTAL = "total"


def _scores(model, tokenizer, rewards, rows: list[dict], *, reference: bool, max_new_tokens: int, batch_size: int,
            missing_eos_penalty: float | None) -> dict[str, list[float | None]]:  # fmt: skip
    model.eval()
    with model.disable_adapter() if reference else nullcontext():
        samples = generation.generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=max_new_tokens,
                                      batch_size=batch_size, progress=False)  # fmt: skip
    completions = [s[0] for s in samples]
    total, per_func = rewards(
        [r["prompt"] for r in rows],
        [[{"role": "assistant", "content": c.text}] for c in completions],
        completion_ids=[c.token_ids for c in completions],
        **{key: [r.get(key) for r in rows] for key in ("task", "answer", "meta")},
    )
    penalty = missing_eos_penalty or 0.0
    total = [t - penalty * (not c.finished) for t, c in zip(total, completions, strict=True)]
    return {TOTAL: total, **per_func, "length": [len(c.token_ids) for c in completions],
            "stopped": [float(c.finished) for c in completions]}  # fmt: skip


def heldout_rewards(model, tokenizer, rewards, dataset, *, max_new_tokens: int, batch_size: int = 8,
                    missing_eos_penalty: float | None = None, reference: bool = True) -> dict[str, Any]:  # fmt: skip
    """``{"prompts", "reference": {name: mean}, "policy": {name: mean}, "delta": {name: {"delta", "low", "high",
    "significant", ...}}, "ci": {"policy"|"reference": {name: [low, high]}}}`` for the reward total, each component,
    reply length and stop rate. With ``reference=False`` only the policy is scored (``reference`` and ``delta`` stay
    empty)."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    indices = list(range(state.process_index, len(dataset), state.num_processes))
    rows = [dataset[i] for i in indices]
    local: dict[str, dict[str, list]] = {}
    sides = (("reference", True), ("policy", False)) if reference else (("policy", False),)
    for side, reference in sides:
        scores = _scores(model, tokenizer, rewards, rows, reference=reference, max_new_tokens=max_new_tokens,
                         batch_size=batch_size, missing_eos_penalty=missing_eos_penalty) if rows else {}  # fmt: skip
        local[side] = scores
    gathered = gather_object([(indices, local)])
    by_side: dict[str, dict[str, dict[int, float | None]]] = {"reference": {}, "policy": {}}
    for part_indices, part in gathered:
        for side, scores in part.items():
            for name, values in scores.items():
                by_side[side].setdefault(name, {}).update(zip(part_indices, values, strict=True))
    names = list(by_side["policy"])
    result: dict[str, Any] = {"prompts": len(dataset), "reference": {}, "policy": {}, "delta": {}, "ci": {}}
    for name in names:
        after = {str(i): v for i, v in by_side["policy"][name].items()}
        policy = mean_ci(list(after.values()))
        result["policy"][name] = policy["mean"]
        result["ci"].setdefault("policy", {})[name] = [policy["low"], policy["high"]]
        if by_side["reference"]:
            before = {str(i): v for i, v in by_side["reference"].get(name, {}).items()}
            ref = mean_ci(list(before.values()))
            result["reference"][name] = ref["mean"]
            result["ci"].setdefault("reference", {})[name] = [ref["low"], ref["high"]]
            result["delta"][name] = delta_ci(before, after)
    return result


def heldout_series(result: dict[str, Any], prefix: str = "heldout") -> dict[str, float]:
    """One evaluation as tracker series (:mod:`posttrain.tracking`): ``<prefix>/<name>/policy`` with its 95% CI
    (``policy_low``, ``policy_high``), and where the reference was scored ``reference`` (with its CI) and the paired
    difference ``delta`` with its CI (``delta_low``, ``delta_high``), for the reward total, each component, reply
    length and stop rate."""
    series: dict[str, float] = {}
    ci = result.get("ci", {})
    for name, value in result["policy"].items():
        series[f"{prefix}/{name}/policy"] = value
        for side in ("policy", "reference"):
            if side == "reference" and name in result["reference"]:
                series[f"{prefix}/{name}/reference"] = result["reference"][name]
            if name in ci.get(side, {}):
                series[f"{prefix}/{name}/{side}_low"], series[f"{prefix}/{name}/{side}_high"] = ci[side][name]
        if name in result["delta"]:
            delta = result["delta"][name]
            series[f"{prefix}/{name}/delta"] = delta["delta"]
            series[f"{prefix}/{name}/delta_low"], series[f"{prefix}/{name}/delta_high"] = delta["low"], delta["high"]
    return series


def heldout_task_score(result: dict[str, Any], rule_names) -> float:
    """The policy's held-out task score: the mean pass rate of its rule-check components (the reward total when the
    rewards have no rule check)."""
    rules = [result["policy"][n] for n in rule_names if math.isfinite(result["policy"].get(n, math.nan))]
    return sum(rules) / len(rules) if rules else result["policy"][TOTAL]


def heldout_lines(result: dict[str, Any]) -> list[str]:
    """One line per figure: reference -> policy, with the paired CI of the difference."""
    lines = []
    for name, delta in result["delta"].items():
        lines.append(f"{name}: {result['reference'][name]:.3f} -> {result['policy'][name]:.3f} "
                     f"(difference {delta['delta']:+.3f}, 95% CI [{delta['low']:+.3f}, {delta['high']:+.3f}])")  # fmt: skip
    return lines


def heldout_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The flat metrics the manifests and reports keep: ``eval_reward_{reference,policy}`` (the total) and
    ``eval_<name>_{reference,policy}`` for each component."""
    metrics = {"eval_reward_reference": result["reference"][TOTAL], "eval_reward_policy": result["policy"][TOTAL]}
    for name in result["delta"]:
        if name != TOTAL:
            metrics[f"eval_{name}_reference"] = result["reference"][name]
            metrics[f"eval_{name}_policy"] = result["policy"][name]
    return metrics


class BestAdapter:
    """What ``hacking_guard: stop`` keeps: candidate adapters of one run (the start, the step with the best training
    rule pass rate, the last step), and at the stop the one whose greedy replies score best on the held-out prompts.

    ``module``'s trainable parameters are the adapter (and a PPO value head); ``policy`` generates the replies.
    Shared by PPO, GRPO and RLOO (through :class:`posttrain.rl.guard_stop.GuardStop`)."""

    BEST_RULE = "best training rule score"

    def __init__(self, module) -> None:
        self.module = module
        self.candidates: dict[str, tuple[int, float, dict]] = {}  # label -> (step, training rule score, weights)

    def _weights(self) -> dict:
        return {n: p.detach().cpu().clone() for n, p in self.module.named_parameters() if p.requires_grad}

    def _load(self, weights: dict) -> None:
        import torch

        with torch.no_grad():
            for name, param in self.module.named_parameters():
                if name in weights:
                    param.copy_(weights[name].to(param.device))

    def start(self, step: int) -> None:
        self.candidates["start"] = (step, math.nan, self._weights())

    def offer(self, step: int, rule: float) -> None:
        """After a step: remember its adapter if its training rule pass rate is the best so far."""
        best = self.candidates.get(self.BEST_RULE)
        if rule == rule and (best is None or rule > best[1]):
            self.candidates[self.BEST_RULE] = (step, rule, self._weights())

    def keep_best(self, step_now: int, policy, tokenizer, rewards, dataset, *, max_new_tokens: int,
                  batch_size: int = 8, missing_eos_penalty: float | None = None) -> dict[str, Any] | None:  # fmt: skip
        """Load the best candidate (held-out task score; the best training rule score without ``dataset``) and
        return ``{"label", "step", "by", "heldout_task_scores"}`` (None when there is nothing to choose from)."""
        candidates = {**self.candidates, "last step": (step_now, math.nan, self._weights())}
        scores: dict[str, float] = {}
        if dataset is not None and len(dataset):
            was_training = policy.training
            for label, (_, _, weights) in candidates.items():
                self._load(weights)
                result = heldout_rewards(policy, tokenizer, rewards, dataset, max_new_tokens=max_new_tokens,
                                         batch_size=batch_size, missing_eos_penalty=missing_eos_penalty,
                                         reference=False)  # fmt: skip
                scores[label] = heldout_task_score(result, rewards.rule_names)
            policy.train(was_training)
            label = max(scores, key=lambda k: (scores[k], -candidates[k][0]))  # ties: the earlier step
            by = f"held-out task score {scores[label]:.3f} on {len(dataset)} prompts"
        elif self.BEST_RULE in candidates:
            label = self.BEST_RULE
            by = f"training rule pass rate {candidates[label][1]:.3f} (no held-out prompts: test_split_size)"
        else:
            return None
        step, _, weights = candidates[label]
        self._load(weights)
        return {"label": label, "step": step, "by": by,
                "heldout_task_scores": {f"{k} (step {candidates[k][0]})": v for k, v in scores.items()}}  # fmt: skip
