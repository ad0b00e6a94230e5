"""On-policy preference pairs: sample several replies per prompt, score them, keep the best against the worst.

    posttrain pairs --model smollm2-135m-instruct --tasks builtin:decimal_compare,builtin:unknown_entity \\
        --num_prompts 200 --n 4 --output data/pairs.jsonl
    posttrain pairs --model out/sft --prompts prompts.jsonl --reward_model out/reward --output data/rm-pairs.jsonl

:func:`build_pairs` samples ``n`` replies per prompt with :func:`posttrain.models.generation.generate`, scores them with a
*scorer* and keeps the highest-scoring reply as ``chosen`` and the lowest-scoring one as ``rejected``. Prompts whose
best and worst scores differ by no more than ``min_margin`` teach nothing and are skipped (counted in
:attr:`Pairs.skipped`); replies that are empty after decoding are never used.

Scorers: ``scorer(prompt_messages, completion_texts, item) -> list[float]`` (one score per completion, higher is
better) or the two-argument ``score_fn(prompt_messages, completion_texts)``, which is all a reward model needs (see
:func:`reward_model_scorer`, used by ``--reward_model``). :func:`rule_scorer` scores builtin-task prompts with :func:`posttrain.tasks.check_task`:
1.0 for a correct reply, 0.0 otherwise.

Tie-breaking (any scorer): among replies with the same best score, ``chosen`` is one that finished with an
end-of-turn/EOS token (:attr:`~posttrain.models.generation.Completion.finished`), then the one with fewer tokens; among
replies with the same worst score, ``rejected`` is chosen by the same preference (a finished, short wrong answer), so
that a pair contrasts what the scorer measures rather than a reply cut off at ``max_new_tokens``. The tie-breaker
only picks among equal scores: it never adds to the scores, so ``min_margin`` compares the scorer's own numbers (two
wrong answers of different lengths are not a pair). A ``chosen`` reply that was itself cut off is never kept
(``require_finished``, the default): the prompt is skipped, since training towards it teaches the model not to stop.

Length: the pairs are DPO's data, and DPOTrainer cuts every sequence at its config's ``max_length`` -- a chosen
reply cut there loses its end-of-turn token, undoing ``require_finished``. :func:`check_reply_budget` therefore
refuses settings under which the longest prompt, rendered with the chat template, plus ``max_new_tokens`` plus the
tokens the template adds after a reply would not fit ``max_length`` (``posttrain pairs --max_length``: the DPO
config's, 192 in ``recipes/configs/smollm2-135m/dpo.yaml``).

The output (:func:`write_pairs`) is JSONL, one row per pair: ``prompt`` (messages ending with a user turn),
``chosen`` and ``rejected`` (one assistant message each), ``chosen_score`` and ``rejected_score``. Every row is
checked with :func:`posttrain.data.validate_preference` first, the file is written atomically, and it loads back
with :func:`posttrain.data.load_preferences`.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from posttrain.data.preference import validate_preference
from posttrain.data.validation import DataError, ProblemCollector
from posttrain.errors import ConfigError
from posttrain.log import get_logger
from posttrain.models import generation
from posttrain.rl.prompt_items import Messages, PromptItem, read_prompts, task_prompts
from posttrain.storage import atomic_write_text
from posttrain.tasks import check_task

__all__ = [
    "PromptItem",
    "Pairs",
    "Scorer",
    "ScoreFn",
    "as_scorer",
    "build_pairs",
    "check_reply_budget",
    "read_prompts",
    "reward_model_scorer",
    "rule_scorer",
    "task_prompts",
    "write_pairs",
]

logger = get_logger(__name__)


Scorer = Callable[[Messages, list[str], PromptItem], Sequence[float]]
"""``scorer(prompt_messages, completion_texts, item) -> scores`` (one per completion, higher is better)."""

ScoreFn = Callable[[Messages, list[str]], Sequence[float]]
"""``score_fn(prompt_messages, completion_texts) -> scores``: a scorer that needs no task facts (a reward model)."""


class Pairs(list):
    """The rows :func:`build_pairs` kept (a plain ``list`` of dicts), with counts of what happened.

    Attributes:
        prompts: How many prompts were sampled.
        skipped: How many of them gave no pair (best and worst score within ``min_margin``, fewer than two
            non-empty replies, or, with ``require_finished``, no finished reply at the best score).
        truncated: How many of the skipped prompts were skipped only because every best-scoring reply was cut off
            at ``max_new_tokens``.
    """

    def __init__(
        self, rows: Iterable[dict[str, Any]] = (), *, prompts: int = 0, skipped: int = 0, truncated: int = 0
    ) -> None:
        super().__init__(rows)
        self.prompts = prompts
        self.skipped = skipped
        self.truncated = truncated


# ---------------------------------------------------------------------------------------------------- scorers


def rule_scorer(prompt_messages: Messages, completions: list[str], item: PromptItem) -> list[float]:
    """1.0 for each completion that passes ``check_task(item.task, completion, item.answer, **item.meta)``, else 0.0.

    Raises:
        ValueError: If the item has no ``task`` (such prompts need a reward-model scorer).
    """
    if item.task is None:
        raise ValueError(
            "rule scoring needs prompts with a 'task' (a builtin task or a check name); score prompts "
            "without one with a reward model"
        )
    return [1.0 if check_task(item.task, text, item.answer, **item.meta) else 0.0 for text in completions]


def reward_model_scorer(reward_model: Any) -> ScoreFn:
    """A scorer from any object with ``score(conversations) -> list[float]`` (e.g. ``posttrain.models.reward
    .RewardModel``): each completion is scored as the conversation ``prompt + [assistant reply]``."""

    def score(prompt_messages: Messages, completions: list[str]) -> list[float]:
        conversations = [[*prompt_messages, {"role": "assistant", "content": text}] for text in completions]
        return list(reward_model.score(conversations))

    return score


def as_scorer(scorer: Scorer | ScoreFn) -> Scorer:
    """A three-argument scorer from a scorer or a two-argument ``score_fn`` (told apart by their signatures).

    Raises:
        TypeError: If ``scorer`` accepts neither ``(prompt_messages, completions, item)`` nor
            ``(prompt_messages, completions)``.
    """
    try:
        signature = inspect.signature(scorer)
    except (TypeError, ValueError):  # no introspectable signature: assume the full one
        return scorer  # type: ignore[return-value]
    for args in (([], [], None), ([], [])):
        try:
            signature.bind(*args)
        except TypeError:
            continue
        if len(args) == 3:
            return scorer  # type: ignore[return-value]
        return lambda prompt, completions, item: scorer(prompt, completions)  # type: ignore[call-arg]
    raise TypeError("a scorer must accept (prompt_messages, completions, item) or (prompt_messages, completions)")


def _scores(scorer: Scorer, item: PromptItem, texts: list[str]) -> list[float]:
    raw = scorer(item.messages, texts, item)
    scores = [float(s) for s in raw]
    if len(scores) != len(texts):
        raise ValueError(f"the scorer returned {len(scores)} scores for {len(texts)} completions")
    if not all(math.isfinite(s) for s in scores):
        raise ValueError(f"the scorer returned a score that is not a finite number: {scores}")
    return scores


# ------------------------------------------------------------------------------------------------ build pairs


def _add_pair(pairs: Pairs, item: PromptItem, completions, scores: list[float], *, min_margin: float,
              require_finished: bool) -> None:  # fmt: skip
    """Append ``item``'s best reply against its worst to ``pairs``, or count it skipped (fewer than two non-empty
    replies, no margin, the same text, or with ``require_finished`` a best reply cut off)."""
    usable = [(s, c) for s, c in zip(scores, completions, strict=True) if c.text.strip()]
    if len(usable) < 2:
        pairs.skipped += 1
        return
    best = max(usable, key=lambda sc: (sc[0], sc[1].finished, -sc[1].num_tokens))
    worst = min(usable, key=lambda sc: (sc[0], not sc[1].finished, sc[1].num_tokens))
    if best[0] - worst[0] <= min_margin or best[1].text.strip() == worst[1].text.strip():
        pairs.skipped += 1
        return
    if require_finished and not best[1].finished:
        pairs.skipped += 1
        pairs.truncated += 1
        return
    pairs.append(
        {
            "prompt": [{"role": m["role"], "content": m["content"]} for m in item.messages],
            "chosen": [{"role": "assistant", "content": best[1].text}],
            "rejected": [{"role": "assistant", "content": worst[1].text}],
            "chosen_score": best[0],
            "rejected_score": worst[0],
        }
    )


def build_pairs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[PromptItem],
    *,
    scorer: Scorer | ScoreFn,
    n: int = 4,
    max_new_tokens: int = 96,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = 42,
    batch_size: int = 8,
    min_margin: float = 0.0,
    require_finished: bool = True,
    progress: bool = False,
) -> Pairs:
    """Sample ``n`` replies per prompt, score them, keep the best against the worst (see the module docstring).

    Args:
        model, tokenizer: A causal LM with a chat template (e.g. from
            :func:`posttrain.models.generation.load_model_for_generation`).
        prompts: The prompts, each ending with a user turn.
        scorer: ``scorer(prompt_messages, texts, item)`` or ``score_fn(prompt_messages, texts)``, one score per
            completion, higher is better.
        n: Replies sampled per prompt (at least 2).
        max_new_tokens, temperature, top_p, batch_size, progress: Passed to :func:`posttrain.models.generation.generate`
            (``batch_size`` counts prompts; each yields ``n`` sequences).
        seed: Seed for sampling: the same model, prompts and seed give the same pairs.
        min_margin: A prompt yields a pair only when its best score exceeds its worst by more than this.
        require_finished: ``chosen`` must have ended with an end-of-turn/EOS token: a prompt whose best-scoring
            replies were all cut off at ``max_new_tokens`` gives no pair (DPO would teach the model to run on
            without stopping). Counted in :attr:`Pairs.truncated`.

    Returns:
        :class:`Pairs`: rows ``{"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}`` in prompt
        order, with ``.skipped`` prompts counted.
    """

    if n < 2:
        raise ValueError(f"n must be at least 2 to compare replies (got {n})")
    if min_margin < 0:
        raise ValueError(f"min_margin must be >= 0 (got {min_margin})")
    score = as_scorer(scorer)
    samples = generation.generate(
        model,
        tokenizer,
        [item.messages for item in prompts],
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        num_return_sequences=n,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    pairs = Pairs(prompts=len(prompts))
    for item, completions in zip(prompts, samples, strict=True):
        _add_pair(pairs, item, completions, _scores(score, item, [c.text for c in completions]),
                  min_margin=min_margin, require_finished=require_finished)  # fmt: skip
    logger.info(
        "built %d pairs from %d prompts (%d skipped, %d of them because the best reply was cut off)",
        len(pairs),
        pairs.prompts,
        pairs.skipped,
        pairs.truncated,
    )
    return pairs


# ------------------------------------------------------------------------------------------------------ length


def _chat_ids(tokenizer: Any, messages: Messages, **kwargs: Any) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])


def reply_suffix_tokens(tokenizer: Any, messages: Messages) -> int:
    """Tokens the chat template adds after a reply's text (ChatML: ``<|im_end|>`` and a newline)."""
    prompt = _chat_ids(tokenizer, messages, add_generation_prompt=True)
    full = _chat_ids(tokenizer, [*messages, {"role": "assistant", "content": "x"}])
    shared = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), min(len(prompt), len(full)))
    return max(len(full) - shared - len(tokenizer("x", add_special_tokens=False)["input_ids"]), 0)


