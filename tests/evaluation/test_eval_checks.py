"""Rule checks added for evaluation (posttrain.checks): answers, multiple choice, IFEval-style instructions, stopping.

Table-driven, with the tricky cases: 9.9 vs 9.90, numbers inside words, unicode (full-width, curly quotes, accents,
other scripts' commas and digits).
"""

from __future__ import annotations

import pytest

from posttrain.checks import (
    INSTRUCTIONS,
    count_sentences,
    count_words,
    extract_choice,
    instruction_results,
    is_json,
    parse_options,
    split_paragraphs,
    split_sentences,
    validate_instruction,
)
from posttrain.tasks import CHECKS, check_task


@pytest.mark.parametrize(
    ("check", "response", "answer", "meta", "expected"),
    [
        # normalized vs strict vs numeric
        ("exact_match", "  **Paris.** ", "paris", {}, True),
        ("exact_match", "9.90", "9.9", {}, False),  # strings differ: numbers need numeric_match
        ("numeric_match", "9.90", "9.9", {}, True),
        ("numeric_match", "The answer is 9.9!", "9.90", {}, True),
        ("numeric_match", "9.09", "9.9", {}, False),
        ("numeric_match", "I have an mp3 and 2 cats", "3", {}, False),  # "mp3" is a word, not 3
        ("numeric_match", "H2O: 18 g/mol", "18", {}, True),
        ("numeric_match", "٤٢", "42", {}, True),  # Arabic-Indic digits
        ("numeric_match", "４２", "42", {}, True),  # full-width digits
        ("strict_match", "Paris", "Paris", {}, True),
        ("strict_match", "paris", "Paris", {}, False),
        ("strict_match", "Paris.", "Paris", {}, False),
        ("strict_match", " Paris\n", "Paris", {}, True),
        ("contains", "I think it is Paris.", "paris", {}, True),
        ("contains", "Parisian cafés", "Paris", {}, False),  # whole words only
        ("contains", "Ｐａｒｉｓ!", "Paris", {}, True),  # NFKC
        ("contains", "Zoë’s answer", "zoë's answer", {}, True),  # curly apostrophe, accents
        # regex
        ("regex", "Order #A-123 shipped", "", {"pattern": r"#[A-Z]-\d{3}"}, True),
        ("regex", "order a-123", "", {"pattern": r"#?[A-Z]-\d{3}"}, False),
        ("regex", "order a-123", "", {"pattern": r"[A-Z]-\d{3}", "ignore_case": True}, True),
        ("regex", "2024-01-05 extra", "", {"pattern": r"\d{4}-\d{2}-\d{2}", "fullmatch": True}, False),
        ("regex", " 2024-01-05 ", "", {"pattern": r"\d{4}-\d{2}-\d{2}", "fullmatch": True}, True),
        ("regex", "abc", r"^a", {}, True),  # pattern given as the answer
        # JSON
        ("json_format", '{"a": 1}', "", {}, True),
        ("json_format", '```json\n{"a": 1}\n```', "", {}, True),
        ("json_format", 'Here you go: {"a": 1}', "", {}, False),
        ("json_format", "{'a': 1}", "", {}, False),  # Python, not JSON
        ("json_format", "42", "", {}, True),
        ("json_format", "42", "", {"kind": "object"}, False),
        ("json_format", "[1, 2]", "", {"kind": "array"}, True),
        ("json_format", '{"name": "Zoë", "age": 3}', "", {"keys": ["name", "age"]}, True),
        ("json_format", '{"name": "Zoë"}', "", {"keys": ["name", "age"]}, False),
        # stopping
        ("stopped", "anything", "", {"finished": True}, True),
        ("stopped", "anything", "", {"finished": False}, False),
    ],
)
def test_generic_checks(check, response, answer, meta, expected):
    assert CHECKS[check](response, answer, **meta) is expected


def test_stopped_needs_the_generation_flag():
    with pytest.raises(ValueError, match="finished"):
        CHECKS["stopped"]("text", "")
    assert check_task("stopped", "x", finished=True)  # needs no answer


OPTIONS = ["A. 3 lines", "B. 9 lines", "C. 5 lines", "D. 7 lines"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("B", "B"),
        ("B.", "B"),
        ("(B)", "B"),
        ("**B.** 9 lines", "B"),
        ("B) 9 lines", "B"),
        ("The answer is B.", "B"),
        ("The correct answer is (C) because ...", "C"),
        ("Answer: D", "D"),
        ("answer: d", None),  # letters must be capitals: "d" may be a word
        ("A good question! The answer is C.", "C"),  # the article "A" is not a choice
        ("A good question!", None),
        ("I would pick option B, no wait, the answer is A.", "A"),  # the last statement wins
        ("There are 9 lines.", "B"),  # the text of exactly one option
        ("Either 3 lines or 9 lines.", None),  # two options' texts: ambiguous
        ("I think (C) is right", "C"),
        ("(A) or (B)?", None),
        ("A. 3 lines\nB. 9 lines", None),  # the options repeated: no choice
        ("A. 3 lines\nBecause B. is wrong", "A"),
        ("A. 3 lines\nThe answer is B.", "B"),  # an explicit statement still wins
        ("E", None),  # not an option
        ("", None),
        ("Ｂ", "B"),  # full-width letter
    ],
)
def test_extract_choice(response, expected):
    assert extract_choice(response, "ABCD", parse_options(OPTIONS)) == expected


