"""``arithmetic``: additions and subtractions of 1-3 digit numbers, multiplications by a 1-2 digit number; checked by
the last number in the reply."""

from __future__ import annotations

import random
from collections.abc import Callable

from posttrain.checks.answers import check_numeric
from posttrain.tasks.base import Identity, Pool, Task, TaskExample

_OPERATIONS: dict[str, tuple[Callable[[int, int], int], tuple[str, ...], str, str]] = {
    # op: (function, symbols, word, imperative phrasing)
    "+": (lambda a, b: a + b, ("+",), "plus", "Add {a} and {b}."),
    "-": (lambda a, b: a - b, ("-", "−"), "minus", "Subtract {b} from {a}."),
    "*": (lambda a, b: a * b, ("×", "*", "x"), "times", "Multiply {a} by {b}."),
}

_TRAIN_QUESTIONS: tuple[str, ...] = (
    "What is {a} {sym} {b}?",
    "Calculate {a} {word} {b}.",
    "{imperative}",
    "{a} {sym} {b} = ?",
    "Quick math question: what's {a} {word} {b}?",
)

_EVAL_QUESTIONS: tuple[str, ...] = (
    "Work out {a} {sym} {b} for me.",
    "Quick math check: {a} {sym} {b} equals what?",
    "If you take {a} {word} {b}, what number do you get?",
)
_ARITHMETIC_QUESTIONS: dict[Pool, tuple[str, ...]] = {"train": _TRAIN_QUESTIONS, "eval": _EVAL_QUESTIONS}

_ARITHMETIC_REPLIES: tuple[str, ...] = (
    "{a} {sym} {b} = {result}.",
    "The answer is {result}.",
    "{a} {word} {b} is {result}.",
    "{a} {sym} {b} equals {result}.",
)


def _operand(rng: random.Random, pool: Pool, max_digits: int = 3) -> int:
    """A whole number of 1 to ``max_digits`` digits (each length equally likely) of ``pool``: ``eval`` numbers are
    those with ``n % 4 == 3``, ``train`` numbers all the others, so no training prompt holds a number an evaluation
    prompt uses."""
    digits = rng.randint(1, max_digits)
    while True:
        n = rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)
        if (n % 4 == 3) == (pool == "eval"):
            return n


def _make_arithmetic(rng: random.Random, identity: Identity, pool: Pool) -> TaskExample:
    op = rng.choice(tuple(_OPERATIONS))
    function, symbols, word, imperative = _OPERATIONS[op]
    a, b = _operand(rng, pool), _operand(rng, pool, max_digits=2 if op == "*" else 3)  # keep products small
    result = function(a, b)
    sym = rng.choice(symbols)
    facts = {"a": a, "b": b, "sym": sym, "word": word}
    shown = f"{result:,}" if abs(result) >= 1000 and rng.random() < 0.5 else str(result)
    if op == "*":
        slip = rng.choice((-a, a, -10, 10)) or 10  # a × (b ± 1), or a carry slip (never 0)
    else:
        slip = rng.choice((-10, 10, -1, 1))  # a dropped or extra carry, or off by one
    wrong = result + slip
    return TaskExample(
        task="arithmetic",
        prompt=rng.choice(_ARITHMETIC_QUESTIONS[pool]).format(**facts, imperative=imperative.format(a=a, b=b)),
        answer=str(result),
        response=rng.choice(_ARITHMETIC_REPLIES).format(**facts, result=shown),
        wrong_response=rng.choice(_ARITHMETIC_REPLIES[:2]).format(**facts, result=wrong),
        meta={"a": a, "b": b, "op": op},
    )


TASK = Task("arithmetic", "Adds, subtracts and multiplies small whole numbers.", _make_arithmetic, check_numeric)
