"""Pass-rate prompt filter for online RL: keep the training prompts on which the starting policy sometimes succeeds.

GRPO and RLOO learn from the differences between the replies to one prompt: a prompt that the policy always solves,
or never does, gives a group of equal rule scores and no gradient, and PPO's advantages on it are the value head's
noise. After SFT most prompts of a small model are of that kind (on the reasoning profile 71-79% of GRPO's groups
scored all replies alike). With ``prompt_filter_samples: k``, each training prompt gets ``k`` sampled replies from the
starting policy (the training temperature, top-p and reply budget) before training; a prompt is kept when its rule
rewards' total differs between those replies. The filter reads the training prompts only (never a held-out pool), so
it selects nothing on data that is evaluated.

Processes sample their share of the prompts and the verdicts are gathered, so every process keeps the same table
(DDP); the stages refuse the filter under an engine that shards the parameters (ZeRO-3, FSDP), since no process holds
the whole model before training starts (:func:`posttrain.training.rl_common.filter_rl_prompts`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from posttrain.errors import ConfigError
from posttrain.log import get_logger
from posttrain.models import generation

logger = get_logger(__name__)

KEY = "prompt_filter_samples"


def rule_totals(rewards, rows: list[dict], texts: list[str], token_ids: list[list[int]]) -> list[float]:
    """The weighted total of the rule components (``rewards.rule_names``) for each (row, reply); the other components
    (a reward model) are not called."""
    prompts = [r["prompt"] for r in rows]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    columns = {key: [r.get(key) for r in rows] for key in ("task", "answer", "meta")}
    totals = [0.0] * len(texts)
    for func, weight, name in zip(rewards.funcs, rewards.weights, rewards.names, strict=True):
        if name not in rewards.rule_names:
            continue
        for i, score in enumerate(func(prompts, completions, completion_ids=token_ids, **columns)):
            if score is not None and score == score:  # None: not applicable; NaN: no score
                totals[i] += weight * float(score)
    return totals


def verdict(scores: list[float]) -> str:
    """``mixed`` (the replies' scores differ: kept), ``solved`` (all equal and at the best seen) or ``unsolved``."""
    if max(scores) - min(scores) > 1e-9:
        return "mixed"
    return "solved" if scores[0] > 0 else "unsolved"


def filter_prompts(model, tokenizer, rewards, dataset, *, samples: int, temperature: float, top_p: float,
                   max_new_tokens: int, seed: int, batch_size: int = 16) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """``(dataset with the mixed prompts only, summary)``; the summary counts ``prompts``, ``kept``, ``solved`` and
    ``unsolved`` and gives the mean sampled rule score. ConfigError when no prompt is left."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    if not rewards.rule_names:
        raise ConfigError(f"{KEY}: the prompt filter scores replies with rule rewards (`task`, ...): rewards has none")
    state = PartialState()
    indices = list(range(state.process_index, len(dataset), state.num_processes))
    rows = [dataset[i] for i in indices]
    local: list[tuple[int, list[float]]] = []
    if rows:
        model.eval()
        replies = generation.generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=max_new_tokens,
                                      do_sample=True, temperature=temperature, top_p=top_p,
                                      num_return_sequences=samples, batch_size=batch_size,
                                      seed=seed + state.process_index, progress=state.is_main_process)  # fmt: skip
        flat_rows = [row for row, group in zip(rows, replies, strict=True) for _ in group]
        flat = [c for group in replies for c in group]
        totals = rule_totals(rewards, flat_rows, [c.text for c in flat], [c.token_ids for c in flat])
        for n, index in enumerate(indices):
            local.append((index, totals[n * samples : (n + 1) * samples]))
    scores = dict(item for part in gather_object([local]) for item in part)
    verdicts = {i: verdict(s) for i, s in scores.items()}
    counts = Counter(verdicts.values())
    kept = sorted(i for i, v in verdicts.items() if v == "mixed")
    summary = {
        "samples": samples,
        "prompts": len(dataset),
        "kept": len(kept),
        "solved": counts["solved"],
        "unsolved": counts["unsolved"],
        "mean_score": sum(sum(s) for s in scores.values()) / max(1, samples * len(scores)),
    }
    logger.info(
        f"posttrain: prompt filter ({samples} sampled replies each): kept {len(kept)} of {len(dataset)} training "
        f"prompts whose replies score differently; {counts['solved']} always solved and {counts['unsolved']} never "
        "solved are left out"
    )
    if not kept:
        raise ConfigError(
            f"{KEY}: no training prompt is left: of {len(dataset)}, {counts['solved']} were always solved and "
            f"{counts['unsolved']} never, in {samples} sampled replies each; give harder/easier prompts, more samples, "
            f"or a higher temperature, or set {KEY}: 0",
        )
    return dataset.select(kept), summary
