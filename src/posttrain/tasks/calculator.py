"""``calculator``: exact arithmetic on large numbers through a tool, for what a small model cannot compute itself.

Each example is a tool-using conversation: the user asks for a sum, difference or product of 4-6 digit numbers (a
3-4 digit by 2-3 digit product); the assistant calls the ``calculator`` tool (:data:`TOOLS`, an OpenAI JSON schema)
with the operation and both operands; the ``tool`` message carries the result :func:`run_tool` computes in plain
Python; the assistant's final reply states it. ``train`` and ``eval`` use different phrasings and different numbers
(every ``eval`` operand has ``n % 4 == 3``, no ``train`` operand has).

Evaluation runs the loop for real (:mod:`posttrain.evaluation.tool_loop`, suite ``tools``) and scores each step by
rule: a parseable call, the right tool, the right arguments (``tool_call``, ``tool_name``, ``tool_arguments`` of
:mod:`posttrain.checks.tool_calls`), and the final answer; this task's check (:func:`check_calculator`) passes only
when all of them do. The task is not part of ``builtin: all``: its rows carry ``tools`` and tool calls, which need a
tool-capable chat template (posttrain adds its ChatML one when the model's own cannot render them).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping
from typing import Any

from posttrain.checks.answers import numeric_match
from posttrain.checks.tool_calls import check_tool_arguments
from posttrain.tasks.base import Identity, Pool, Task, TaskExample, number_pool

TOOL_NAME = "calculator"

_FUNCTIONS: dict[str, Callable[[int | float, int | float], int | float]] = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
}

TOOLS: tuple[dict[str, Any], ...] = (
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Exact arithmetic on two numbers: add, subtract or multiply them.",
            "parameters": {
                "type": "object",
                "properties": {
                    "operation": {"type": "string", "enum": list(_FUNCTIONS), "description": "What to do."},
                    "a": {"type": "number", "description": "The first number."},
                    "b": {"type": "number", "description": "The second number."},
                },
                "required": ["operation", "a", "b"],
            },
        },
    },
)
"""The tools every example offers (``apply_chat_template(tools=...)``)."""

_NUMERAL_RE = re.compile(r"[-+]?\d+(?:\.\d+)?")
_MAX_MAGNITUDE = 10**15  # keep products of what a model sends within exact float range


class ToolArgumentError(ValueError):
    """Arguments the calculator refuses; the message goes back to the model as the tool's error."""


def _number(value: Any, key: str) -> int | float:
    """A JSON number, or a plain numeral string (``"4823"``) -- parsed by pattern, never evaluated."""
    if isinstance(value, bool):
        raise ToolArgumentError(f"'{key}' must be a number, got a boolean")
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        if not _NUMERAL_RE.fullmatch(text):
            raise ToolArgumentError(f"'{key}' must be a number, got the text {value[:40]!r}")
        value = float(text) if "." in text else int(text)
    if not isinstance(value, (int, float)) or value != value or abs(value) > _MAX_MAGNITUDE:
        raise ToolArgumentError(f"'{key}' must be a finite number below 10^15, got {value!r}")
    return value


def calculator(operation: Any, a: Any, b: Any) -> int | float:
    """The ``calculator`` tool: ``operation`` (add, subtract, multiply) applied to two numbers.

    Raises:
        ToolArgumentError: For an unknown operation or an operand that is not a number.
    """
    if not isinstance(operation, str) or operation.strip().lower() not in _FUNCTIONS:
        raise ToolArgumentError(f"'operation' must be one of {', '.join(_FUNCTIONS)}, got {operation!r}")
    result = _FUNCTIONS[operation.strip().lower()](_number(a, "a"), _number(b, "b"))
    return int(result) if isinstance(result, float) and result.is_integer() else result


def run_tool(name: str, arguments: Mapping[str, Any]) -> str:
    """Run a call of one of :data:`TOOLS` and return the ``tool`` message's content (JSON text): ``{"result": n}``
    or ``{"error": "..."}`` for an unknown tool, missing/extra arguments or operands that are not numbers. Plain
    Python on typed values: nothing a model writes is evaluated."""
    if name != TOOL_NAME:
        return json.dumps({"error": f"unknown tool {name!r}; available: {TOOL_NAME}"})
    expected = {"operation", "a", "b"}
    if not isinstance(arguments, Mapping) or set(arguments) != expected:
        got = ", ".join(map(str, arguments)) if isinstance(arguments, Mapping) else type(arguments).__name__
        return json.dumps({"error": f"{TOOL_NAME} takes operation, a and b (got {got or 'nothing'})"})
    try:
        return json.dumps({"result": calculator(arguments["operation"], arguments["a"], arguments["b"])})
    except ToolArgumentError as error:
        return json.dumps({"error": str(error)})