def check_reply_budget(
    tokenizer: Any, prompts: Sequence[PromptItem], *, max_new_tokens: int, max_length: int | None
) -> None:
    """Refuse ``max_new_tokens`` when a reply that long would not fit ``max_length`` after the longest prompt.

    A pair is trained by DPO as ``prompt + reply`` rendered with the chat template, cut at the DPO config's
    ``max_length``: the longest prompt (with the generation prompt) + ``max_new_tokens`` + the tokens the template
    adds after a reply (:func:`reply_suffix_tokens`) must fit, or DPO would cut the end (and the end-of-turn token)
    off a long chosen reply. ``max_length`` ``None``: nothing to check.

    Raises:
        ConfigError: Naming ``max_new_tokens`` and ``max_length``, the longest prompt and its length, and the
            largest ``max_new_tokens`` that fits.
    """
    if max_length is None or not prompts:
        return
    lengths = [len(_chat_ids(tokenizer, item.messages, add_generation_prompt=True)) for item in prompts]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    suffix = reply_suffix_tokens(tokenizer, prompts[longest].messages)
    need = lengths[longest] + max_new_tokens + suffix
    if need > max_length:
        opening = prompts[longest].messages[-1]["content"][:60]
        raise ConfigError(
            f"max_new_tokens {max_new_tokens} does not fit max_length {max_length}: prompt {longest + 1} "
            f"({opening!r}...) is {lengths[longest]} tokens with the chat template, and with a reply of "
            f"max_new_tokens plus the {suffix} token(s) the template adds after it, a pair is {need} tokens; DPO "
            f"(max_length {max_length}) would cut the end and the end-of-turn token off such a chosen reply. Set "
            f"max_new_tokens to at most {max_length - lengths[longest] - suffix}, or raise max_length (here and in "
            "the DPO config)"
        )


