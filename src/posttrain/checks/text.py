"""Text utilities the checks share: numbers, normalized answers, words, sentences and paragraphs.

Plain functions of strings (standard library only), so rewards can call them on every sampled completion.

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

import re
import unicodedata

MINUS_SIGNS = "-\u2212"
_NUMBER_RE = re.compile(
    rf"[{MINUS_SIGNS}]?(?:(?:\d{{1,3}}(?:,\d{{3}})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)",
)


def clean_text(text: str) -> str:
    """NFKC-normalise and turn curly apostrophes and quotes into straight ones."""
    text = unicodedata.normalize("NFKC", text)
    return text.translate(str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'}))


def extract_numbers(text: str) -> list[float]:
    """All numbers in ``text``, in order, following the rules in the module docstring."""
    numbers: list[float] = []
    for match in _NUMBER_RE.finditer(text):
        token, start = match.group(), match.start()
        before = text[start - 1] if start > 0 else ""
        negative = token[0] in MINUS_SIGNS
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
    text = clean_text(text).casefold()
    text = " ".join(text.split()).strip(_EDGE_PUNCT)
    return _ARTICLE_RE.sub("", text)


# ---------------------------------------------------------------------------------- words and sentences

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
    return _WORD_RE.findall(clean_text(text))


def count_words(text: str) -> int:
    """``len(words(text))``."""
    return len(words(text))


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: each non-empty line is split after ``.``/``!``/``?``/``…`` (and ``。！？``) followed by
    whitespace or the end, except after a known abbreviation (``"Dr."``, ``"e.g."``) or an initial (``"J. R."``).
    A dot inside a number (``"9.9"``) is not an end. Bullet markers do not make sentences of their own."""
    sentences: list[str] = []
    for line in clean_text(text).splitlines():
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