@pytest.mark.parametrize(
    ("response", "answer", "expected"),
    [
        ("B", "B. 9 lines", True),
        ("B", "B", True),
        ("The answer is B", "9 lines", True),  # answer given as the option's text
        ("C", "B", False),
        ("I don't know", "B", False),
    ],
)
def test_multiple_choice(response, answer, expected):
    assert CHECKS["multiple_choice"](response, answer, options=OPTIONS) is expected


def test_multiple_choice_options_as_text_and_bad_answer():
    assert parse_options("A. x\nB. y") == {"A": "x", "B": "y"}
    assert parse_options(["red", "green"]) == {"A": "red", "B": "green"}
    with pytest.raises(ValueError, match="neither a letter"):
        CHECKS["multiple_choice"]("A", "purple", options=["red", "green"])


@pytest.mark.parametrize(
    ("text", "words", "sentences"),
    [
        ("Hello world.", 2, 1),
        ("Don't panic! It's fine.", 4, 2),  # apostrophes join
        ("State-of-the-art models.", 5, 1),  # hyphens separate
        ("Pi is about 3.14. Yes.", 5, 2),  # a number is one word, and no sentence end inside it
        ("1,234 mp3 files", 3, 1),
        ("Dr. Smith met J. R. Tolkien. They talked.", 8, 2),  # abbreviations and initials
        ("Is it 9.9 or 9.90? Same!", 6, 2),
        ("Wait... really?! Yes.", 3, 3),
        ("- one item\n- two items", 4, 2),  # each bullet line is a sentence
        ("“Quoted.” Then more.", 3, 2),
        ("café naïve résumé", 3, 1),
        ("これは日本語です。次の文。", 2, 2),  # unspaced script: runs count as words
        ("", 0, 0),
    ],
)
def test_word_and_sentence_counts(text, words, sentences):
    assert count_words(text) == words
    assert count_sentences(text) == sentences, split_sentences(text)


def test_paragraphs():
    assert len(split_paragraphs("a\n\nb\n  \nc")) == 3
    assert len(split_paragraphs("a\n***\nb", separator="***")) == 2
    assert len(split_paragraphs("\n\n")) == 0


