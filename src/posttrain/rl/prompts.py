"""Prompts for online RL: builtin tasks (with their answers, so rule rewards can check replies), local prompt files
(``prompt`` or ``messages`` rows, optional ``task``/``answer``/``meta``) and conversation sources (the last assistant
turn removed), as a ``datasets`` table with columns ``prompt`` (messages ending with a user turn), ``task``,
``answer`` and ``meta`` (JSON) -- the form TRL's GRPO/RLOO trainers and posttrain's PPO both read.

Loading reuses :func:`posttrain.rl.pairs.task_prompts` / :func:`posttrain.rl.pairs.read_prompts` (on-policy pairs read
prompts the same way) and :func:`posttrain.data.load_conversations` for everything else.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from posttrain.data import load_conversations
from posttrain.data.files import looks_local
from posttrain.data.formats import drop_trained_prompts, with_system_prompt
from posttrain.data.spec import BUILTIN_DEFAULT_SAMPLES, BUILTIN_PREFIX, DatasetSpec, Identity
from posttrain.data.validation import DataError
from posttrain.rl.prompt_items import PromptItem, read_prompts, task_prompts
from posttrain.tasks.base import SELECTION_POOL

COLUMNS = ("prompt", "task", "answer", "meta")


def _items(spec: DatasetSpec, *, seed: int, identity: Identity, system_prompt: str | None):

    if spec.path.startswith(BUILTIN_PREFIX):
        if spec.reply != "response":  # an RL source gives prompts only: a reply style would be silently unused
            raise DataError(spec.path, f"reply: {spec.reply} is for SFT conversations, not RL prompts; remove it")
        count = spec.num_samples or BUILTIN_DEFAULT_SAMPLES
        return task_prompts([spec.path], count, seed=seed, identity=identity, system_prompt=system_prompt)
    if looks_local(spec.path):
        return read_prompts(spec.path, limit=spec.num_samples, system_prompt=system_prompt)
    conversations = load_conversations([spec], seed=seed, identity=identity)["train"]
    items = []
    for number, row in enumerate(conversations, start=1):
        # everything before the last assistant reply
        prompt = row["messages"][:-1]
        carried = [key for key in ("tool_calls", "reasoning_content") if any(m.get(key) for m in prompt)]
        if row.get("tools") or any(m["role"] == "tool" for m in prompt):
            carried.insert(0, "tools")
        if carried:  # RL prompts are role/content turns: refuse what would otherwise be dropped
            raise DataError(
                spec.path,
                f"{', '.join(carried)} in an RL prompt: prompts for PPO/GRPO/RLOO/pairs are plain role/content "
                "turns; use conversations without them",
                row=number,
            )
        items.append(PromptItem(with_system_prompt(prompt, system_prompt)))
    return items


def _row(item: PromptItem) -> dict:
    return {
        "prompt": [{"role": m["role"], "content": m["content"]} for m in item.messages],
        "task": item.task or "",
        "answer": "" if item.answer is None else str(item.answer),
        "meta": json.dumps(item.meta or {}, sort_keys=True),
    }


def load_prompts(
    specs: Sequence[DatasetSpec],
    *,
    test_split_size: float | int | None = None,
    seed: int = 42,
    identity: Identity | None = None,
    system_prompt: str | None = None,
):
    """A ``DatasetDict`` with ``train`` (and ``test`` when ``test_split_size`` is set) prompt tables.

    Raises:
        DataError: No sources, a source without prompts, or a test split that leaves no training prompts.
        DataValidationError: Malformed rows in a prompt file (every problem, located by file and line).
    """
    import datasets

    if not specs:
        raise DataError("datasets", "no prompt sources: list at least one (e.g. `- path: builtin:arithmetic`)")
    identity = identity or Identity()
    rows, sources = [], []
    for k, spec in enumerate(specs):
        items = _items(spec, seed=seed, identity=identity, system_prompt=system_prompt)
        if not items:
            raise DataError(spec.path, "has no prompts")
        rows += [_row(item) for item in items]
        sources += [k] * len(items)
    splits = {"train": rows}
    if test_split_size:
        n_test = round(test_split_size * len(rows)) if test_split_size < 1 else int(test_split_size)
        n_test = max(1, n_test)
        if n_test >= len(rows):
            raise DataError("test_split_size", f"{test_split_size} leaves no training prompts of {len(rows)}")
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        test = [rows[i] for i in order[:n_test]]
        # a built-in task's held-out prompts come from its validation pool, never from the training (or test) pool
        for k, spec in enumerate(specs):
            places = [j for j, i in enumerate(order[:n_test]) if sources[i] == k]
            if places and spec.path.startswith(BUILTIN_PREFIX):
                fresh = task_prompts(
                    [spec.path],
                    len(places),
                    seed=seed,
                    identity=identity,
                    system_prompt=system_prompt,
                    pool=SELECTION_POOL,
                )
                for j, item in zip(places, fresh, strict=False):
                    test[j] = _row(item)
                short = set(places[len(fresh) :])  # its pool has fewer distinct prompts: a smaller held-out split
                test = [row for j, row in enumerate(test) if j not in short]
        train = [rows[i] for i in order[n_test:]]
        test = drop_trained_prompts(train, test, lambda row: row["prompt"])
        splits = {"train": train, "test": test} if test else {"train": train}
    return datasets.DatasetDict({name: datasets.Dataset.from_list(split) for name, split in splits.items()})
