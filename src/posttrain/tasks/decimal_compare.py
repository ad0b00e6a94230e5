"""``decimal_compare``: "Which is larger, 9.11 or 9.9?", mostly pairs where comparing the digits after the point as
whole numbers gives the wrong answer; its check reads the number the reply finally calls larger."""

from __future__ import annotations

import math
import random
import re
from typing import Any

from posttrain.checks.answers import as_number
from posttrain.checks.text import MINUS_SIGNS, extract_number
from posttrain.tasks.base import Identity, Pool, Task, TaskExample

#: the whole parts each pool's numbers use (the pools share no number)
_WHOLE_PARTS: dict[Pool, tuple[int, int]] = {"train": (0, 20), "validation": (30, 49), "test": (60, 79)}


def _digits(rng: random.Random, count: int) -> str:
    """``count`` random digits, the last one non-zero (so ``"x." + digits`` has no trailing zero)."""
    return "".join(str(rng.randint(0, 9)) for _ in range(count - 1)) + str(rng.randint(1, 9))


def _decimal_pair(rng: random.Random, pool: Pool) -> tuple[str, str, bool]:
    """``(larger, smaller, tricky)``. Tricky pairs have a shorter fractional part that is larger although the
    longer one's digits form the bigger whole number (9.9 vs 9.11)."""
    low, high = _WHOLE_PARTS[pool]
    whole = rng.randint(low, high)
    roll = rng.random()
    if roll < 0.7:
        short = rng.randint(2, 9)
        longer = str(rng.randint(1, short - 1)) + _digits(rng, rng.choice((1, 1, 2)))
        return f"{whole}.{short}", f"{whole}.{longer}", True
    if roll < 0.85:  # different whole parts, e.g. 12.5 vs 8.75 (also wrong when compared as strings)
        big, small = sorted(rng.sample(range(max(low, 1), high + 10), 2), reverse=True)
        return f"{big}.{_digits(rng, rng.choice((1, 2)))}", f"{small}.{_digits(rng, rng.choice((1, 2)))}", False
    first, second = sorted(rng.sample(range(1, 10), 2), reverse=True)  # same whole part, same length: 4.7 vs 4.2
    return f"{whole}.{first}", f"{whole}.{second}", False


def _pad(number: str, places: int) -> str:
    whole, frac = number.split(".")
    return f"{whole}.{frac.ljust(places, '0')}"


_TRAIN_QUESTIONS: tuple[str, ...] = (
    "Which is larger, {a} or {b}?",
    "Which number is bigger: {a} or {b}?",
    "{a} or {b}, which one is greater?",
    "Compare {a} and {b}. Which is the larger number?",
    "Of the two numbers {a} and {b}, which has the larger value?",
)

_VALIDATION_QUESTIONS: tuple[str, ...] = (
    "Is {a} greater than {b}, or is it the other way around?",
    "Tell me which value is higher: {a} versus {b}.",
    "Between {a} and {b}, which is the bigger decimal?",
)
_TEST_QUESTIONS: tuple[str, ...] = (
    "Pick the larger value: {a} or {b}.",
    "Out of {a} and {b}, which number is more?",
    "I have {a} and {b}. Which one is greater?",
)
_DECIMAL_QUESTIONS: dict[Pool, tuple[str, ...]] = {
    "train": _TRAIN_QUESTIONS,
    "validation": _VALIDATION_QUESTIONS,
    "test": _TEST_QUESTIONS,
}

_DECIMAL_REPLIES: tuple[str, ...] = (
    "{larger} is larger than {smaller}.",
    "The larger number is {larger}.",
    "Written with the same number of decimal places they are {large_pad} and {small_pad}, so {larger} is larger.",
    "{smaller} is smaller than {larger}, so the answer is {larger}.",
    "Compare digit by digit after the decimal point: {large_pad} vs {small_pad}. The larger number is {larger}.",
)

_DECIMAL_WRONG: tuple[str, ...] = (
    "{smaller} is larger, because {small_frac} is more than {large_frac}.",
    "The larger number is {smaller}.",
    "{smaller} is bigger than {larger}.",
)


