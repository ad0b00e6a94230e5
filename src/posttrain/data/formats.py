"""Normalising the common chat-data layouts to one shape: a list of ``{"role", "content"}`` messages.

Accepted formats (``DatasetSpec.format``):

* ``messages`` -- a ``messages`` column holding ``[{"role": ..., "content": ...}, ...]`` (TRL / OpenAI style).
  Tool calling and reasoning fields are kept (see :mod:`posttrain.data.tools`): an assistant's ``tool_calls`` and
  ``reasoning_content`` (also read from ``thinking`` or ``reasoning``), a ``tool`` message's ``tool_call_id`` and
  ``name``; any other key is dropped.
* ``sharegpt`` -- a ``conversations`` column holding ``[{"from": ..., "value": ...}, ...]``; ``from`` is one of
  ``human``/``user``, ``gpt``/``assistant``/``model``/``chatgpt``/``bard``/``bing`` or ``system``, or, for tool
  calling (LLaMA-Factory's layout), ``function_call`` (the value is the JSON of a call ``{"name", "arguments"}`` or
  a list of calls: an assistant message with ``tool_calls``, merged into the assistant message right before it)
  and ``observation``/``tool`` (a tool result).
* ``alpaca`` -- ``instruction``, optional ``input`` and ``output`` columns (optional ``system`` too). A non-empty
  ``input`` is appended to the instruction after a blank line.
* ``prompt_completion`` -- ``prompt`` and ``completion`` columns, each either a string (a user turn and an assistant
  turn) or a list of messages (TRL's conversational prompt-completion).

Whatever the format, a row may also carry ``tools`` (the tool schemas offered to the model) and
``chat_template_kwargs`` (extra chat-template variables such as ``enable_thinking``): :data:`ROW_FIELDS`.

``to_messages`` only reshapes; whether the result is a valid conversation is checked by
:func:`posttrain.data.validation.validate_messages` (and, with tool calls, by
:func:`posttrain.data.tools.normalize_conversation`), so malformed messages pass through unchanged for it to report.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from posttrain.log import get_logger

from .validation import DataError

logger = get_logger(__name__)

__all__ = [
    "FORMATS",
    "FORMAT_COLUMNS",
    "REASONING_KEYS",
    "ROW_FIELDS",
    "SHAREGPT_ROLES",
    "SHAREGPT_TOOL_CALL",
    "detect_format",
    "to_messages",
]

FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
}
"""The columns that identify each format, in the order ``detect_format`` tries them."""

FORMATS: tuple[str, ...] = ("auto", *FORMAT_COLUMNS)
"""Every value ``DatasetSpec.format`` accepts."""

SHAREGPT_ROLES: dict[str, str] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "observation": "tool",
    "tool": "tool",
}
"""ShareGPT ``from`` values (case-insensitive) and the role each becomes."""

SHAREGPT_TOOL_CALL = "function_call"
"""The ShareGPT ``from`` whose value is the JSON of a tool call (or a list of calls): an assistant's ``tool_calls``."""

REASONING_KEYS: tuple[str, ...] = ("reasoning_content", "thinking", "reasoning")
"""Message keys read as an assistant's reasoning (the first one set wins); it is kept as ``reasoning_content``."""

ROW_FIELDS: tuple[str, ...] = ("tools", "chat_template_kwargs")
"""Row fields of every format passed to the chat template: the tool schemas and extra template variables."""

Messages = list[dict[str, Any]]


def detect_format(columns: Iterable[str], *, source: str = "dataset") -> str:
    """Guess the format of a dataset from its column names (used when ``format: auto``).

    Args:
        columns: The dataset's column names (or, for JSON rows, the union of their keys).
        source: File or dataset name for the error message.

    Returns:
        One of ``"messages"``, ``"sharegpt"``, ``"prompt_completion"``, ``"alpaca"``.

    Raises:
        DataError: When no format matches; the message names the columns found and the formats accepted.
    """
    present = list(dict.fromkeys(columns))
    for fmt, required in FORMAT_COLUMNS.items():
        if all(column in present for column in required):
            return fmt
    accepted = "; ".join(f"{fmt} ({' + '.join(cols)})" for fmt, cols in FORMAT_COLUMNS.items())
    found = ", ".join(repr(c) for c in present) if present else "none"
    raise DataError(
        source, f"cannot tell the data format from the columns found ({found}). Accepted formats: {accepted}"
    )


