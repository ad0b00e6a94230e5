"""What every built-in task is made of: the assistant's :class:`Identity`, one generated :class:`TaskExample`, the
:class:`Task` that makes examples and checks replies, and its three disjoint pools.

Every task draws its examples from one of three *pools*:

* ``train``: what training stages use (``builtin:<task>``);
* ``validation``: what anything *chosen from a measurement* reads: held-out splits of training stages (early
  stopping, the RL guard's best checkpoint), sweeps (``builtin-validation`` suite), export's quantization checks;
* ``test``: sealed, read only by reports (the shipped ``builtin`` evaluation suite, docs/results.md). No
  selection code path reads it (``tests/tasks/test_heldout.py`` checks every one).

The pools share no prompt phrasing, no fictional entity, no word and no number, so a model can only pass a held-out
pool by generalizing; ``tests/tasks/test_heldout.py`` checks that no prompt of one appears, even normalized, in another.
Held-out pools hold distinct prompts only (:func:`~posttrain.tasks.generate_task` returns fewer rather than repeat
one), so every evaluated prompt is an independent sample for the confidence intervals.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Pool = Literal["train", "validation", "test"]
POOLS: tuple[Pool, ...] = ("train", "validation", "test")
HELD_OUT_POOLS: tuple[Pool, ...] = ("validation", "test")
SELECTION_POOL: Pool = "validation"
"""The pool every selection (held-out splits, sweeps, best checkpoints, defaults) reads."""
REPORT_POOL: Pool = "test"
"""The sealed pool reports read."""


def number_pool(n: int) -> Pool:
    """Which pool a whole number belongs to: ``n % 4 != 3`` is ``train``'s, ``n % 8 == 3`` ``validation``'s,
    ``n % 8 == 7`` ``test``'s (for negative numbers, of ``abs(n)``)."""
    n = abs(n)
    return "train" if n % 4 != 3 else "validation" if n % 8 == 3 else "test"


@dataclass
class Identity:
    """Who the trained assistant says it is (used by the ``identity`` builtin task and its check)."""

    name: str = field(default="Posttrain Assistant", metadata={"help": "The assistant's name."})
    creator: str = field(default="the posttrain project", metadata={"help": "Who made the assistant."})


@dataclass(frozen=True)
class TaskExample:
    """One generated example.

    Attributes:
        task: The task's name (a key of :data:`TASKS` and of :data:`posttrain.checks.CHECKS`).
        prompt: The user message.
        answer: The canonical short correct answer (``"9.9"``, ``"3"``, ``"I don't know"``, the assistant's name).
        response: An ideal assistant reply, short and natural, that states the answer clearly.
        wrong_response: A plausible wrong reply making the classic mistake.
        meta: Facts the task's check needs (``a``/``b``, ``word``/``letter``, ``name``/``creator``/``asks``...).
    """

    task: str
    prompt: str
    answer: str
    response: str
    wrong_response: str
    meta: dict[str, Any] = field(default_factory=dict)


Maker = Callable[[random.Random, Identity, Pool], TaskExample]


def split_pools(items: tuple, every: int = 4) -> dict[Pool, tuple]:
    """A vocabulary split in three disjoint pools: every ``every``-th item (the 4th, 8th, 12th, ...) is held out,
    alternately ``validation``'s (4th, 12th, ...) and ``test``'s (8th, 16th, ...); the rest are ``train``'s."""
    if len(items) < 2 * every:
        raise ValueError(f"{len(items)} items are too few to split into three pools")
    held_out = [x for i, x in enumerate(items) if i % every == every - 1]
    return {
        "train": tuple(x for i, x in enumerate(items) if i % every != every - 1),
        "validation": tuple(held_out[0::2]),
        "test": tuple(held_out[1::2]),
    }


def check_pool(pool: str) -> Pool:
    """``pool`` if it names a pool; ``eval`` (the old name of the held-out pool) is read as ``validation`` with a
    deprecation warning."""
    if pool == "eval":
        import warnings

        warnings.warn(
            "pool 'eval' is now split into 'validation' (for anything chosen from a measurement) and 'test' (reports "
            "only); reading 'validation'",
            FutureWarning,
            stacklevel=3,
        )
        return "validation"
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)} (got {pool!r})")
    return pool  # type: ignore[return-value]


@dataclass(frozen=True)
class Task:
    """A builtin task: its name, a one-line description, the function making one random example and its check."""

    name: str
    description: str
    #: ``make(rng, identity, pool) -> TaskExample``: one random example of the ``pool`` (see :data:`POOLS`)
    make: Maker
    #: ``check(response, answer, **meta) -> bool``: whether a reply to one of its examples is correct
    check: Callable[..., bool]
    #: The tool schemas its conversations offer (OpenAI JSON schema); empty for a plain question-answer task. A task
    #: with tools trains and evaluates as tool-calling conversations and is left out of ``all``.
    tools: tuple[dict[str, Any], ...] = ()
    #: ``run_tool(name, arguments) -> str``: the ``tool`` message's content for a call (plain Python, never an
    #: ``eval`` of model text); set when ``tools`` is
    run_tool: Callable[[str, Mapping[str, Any]], str] | None = None
    #: Generation budget when evaluating it: about 1.5x its longest ideal reply (SmolLM2 tokens), so a model that
    #: does not stop is cut where no correct answer still needs room (evaluation ``max_new_tokens`` overrides it)
    max_new_tokens: int = 64
