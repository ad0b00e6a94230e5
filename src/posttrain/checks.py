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
    "INSTRUCTIONS",
    "NEEDS_NO_ANSWER",
    "avoids_words",
    "check_arithmetic",
    "check_decimal_compare",
    "check_identity",
    "check_instructions",
    "check_json",
    "check_letter_count",
    "check_multiple_choice",
    "check_regex",
    "check_stopped",
    "check_task",
    "check_unknown_entity",
    "contains_answer",
    "count_sentences",
    "count_words",
    "ends_with",
    "exact_match",
    "extract_choice",
    "extract_number",
    "extract_numbers",
    "follows_bullet_count",
    "follows_keyword_counts",
    "follows_keyword_frequency",
    "follows_letter_frequency",
    "follows_number_count",
    "follows_paragraph_count",
    "follows_sentence_count",
    "follows_word_count",
    "has_highlighted_sections",
    "has_keyword_in_sentence",
    "has_no_commas",
    "has_no_whitespace",
    "has_placeholders",
    "has_postscript",
    "has_title",
    "includes_keywords",
    "instruction_results",
    "is_json",
    "is_lowercase",
    "is_quoted",
    "is_uppercase",
    "matches_regex",
    "mentions_identity",
    "normalize_answer",
    "numeric_match",
    "parse_json_reply",
    "parse_options",
    "says_i_dont_know",
    "split_paragraphs",
    "split_sentences",
    "starts_with",
    "strict_match",
    "validate_instruction",
    "words",
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


# ------------------------------------------------------------------------------------------ generic answers


def strict_match(response: str, answer: str, **meta: Any) -> bool:
    """``strict_match``: ``response`` is exactly ``answer``, character for character (surrounding whitespace aside)."""
    return response.strip() == str(answer).strip()


def contains_answer(response: str, answer: str, **meta: Any) -> bool:
    """``contains``: the normalized ``answer`` appears in ``response`` as whole words (``"Paris"`` is found in
    ``"It is Paris."``, not in ``"Parisian"``)."""
    return _contains_phrase(response, str(answer))


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
    text = _clean(response).strip()
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
        others = set(re.findall(rf"\(({allowed})\)", text[lead.end():])) - {lead.group(1)}
        return None if others else lead.group(1)
    if options:
        found = [letter for letter, option in options.items() if letter in letters and _contains_phrase(text, option)]
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


# ----------------------------------------------------------------------------------- verifiable instructions
# IFEval-style instructions whose compliance is decidable from the text alone. Each is
# ``instruction(response, **kwargs) -> bool`` in INSTRUCTIONS; a sample lists them as
# ``[{"id": "word_count", "max_words": 50}, {"id": "no_commas"}]`` and ``check_instructions`` requires all of them.

_WORD_RE = re.compile(r"\d+(?:[.,]\d+)*(?![\w])|\w+(?:['’]\w+)*")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e eg ie no fig approx inc ltd co mt jan feb mar apr jun jul aug sep "
    "sept oct nov dec".split()
)
_SENTENCE_END_RE = re.compile(r"(?:[.!?…]+|[。！？]+)[\"'”’)\]]*(?=\s|$)|[。！？]+")


def words(text: str) -> list[str]:
    """The words of ``text``: runs of letters, digits or ``_`` in any script; an apostrophe inside joins (``"don't"``
    is one word), a hyphen separates (``"state-of-the-art"`` is four), a number is one word (``"3.14"``,
    ``"1,234"``). Unspaced scripts (Japanese) count a run as one."""
    return _WORD_RE.findall(_clean(text))


