"""Every accepted row layout normalises to the expected messages; format auto-detection."""

from __future__ import annotations

import pytest

from posttrain.data import DataError, detect_format, to_messages, validate_messages

U, A, S = "user", "assistant", "system"


def msgs(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


CASES = [
    # (id, format, row, expected messages)
    ("messages", "messages", {"messages": msgs((U, "hi"), (A, "hello"))}, msgs((U, "hi"), (A, "hello"))),
    (
        "messages-extra-keys-dropped",
        "messages",
        {
            "messages": [{"role": U, "content": "hi", "name": "bob"}, {"role": A, "content": "yo", "tool_calls": None}],
            "id": 7,
        },
        msgs((U, "hi"), (A, "yo")),
    ),
    (
        "sharegpt-human-gpt",
        "sharegpt",
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        msgs((U, "hi"), (A, "hello")),
    ),
    (
        "sharegpt-system-user-model",
        "sharegpt",
        {
            "conversations": [
                {"from": "system", "value": "be nice"},
                {"from": "User", "value": "q"},
                {"from": "model", "value": "a"},
                {"from": "user", "value": "q2"},
                {"from": "assistant", "value": "a2"},
            ]
        },
        msgs((S, "be nice"), (U, "q"), (A, "a"), (U, "q2"), (A, "a2")),
    ),
    (
        "alpaca-with-input",
        "alpaca",
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
        msgs((U, "Translate to French.\n\ncat"), (A, "chat")),
    ),
    (
        "alpaca-empty-input",
        "alpaca",
        {"instruction": "Say hi.", "input": "  ", "output": "hi"},
        msgs((U, "Say hi."), (A, "hi")),
    ),
    (
        "alpaca-null-input",
        "alpaca",
        {"instruction": "Say hi.", "input": None, "output": "hi"},
        msgs((U, "Say hi."), (A, "hi")),
    ),
    ("alpaca-no-input", "alpaca", {"instruction": "Say hi.", "output": "hi"}, msgs((U, "Say hi."), (A, "hi"))),
    (
        "alpaca-with-system",
        "alpaca",
        {"system": "Be terse.", "instruction": "Say hi.", "input": "", "output": "hi"},
        msgs((S, "Be terse."), (U, "Say hi."), (A, "hi")),
    ),
    (
        "prompt-completion-strings",
        "prompt_completion",
        {"prompt": "2+2?", "completion": "4"},
        msgs((U, "2+2?"), (A, "4")),
    ),
    (
        "prompt-completion-conversational",
        "prompt_completion",
        {"prompt": msgs((S, "sys"), (U, "q")), "completion": msgs((A, "a"))},
        msgs((S, "sys"), (U, "q"), (A, "a")),
    ),
    (
        "prompt-list-completion-string",
        "prompt_completion",
        {"prompt": msgs((U, "q")), "completion": "a"},
        msgs((U, "q"), (A, "a")),
    ),
    (
        "prompt-string-completion-list",
        "prompt_completion",
        {"prompt": "q", "completion": msgs((A, "a"))},
        msgs((U, "q"), (A, "a")),
    ),
]


@pytest.mark.parametrize(("fmt", "row", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_to_messages_normalizes_every_format(fmt, row, expected):
    result = to_messages(row, fmt, source="x.jsonl", row_index=0)
    assert result == expected
    validate_messages(result, source="x.jsonl", row=1)  # and the result is a valid conversation


@pytest.mark.parametrize(("fmt", "row", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_auto_detection_picks_the_format_of_each_case(fmt, row, expected):
    assert detect_format(row.keys(), source="x") == fmt


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["messages"], "messages"),
        (["messages", "prompt", "completion"], "messages"),  # messages wins
        (["id", "conversations", "source"], "sharegpt"),
        (["prompt", "completion", "label"], "prompt_completion"),
        (["instruction", "input", "output"], "alpaca"),
        (["instruction", "output"], "alpaca"),
        (("prompt", "completion"), "prompt_completion"),  # any iterable
    ],
)
def test_detect_format_table(columns, expected):
    assert detect_format(columns) == expected


@pytest.mark.parametrize("columns", [["text"], ["prompt"], ["instruction", "response"], []])
def test_detect_format_error_names_source_columns_and_accepted_formats(columns):
    with pytest.raises(DataError) as info:
        detect_format(columns, source="data/odd.jsonl")
    message = str(info.value)
    assert message.startswith("data/odd.jsonl: cannot tell the data format")
    for column in columns:
        assert repr(column) in message
    for fmt in ("messages", "sharegpt", "alpaca", "prompt_completion", "conversations", "instruction"):
        assert fmt in message
    assert info.value.source == "data/odd.jsonl"


@pytest.mark.parametrize(
    ("fmt", "row", "missing"),
    [
        ("alpaca", {"instruction": "x"}, "output"),
        ("alpaca", {"output": "x"}, "instruction"),
        ("messages", {"conversations": []}, "messages"),
        ("sharegpt", {"messages": []}, "conversations"),
        ("prompt_completion", {"prompt": "x"}, "completion"),
    ],
)
def test_missing_required_field_reports_row_and_field(fmt, row, missing):
    with pytest.raises(DataError) as info:
        to_messages(row, fmt, source="train.csv", row_index=4)
    assert str(info.value).startswith(f"train.csv row 5: {fmt} row has no {missing!r} field")
    assert info.value.row == 5


def test_missing_field_in_jsonl_reports_line():
    with pytest.raises(DataError, match=r"^a\.jsonl line 9: alpaca row has no 'output' field"):
        to_messages({"instruction": "x"}, "alpaca", source="a.jsonl", row_index=6, line=9)


def test_row_that_is_not_an_object():
    with pytest.raises(DataError, match=r"^a\.json row 3: expected an object with named fields, got list"):
        to_messages([1, 2], "messages", source="a.json", row_index=2)


def test_unknown_format_name():
    with pytest.raises(ValueError, match="unknown data format 'auto'"):
        to_messages({"messages": []}, "auto", source="x", row_index=0)


def test_malformed_turns_pass_through_for_validation_to_report():
    row = {"conversations": [{"from": "narrator", "value": "once"}, "oops", {"value": "no speaker"}]}
    result = to_messages(row, "sharegpt", source="x", row_index=0)
    assert result == [{"role": "narrator", "content": "once"}, "oops", {"content": "no speaker"}]
    with pytest.raises(DataError, match="message 1 has unknown role 'narrator'"):
        validate_messages(result, source="x", row=1)


def test_alpaca_non_string_output_is_reported_by_validation():
    result = to_messages({"instruction": "2+2", "output": 4}, "alpaca", source="x", row_index=0)
    with pytest.raises(DataError, match="message 2 has the wrong type: content is int"):
        validate_messages(result, source="x", row=1)