def _field(row: Mapping[str, Any], key: str, fmt: str, *, source: str, row_number: int, line: int | None) -> Any:
    if key not in row:
        keys = ", ".join(repr(k) for k in row) or "none"
        raise DataError(source, f"{fmt} row has no {key!r} field (fields: {keys})", row=row_number, line=line)
    return row[key]


def _keep_fields(message: dict[str, Any]) -> dict[str, Any]:
    """``role``/``content`` and the tool-calling and reasoning fields set (not null) on ``message``."""
    kept = {k: message[k] for k in ("role", "content") if k in message}
    if message.get("tool_calls") is not None:
        kept["tool_calls"] = message["tool_calls"]
    reasoning = next((message[k] for k in REASONING_KEYS if message.get(k) is not None), None)
    if reasoning is not None:
        kept["reasoning_content"] = reasoning
    if message.get("role") == "tool":
        kept.update({k: message[k] for k in ("tool_call_id", "name") if message.get(k) is not None})
    return kept


def _keep_message_fields(messages: Any) -> Any:
    """Copy a message list keeping ``role``/``content`` and the tool-calling and reasoning fields (non-list values
    and non-dict items pass through)."""
    if not isinstance(messages, list):
        return messages
    return [_keep_fields(m) if isinstance(m, dict) else m for m in messages]


def _from_messages(row: Mapping[str, Any], get: Callable[[str], Any]) -> Any:
    return _keep_message_fields(get("messages"))


def _sharegpt_calls(value: Any, index: int) -> list[Any]:
    """The ``tool_calls`` of a ShareGPT ``function_call`` turn (message ``index``, 1-based): its value is the JSON of
    a call ``{"name", "arguments"}`` or of a list of calls (or already such an object or list)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise _ShareGPTProblem(
                f"message {index} ('{SHAREGPT_TOOL_CALL}') value is not valid JSON ({error.msg} at character "
                f'{error.pos + 1}); expected a call {{"name": ..., "arguments": {{...}}}}'
            ) from None
    calls = value if isinstance(value, list) else [value]
    return [{"type": "function", "function": call} if isinstance(call, dict) else call for call in calls]


class _ShareGPTProblem(Exception):
    """A ShareGPT turn that cannot be reshaped (located by ``to_messages``)."""


def _from_sharegpt(row: Mapping[str, Any], get: Callable[[str], Any]) -> Any:
    turns = get("conversations")
    if not isinstance(turns, list):
        return turns
    messages: list[Any] = []
    for turn in turns:
        if not isinstance(turn, dict):
            messages.append(turn)
            continue
        message: dict[str, Any] = {}
        speaker = turn.get("from", turn.get("role"))
        value = turn.get("value", turn.get("content"))
        if isinstance(speaker, str) and speaker.lower() == SHAREGPT_TOOL_CALL:
            calls = _sharegpt_calls(value, len(messages) + 1)
            last = messages[-1] if messages else None
            if isinstance(last, dict) and last.get("role") == "assistant":  # calls after the reply's own text
                last["tool_calls"] = [*(last.get("tool_calls") or []), *calls]
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": calls})
            continue
        if speaker is not None:
            message["role"] = SHAREGPT_ROLES.get(speaker.lower(), speaker) if isinstance(speaker, str) else speaker
        if "value" in turn or "content" in turn:
            message["content"] = value
        messages.append(_keep_fields({**turn, **message}) if message.get("role") in ("assistant", "tool") else message)
    return messages


def _from_alpaca(row: Mapping[str, Any], get: Callable[[str], Any]) -> Any:
    instruction, output = get("instruction"), get("output")
    extra = row.get("input")
    if isinstance(instruction, str) and isinstance(extra, str) and extra.strip():
        instruction = f"{instruction}\n\n{extra}"
    messages: Messages = []
    system = row.get("system")
    if isinstance(system, str) and system.strip():
        messages.append({"role": "system", "content": system})
    messages += [{"role": "user", "content": instruction}, {"role": "assistant", "content": output}]
    return messages


def _from_prompt_completion(row: Mapping[str, Any], get: Callable[[str], Any]) -> Any:
    prompt, completion = get("prompt"), get("completion")
    head = _keep_message_fields(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if isinstance(completion, list):
        return head + _keep_message_fields(completion)
    return head + [{"role": "assistant", "content": completion}]


_CONVERTERS: dict[str, Callable[[Mapping[str, Any], Callable[[str], Any]], Any]] = {
    "messages": _from_messages,
    "sharegpt": _from_sharegpt,
    "alpaca": _from_alpaca,
    "prompt_completion": _from_prompt_completion,
}


def to_messages(row: Mapping[str, Any], fmt: str, *, source: str, row_index: int, line: int | None = None) -> Messages:
    """Convert one dataset row to a list of ``{"role", "content"}`` messages.

    Args:
        row: The example, a mapping of column name to value.
        fmt: Its format, one of ``"messages"``, ``"sharegpt"``, ``"alpaca"``, ``"prompt_completion"``
            (resolve ``"auto"`` first with :func:`detect_format`).
        source: File or dataset name, for error messages.
        row_index: The row's 0-based index in ``source``; errors report it as ``row {row_index + 1}``.
        line: The row's 1-based line number when ``source`` is a JSONL file (errors then say ``line N``).

    Returns:
        The messages, keeping ``role`` and ``content`` of each and the tool-calling and reasoning fields (see the
        module docstring; ``reasoning_content`` under that name). The result is not validated: pass it to
        :func:`~posttrain.data.tools.normalize_conversation` (or
        :func:`~posttrain.data.validation.validate_messages`).

    Raises:
        DataError: If ``row`` is not a mapping or lacks a column its format requires, or a ShareGPT
            ``function_call`` value is not JSON.
        ValueError: If ``fmt`` is not a concrete format name.
    """
    if fmt not in _CONVERTERS:
        raise ValueError(f"unknown data format {fmt!r}; expected one of {', '.join(_CONVERTERS)}")
    row_number = row_index + 1
    if not isinstance(row, Mapping):
        problem = f"expected an object with named fields, got {type(row).__name__}"
        raise DataError(source, problem, row=row_number, line=line)

    def get(key: str) -> Any:
        return _field(row, key, fmt, source=source, row_number=row_number, line=line)

    try:
        return _CONVERTERS[fmt](row, get)
    except _ShareGPTProblem as problem:
        raise DataError(source, str(problem), row=row_number, line=line) from None


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """``messages`` with a leading system message ``system_prompt`` when it has none (a new list; the same messages
    when ``system_prompt`` is empty). Every stage adds the configured system prompt through this one function, the
    way the exported Ollama Modelfile's SYSTEM does."""
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return list(messages)