# --------------------------------------------------------------------------------------------------- examples

_SYMBOLS: dict[str, tuple[tuple[str, ...], str, str]] = {
    # operation: (symbols, word, imperative)
    "add": (("+",), "plus", "Add {a} and {b}."),
    "subtract": (("-",), "minus", "Subtract {b} from {a}."),
    "multiply": (("×", "*", "x"), "times", "Multiply {a} by {b}."),
}

_TRAIN_QUESTIONS: tuple[str, ...] = (
    "What is {a} {sym} {b}?",
    "Please compute {a} {word} {b}.",
    "Use the calculator: what is {a} {sym} {b}?",
    "I need the exact value of {a} {sym} {b}.",
    "Can you calculate {a} {word} {b} for me?",
    "{imperative}",
)
_VALIDATION_QUESTIONS: tuple[str, ...] = (
    "Help me figure out {a} {sym} {b}, exactly.",
    "How much is {a} {word} {b}?",
    "Give me the precise result of {a} {sym} {b}.",
    "Tell me what {a} {word} {b} comes to.",
)
_TEST_QUESTIONS: tuple[str, ...] = (
    "What do you get for {a} {sym} {b}?",
    "Find the exact answer to {a} {word} {b}.",
    "Please work out {a} {sym} {b} precisely.",
)
_QUESTIONS: dict[Pool, tuple[str, ...]] = {
    "train": _TRAIN_QUESTIONS,
    "validation": _VALIDATION_QUESTIONS,
    "test": _TEST_QUESTIONS,
}

_REPLIES: tuple[str, ...] = (
    "{a} {sym} {b} = {result}.",
    "The result is {result}.",
    "{a} {word} {b} is {result}.",
    "The calculator gives {result}.",
)


def _operand(rng: random.Random, pool: Pool, low_digits: int, high_digits: int) -> int:
    """A whole number of ``low_digits`` to ``high_digits`` digits of ``pool`` (:func:`~.base.number_pool`)."""
    digits = rng.randint(low_digits, high_digits)
    while True:
        n = rng.randint(10 ** (digits - 1), 10**digits - 1)
        if number_pool(n) == pool:
            return n


def _make_calculator(rng: random.Random, identity: Identity, pool: Pool) -> TaskExample:
    operation = rng.choice(tuple(_SYMBOLS))
    symbols, word, imperative = _SYMBOLS[operation]
    if operation == "multiply":
        a, b = _operand(rng, pool, 3, 4), _operand(rng, pool, 2, 3)
    else:
        a, b = _operand(rng, pool, 4, 6), _operand(rng, pool, 4, 6)
    result = calculator(operation, a, b)
    facts = {"a": a, "b": b, "sym": rng.choice(symbols), "word": word}
    call = {"name": TOOL_NAME, "arguments": {"operation": operation, "a": a, "b": b}}
    slip = rng.choice((-10, 10, -100, 100, -1, 1))  # a dropped or extra carry
    return TaskExample(
        task="calculator",
        prompt=rng.choice(_QUESTIONS[pool]).format(**facts, imperative=imperative.format(a=a, b=b)),
        answer=str(result),
        response=rng.choice(_REPLIES).format(**facts, result=result),
        wrong_response=rng.choice(_REPLIES[:2]).format(**facts, result=result + slip),
        meta={
            "tools": [dict(tool) for tool in TOOLS],
            "call": call,
            "tool_result": run_tool(TOOL_NAME, call["arguments"]),
            "commutative": ["a", "b"] if operation in ("add", "multiply") else [],
        },
    )


def check_calculator(response: str, answer: str, **meta: Any) -> bool:
    """The final reply states the result (its last number); when the tool loop's ``replies`` are in ``meta`` (an
    evaluation), the first reply must also have called the calculator with the right arguments."""
    if not numeric_match(response, answer):
        return False
    return "replies" not in meta or check_tool_arguments(response, answer, **meta)


TASK = Task(
    "calculator",
    "Calls a calculator tool for sums, differences and products of large numbers, then states the result.",
    _make_calculator,
    check_calculator,
    tools=TOOLS,
    run_tool=run_tool,
    max_new_tokens=48,
)