@pytest.mark.parametrize(
    ("instruction", "response", "expected"),
    [
        ({"id": "word_count", "max_words": 3}, "one two three", True),
        ({"id": "word_count", "max_words": 3}, "one two three four", False),
        ({"id": "word_count", "min_words": 2, "max_words": 2}, "don't stop", True),
        ({"id": "sentence_count", "min_sentences": 2, "max_sentences": 2}, "It is 9.9. It is not 9.11.", True),
        ({"id": "sentence_count", "max_sentences": 1}, "One. Two.", False),
        ({"id": "paragraph_count", "n": 2}, "First.\n\nSecond.", True),
        ({"id": "paragraph_count", "n": 2}, "First.\nStill first.", False),
        ({"id": "include_keywords", "keywords": ["planet", "Tomorrow"]}, "Save the planet for tomorrow.", True),
        ({"id": "include_keywords", "keywords": ["planet"]}, "Planetary science", False),  # whole words
        ({"id": "forbidden_words", "words": ["cat"]}, "A category of dogs.", True),  # "cat" in a word is fine
        ({"id": "forbidden_words", "words": ["cat"]}, "My CAT sleeps.", False),
        ({"id": "keyword_frequency", "keyword": "flour", "n": 3}, "flour, Flour and FLOUR", True),
        ({"id": "keyword_frequency", "keyword": "flour", "n": 3}, "flour and flours", False),
        ({"id": "keyword_frequency", "keyword": "a", "n": 1, "relation": "exactly"}, "a cat", True),
        ({"id": "keyword_counts", "counts": {"red": 1, "blue": 2}}, "red blue blue", True),
        ({"id": "keyword_counts", "counts": {"red": 1, "blue": 2}}, "red red blue blue", False),
        ({"id": "keyword_in_sentence", "keyword": "moon", "n": 2}, "Hi. The Moon is up.", True),
        ({"id": "keyword_in_sentence", "keyword": "moon", "n": 2}, "The moon. Hi.", False),
        ({"id": "keyword_in_sentence", "keyword": "moon", "n": 3}, "The moon. Hi.", False),
        ({"id": "letter_frequency", "letter": "z", "n": 2}, "Zebras zigzag", True),
        ({"id": "letter_frequency", "letter": "z", "n": 2, "relation": "less than"}, "Zebras zigzag", False),
        ({"id": "number_count", "n": 2}, "I have 2 cats and 1,234 fish.", True),
        ({"id": "number_count", "n": 0}, "My mp3 player and H2O.", True),  # digits inside words
        ({"id": "no_commas"}, "No commas here.", True),
        ({"id": "no_commas"}, "One, two", False),
        ({"id": "no_commas"}, "全角，逗号", False),  # full-width comma
        ({"id": "no_commas"}, "日本語、読点", False),  # ideographic comma
        ({"id": "no_commas"}, "عربي، فاصلة", False),  # Arabic comma
        ({"id": "no_commas"}, "1.234 not 1,234"[:9], True),
        ({"id": "lowercase"}, "all lower, even café", True),
        ({"id": "lowercase"}, "École is French", False),
        ({"id": "lowercase"}, "123 !!!", False),  # no letters at all
        ({"id": "uppercase"}, "ALL CAPS, ÉCOLE!", True),
        ({"id": "uppercase"}, "ALL CAPS, École!", False),
        ({"id": "json_format"}, '{"ok": true}', True),
        ({"id": "json_format", "kind": "array"}, '{"ok": true}', False),
        ({"id": "starts_with", "phrase": "Leaves"}, "  leaves fall.", True),
        ({"id": "starts_with", "phrase": "Leaves"}, "The leaves fall.", False),
        ({"id": "ends_with", "phrase": "Any other questions?"}, "Done. Any other questions?  ", True),
        ({"id": "ends_with", "phrase": "Any other questions?"}, "Any other questions? Bye.", False),
        ({"id": "ends_with", "phrase": "it’s done."}, "Now it's done.", True),  # curly vs straight apostrophe
        ({"id": "bullet_count", "n": 3}, "* a\n* b\n- c", True),
        ({"id": "bullet_count", "n": 3}, "* a\n* b", False),
        ({"id": "bullet_count", "n": 2}, "**bold** text\n* a\n* b", True),  # bold is not a bullet
        ({"id": "highlighted_sections", "n": 2}, "*one* and **two**", True),
        ({"id": "highlighted_sections", "n": 2}, "*one* only", False),
        ({"id": "placeholders", "n": 2}, "Dear [name], at [address]", True),
        ({"id": "placeholders", "n": 2}, "Dear [name]", False),
        ({"id": "postscript"}, "Thanks!\nP.S. See you.", True),
        ({"id": "postscript"}, "Thanks!\np. s. see you", True),
        ({"id": "postscript"}, "Thanks! (PS see you)", False),
        ({"id": "title"}, "<<Rain>>\nDrops fall.", True),
        ({"id": "title"}, "<Rain>", False),
        ({"id": "quotation"}, '"Goldie"', True),
        ({"id": "quotation"}, "“Goldie”", True),
        ({"id": "quotation"}, 'Goldie"', False),
        ({"id": "no_whitespace"}, "no_whitespace_here", True),
        ({"id": "no_whitespace"}, "tab\there", False),
        ({"id": "no_whitespace"}, "nbsp\u00a0here", False),
        ({"id": "regex_match", "pattern": r"\d"}, "Mars has 2 moons.", True),
    ],
)
def test_instructions(instruction, response, expected):
    validate_instruction(instruction)
    assert instruction_results(response, [instruction]) == [expected]
    name = instruction["id"]
    kwargs = {k: v for k, v in instruction.items() if k != "id"}
    assert CHECKS[name](response, "", **kwargs, finished=True) is expected  # extra meta is ignored


def test_instructions_check_requires_all_and_reports_each():
    instructions = [{"id": "no_commas"}, {"id": "word_count", "max_words": 3}]
    assert CHECKS["instructions"]("one two three", "", instructions=instructions)
    assert not CHECKS["instructions"]("one, two", "", instructions=instructions)
    assert instruction_results("one, two, three, four", instructions) == [False, False]
    assert check_task("instructions", "ok", instructions=instructions)  # no answer needed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"id": "word_cnt"}, "unknown instruction 'word_cnt'"),
        ({"id": "word_count", "maximum": 3}, "word_count.*maximum"),
        ({"id": "keyword_frequency", "keyword": "x"}, "keyword_frequency.*'n'"),
        ({"max_words": 3}, "needs an 'id'|must be a mapping"),
    ],
)
def test_validate_instruction_names_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        validate_instruction(spec)


def test_every_instruction_is_also_a_check():
    assert set(INSTRUCTIONS) <= set(CHECKS)
    assert is_json("```\n[1]\n```", "array")


def test_every_check_has_table_cases():
    """Each name in CHECKS is exercised by a table here, in tests/checks/test_checks.py (the builtin-task checks) or in the
    tool-calling tests (tests/evaluation/test_tool_loop.py, tests/data/test_tool_task.py)."""
    import inspect
    import sys

    source = inspect.getsource(sys.modules[__name__])
    covered_elsewhere = {"identity", "unknown_entity", "decimal_compare", "letter_count", "arithmetic"}
    covered_elsewhere |= {"calculator", "tool_call", "tool_name", "tool_arguments"}
    missing = [name for name in CHECKS if name not in covered_elsewhere and f'"{name}"' not in source]
    assert not missing, f"checks without table cases: {missing}"
