"""Built-in generated tasks with known correct answers, one module each (nanochat-style): its phrasings and
vocabulary, its generator and its rule check, so the same examples serve SFT (``response``), preference pairs
(``response`` vs ``wrong_response``), evaluation and RL rewards (``answer`` + ``meta``, checked by the task's own
check):

* :mod:`.identity` -- "Who are you?" / "Who made you?", answered with the configured :class:`Identity`.
* :mod:`.unknown_entity` -- questions about things that do not exist, answered with an honest "I don't know".
* :mod:`.decimal_compare` -- "Which is larger, 9.11 or 9.9?".
* :mod:`.letter_count` -- 'How many r's are in "strawberry"?'.
* :mod:`.arithmetic` -- additions, subtractions and multiplications of small whole numbers.
* :mod:`.calculator` -- the same on large numbers through a ``calculator`` tool: a tool-calling conversation (call,
  result, answer). Tasks with tools (:attr:`Task.tools`) are left out of ``all``; name them (``builtin:calculator``).

Generation is deterministic in ``(task, n, seed, identity)`` and uses several phrasings per task so a model does
not just memorise one string. :data:`CHECKS` is every name a row's ``task`` field may carry: the tasks' checks and
the generic ones of :mod:`posttrain.checks`; :func:`check_task` applies one.

Adding a task: a module here with ``TASK = Task(name, description, make, check)``, listed in :data:`TASKS`, and a
test in ``tests/data/test_builtin.py``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Protocol

from posttrain.checks import GENERIC_CHECKS, Check
from posttrain.tasks import arithmetic, calculator, decimal_compare, identity, letter_count, unknown_entity
from posttrain.tasks.base import (
    HELD_OUT_POOLS,
    POOLS,
    REPORT_POOL,
    SELECTION_POOL,
    Identity,
    Pool,
    Task,
    TaskExample,
    check_pool,
)
from posttrain.tasks.identity import BASE_MODEL_IDENTITY, base_identity_response

__all__ = [
    "ALL_TASKS",
    "BASE_MODEL_IDENTITY",
    "HELD_OUT_POOLS",
    "POOLS",
    "REPORT_POOL",
    "SELECTION_POOL",
    "CHECKS",
    "NEEDS_NO_ANSWER",
    "TASKS",
    "TOOL_TASKS",
    "Identity",
    "Task",
    "TaskExample",
    "base_identity_response",
    "check_task",
    "generate_task",
    "task_to_messages",
    "task_to_preference",
    "task_to_row",
]

ALL_TASKS = "all"
"""Task name meaning every task without tools, interleaved."""

TASKS: dict[str, Task] = {
    module.TASK.name: module.TASK
    for module in (identity, unknown_entity, decimal_compare, letter_count, arithmetic, calculator)
}
"""Builtin tasks by name."""

TOOL_TASKS: frozenset[str] = frozenset(name for name, task in TASKS.items() if task.tools)
"""Tasks whose examples are tool-calling conversations: not in ``all`` (their rows need a tool-capable chat
template), not preference pairs or RL prompts (a reply there is one message, with no tool to call)."""

_MAX_DRAWS_FOR_A_NEW_PROMPT = 20
_MAX_DRAWS_FOR_A_NEW_HELD_OUT_PROMPT = 400


def _generate_one_task(task: Task, n: int, seed: int, identity: Identity, pool: Pool) -> list[TaskExample]:
    # str seeds hash with SHA-512: stable across runs
    rng = random.Random(f"posttrain/{task.name}/{seed}" if pool == "train" else f"posttrain/{task.name}/{pool}/{seed}")
    examples: list[TaskExample] = []
    seen: set[str] = set()
    held_out = pool in HELD_OUT_POOLS
    draws = _MAX_DRAWS_FOR_A_NEW_HELD_OUT_PROMPT if held_out else _MAX_DRAWS_FOR_A_NEW_PROMPT
    for _ in range(n):
        for _ in range(draws):  # avoid repeated prompts while fresh ones are easy to find
            example = task.make(rng, identity, pool)
            if example.prompt not in seen:
                break
        else:
            if held_out:  # a held-out pool never repeats a prompt (repeats would narrow the CIs): fewer examples
                break
        seen.add(example.prompt)
        examples.append(example)
    return examples


def generate_task(
    name: str, n: int, seed: int = 42, identity: Identity | None = None, pool: Pool = "train"
) -> list[TaskExample]:
    """Generate ``n`` examples of the builtin task ``name`` (or of all tasks, interleaved, for ``"all"``).

    Args:
        name: A key of :data:`TASKS`, or ``"all"``.
        n: How many examples. For ``"all"`` they are split as evenly as possible between the tasks.
        seed: Random seed; the same ``(name, n, seed, identity)`` always gives the same examples.
        identity: Who the assistant is, for the ``identity`` task (default :class:`Identity()`).
        pool: ``train`` (training data), ``validation`` (held-out splits, sweeps: anything chosen from a measurement)
            or ``test`` (sealed: reports only): disjoint phrasings, entities, words and numbers (see
            :mod:`posttrain.tasks.base`). A held-out pool holds distinct prompts only: when a task's pool has fewer
            than ``n`` distinct prompts, fewer examples come back.

    Raises:
        KeyError: For an unknown task name (the message lists the available ones).
        ValueError: If ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"cannot generate a negative number of examples ({n})")
    pool = check_pool(pool)
    identity = identity or Identity()
    if name == ALL_TASKS:
        tasks = [task for task in TASKS.values() if not task.tools]
        per_task = [
            _generate_one_task(task, n // len(tasks) + (i < n % len(tasks)), seed, identity, pool)
            for i, task in enumerate(tasks)
        ]
        interleaved = [part[i] for i in range(max(map(len, per_task), default=0)) for part in per_task if i < len(part)]
        return interleaved
    if name not in TASKS:
        raise KeyError(f"unknown builtin task {name!r}; available: {', '.join([*TASKS, ALL_TASKS])}")
    return _generate_one_task(TASKS[name], n, seed, identity, pool)


def task_to_messages(example: TaskExample) -> list[dict[str, Any]]:
    """The example as a training conversation: the prompt as user turn, the ideal ``response`` as assistant turn;
    for a task with tools, the assistant's call (``meta["call"]``) and the tool's result (``meta["tool_result"]``)
    come between them."""
    user = {"role": "user", "content": example.prompt}
    answer = {"role": "assistant", "content": example.response}
    if "call" not in example.meta:
        return [user, answer]
    call = example.meta["call"]
    calling = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}],
    }
    result = {"role": "tool", "name": call["name"], "content": example.meta["tool_result"]}
    return [user, calling, result, answer]


