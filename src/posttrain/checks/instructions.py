"""IFEval-style verifiable instructions (word counts, keywords, case, format...), one function each.

Compliance is decidable from the text alone. Each is ``instruction(response, **kwargs) -> bool`` in
:data:`INSTRUCTIONS`; a sample lists them as ``[{"id": "word_count", "max_words": 50}, {"id": "no_commas"}]`` and
:func:`check_instructions` requires all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from posttrain.checks.answers import is_json
from posttrain.checks.text import (
    clean_text,
    count_sentences,
    count_words,
    extract_numbers,
    normalize_answer,
    split_paragraphs,
    split_sentences,
)


def _compare(value: int, n: int, relation: str) -> bool:
    relations = {
        "at least": value >= n,
        "at most": value <= n,
        "exactly": value == n,
        "less than": value < n,
        "more than": value > n,
    }
    if relation not in relations:
        raise ValueError(f"unknown relation {relation!r}; expected one of {', '.join(relations)}")
    return relations[relation]


def _count_phrase(text: str, phrase: str) -> int:
    """Whole-word, case-insensitive occurrences of ``phrase`` in ``text``."""
    words_ = normalize_answer(phrase)
    haystack = " ".join(clean_text(text).casefold().split())
    return len(re.findall(rf"(?<!\w){re.escape(words_)}(?!\w)", haystack)) if words_ else 0


def follows_word_count(response: str, min_words: int | None = None, max_words: int | None = None) -> bool:
    """Between ``min_words`` and ``max_words`` words (either bound optional, both inclusive)."""
    n = count_words(response)
    return (min_words is None or n >= min_words) and (max_words is None or n <= max_words)


def follows_sentence_count(response: str, min_sentences: int | None = None, max_sentences: int | None = None) -> bool:
    """Between ``min_sentences`` and ``max_sentences`` sentences (:func:`split_sentences`; bounds inclusive)."""
    n = count_sentences(response)
    return (min_sentences is None or n >= min_sentences) and (max_sentences is None or n <= max_sentences)


def follows_paragraph_count(response: str, n: int, separator: str | None = None) -> bool:
    """Exactly ``n`` paragraphs (:func:`split_paragraphs`)."""
    return len(split_paragraphs(response, separator)) == n


def includes_keywords(response: str, keywords: list[str]) -> bool:
    """Every keyword appears as whole words, case-insensitively."""
    return all(_count_phrase(response, k) > 0 for k in keywords)


def avoids_words(response: str, words: list[str]) -> bool:
    """None of ``words`` appears as a whole word (case-insensitive): ``"cat"`` is not found in ``"category"``."""
    return not any(_count_phrase(response, w) > 0 for w in words)


def follows_keyword_frequency(response: str, keyword: str, n: int, relation: str = "at least") -> bool:
    """``keyword`` appears (whole words) ``relation`` ``n`` times: ``"at least"``, ``"at most"``, ``"exactly"``,
    ``"less than"`` or ``"more than"``."""
    return _compare(_count_phrase(response, keyword), n, relation)


def follows_keyword_counts(response: str, counts: Mapping[str, int]) -> bool:
    """Each keyword appears (whole words) exactly its number of times (IFBench ``count:keywords_multiple``)."""
    return all(_count_phrase(response, k) == n for k, n in counts.items())


def has_keyword_in_sentence(response: str, keyword: str, n: int) -> bool:
    """Sentence ``n`` (1-based) contains ``keyword`` (case-insensitive substring, as IFBench's
    ``sentence:keyword``)."""
    sentences = split_sentences(response)
    return len(sentences) >= n >= 1 and clean_text(keyword).casefold() in sentences[n - 1].casefold()


def follows_number_count(response: str, n: int) -> bool:
    """Exactly ``n`` numbers, as :func:`extract_numbers` finds them (``"mp3"`` holds none, ``"1,234"`` is one)."""
    return len(extract_numbers(response)) == n


def follows_letter_frequency(response: str, letter: str, n: int, relation: str = "at least") -> bool:
    """``letter`` (case-insensitive) occurs ``relation`` ``n`` times."""
    if len(letter) != 1:
        raise ValueError(f"letter must be a single character, got {letter!r}")
    return _compare(clean_text(response).casefold().count(letter.casefold()), n, relation)


_COMMAS = ",\u3001\u060c"  # comma (NFKC folds full-width and small commas into it), ideographic and Arabic commas


def has_no_commas(response: str) -> bool:
    """No comma of any script: ``,``, full-width ``，``, small ``﹐``, ideographic ``、``, Arabic ``،``."""
    return not any(c in _COMMAS for c in clean_text(response))


def is_lowercase(response: str) -> bool:
    """Has letters, none of them uppercase (any script: ``"École"`` fails)."""
    return any(c.isalpha() for c in response) and not any(c.isupper() for c in response)


def is_uppercase(response: str) -> bool:
    """Has letters, none of them lowercase (``"ÉCOLE"`` passes, ``"École"`` fails)."""
    return any(c.isalpha() for c in response) and not any(c.islower() for c in response)


def starts_with(response: str, phrase: str) -> bool:
    """The stripped reply starts with ``phrase`` (case-insensitive, curly quotes and NFKC normalised)."""
    return clean_text(response).strip().casefold().startswith(clean_text(phrase).strip().casefold())


def ends_with(response: str, phrase: str) -> bool:
    """The stripped reply ends with ``phrase`` exactly, nothing after it (case-insensitive; IFEval's
    ``end_checker``)."""
    return clean_text(response).strip().casefold().endswith(clean_text(phrase).strip().casefold())


_BULLET_RE = re.compile(r"(?m)^\s*[*\-+•]\s+\S")


def follows_bullet_count(response: str, n: int) -> bool:
    """Exactly ``n`` Markdown bullet points (lines starting with ``*``, ``-``, ``+`` or ``•`` and a space)."""
    return len(_BULLET_RE.findall(response)) == n


def has_highlighted_sections(response: str, n: int) -> bool:
    """At least ``n`` Markdown-highlighted sections, ``*like this*`` or ``**like this**``."""
    return len(re.findall(r"\*\*[^*\n]+\*\*|(?<!\*)\*[^*\n]+\*(?!\*)", response)) >= n


def has_placeholders(response: str, n: int) -> bool:
    """At least ``n`` square-bracket placeholders such as ``[address]``."""
    return len(re.findall(r"\[[^\[\]\n]+\]", response)) >= n


def has_postscript(response: str, marker: str = "P.S.") -> bool:
    """A line that starts with ``marker`` (``"P.S."``; case and spaces after dots ignored)."""
    pattern = r"\s*".join(re.escape(part) for part in marker.split())
    pattern = pattern.replace(r"\.", r"\.\s?")
    return re.search(rf"(?im)^\s*{pattern}", clean_text(response)) is not None


def has_title(response: str) -> bool:
    """A title in double angular brackets, ``<<like this>>``."""
    return re.search(r"<<[^<>\n]+>>", response) is not None


def is_quoted(response: str) -> bool:
    """The whole reply is wrapped in double quotation marks (straight or curly)."""
    text = clean_text(response).strip()
    return len(text) >= 2 and text[0] == '"' and text[-1] == '"'


def has_no_whitespace(response: str) -> bool:
    """No whitespace character at all."""
    return not any(c.isspace() for c in response)


def matches_regex(response: str, pattern: str, ignore_case: bool = False) -> bool:
    """``re.search(pattern, response)`` matches."""
    return re.search(pattern, response, re.IGNORECASE if ignore_case else 0) is not None


Instruction = Callable[..., bool]

INSTRUCTIONS: dict[str, Instruction] = {
    "word_count": follows_word_count,
    "sentence_count": follows_sentence_count,
    "paragraph_count": follows_paragraph_count,
    "include_keywords": includes_keywords,
    "forbidden_words": avoids_words,
    "keyword_frequency": follows_keyword_frequency,
    "keyword_counts": follows_keyword_counts,
    "keyword_in_sentence": has_keyword_in_sentence,
    "letter_frequency": follows_letter_frequency,
    "number_count": follows_number_count,
    "no_commas": has_no_commas,
    "lowercase": is_lowercase,
    "uppercase": is_uppercase,
    "json_format": lambda response, kind=None: is_json(response, kind),
    "starts_with": starts_with,
    "ends_with": ends_with,
    "bullet_count": follows_bullet_count,
    "highlighted_sections": has_highlighted_sections,
    "placeholders": has_placeholders,
    "postscript": has_postscript,
    "title": has_title,
    "quotation": is_quoted,
    "no_whitespace": has_no_whitespace,
    "regex_match": matches_regex,
}
"""IFEval-style verifiable instructions by id, each ``instruction(response, **kwargs) -> bool``."""


def validate_instruction(spec: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the problem if ``spec`` (``{"id": ..., **kwargs}``) is not a usable instruction:
    unknown id, unknown or missing arguments."""
    import inspect

    if not isinstance(spec, Mapping) or "id" not in spec:
        raise ValueError(f"an instruction must be a mapping with an 'id', got {spec!r}")
    if spec["id"] not in INSTRUCTIONS:
        raise ValueError(f"unknown instruction {spec['id']!r}; available: {', '.join(INSTRUCTIONS)}")
    kwargs = {k: v for k, v in spec.items() if k != "id"}
    try:
        inspect.signature(INSTRUCTIONS[spec["id"]]).bind("", **kwargs)
    except TypeError as err:
        raise ValueError(f"instruction {spec['id']!r}: {err}") from None


