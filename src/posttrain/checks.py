"""Pure rule checks on model replies, shared by evaluation and RL rewards.

Everything here is a plain function of strings (standard library only: no torch, no datasets), so reward functions
can call it on every sampled completion.

Number extraction rules (:func:`extract_number`):

* A number is a run of decimal digits -- any script's decimal digits (``"٣"``, ``"３"``) count, superscripts do
  not -- optionally with ``,`` thousands separators in groups of exactly three (``"1,234,567"``) and an optional
  fractional part (``"3.5"``). A trailing dot is punctuation (``"3."`` is 3) and a bare fraction works (``".5"``).
* A number glued to a preceding letter or underscore is part of a word and ignored (``"mp3"``, ``"H2O"``,
  ``"x_1"``); a number followed by letters is kept (``"5km"`` -> 5, ``"3rd"`` -> 3). In a dotted sequence only
  the first ``a.b`` counts (``"1.2.3"`` yields 1.2).
* ``-`` or ``−`` (U+2212) directly before the digits is a minus sign unless it follows a letter or digit, where it
  is a hyphen or a subtraction: ``"x = -3"`` -> -3, ``"(-3)"`` -> -3, ``"10-20"`` -> 20, ``"COVID-19"`` -> 19.
* Groups that are not exactly three digits end the number: ``"12,34"`` is 12 then 34; ``"1,2,3"`` is 1, 2, 3.
* Exponents are not parsed (``"1e5"`` yields 1).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = [
    "CHECKS",
    "check_arithmetic",
    "check_decimal_compare",
    "check_identity",
    "check_letter_count",
    "check_task",
    "check_unknown_entity",
    "exact_match",
    "extract_number",
    "extract_numbers",
    "mentions_identity",
    "normalize_answer",
    "numeric_match",
    "says_i_dont_know",
]

_MINUS_SIGNS = "-\u2212"
_NUMBER_RE = re.compile(
    rf"[{_MINUS_SIGNS}]?(?:(?:\d{{1,3}}(?:,\d{{3}})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)",
)


def _clean(text: str) -> str:
    """NFKC-normalise and turn curly apostrophes and quotes into straight ones."""
    text = unicodedata.normalize("NFKC", text)
    return text.translate(str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'}))


def extract_numbers(text: str) -> list[float]:
    """All numbers in ``text``, in order, following the rules in the module docstring."""
    numbers: list[float] = []
    for match in _NUMBER_RE.finditer(text):
        token, start = match.group(), match.start()
        before = text[start - 1] if start > 0 else ""
        negative = token[0] in _MINUS_SIGNS
        if negative:
            if before.isalnum() or before == "_":
                # A hyphen or subtraction ("10-20", "a-3"): the digits stand on their own.
                token, before, negative = token[1:], token[0], False
            else:
                token = token[1:]
        if before.isalpha() or before == "_":
            continue  # part of a word: "mp3", "H2O"
        if token.startswith(".") and before.isdigit():
            continue  # the tail of a dotted sequence: the ".3" of "1.2.3"
        value = float(token.replace(",", ""))
        numbers.append(-value if negative else value)
    return numbers


def extract_number(text: str) -> float | None:
    """The last number stated in ``text`` (see the module docstring for the rules), or ``None`` if there is none.

    >>> extract_number("1,234 apples and -3.5 pears.")
    -3.5
    >>> extract_number("my mp3 player") is None
    True
    """
    numbers = extract_numbers(text)
    return numbers[-1] if numbers else None


_ARTICLE_RE = re.compile(r"^(?:the|a|an)\s+")
_EDGE_PUNCT = " \t\n\r\"'`*_.,;:!?()[]{}<>"


def normalize_answer(text: str) -> str:
    """Canonical form of a short answer for comparison.

    NFKC-normalises, case-folds, unifies curly quotes, removes Markdown emphasis, punctuation and quotes around the
    text (not inside it: ``"9.11"`` stays ``9.11``), collapses whitespace and drops a leading article
    (``"The Eiffel Tower."`` -> ``"eiffel tower"``).
    """
    text = _clean(text).casefold()
    text = " ".join(text.split()).strip(_EDGE_PUNCT)
    return _ARTICLE_RE.sub("", text)


def exact_match(response: str, answer: str, normalize: bool = True) -> bool:
    """Whether ``response`` is exactly ``answer`` (after :func:`normalize_answer` on both when ``normalize``)."""
    if normalize:
        return normalize_answer(response) == normalize_answer(answer)
    return response == answer


def _as_number(value: str | float | int) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return extract_number(str(value))


def numeric_match(response: str, answer: str | float | int, tol: float = 1e-9) -> bool:
    """Whether the last number in ``response`` equals ``answer`` (``"9.90"`` matches ``9.9``).

    ``answer`` may be a number or a string holding one. ``tol`` is an absolute tolerance, scaled up for large
    magnitudes (relative tolerance ``tol`` as well), so exact integers and short decimals compare exactly.
    """
    got, expected = extract_number(response), _as_number(answer)
    if got is None or expected is None:
        return False
    return math.isclose(got, expected, rel_tol=tol, abs_tol=tol)


_DONT_KNOW_RE = re.compile(
    r"\b(?:"
    r"i (?:really |honestly |simply )?(?:do not|don't|dont) know"
    r"|i(?:'m| am) not (?:sure|aware|familiar|certain)"
    r"|i(?:'m| am) unaware"
    r"|not (?:aware|familiar) (?:of|with)"
    r"|i (?:have|had|possess) no (?:\w+ )?(?:information|knowledge|record|records|data|details)"
    r"|i (?:do not|don't|dont) have (?:any |enough |reliable |specific )*"
    r"(?:information|knowledge|records?|data|details)"
    r"|no (?:reliable |verified |credible )?(?:information|record|records|knowledge) (?:about|of|on)"
    r"|(?:may|might|does) not (?:actually )?exist"
    r"|no such \w+"
    r"|(?:doesn't|does not|don't|do not) (?:appear|seem) to exist"
    r"|i (?:cannot|can't|can not|could not|couldn't) (?:find|verify|confirm|locate)"
    r"|unable to (?:find|verify|confirm)"
    r"|no idea"
    r")\b"
)


def says_i_dont_know(response: str) -> bool:
    """Whether ``response`` admits not knowing (``"I don't know"``, ``"I have no information about X"``,
    ``"it may not exist"``, ``"no such prize exists"``, ``"I'm not aware of ..."``, ``"I couldn't find ..."``,
    ``"no idea"``...). Case, curly quotes and extra whitespace are ignored. This is a phrase detector: a reply that
    admits ignorance and then guesses anyway still counts."""
    return _DONT_KNOW_RE.search(" ".join(_clean(response).casefold().split())) is not None


def _contains_phrase(text: str, phrase: str) -> bool:
    """Case-insensitive whole-word containment of ``phrase`` in ``text``, whitespace-insensitive."""
    words = normalize_answer(phrase)
    if not words:
        return False
    haystack = " ".join(_clean(text).casefold().split())
    return re.search(rf"(?<!\w){re.escape(words)}(?!\w)", haystack) is not None


def mentions_identity(response: str, name: str, creator: str | None = None) -> bool:
    """Whether ``response`` names the assistant ``name`` (and ``creator`` when given).

    Matching ignores case, curly quotes, extra whitespace and a leading article of ``creator``
    (``"the posttrain project"`` is found in ``"made by Posttrain Project"``).
    """
    return _contains_phrase(response, name) and (creator is None or _contains_phrase(response, creator))


# ---------------------------------------------------------------------------------------------- builtin tasks

_NUM = rf"[{_MINUS_SIGNS}]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
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
    a, b = (_as_number(meta[k]) if k in meta else None for k in ("a", "b"))
    claimed = _claimed_larger(response, a, b)
    stated = claimed if claimed is not None else extract_number(response)
    expected = _as_number(answer)
    return stated is not None and expected is not None and math.isclose(stated, expected, rel_tol=1e-9, abs_tol=1e-9)


def check_letter_count(response: str, answer: str, **meta: Any) -> bool:
    """``letter_count``: the last number in the reply equals the count."""
    return numeric_match(response, answer)


def check_arithmetic(response: str, answer: str, **meta: Any) -> bool:
    """``arithmetic``: the last number in the reply equals the result."""
    return numeric_match(response, answer)


def check_unknown_entity(response: str, answer: str = "I don't know", **meta: Any) -> bool:
    """``unknown_entity``: the reply admits not knowing instead of inventing facts."""
    return says_i_dont_know(response)


def check_identity(response: str, answer: str = "", **meta: Any) -> bool:
    """``identity``: the reply gives the assistant's ``name``, and its ``creator`` when the question was about who
    made it (``asks="creator"``). ``name`` and ``creator`` come from ``meta``."""
    if "name" not in meta:
        raise ValueError("the identity check needs the assistant's name: pass name=... (and creator=...)")
    needs_creator = meta.get("asks") == "creator"
    return mentions_identity(response, meta["name"], meta.get("creator") if needs_creator else None)


def _exact(response: str, answer: str, **meta: Any) -> bool:
    return exact_match(response, answer, normalize=meta.get("normalize", True))


def _numeric(response: str, answer: str, **meta: Any) -> bool:
    return numeric_match(response, answer, tol=meta.get("tol", 1e-9))


Check = Callable[..., bool]

CHECKS: dict[str, Check] = {
    "identity": check_identity,
    "unknown_entity": check_unknown_entity,
    "decimal_compare": check_decimal_compare,
    "letter_count": check_letter_count,
    "arithmetic": check_arithmetic,
    "exact_match": _exact,
    "numeric_match": _numeric,
}
"""Checks by name, each ``check(response, answer, **meta) -> bool``: one per builtin task plus the generic
``exact_match`` and ``numeric_match`` (for user-supplied evaluation sets)."""


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
        if name not in ("unknown_entity", "identity"):
            raise ValueError(f"check {name!r} needs the correct answer")
        return CHECKS[name](response, **facts)
    return CHECKS[name](response, answer, **facts)
