"""Conversation validation: every kind of problem, located by file and row/line."""

from __future__ import annotations

import pickle

import pytest

from posttrain.data import DataError, DataValidationError, ProblemCollector, validate_messages
from posttrain.data.validation import MAX_REPORTED_PROBLEMS


def m(role, content):
    return {"role": role, "content": content}


VALID = [
    [m("user", "hi"), m("assistant", "hello")],
    [m("system", "be nice"), m("user", "hi"), m("assistant", "hello")],
    [m("user", "a"), m("assistant", "b"), m("user", "c"), m("assistant", "d")],
    [m("user", " padded "), m("assistant", "ünïcødé ✓")],
]


@pytest.mark.parametrize("messages", VALID)
def test_valid_conversations_pass(messages):
    validate_messages(messages, source="ok.jsonl", row=1)


INVALID = [
    # (id, messages, expected problem)
    ("not-a-list", "hello", "messages must be a list of {role, content} objects (got str)"),
    ("null", None, "messages must be a list of {role, content} objects (got null)"),
    ("empty-list", [], "conversation is empty (no messages)"),
    ("item-not-dict", [m("user", "hi"), "hello"], "message 2 is not an object with 'role' and 'content' (got str)"),
    ("missing-role", [{"content": "hi"}, m("assistant", "a")], "message 1 is missing 'role'"),
    ("missing-content", [m("user", "hi"), {"role": "assistant"}], "message 2 is missing 'content'"),
    ("content-int", [m("user", "2+2"), m("assistant", 4)], "message 2 has the wrong type: content is int"),
    (
        "content-list",
        [m("user", [{"type": "text"}]), m("assistant", "a")],
        "message 1 has the wrong type: content is list",
    ),
    ("content-null", [m("user", "q"), m("assistant", None)], "message 2 has the wrong type: content is null"),
    ("role-int", [m(1, "q"), m("assistant", "a")], "message 1 has the wrong type: role is int"),
    ("empty-content", [m("user", "q"), m("assistant", "")], "message 2 has empty content"),
    ("whitespace-content", [m("user", " \n\t"), m("assistant", "a")], "message 1 has empty content"),
    (
        "unknown-role",
        [m("human", "q"), m("assistant", "a")],
        "message 1 has unknown role 'human' (allowed: system, user, assistant)",
    ),
    ("tool-role", [m("user", "q"), m("tool", "42"), m("assistant", "a")], "message 2 has unknown role 'tool'"),
    (
        "starts-with-assistant",
        [m("assistant", "a"), m("user", "q")],
        "message 1 has role 'assistant' but 'user' was expected",
    ),
    (
        "two-users",
        [m("user", "q"), m("user", "q2"), m("assistant", "a")],
        "message 2 has role 'user' but 'assistant' was expected",
    ),
    (
        "two-assistants",
        [m("user", "q"), m("assistant", "a"), m("assistant", "b")],
        "message 3 has role 'assistant' but 'user' was expected",
    ),
    (
        "late-system",
        [m("user", "q"), m("system", "s"), m("assistant", "a")],
        "message 2 is a system message; only the first message may be one",
    ),
    (
        "two-systems",
        [m("system", "s"), m("system", "t"), m("user", "q"), m("assistant", "a")],
        "message 2 is a system message; only the first message may be one",
    ),
    (
        "ends-with-user",
        [m("user", "q"), m("assistant", "a"), m("user", "q2")],
        "conversation ends with a user turn (no assistant reply to learn from)",
    ),
    ("no-assistant", [m("user", "q")], "conversation has no assistant turn to learn from"),
    ("system-only", [m("system", "s")], "conversation has no assistant turn to learn from"),
]


@pytest.mark.parametrize(("messages", "problem"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_each_problem_is_reported_with_source_and_row(messages, problem):
    with pytest.raises(DataError) as info:
        validate_messages(messages, source="data/train.csv", row=7)
    error = info.value
    assert str(error).startswith(f"data/train.csv row 7: {problem}")
    assert (error.source, error.row, error.line) == ("data/train.csv", 7, None)
    assert error.problem.startswith(problem)


@pytest.mark.parametrize(("messages", "problem"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_jsonl_problems_give_the_line(messages, problem):
    with pytest.raises(DataError) as info:
        validate_messages(messages, source="data/train.jsonl", row=2, line=3)
    assert str(info.value).startswith(f"data/train.jsonl line 3: {problem}")


def test_data_error_rendering_and_fields():
    error = DataError("data/train.jsonl", "message 2 has empty content", row=2, line=3)
    assert str(error) == "data/train.jsonl line 3: message 2 has empty content"
    assert str(DataError("x.csv", "bad", row=4)) == "x.csv row 4: bad"
    assert str(DataError("org/name", "unreachable")) == "org/name: unreachable"
    assert isinstance(error, ValueError)
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.source, clone.row, clone.line, clone.problem, str(clone)) == (
        error.source,
        error.row,
        error.line,
        error.problem,
        str(error),
    )


def test_validation_error_lists_problems_and_counts_the_rest():
    collector = ProblemCollector()
    assert not collector
    collector.raise_if_any()  # nothing collected: no error
    for line in range(1, 31):
        collector.add(DataError("big.jsonl", "message 1 has empty content", line=line))
    with pytest.raises(DataValidationError) as info:
        collector.raise_if_any()
    error = info.value
    lines = str(error).splitlines()
    assert lines[0] == "30 problems found in the training data:"
    assert lines[1] == "  - big.jsonl line 1: message 1 has empty content"
    assert lines[MAX_REPORTED_PROBLEMS] == f"  - big.jsonl line {MAX_REPORTED_PROBLEMS}: message 1 has empty content"
    assert lines[-1] == f"  ... and {30 - MAX_REPORTED_PROBLEMS} more"
    assert len(lines) == MAX_REPORTED_PROBLEMS + 2
    assert error.total == 30 and len(error.errors) == MAX_REPORTED_PROBLEMS
    assert [e.line for e in error] == list(range(1, MAX_REPORTED_PROBLEMS + 1))
    assert isinstance(error, ValueError)


def test_validation_error_singular_without_tail():
    error = DataValidationError([DataError("a.json", "bad", row=1)])
    assert str(error) == "1 problem found in the training data:\n  - a.json row 1: bad"
    assert pickle.loads(pickle.dumps(error)).total == 1