def instruction_results(response: str, instructions: list[Mapping[str, Any]]) -> list[bool]:
    """Whether ``response`` follows each instruction, in order (instruction-level accuracy)."""
    return [bool(INSTRUCTIONS[s["id"]](response, **{k: v for k, v in s.items() if k != "id"})) for s in instructions]


def check_instructions(response: str, answer: str = "", **meta: Any) -> bool:
    """``instructions``: the reply follows every instruction in ``meta["instructions"]`` (prompt-level strict
    accuracy)."""
    if "instructions" not in meta:
        raise ValueError("the instructions check needs instructions=[{'id': ..., ...}, ...]")
    return all(instruction_results(response, meta["instructions"]))


def instruction_check(name: str) -> Callable[..., bool]:
    """An instruction as a ``check(response, answer, **meta)``: its arguments come from ``meta`` (other keys of
    ``meta`` are ignored, so a sample's own facts can travel along)."""
    import inspect

    instruction = INSTRUCTIONS[name]
    params = set(list(inspect.signature(instruction).parameters)[1:])

    def check(response: str, answer: str = "", **meta: Any) -> bool:
        return bool(instruction(response, **{k: v for k, v in meta.items() if k in params}))

    check.__name__ = check.__qualname__ = f"check_{name}"
    check.__doc__ = f"``{name}``: {instruction.__doc__}"
    return check