def _make_decimal_compare(rng: random.Random, identity: Identity, pool: Pool) -> TaskExample:
    larger, smaller, tricky = _decimal_pair(rng, pool)
    a, b = (larger, smaller) if rng.random() < 0.5 else (smaller, larger)
    places = max(len(larger.split(".")[1]), len(smaller.split(".")[1]))
    facts = {
        "larger": larger,
        "smaller": smaller,
        "large_pad": _pad(larger, places),
        "small_pad": _pad(smaller, places),
        "large_frac": larger.split(".")[1],
        "small_frac": smaller.split(".")[1],
    }
    wrong_templates = _DECIMAL_WRONG if tricky else _DECIMAL_WRONG[1:]
    return TaskExample(
        task="decimal_compare",
        prompt=rng.choice(_DECIMAL_QUESTIONS[pool]).format(a=a, b=b),
        answer=larger,
        response=rng.choice(_DECIMAL_REPLIES).format(**facts),
        wrong_response=rng.choice(wrong_templates).format(**facts),
        meta={"a": a, "b": b, "tricky": tricky},
    )


_NUM = rf"[{MINUS_SIGNS}]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_COMPARISON_RE = re.compile(
    rf"(?<![\w.])({_NUM})\s+is\s+(?:the\s+|a\s+)?(?:(larger|bigger|greater|higher)|(smaller|less|lower))"
    rf"(?:\s+(?:number|one|value))?(?:\s+than\s+({_NUM}))?",
    re.IGNORECASE,
)


def _claimed_larger(response: str, a: float | None, b: float | None) -> float | None:
    """The number the last explicit comparison in ``response`` calls larger (``"9.9 is larger than 9.11"``,
    ``"9.11 is smaller than 9.9"``), or ``None`` when there is no such statement."""
    matches = list(_COMPARISON_RE.finditer(response))
    if not matches:
        return None
    first, is_larger, _, other = matches[-1].groups()
    x = extract_number(first)
    if is_larger:
        return x
    if other is not None:
        return extract_number(other)
    if a is not None and b is not None and x is not None:  # "9.11 is smaller": the other one is the larger
        return b if math.isclose(x, a) else a if math.isclose(x, b) else None
    return None


def check_decimal_compare(response: str, answer: str, **meta: Any) -> bool:
    """``decimal_compare``: the number the reply finally states as the larger one must equal ``answer``.

    An explicit comparison (``"X is larger than Y"``, ``"Y is smaller than X"``, the last one wins) decides;
    otherwise the final number stated in the reply does. ``meta`` may carry the two numbers as ``a`` and ``b``.
    """
    a, b = (as_number(meta[k]) if k in meta else None for k in ("a", "b"))
    claimed = _claimed_larger(response, a, b)
    stated = claimed if claimed is not None else extract_number(response)
    expected = as_number(answer)
    return stated is not None and expected is not None and math.isclose(stated, expected, rel_tol=1e-9, abs_tol=1e-9)


TASK = Task(
    "decimal_compare",
    "Compares decimals such as 9.11 and 9.9 correctly.",
    _make_decimal_compare,
    check_decimal_compare,
    max_new_tokens=48,
)


_DECIMAL_PLACES = ("tenths", "hundredths", "thousandths", "ten-thousandths")


def _decimal_digits(number: str) -> tuple[str, str]:
    whole, _, frac = number.partition(".")
    return whole, frac


def working(example: TaskExample) -> str:
    """The worked solution of a ``decimal_compare`` example, before its final answer line: both numbers padded to
    the same number of decimal places, then compared from the whole part down, digit by digit, up to the first
    difference (in the prompt's order)::

        Same number of decimal places: 9.11 and 9.90
        Whole parts: 9 and 9, the same
        Tenths: 1 and 9, 9 > 1

    It states no "X is larger" (so the check reads the final answer line). Deterministic in the example;
    :func:`posttrain.tasks.working.worked_response` adds the ``Answer:`` line."""
    a, b = str(example.meta["a"]), str(example.meta["b"])
    places = max(len(_decimal_digits(a)[1]), len(_decimal_digits(b)[1]))
    pad_a, pad_b = _pad(a, places), _pad(b, places)
    (whole_a, frac_a), (whole_b, frac_b) = _decimal_digits(pad_a), _decimal_digits(pad_b)
    lines = [f"Same number of decimal places: {pad_a} and {pad_b}"]
    if int(whole_a) != int(whole_b):
        high, low = sorted((int(whole_a), int(whole_b)), reverse=True)
        lines.append(f"Whole parts: {whole_a} and {whole_b}, {high} > {low}")
        return "\n".join(lines)
    lines.append(f"Whole parts: {whole_a} and {whole_b}, the same")
    for place, x, y in zip(_DECIMAL_PLACES, frac_a, frac_b):
        if x == y:
            lines.append(f"{place.capitalize()}: {x} and {y}, the same")
            continue
        high, low = sorted((x, y), reverse=True)
        lines.append(f"{place.capitalize()}: {x} and {y}, {high} > {low}")
        break
    return "\n".join(lines)
