"""Tool calls in model replies, and the rule checks of a tool-using reply sequence.

The call format is the one posttrain's ChatML template renders (Hermes / Qwen2.5 style, the format its tool-trained
models emit)::

    <tool_call>
    {"name": "calculator", "arguments": {"operation": "multiply", "a": 4823, "b": 367}}
    </tool_call>

:func:`parse_tool_calls` reads every such block of a reply (a last block cut off before ``</tool_call>`` still counts
when its JSON is whole) and says what did not parse; :func:`calls_from_message` does the same for an
OpenAI-compatible reply message (``tool_calls`` with JSON-text ``arguments``, or calls written in ``content``, as
llama.cpp's server returns them when it does not parse the template's format itself). Evaluation's tool loop
(:mod:`posttrain.evaluation.tool_loop`) and the export's serving checks share them.

The checks (``check(response, answer=None, **meta) -> bool``, in :data:`posttrain.checks.GENERIC_CHECKS`) score what
the tool loop recorded: ``replies`` (the model's raw replies, in order) and ``call`` (the expected call,
``{"name", "arguments"}``) in ``meta``; ``commutative`` optionally names two argument keys whose values may be
swapped (``["a", "b"]`` for a sum or a product). Arguments compare by meaning: numbers by value (``12``, ``12.0`` and
``"12"`` are equal), strings case- and whitespace-insensitively; a missing or extra argument is a mismatch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ParsedReply",
    "ToolCall",
    "arguments_match",
    "calls_from_message",
    "check_tool_arguments",
    "check_tool_call",
    "check_tool_name",
    "first_call",
    "parse_tool_calls",
]

_BLOCK_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
_NUMERAL_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class ToolCall:
    """One parsed call: the tool's name and its arguments (a JSON object)."""

    name: str
    arguments: dict[str, Any]

    def as_message_call(self) -> dict[str, Any]:
        """The call as an assistant message's ``tool_calls`` item (what chat templates render)."""
        return {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class ParsedReply:
    """A reply split into its calls and the text around them.

    Attributes:
        content: The reply without its ``<tool_call>`` blocks (stripped): the answer text, or a remark before a call.
        calls: The calls that parsed, in order.
        errors: One sentence per ``<tool_call>`` block that did not (not JSON, no name, arguments not an object).
    """

    content: str
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _call(value: Any) -> ToolCall | str:
    """A call from a decoded JSON value, or why it is not one."""
    if not isinstance(value, Mapping):
        return f"a call must be a JSON object, got {type(value).__name__}"
    if "function" in value and isinstance(value["function"], Mapping):  # {"type": "function", "function": {...}}
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        return "the call has no 'name'"
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # OpenAI's JSON text
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            return f"the arguments of {name!r} are not valid JSON ({error.msg})"
    if not isinstance(arguments, Mapping):
        return f"the arguments of {name!r} must be a JSON object, got {type(arguments).__name__}"
    return ToolCall(name.strip(), dict(arguments))


def parse_tool_calls(text: str) -> ParsedReply:
    """The ``<tool_call>`` JSON blocks of a reply (see the module docstring); never raises."""
    calls, errors = [], []
    for k, match in enumerate(_BLOCK_RE.finditer(text), start=1):
        body = match.group(1).strip()
        try:
            parsed = _call(json.loads(body))
        except json.JSONDecodeError as error:
            parsed = f"not valid JSON ({error.msg} at character {error.pos + 1})"
        if isinstance(parsed, ToolCall):
            calls.append(parsed)
        else:
            errors.append(f"<tool_call> block {k}: {parsed}")
    content = _BLOCK_RE.sub("", text).strip()
    return ParsedReply(content, calls, errors)


def calls_from_message(message: Mapping[str, Any]) -> ParsedReply:
    """The calls of an OpenAI-compatible reply message: its ``tool_calls`` when the server parsed them, plus any
    ``<tool_call>`` blocks left in its ``content``."""
    parsed = parse_tool_calls(message.get("content") or "")
    for k, item in enumerate(message.get("tool_calls") or (), start=1):
        call = _call(item)
        if isinstance(call, ToolCall):
            parsed.calls.append(call)
        else:
            parsed.errors.append(f"tool_calls item {k}: {call}")
    return parsed


# ---------------------------------------------------------------------------------------------------- checks


def _same_value(got: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(got, bool):
        return got is expected
    if isinstance(expected, (int, float)):
        if isinstance(got, str) and _NUMERAL_RE.fullmatch(got.strip().replace(",", "")):
            got = float(got.strip().replace(",", ""))
        return isinstance(got, (int, float)) and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(expected, str):
        return isinstance(got, str) and " ".join(got.split()).casefold() == " ".join(expected.split()).casefold()
    return got == expected


def arguments_match(got: Mapping[str, Any], expected: Mapping[str, Any], commutative: Sequence[str] = ()) -> bool:
    """Whether a call's arguments mean the expected ones (see the module docstring)."""
    if set(got) != set(expected):
        return False
    if all(_same_value(got[k], v) for k, v in expected.items()):
        return True
    if len(commutative) == 2:
        a, b = commutative
        swapped = {**expected, a: expected.get(b), b: expected.get(a)}
        return all(_same_value(got[k], v) for k, v in swapped.items())
    return False


def first_call(replies: Sequence[str] | None) -> ToolCall | None:
    """The first call of the first reply (the call the model makes for the user's question), or None."""
    if not replies:
        return None
    calls = parse_tool_calls(replies[0]).calls
    return calls[0] if calls else None


def _replies(meta: Mapping[str, Any]) -> Sequence[str]:
    replies = meta.get("replies")
    if replies is None:
        raise KeyError("tool checks need the model's replies of a tool loop ('replies' in meta: a suite with tools)")
    return replies


def _expected(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    call = meta.get("call")
    if not isinstance(call, Mapping) or "name" not in call:
        raise KeyError("tool checks need the expected call ('call': {name, arguments} in meta)")
    return call


def check_tool_call(response: str, answer: str | None = None, **meta: Any) -> bool:
    """``tool_call``: the model's first reply holds a call that parses."""
    return first_call(_replies(meta)) is not None


def check_tool_name(response: str, answer: str | None = None, **meta: Any) -> bool:
    """``tool_name``: the first call names the expected tool."""
    expected, call = _expected(meta), first_call(_replies(meta))
    return call is not None and call.name == expected["name"]


def check_tool_arguments(response: str, answer: str | None = None, **meta: Any) -> bool:
    """``tool_arguments``: the first call names the expected tool with the expected arguments."""
    expected, call = _expected(meta), first_call(_replies(meta))
    return (
        call is not None
        and call.name == expected["name"]
        and arguments_match(call.arguments, expected.get("arguments") or {}, meta.get("commutative") or ())
    )
