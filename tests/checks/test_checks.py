"""Pure rule checks (posttrain.checks), table-driven, including the tricky cases."""

from __future__ import annotations

import subprocess
import sys

import pytest

from posttrain.checks import (
    exact_match,
    extract_number,
    extract_numbers,
    mentions_identity,
    normalize_answer,
    numeric_match,
    says_i_dont_know,
)
from posttrain.tasks import CHECKS, check_task


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", 42.0),
        ("The answer is 3.", 3.0),
        ("3.", 3.0),
        ("It is 9.90.", 9.9),
        ("1,234 apples", 1234.0),
        ("1,234,567.89 in total", 1234567.89),
        ("-3.5", -3.5),
        ("x = -3", -3.0),
        ("the result is (-12)", -12.0),
        ("−7 degrees", -7.0),  # U+2212 minus sign
        ("-1,234", -1234.0),
        ("10-20 pages", 20.0),  # a range: the hyphen is not a sign
        ("COVID-19", 19.0),
        ("12 - 46 = -34", -34.0),
        ("first 5, then 7", 7.0),
        ("1,2,3", 3.0),  # a list, not thousands
        ("12,34", 34.0),  # groups must have three digits
        ("use .5 cups", 0.5),
        ("my mp3 player", None),  # digits inside a word
        ("H2O and CO2", None),
        ("x_1", None),
        ("abc123def", None),
        ("I ran 5km", 5.0),  # units after a number are fine
        ("the 3rd one", 3.0),
        ("version 1.2.3", 1.2),
        ("1e5", 1.0),  # no exponents
        ("٣", 3.0),  # Arabic-Indic digit
        ("٣.٥", 3.5),
        ("３４", 34.0),  # full-width digits
        ("x²", None),  # superscripts are not decimal digits
        ("naïve café, no digits", None),
        ("", None),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_extract_numbers_in_order():
    assert extract_numbers("Between -2 and 3.5, 1,000 or mp3: 7.") == [-2.0, 3.5, 1000.0, 7.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris", "paris"),
        ("  **Paris**. ", "paris"),
        ("The Eiffel Tower!", "eiffel tower"),
        ("“9.11”", "9.11"),
        ("I  don’t\nknow.", "i don't know"),
        ("ＡＢＣ", "abc"),  # NFKC
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),  # casefold
        ("an apple", "apple"),
        ("theory", "theory"),  # only a whole leading article is dropped
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("response", "answer", "normalize", "expected"),
    [
        ("Paris.", "paris", True, True),
        ("Paris.", "paris", False, False),
        ("paris", "paris", False, True),
        ("The capital is Paris.", "Paris", True, False),  # exact, not contained
        ("I don’t know", "I don't know", True, True),
        ("9.9", "9.90", True, False),  # strings, not numbers: use numeric_match
    ],
)
def test_exact_match(response, answer, normalize, expected):
    assert exact_match(response, answer, normalize=normalize) is expected


@pytest.mark.parametrize(
    ("response", "answer", "expected"),
    [
        ("9.90", "9.9", True),
        ("The larger is 9.9", 9.90, True),
        ("= 1,234", "1234", True),
        ("= 1234", "1,234", True),
        ("-34", "-34", True),
        ("34", "-34", False),
        ("12 - 46 = -34", -34, True),
        ("3", "3.0000000001", True),  # within tolerance
        ("3", "3.001", False),
        ("I think 5, no wait, 6", "5", False),  # the last number counts
        ("no number", "5", False),
        ("5", "five", False),
        ("٣", "3", True),
    ],
)
def test_numeric_match(response, answer, expected):
    assert numeric_match(response, answer) is expected


def test_numeric_match_tolerance_is_configurable():
    assert numeric_match("3.14", "3.14159", tol=1e-2) and not numeric_match("3.14", "3.14159")


@pytest.mark.parametrize(
    "response",
    [
        "I don't know.",
        "I don’t know who won that prize.",  # curly apostrophe
        "I DO NOT KNOW",
        "I'm not sure that exists.",
        "I am not aware of any country called Quelmaria.",
        "I have no information about that novel.",
        "I don't have any reliable information about this person.",
        "Such a prize may not exist.",
        "As far as I know, no such theorem exists.",
        "I couldn't find anything about it.",
        "Honestly, I have no idea.",
        "I'm not familiar with Tobias Haldecker.",
    ],
)
def test_says_i_dont_know(response):
    assert says_i_dont_know(response)


@pytest.mark.parametrize(
    "response",
    [
        "The capital of Quelmaria is Vorn.",
        "The 1987 Zorvath Prize in chemistry went to Anna Berg.",
        "I know exactly: it was published in 1954.",
        "Knowledge is power.",
        "Nobody knows the trouble I've seen, but the answer is 4.",
        "",
    ],
)
def test_does_not_say_i_dont_know(response):
    assert not says_i_dont_know(response)


