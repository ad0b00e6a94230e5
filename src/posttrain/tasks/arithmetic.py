"""``arithmetic``: additions and subtractions of 1-3 digit numbers, multiplications by a 1-2 digit number; checked by
the last number in the reply."""

from __future__ import annotations

import random
from collections.abc import Callable

from posttrain.checks.answers import check_numeric
from posttrain.tasks.base import Identity, Pool, Task, TaskExample, number_pool

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

_VALIDATION_QUESTIONS: tuple[str, ...] = (
    "Work out {a} {sym} {b} for me.",
    "Quick math check: {a} {sym} {b} equals what?",
    "If you take {a} {word} {b}, what number do you get?",
)
_TEST_QUESTIONS: tuple[str, ...] = (
    "Could you compute {a} {sym} {b}?",
    "Solve this: {a} {sym} {b}",
    "Tell me the result of {a} {word} {b}.",
)
_ARITHMETIC_QUESTIONS: dict[Pool, tuple[str, ...]] = {
    "train": _TRAIN_QUESTIONS,
    "validation": _VALIDATION_QUESTIONS,
    "test": _TEST_QUESTIONS,
}

_ARITHMETIC_REPLIES: tuple[str, ...] = (
    "{a} {sym} {b} = {result}.",
    "The answer is {result}.",
    "{a} {word} {b} is {result}.",
    "{a} {sym} {b} equals {result}.",
)


def _operand(rng: random.Random, pool: Pool, max_digits: int = 3) -> int:
    """A whole number of 1 to ``max_digits`` digits (each length equally likely) of ``pool``
    (:func:`~posttrain.tasks.base.number_pool`), so no two pools' prompts share a number."""
    digits = rng.randint(1, max_digits)
    while True:
        n = rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)
        if number_pool(n) == pool:
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


TASK = Task(
    "arithmetic",
    "Adds, subtracts and multiplies small whole numbers.",
    _make_arithmetic,
    check_numeric,
    max_new_tokens=32,
)


_PLACES = ("ones", "tens", "hundreds", "thousands", "ten-thousands")


def _add_columns(a: int, b: int) -> list[str]:
    """Column-wise addition of two whole numbers >= 0, right to left, with carries."""
    lines, carry = [], 0
    for k in range(max(len(str(a)), len(str(b)))):
        x, y = a // 10**k % 10, b // 10**k % 10
        total = x + y + carry
        terms = f"{x} + {y}" + (f" + {carry}" if carry else "")
        lines.append(f"{_PLACES[k]}: {terms} = {total}, write {total % 10}" + (", carry 1" if total >= 10 else ""))
        carry = total // 10
    if carry:
        lines.append(f"{_PLACES[len(lines)]}: write the carry {carry}")
    return lines


def _subtract_columns(a: int, b: int) -> list[str]:
    """Column-wise subtraction ``a - b`` of whole numbers ``a >= b >= 0``, right to left, with borrows."""
    lines, borrow = [], 0
    for k in range(len(str(a))):
        x, y = a // 10**k % 10 - borrow, b // 10**k % 10
        top = f"{x + borrow} - {borrow} = {x}, " if borrow else ""  # the digit after the borrow it lent
        borrow = int(x < y)
        if borrow:
            lines.append(f"{_PLACES[k]}: {top}borrow, {x + 10} - {y} = {x + 10 - y}, write {x + 10 - y}")
        else:
            lines.append(f"{_PLACES[k]}: {top}{x} - {y} = {x - y}, write {x - y}")
    return lines


def _multiply_parts(a: int, b: int) -> list[str]:
    """Partial products: the (longer) multiplicand split by place value, each part times the other factor, then
    their sum; a one-digit times one-digit product is stated directly."""
    if a < 10 <= b:
        a, b = b, a
    parts = [a // 10**k % 10 * 10**k for k in reversed(range(len(str(a))))]
    parts = [p for p in parts if p] or [0]
    if len(parts) == 1:
        return [f"{a} × {b} = {a * b}"]
    products = [p * b for p in parts]
    return [
        f"split {a} = {' + '.join(map(str, parts))}",
        *(f"{p} × {b} = {q}" for p, q in zip(parts, products)),
        f"{' + '.join(map(str, products))} = {a * b}",
    ]


def working(example: TaskExample) -> str:
    """The worked solution of an ``arithmetic`` example, before its final answer line: ``+`` and ``-`` column by
    column from the ones with carries and borrows (a negative difference as the positive one, negated), ``×`` as
    partial products by place value::

        457 + 68, column by column:
        ones: 7 + 8 = 15, write 5, carry 1
        tens: 5 + 6 + 1 = 12, write 2, carry 1
        hundreds: 4 + 0 + 1 = 5, write 5

    Every ``x op y = z`` in it is true and the written digits, read from the last column, are the result.
    Deterministic in the example; :func:`posttrain.tasks.working.worked_response` adds the ``Answer:`` line."""
    a, b, op = example.meta["a"], example.meta["b"], example.meta["op"]
    if op == "+":
        return "\n".join((f"{a} + {b}, column by column:", *_add_columns(a, b)))
    if op == "-":
        if a >= b:
            return "\n".join((f"{a} - {b}, column by column:", *_subtract_columns(a, b)))
        return "\n".join(
            (
                f"{b} > {a}, so {a} - {b} = -({b} - {a})",
                f"{b} - {a}, column by column:",
                *_subtract_columns(b, a),
                f"{a} - {b} = -{b - a}",
            )
        )
    return "\n".join((f"{a} × {b}, by partial products:", *_multiply_parts(a, b)))
