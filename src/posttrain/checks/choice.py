"""Multiple-choice answers: parse the options, find the letter a reply chose."""

from __future__ import annotations

import re
from typing import Any

from posttrain.checks.answers import contains_phrase
from posttrain.checks.text import clean_text, normalize_answer

# ------------------------------------------------------------------------------------------ multiple choice

_LETTERS = "ABCDEFGHIJ"
_OPTION_RE = re.compile(r"^\s*\(?([A-J])[.):]\s*(.+?)\s*$")


def parse_options(options: str | list[str]) -> dict[str, str]:
    """Options as ``{letter: text}`` from ``["A. x", "B. y"]``, ``"A. x\\nB. y"`` or plain texts ``["x", "y"]``
    (lettered A, B, ... in order)."""
    lines = options.splitlines() if isinstance(options, str) else list(options)
    lines = [line for line in lines if str(line).strip()]
    parsed = [_OPTION_RE.match(str(line)) for line in lines]
    if lines and all(parsed):
        return {m.group(1): m.group(2) for m in parsed if m}
    return {_LETTERS[i]: str(line).strip() for i, line in enumerate(lines[: len(_LETTERS)])}


def extract_choice(response: str, letters: str = "ABCD", options: dict[str, str] | None = None) -> str | None:
    """The option letter a reply picks, or ``None`` when it picks none or is ambiguous.

    In order: the last explicit statement (``"the answer is (B)"``, ``"Answer: B"``, ``"option C"``); none when
    the reply lists several lettered options line by line (it repeats the question); a reply that starts with a
    lone letter (``"B"``, ``"(B)"``, ``"**B.** 9 lines"``, but not the article in ``"A good question"``); the one
    option whose text the reply contains (with ``options``); the one letter written in parentheses. Letters must be
    capitals within ``letters``.
    """
    text = clean_text(response).strip()
    allowed = f"[{re.escape(letters)}]"
    stated = re.findall(
        rf"(?i:answer|option|choice)(?:\s+(?i:is))?\s*[:=]?\s*(?i:option\s+)?\**[(\[]?({allowed})[)\]]?\**(?![\w'])",
        text,
    )
    if stated:
        return stated[-1]
    listed = set(re.findall(rf"(?m)^[*_ \t]*[(\[]?({allowed})[)\]]?[*_]*[.):]", text))
    if len(listed) > 1:
        return None  # the reply lists several options ("A. ...\nB. ..."): it picks none
    lead = re.match(rf"^[*_\s]*[(\[]?({allowed})[)\]]?[*_]*(?:[.):]|\s*$)", text)
    if lead:
        others = set(re.findall(rf"\(({allowed})\)", text[lead.end() :])) - {lead.group(1)}
        return None if others else lead.group(1)
    if options:
        found = [letter for letter, option in options.items() if letter in letters and contains_phrase(text, option)]
        if len(found) == 1:
            return found[0]
    bracketed = set(re.findall(rf"\(({allowed})\)", text))
    if len(bracketed) == 1:
        return bracketed.pop()
    return None


def check_multiple_choice(response: str, answer: str, **meta: Any) -> bool:
    """``multiple_choice``: the letter the reply picks (:func:`extract_choice`) is the correct one.

    ``answer`` is a letter (``"B"``), a lettered option (``"B. 9 lines"``) or the correct option's text;
    ``meta["options"]`` (list or newline-separated string) gives the options and so the allowed letters.
    """
    options = parse_options(meta["options"]) if meta.get("options") else {}
    letters = "".join(options) or "ABCD"
    answer = str(answer).strip()
    lettered = re.match(rf"^\(?([{letters}])(?:[.):]|$)", answer)
    if lettered:
        correct = lettered.group(1)
    else:
        matches = [k for k, v in options.items() if normalize_answer(v) == normalize_answer(answer)]
        if len(matches) != 1:
            raise ValueError(
                f"multiple-choice answer {answer!r} is neither a letter of {letters} nor one option's text"
            )
        correct = matches[0]
    return extract_choice(response, letters, options) == correct
