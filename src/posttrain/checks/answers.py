"""Checks of an answer: exact, strict, contained, numeric, a regex, JSON, "I don't know", an identity, stopping."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from posttrain.checks.text import clean_text, extract_number, normalize_answer


def exact_match(response: str, answer: str, normalize: bool = True) -> bool:
    """Whether ``response`` is exactly ``answer`` (after :func:`normalize_answer` on both when ``normalize``)."""
    if normalize:
        return normalize_answer(response) == normalize_answer(answer)
    return response == answer


def as_number(value: str | float | int) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return extract_number(str(value))


def numeric_match(response: str, answer: str | float | int, tol: float = 1e-9) -> bool:
    """Whether the last number in ``response`` equals ``answer`` (``"9.90"`` matches ``9.9``).

    ``answer`` may be a number or a string holding one. ``tol`` is an absolute tolerance, scaled up for large
    magnitudes (relative tolerance ``tol`` as well), so exact integers and short decimals compare exactly.
    """
    got, expected = extract_number(response), as_number(answer)
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
    return _DONT_KNOW_RE.search(" ".join(clean_text(response).casefold().split())) is not None


def contains_phrase(text: str, phrase: str) -> bool:
    """Case-insensitive whole-word containment of ``phrase`` in ``text``, whitespace-insensitive."""
    words = normalize_answer(phrase)
    if not words:
        return False
    haystack = " ".join(clean_text(text).casefold().split())
    return re.search(rf"(?<!\w){re.escape(words)}(?!\w)", haystack) is not None


def mentions_identity(response: str, name: str, creator: str | None = None) -> bool:
    """Whether ``response`` names the assistant ``name`` (and ``creator`` when given).

    Matching ignores case, curly quotes, extra whitespace and a leading article of ``creator``
    (``"the posttrain project"`` is found in ``"made by Posttrain Project"``).
    """
    return contains_phrase(response, name) and (creator is None or contains_phrase(response, creator))


def check_exact(response: str, answer: str, **meta: Any) -> bool:
    return exact_match(response, answer, normalize=meta.get("normalize", True))


def check_numeric(response: str, answer: str, **meta: Any) -> bool:
    return numeric_match(response, answer, tol=meta.get("tol", 1e-9))


# ------------------------------------------------------------------------------------------ generic answers


def strict_match(response: str, answer: str, **meta: Any) -> bool:
    """``strict_match``: ``response`` is exactly ``answer``, character for character (surrounding whitespace aside)."""
    return response.strip() == str(answer).strip()


def contains_answer(response: str, answer: str, **meta: Any) -> bool:
    """``contains``: the normalized ``answer`` appears in ``response`` as whole words (``"Paris"`` is found in
    ``"It is Paris."``, not in ``"Parisian"``)."""
    return contains_phrase(response, str(answer))


def check_regex(response: str, answer: str = "", **meta: Any) -> bool:
    """``regex``: ``re.search(pattern, response)`` matches, ``pattern`` from ``meta`` (else ``answer``).

    ``meta`` may set ``fullmatch: true`` (the whole stripped reply must match) and ``ignore_case: true``.
    """
    pattern = meta.get("pattern", answer)
    if not pattern:
        raise ValueError("the regex check needs a pattern: pass pattern=... (or the answer)")
    flags = re.IGNORECASE if meta.get("ignore_case") else 0
    if meta.get("fullmatch"):
        return re.fullmatch(pattern, response.strip(), flags) is not None
    return re.search(pattern, response, flags) is not None


_FENCE_RE = re.compile(r"^```[\w-]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)


def parse_json_reply(response: str) -> Any:
    """The JSON value a reply consists of, allowing one surrounding Markdown code fence (```` ```json ... ``` ````).

    Raises:
        ValueError: If the reply (without the fence) is not one valid JSON value.
    """
    import json

    text = response.strip()
    fenced = _FENCE_RE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    return json.loads(text)


def is_json(response: str, kind: str | None = None) -> bool:
    """Whether the whole reply is valid JSON (one optional code fence around it); ``kind`` ``"object"`` or
    ``"array"`` also requires that type (``"42"`` is valid JSON, but not an object)."""
    try:
        value = parse_json_reply(response)
    except ValueError:
        return False
    expected = {"object": dict, "array": list, None: object}.get(kind)
    if expected is None:
        raise ValueError(f"unknown JSON kind {kind!r}; expected 'object', 'array' or none")
    return isinstance(value, expected)


def check_json(response: str, answer: str = "", **meta: Any) -> bool:
    """``json_format``: the reply is valid JSON (``kind`` ``object``/``array`` optional) holding every key in
    ``keys`` when given (an object is required then)."""
    keys = meta.get("keys") or []
    if not is_json(response, "object" if keys else meta.get("kind")):
        return False
    return all(k in parse_json_reply(response) for k in keys)


# ---------------------------------------------------------------------------------------------- stopping


def check_stopped(response: str, answer: str = "", **meta: Any) -> bool:
    """``stopped``: the reply ended with the end-of-turn/EOS token within the token budget (not cut at
    ``max_new_tokens``). Needs the generation's ``finished`` flag in ``meta``."""
    if "finished" not in meta:
        raise ValueError("the stopped check needs finished=True/False from the generation")
    return bool(meta["finished"])


Check = Callable[..., bool]
