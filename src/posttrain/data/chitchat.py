"""Real human conversations from the ``chitchat-dataset`` package (MIT licence), as user/assistant chats.

The package ships ``dataset.json``: ``{conversation_id: {"messages": [[utterance, ...], ...], ...}}`` where each
inner list holds consecutive utterances (``{"text", "timestamp", "sender"}``) of one speaker. Mapping:

* the first speaker is the ``user``, the other the ``assistant``;
* a speaker's consecutive utterances are joined with a space (and consecutive turns of the same speaker merged);
* a conversation is cut before its first turn without text, and a trailing user turn is dropped;
* conversations left with fewer than two turns are skipped.

Conversations keep the file's order. The package is located with :func:`importlib.util.find_spec`, without
importing it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from posttrain.assets import package_file

from .spec import CHITCHAT
from .validation import DataError

__all__ = ["chitchat_conversations", "chitchat_data_file"]

_PACKAGE = "chitchat_dataset"


def chitchat_data_file() -> Path:
    """Path of the package's ``dataset.json``.

    Raises:
        DataError: If the ``chitchat-dataset`` package (or its data file) is not installed.
    """
    return package_file(
        "chitchat-dataset",
        f"{_PACKAGE}/dataset.json",
        install="chitchat-dataset==0.9.0",
        error=lambda message: DataError(CHITCHAT, f"the chitchat data {message}"),
    )


def _to_turns(conversation: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """``((role, text), ...)`` for one raw conversation, following the module docstring's rules."""
    turns: list[tuple[str, str]] = []
    first_sender = None
    for group in conversation.get("messages") or []:
        texts = [u["text"].strip() for u in group if isinstance(u.get("text"), str) and u["text"].strip()]
        if not texts:
            break
        sender = group[0].get("sender")
        first_sender = sender if first_sender is None else first_sender
        role = "user" if sender == first_sender else "assistant"
        text = " ".join(texts)
        if turns and turns[-1][0] == role:
            turns[-1] = (role, f"{turns[-1][1]} {text}")
        else:
            turns.append((role, text))
    if turns and turns[-1][0] == "user":
        turns.pop()
    return tuple(turns) if len(turns) >= 2 else ()


@functools.lru_cache(maxsize=2)
def _all_conversations(path: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    return tuple(turns for turns in map(_to_turns, raw.values()) if turns)


def chitchat_conversations(limit: int | None = None) -> list[list[dict[str, str]]]:
    """The chit-chat conversations as message lists (the first ``limit`` of them when given)."""
    conversations = _all_conversations(str(chitchat_data_file()))
    return [[{"role": role, "content": text} for role, text in turns] for turns in conversations[:limit]]