def count_words(text: str) -> int:
    """``len(words(text))``."""
    return len(words(text))


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: each non-empty line is split after ``.``/``!``/``?``/``…`` (and ``。！？``) followed by
    whitespace or the end, except after a known abbreviation (``"Dr."``, ``"e.g."``) or an initial (``"J. R."``).
    A dot inside a number (``"9.9"``) is not an end. Bullet markers do not make sentences of their own."""
    sentences: list[str] = []
    for line in _clean(text).splitlines():
        line = re.sub(r"^\s*(?:[-*+•]|\d+[.)])\s+", "", line).strip()
        start = 0
        for match in _SENTENCE_END_RE.finditer(line):
            if match.group().startswith(".") and len(match.group().rstrip("\"'”’)]")) == 1:
                before = line[start : match.start()].split()
                last = before[-1].casefold().strip("(\"'") if before else ""
                if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
                    continue
            sentence = line[start : match.end()].strip()
            if _WORD_RE.search(sentence):
                sentences.append(sentence)
            start = match.end()
        tail = line[start:].strip()
        if _WORD_RE.search(tail):
            sentences.append(tail)
    return sentences


def count_sentences(text: str) -> int:
    """``len(split_sentences(text))``."""
    return len(split_sentences(text))


def split_paragraphs(text: str, separator: str | None = None) -> list[str]:
    """Non-empty paragraphs: blocks between blank lines, or between lines consisting of ``separator`` (IFEval
    uses ``***``) when given."""
    if separator:
        blocks = re.split(rf"(?m)^\s*{re.escape(separator)}\s*$", text)
    else:
        blocks = re.split(r"\n\s*\n", text)
    return [b.strip() for b in blocks if b.strip()]


def _compare(value: int, n: int, relation: str) -> bool:
    relations = {
        "at least": value >= n, "at most": value <= n, "exactly": value == n,
        "less than": value < n, "more than": value > n,
    }
    if relation not in relations:
        raise ValueError(f"unknown relation {relation!r}; expected one of {', '.join(relations)}")
    return relations[relation]


def _count_phrase(text: str, phrase: str) -> int:
    """Whole-word, case-insensitive occurrences of ``phrase`` in ``text``."""
    words_ = normalize_answer(phrase)
    haystack = " ".join(_clean(text).casefold().split())
    return len(re.findall(rf"(?<!\w){re.escape(words_)}(?!\w)", haystack)) if words_ else 0


def follows_word_count(response: str, min_words: int | None = None, max_words: int | None = None) -> bool:
    """Between ``min_words`` and ``max_words`` words (either bound optional, both inclusive)."""
    n = count_words(response)
    return (min_words is None or n >= min_words) and (max_words is None or n <= max_words)


def follows_sentence_count(
    response: str, min_sentences: int | None = None, max_sentences: int | None = None
) -> bool:
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
    return len(sentences) >= n >= 1 and _clean(keyword).casefold() in sentences[n - 1].casefold()


def follows_number_count(response: str, n: int) -> bool:
    """Exactly ``n`` numbers, as :func:`extract_numbers` finds them (``"mp3"`` holds none, ``"1,234"`` is one)."""
    return len(extract_numbers(response)) == n


def follows_letter_frequency(response: str, letter: str, n: int, relation: str = "at least") -> bool:
    """``letter`` (case-insensitive) occurs ``relation`` ``n`` times."""
    if len(letter) != 1:
        raise ValueError(f"letter must be a single character, got {letter!r}")
    return _compare(_clean(response).casefold().count(letter.casefold()), n, relation)


_COMMAS = ",\u3001\u060c"  # comma (NFKC folds full-width and small commas into it), ideographic and Arabic commas


def has_no_commas(response: str) -> bool:
    """No comma of any script: ``,``, full-width ``，``, small ``﹐``, ideographic ``、``, Arabic ``،``."""
    return not any(c in _COMMAS for c in _clean(response))


def is_lowercase(response: str) -> bool:
    """Has letters, none of them uppercase (any script: ``"École"`` fails)."""
    return any(c.isalpha() for c in response) and not any(c.isupper() for c in response)


def is_uppercase(response: str) -> bool:
    """Has letters, none of them lowercase (``"ÉCOLE"`` passes, ``"École"`` fails)."""
    return any(c.isalpha() for c in response) and not any(c.islower() for c in response)


def starts_with(response: str, phrase: str) -> bool:
    """The stripped reply starts with ``phrase`` (case-insensitive, curly quotes and NFKC normalised)."""
    return _clean(response).strip().casefold().startswith(_clean(phrase).strip().casefold())


def ends_with(response: str, phrase: str) -> bool:
    """The stripped reply ends with ``phrase`` exactly, nothing after it (case-insensitive; IFEval's
    ``end_checker``)."""
    return _clean(response).strip().casefold().endswith(_clean(phrase).strip().casefold())


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
    return re.search(rf"(?im)^\s*{pattern}", _clean(response)) is not None


def has_title(response: str) -> bool:
    """A title in double angular brackets, ``<<like this>>``."""
    return re.search(r"<<[^<>\n]+>>", response) is not None


def is_quoted(response: str) -> bool:
    """The whole reply is wrapped in double quotation marks (straight or curly)."""
    text = _clean(response).strip()
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


def _instruction_check(name: str) -> Check:
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


# ---------------------------------------------------------------------------------------------- stopping


def check_stopped(response: str, answer: str = "", **meta: Any) -> bool:
    """``stopped``: the reply ended with the end-of-turn/EOS token within the token budget (not cut at
    ``max_new_tokens``). Needs the generation's ``finished`` flag in ``meta``."""
    if "finished" not in meta:
        raise ValueError("the stopped check needs finished=True/False from the generation")
    return bool(meta["finished"])


Check = Callable[..., bool]


CHECKS: dict[str, Check] = {
    "identity": check_identity,
    "unknown_entity": check_unknown_entity,
    "decimal_compare": check_decimal_compare,
    "letter_count": check_letter_count,
    "arithmetic": check_arithmetic,
    "exact_match": _exact,
    "numeric_match": _numeric,
    "strict_match": strict_match,
    "contains": contains_answer,
    "regex": check_regex,
    "json_format": check_json,
    "multiple_choice": check_multiple_choice,
    "instructions": check_instructions,
    "stopped": check_stopped,
    **{name: _instruction_check(name) for name in INSTRUCTIONS if name != "json_format"},
}
"""Checks by name, each ``check(response, answer, **meta) -> bool``, shared by evaluation suites and RL rewards:

* one per builtin task: ``identity``, ``unknown_entity``, ``decimal_compare``, ``letter_count``, ``arithmetic``;
* answers: ``exact_match`` (normalized; ``normalize=False`` for raw), ``strict_match`` (character for character),
  ``contains``, ``numeric_match`` (``tol``), ``regex`` (``pattern``), ``json_format`` (``kind``, ``keys``),
  ``multiple_choice`` (``options``);
* ``instructions`` (every IFEval-style instruction in ``instructions`` followed) and each instruction of
  :data:`INSTRUCTIONS` on its own (its arguments in ``meta``: ``word_count`` with ``max_words=50``...);
* ``stopped``: the generation ended with EOS within its budget (``finished`` in ``meta``).
"""

NEEDS_NO_ANSWER = frozenset(CHECKS) - {
    "decimal_compare", "letter_count", "arithmetic", "exact_match", "numeric_match", "strict_match", "contains",
    "multiple_choice",
}
"""Checks that decide from the reply and ``meta`` alone (no reference answer needed)."""


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
        if name not in NEEDS_NO_ANSWER:
            raise ValueError(f"check {name!r} needs the correct answer")
        return CHECKS[name](response, **facts)
    return CHECKS[name](response, answer, **facts)