def task_to_row(example: TaskExample) -> dict[str, Any]:
    """The example as a data row: ``messages`` (:func:`task_to_messages`) and, for a task with tools, ``tools``."""
    row: dict[str, Any] = {"messages": task_to_messages(example)}
    if example.meta.get("tools"):
        row["tools"] = example.meta["tools"]
    return row


def task_to_preference(example: TaskExample, base_identity: Identity = BASE_MODEL_IDENTITY) -> dict[str, str]:
    """The example as a preference pair of plain strings: ``prompt`` (the user message), ``chosen`` (the ideal
    ``response``) and ``rejected`` (the classic mistake: ``wrong_response``, or for ``identity`` the base model's old
    identity, see :func:`base_identity_response`)."""
    if example.task in TOOL_TASKS:
        raise ValueError(
            f"builtin task {example.task!r} is a tool-calling conversation, not a preference pair: use it as SFT "
            "data or in the `tools` evaluation suite"
        )
    rejected = base_identity_response(example, base_identity) if example.task == "identity" else example.wrong_response
    return {"prompt": example.prompt, "chosen": example.response, "rejected": rejected}


CHECKS: dict[str, Check] = {**{name: task.check for name, task in TASKS.items()}, **GENERIC_CHECKS}
"""Checks by name, each ``check(response, answer, **meta) -> bool``, shared by evaluation suites and RL rewards: one
per builtin task (``identity``, ``unknown_entity``, ``decimal_compare``, ``letter_count``, ``arithmetic``,
``calculator``) and the generic checks of :data:`posttrain.checks.GENERIC_CHECKS`."""

NEEDS_NO_ANSWER = frozenset(CHECKS) - {
    "decimal_compare",
    "letter_count",
    "arithmetic",
    "calculator",
    "exact_match",
    "numeric_match",
    "strict_match",
    "contains",
    "multiple_choice",
}
"""Checks that decide from the reply and ``meta`` alone (no reference answer needed)."""


class _ExampleLike(Protocol):
    task: str
    answer: str
    meta: Mapping[str, Any]


def check_task(example_or_task_name: _ExampleLike | str, response: str, answer: str | None = None, **meta: Any) -> bool:
    """Whether ``response`` correctly answers a builtin-task example.

    Args:
        example_or_task_name: A :class:`~posttrain.data.builtin.TaskExample` (its ``task``, ``answer`` and ``meta``
            are used) or a name in :data:`CHECKS`.
        response: The model's reply.
        answer: The correct answer; defaults to the example's.
        **meta: Extra facts the check needs (override the example's ``meta``), e.g. ``name``/``creator``/``asks``
            for ``identity`` or ``a``/``b`` for ``decimal_compare``.

    Raises:
        KeyError: For an unknown check name.
        ValueError: If no answer is given for a check that needs one.
    """
    if isinstance(example_or_task_name, str):
        name, facts = example_or_task_name, dict(meta)
    else:
        name = example_or_task_name.task
        facts = {**example_or_task_name.meta, **meta}
        answer = example_or_task_name.answer if answer is None else answer
    if name not in CHECKS:
        raise KeyError(f"unknown check {name!r}; available: {', '.join(CHECKS)}")
    if answer is None:
        if name not in NEEDS_NO_ANSWER:
            raise ValueError(f"check {name!r} needs the correct answer")
        return CHECKS[name](response, **facts)
    return CHECKS[name](response, answer, **facts)