def normalize_prompt(text: str) -> str:
    """``text`` without case, Unicode compatibility forms, punctuation or spacing differences: how held-out and
    evaluation prompts are compared with training prompts."""
    return " ".join(re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).casefold()).split())


def user_texts(messages: Any) -> list[str]:
    """The user turns of a conversation or prompt (a plain string is one user turn)."""
    if isinstance(messages, str):
        return [messages]
    return [str(m["content"]) for m in messages or () if m.get("role") == "user"]


def prompt_keys(messages: Any) -> list[str]:
    """What the model is asked at each user turn, as held-out and evaluation rows are compared with training rows:
    the normalized user turns up to and including it. A generic follow-up that many conversations share ("Are you
    sure?") only matches together with what preceded it; a single-turn prompt is its normalized text."""
    keys, context = [], []
    for text in user_texts(messages):
        context.append(normalize_prompt(text))
        keys.append(" \u241e ".join(context))
    return keys


def drop_trained_prompts(train: list, test: list, prompt_of=lambda row: row) -> list:
    """The held-out rows in which the model is asked nothing it was trained on (:func:`prompt_keys`: each user turn
    in its context; real data repeats itself: "Hello"), saying how many were dropped. When none is left, the run
    goes on without a held-out split, with a warning: a split the user may not have asked for never stops training."""
    trained = {key for row in train for key in prompt_keys(prompt_of(row))}
    kept = [row for row in test if not any(key in trained for key in prompt_keys(prompt_of(row)))]
    if kept and len(kept) < len(test):
        logger.info(
            f"posttrain: test_split_size: {len(test) - len(kept)} of {len(test)} held-out rows dropped: the model is "
            "asked the same (each user turn with the turns before it) in a training row"
        )
    if test and not kept:
        logger.warning(
            f"posttrain: warning: test_split_size: every one of the {len(test)} held-out rows repeats a training "
            "prompt (each user turn with the turns before it), so this run has no held-out split; use more varied "
            "data or a larger test_split_size"
        )
    return kept
