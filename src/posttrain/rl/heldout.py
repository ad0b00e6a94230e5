"""Held-out reward of an RL stage (PPO, GRPO, RLOO): one function, so the three stages report comparable figures.

Greedy replies of the reference (the adapter disabled: the start model) and of the trained policy to the held-out
prompts (from the built-in tasks' evaluation pool, see :mod:`posttrain.tasks.base`) are scored by every reward
component on its own and by their weighted total, which includes the missing-EOS penalty where the stage trains with
one. Each difference policy - reference comes with a paired bootstrap 95% CI over the prompts. Processes generate
their share of the prompts and the scores are gathered, so every process returns the same figures.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from posttrain.evaluation.stats import delta_ci, mean_ci
from posttrain.models import generation

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
                    missing_eos_penalty: float | None = None) -> dict[str, Any]:  # fmt: skip
    """``{"prompts", "reference": {name: mean}, "policy": {name: mean}, "delta": {name: {"delta", "low", "high",
    "significant", ...}}}`` for the reward total, each component, reply length and stop rate."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    indices = list(range(state.process_index, len(dataset), state.num_processes))
    rows = [dataset[i] for i in indices]
    local: dict[str, dict[str, list]] = {}
    for side, reference in (("reference", True), ("policy", False)):
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
    result: dict[str, Any] = {"prompts": len(dataset), "reference": {}, "policy": {}, "delta": {}}
    for name in names:
        before = {str(i): v for i, v in by_side["reference"].get(name, {}).items()}
        after = {str(i): v for i, v in by_side["policy"][name].items()}
        result["reference"][name] = mean_ci(list(before.values()))["mean"]
        result["policy"][name] = mean_ci(list(after.values()))["mean"]
        result["delta"][name] = delta_ci(before, after)
    return result


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
