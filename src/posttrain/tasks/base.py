"""What every built-in task is made of: the assistant's :class:`Identity`, one generated :class:`TaskExample`, the
:class:`Task` that makes examples and checks replies, and its two disjoint pools.

Every task draws its examples from one of two *pools*: ``train`` (what training stages use: ``builtin:<task>``) and
``eval`` (what held-out splits and the shipped evaluation suites use). The pools share no prompt phrasing, no
fictional entity, no word and no number range, so a model can only pass the ``eval`` pool by generalizing;
``tests/test_heldout.py`` checks that no prompt of one appears, even normalized, in the other.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Pool = Literal["train", "eval"]
POOLS: tuple[Pool, ...] = ("train", "eval")


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
    """A vocabulary split in two disjoint pools: every ``every``-th item (the 4th, 8th, ...) is ``eval``'s, the rest
    ``train``'s."""
    if len(items) < every:
        raise ValueError(f"{len(items)} items are too few to split into two pools")
    return {
        "train": tuple(x for i, x in enumerate(items) if i % every != every - 1),
        "eval": tuple(x for i, x in enumerate(items) if i % every == every - 1),
    }


@dataclass(frozen=True)
class Task:
    """A builtin task: its name, a one-line description, the function making one random example and its check."""

    name: str
    description: str
    #: ``make(rng, identity, pool) -> TaskExample``: one random example of the ``pool`` (``train`` or ``eval``)
    make: Maker
    #: ``check(response, answer, **meta) -> bool``: whether a reply to one of its examples is correct
    check: Callable[..., bool]
    #: The tool schemas its conversations offer (OpenAI JSON schema); empty for a plain question-answer task. A task
    #: with tools trains and evaluates as tool-calling conversations and is left out of ``all``.
    tools: tuple[dict[str, Any], ...] = ()
    #: ``run_tool(name, arguments) -> str``: the ``tool`` message's content for a call (plain Python, never an
    #: ``eval`` of model text); set when ``tools`` is
    run_tool: Callable[[str, Mapping[str, Any]], str] | None = None
