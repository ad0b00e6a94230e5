"""What every built-in task is made of: the assistant's :class:`Identity`, one generated :class:`TaskExample`, and
the :class:`Task` that makes examples and checks replies."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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


Maker = Callable[[random.Random, Identity], TaskExample]


@dataclass(frozen=True)
class Task:
    """A builtin task: its name, a one-line description, the function making one random example and its check."""

    name: str
    description: str
    make: Maker
    #: ``check(response, answer, **meta) -> bool``: whether a reply to one of its examples is correct
    check: Callable[..., bool]
