"""The prompts pairs and RL stages sample from: builtin-task prompts with the facts their checks need, or rows read
from local files (:class:`PromptItem`). Free of torch, so that evaluation's overlap check can render them cheaply."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.data.files import read_rows, resolve_local_files
from posttrain.data.formats import with_system_prompt
from posttrain.data.preference import validate_prompt
from posttrain.data.spec import BUILTIN_PREFIX, DatasetSpec, Identity
from posttrain.data.validation import DataError, ProblemCollector
from posttrain.tasks import ALL_TASKS, CHECKS, TASKS, TOOL_TASKS, generate_task
from posttrain.tasks.base import Pool

__all__ = ["Messages", "PromptItem", "read_prompts", "task_prompts"]

Messages = list[dict[str, str]]


@dataclass
class PromptItem:
    """One prompt to sample replies for.

    Attributes:
        messages: The conversation so far, ending with a user turn (optional system message first).
        task: The check that scores replies with :func:`rule_scorer`: a builtin task or another name in
            :data:`posttrain.tasks.CHECKS` (``None`` when only a reward model can score it).
        answer: The correct answer the check compares against.
        meta: Extra facts for the check (``name``/``creator``/``asks`` for ``identity``, ``a``/``b``...).
    """

    messages: Messages
    task: str | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def task_prompts(
    tasks: Sequence[str],
    num_prompts: int,
    *,
    seed: int = 42,
    identity: Identity | None = None,
    system_prompt: str | None = None,
    pool: Pool = "train",
) -> list[PromptItem]:
    """Prompts of builtin tasks (from their ``pool``: ``train``, ``validation`` or ``test``), with the facts :func:`rule_scorer`
    needs.

    Args:
        tasks: Task names, with or without the ``builtin:`` prefix; ``all`` means every task.
        num_prompts: How many prompts in all, split as evenly as possible between ``tasks`` (earlier ones get the
            remainder) and interleaved.
        seed: Seed for generating them (:func:`posttrain.data.generate_task`).
        identity: Who the assistant is, for ``identity`` prompts (default :class:`Identity()`).
        system_prompt: Added as a first system message.

    Raises:
        DataError: For an unknown task (the message lists the available ones) or no tasks.
        ValueError: If ``num_prompts`` is not positive.
    """
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be at least 1 (got {num_prompts})")
    names = [t.strip() for t in tasks if t.strip()]
    if not names:
        raise DataError("--tasks", f"no tasks given; available: {', '.join([*TASKS, ALL_TASKS])}")
    batches = []
    for i, name in enumerate(names):
        task = name[len(BUILTIN_PREFIX) :] if name.startswith(BUILTIN_PREFIX) else name
        if task in TOOL_TASKS:
            raise DataError(
                name,
                f"builtin task {task!r} is a tool-calling conversation and RL prompts have no tool to call: use it "
                "as SFT data or in the `tools` evaluation suite",
            )
        count = num_prompts // len(names) + (i < num_prompts % len(names))
        try:
            batches.append(generate_task(task, count, seed=seed, identity=identity, pool=pool))
        except KeyError as error:
            raise DataError(name, error.args[0]) from None
    examples = [batch[j] for j in range(max(map(len, batches))) for batch in batches if j < len(batch)]
    return [
        PromptItem(
            with_system_prompt([{"role": "user", "content": ex.prompt}], system_prompt),
            ex.task,
            ex.answer,
            dict(ex.meta),
        )
        for ex in examples
    ]


def _prompt_item(
    data: Mapping[str, Any], source: str, row: int, line: int | None, system_prompt: str | None
) -> PromptItem:
    def error(problem: str) -> DataError:
        return DataError(source, problem, row=row, line=line)

    if "prompt" in data:
        messages = validate_prompt(data["prompt"], source=source, row=row, line=line)
    elif "messages" in data:
        conversation = data["messages"]
        if (
            isinstance(conversation, list)
            and conversation
            and isinstance(conversation[-1], dict)
            and conversation[-1].get("role") == "assistant"
        ):
            conversation = conversation[:-1]  # an SFT conversation: prompt with everything before the last reply
        messages = validate_prompt(conversation, source=source, row=row, line=line)
    else:
        keys = ", ".join(repr(k) for k in data) or "none"
        raise error(f"prompt row needs a 'prompt' (string or messages) or 'messages' field (fields: {keys})")
    task, answer, meta = data.get("task"), data.get("answer"), data.get("meta") or {}
    if task is not None and task not in CHECKS:
        raise error(f"unknown task {task!r}; available checks: {', '.join(CHECKS)}")
    if answer is not None and not isinstance(answer, str):
        answer = str(answer)
    if not isinstance(meta, dict):
        raise error(f"meta must be an object (got {type(meta).__name__})")
    return PromptItem(with_system_prompt(messages, system_prompt), task, answer, dict(meta))


def read_prompts(
    path: str | os.PathLike, *, limit: int | None = None, system_prompt: str | None = None
) -> list[PromptItem]:
    """Prompts from a local ``.jsonl``/``.json``/``.parquet``/``.csv`` file or folder.

    Each row has ``prompt`` (a string or a list of messages ending with a user turn) or ``messages`` (a
    conversation; a final assistant turn is dropped, so SFT data works), and optionally ``task``, ``answer`` and
    ``meta`` for :func:`rule_scorer`.

    Raises:
        DataError: If the path cannot be read.
        DataValidationError: Every bad row, located by file and line/row.
    """
    spec = DatasetSpec(path=str(path))
    files = resolve_local_files(spec)
    if files is None:
        raise DataError(str(path), "prompt file or folder not found")
    problems = ProblemCollector()
    items: list[PromptItem] = []
    for file in files:
        remaining = None if limit is None else limit - len(items)
        if remaining == 0:
            break
        display = str(path) if len(files) == 1 and Path(path).is_file() else str(file)
        for raw in read_rows(file, display=display, problems=problems, limit=remaining):
            try:
                items.append(_prompt_item(raw.data, display, raw.row, raw.line, system_prompt))
            except DataError as error:
                problems.add(error)
    problems.raise_if_any()
    if not items:
        raise DataError(str(path), "has no prompts")
    return items