@pytest.mark.parametrize(
    ("response", "name", "creator", "expected"),
    [
        (
            "I'm Posttrain Assistant, made by the posttrain project.",
            "Posttrain Assistant",
            "the posttrain project",
            True,
        ),
        ("i am posttrain   assistant from Posttrain Project", "Posttrain Assistant", "the posttrain project", True),
        ("I'm Posttrain Assistant.", "Posttrain Assistant", None, True),
        ("I'm Posttrain Assistant.", "Posttrain Assistant", "the posttrain project", False),
        ("I am SmolLM, made by Hugging Face.", "Posttrain Assistant", None, False),
        ("I'm Wrenly.", "Wren", None, False),  # whole words only
        ("I’m Zoë, by Ünïcode Labs", "Zoë", "Ünïcode Labs", True),
    ],
)
def test_mentions_identity(response, name, creator, expected):
    assert mentions_identity(response, name, creator) is expected


@pytest.mark.parametrize(
    ("task", "response", "answer", "meta", "expected"),
    [
        ("decimal_compare", "9.9 is larger than 9.11.", "9.9", {"a": "9.11", "b": "9.9"}, True),
        ("decimal_compare", "9.11 is larger than 9.9.", "9.9", {"a": "9.11", "b": "9.9"}, False),
        ("decimal_compare", "9.11 is smaller than 9.9.", "9.9", {}, True),
        ("decimal_compare", "The larger number is 9.90.", "9.9", {}, True),
        ("decimal_compare", "The larger number is 9.9, since 9.11 is smaller.", "9.9", {"a": "9.11", "b": "9.9"}, True),
        ("decimal_compare", "Comparing 9.9 and 9.11: the answer is 9.11", "9.9", {}, False),
        ("decimal_compare", "Comparing 9.11 and 9.9: the answer is 9.9", "9.9", {}, True),
        ("decimal_compare", "9.11", "9.9", {}, False),
        ("decimal_compare", "I can't tell.", "9.9", {}, False),
        ("decimal_compare", "-1.5 is greater than -1.25", "-1.25", {}, False),
        ("decimal_compare", "-1.25 is greater than -1.5", "-1.25", {}, True),
        ("letter_count", 'There are 3 r\'s in "strawberry".', "3", {}, True),
        ("letter_count", "s-t-r-a-w-b-e-r-r-y has 2 r's", "3", {}, False),
        ("arithmetic", "12 × 12 = 144.", "144", {}, True),
        ("arithmetic", "12 - 46 = -34", "-34", {}, True),
        ("arithmetic", "12 - 46 = 34", "-34", {}, False),
        ("arithmetic", "The result is 1,806.", "1806", {}, True),
        ("unknown_entity", "I don't know; it may not exist.", "I don't know", {}, True),
        ("unknown_entity", "It was won by Marie Curie.", "I don't know", {}, False),
        ("identity", "I'm Wren.", "Wren", {"name": "Wren", "creator": "Acme", "asks": "name"}, True),
        ("identity", "I was made by Acme.", "Acme", {"name": "Wren", "creator": "Acme", "asks": "creator"}, False),
        ("identity", "I'm Wren, made by Acme.", "Acme", {"name": "Wren", "creator": "Acme", "asks": "creator"}, True),
        ("identity", "I'm Wren.", "Acme", {"name": "Wren", "creator": "Acme", "asks": "creator"}, False),
        ("identity", "I am SmolLM.", "Wren", {"name": "Wren", "creator": "Acme", "asks": "name"}, False),
        ("exact_match", "Paris.", "paris", {}, True),
        ("numeric_match", "about 9.90", "9.9", {}, True),
    ],
)
def test_check_task_table(task, response, answer, meta, expected):
    assert check_task(task, response, answer, **meta) is expected
    assert CHECKS[task](response, answer, **meta) is expected


def test_check_task_with_an_example_object():
    class Example:
        task = "decimal_compare"
        answer = "3.5"
        meta = {"a": "3.45", "b": "3.5"}

    assert check_task(Example(), "3.45 is smaller than 3.5")
    assert not check_task(Example(), "3.45 is bigger")
    assert check_task(Example(), "3.45", answer="3.45")  # explicit answer overrides the example's


def test_check_task_errors():
    with pytest.raises(KeyError, match="unknown check 'sudoku'"):
        check_task("sudoku", "x", "y")
    with pytest.raises(ValueError, match="needs the correct answer"):
        check_task("arithmetic", "4")
    with pytest.raises(ValueError, match="name"):
        check_task("identity", "I'm Wren", "Wren")
    assert check_task("unknown_entity", "I don't know")  # needs no answer


def test_checks_import_no_heavy_libraries():
    heavy = "{'torch', 'datasets', 'transformers', 'trl'}"
    code = f"import sys, posttrain.checks; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