# ------------------------------------------------------------------------------------------------------ output


def refuse_existing(path: Path) -> None:
    raise DataError(str(path), "already exists; pass overwrite=True (--overwrite) to replace it")


def write_pairs(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write preference rows to a JSONL file atomically.

    Each row is checked with :func:`~posttrain.data.validate_preference` (all problems are reported together,
    located by the line the row would have had) and written normalised, keeping extra fields such as scores. The
    text goes to a temporary file in the same folder, which then replaces ``path`` in one rename: readers never see
    a partial file, and a failure leaves no temporary file behind.

    Raises:
        DataError: If ``path`` exists and ``overwrite`` is false.
        DataValidationError: If any row is not a valid preference pair (nothing is written).
        ValueError: If a row holds a value JSON cannot represent (NaN, infinity).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        refuse_existing(path)
    problems = ProblemCollector()
    lines = []
    for line, row in enumerate(rows, start=1):
        try:
            pair = validate_preference(row, source=str(path), line=line)
        except DataError as error:
            problems.add(error)
            continue
        extra = {k: v for k, v in row.items() if k not in pair}
        lines.append(json.dumps({**pair, **extra}, ensure_ascii=False, allow_nan=False) + "\n")
    problems.raise_if_any()
    try:
        return atomic_write_text(path, "".join(lines), overwrite=overwrite)
    except FileExistsError:  # created while we were writing
        refuse_existing(path)
