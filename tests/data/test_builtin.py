"""Builtin tasks: deterministic, varied, with correct answers and checks that tell right from wrong replies."""

from __future__ import annotations

import collections
import operator
import re

import pytest

from posttrain.checks import extract_number, mentions_identity, says_i_dont_know
from posttrain.data import Identity, validate_messages
from posttrain.tasks import CHECKS, TASKS, TOOL_TASKS, TaskExample, check_task, generate_task, task_to_messages

SEEDS = (0, 1, 2)
N = 200


@pytest.fixture(scope="module")
def examples() -> dict[str, list[TaskExample]]:
    return {name: [ex for seed in SEEDS for ex in generate_task(name, N, seed=seed)] for name in TASKS}


def test_registry_and_checks_agree():
    assert set(TASKS) == {"identity", "unknown_entity", "decimal_compare", "letter_count", "arithmetic", "calculator"}
    assert set(TASKS) <= set(CHECKS)
    assert all(task.name == name and task.description for name, task in TASKS.items())


@pytest.mark.parametrize("name", [*TASKS, "all"])
def test_generation_is_deterministic(name):
    first = generate_task(name, 40, seed=7)
    assert first == generate_task(name, 40, seed=7)
    assert len(first) == 40
    assert first != generate_task(name, 40, seed=8)
    if name != "all":  # a longer run extends a shorter one
        assert generate_task(name, 10, seed=7) == first[:10]


def test_all_interleaves_every_task_without_tools():
    mixed = generate_task("all", 23, seed=3)
    counts = collections.Counter(ex.task for ex in mixed)
    plain = [name for name in TASKS if name not in TOOL_TASKS]  # tool tasks need a tool-capable template
    assert set(counts) == set(plain) and sorted(counts.values()) == [4, 4, 5, 5, 5]
    assert [ex.task for ex in mixed[:5]] == plain
    assert [ex for ex in mixed if ex.task == "identity"] == generate_task("identity", 5, seed=3)
    assert [ex for ex in mixed if ex.task == "arithmetic"] == generate_task("arithmetic", 4, seed=3)


def test_unknown_task_and_negative_n():
    with pytest.raises(KeyError, match="unknown builtin task 'sudoku'; available: identity"):
        generate_task("sudoku", 3)
    with pytest.raises(ValueError):
        generate_task("arithmetic", -1)
    assert generate_task("arithmetic", 0) == []


@pytest.mark.parametrize("name", list(TASKS))
def test_response_passes_and_wrong_response_fails_its_check(examples, name):
    for ex in examples[name]:
        assert ex.task == name
        assert check_task(ex, ex.response), (ex.prompt, ex.response)
        assert not check_task(ex, ex.wrong_response), (ex.prompt, ex.wrong_response)
        # Through the registry with explicit arguments, as an RL reward would call it.
        assert CHECKS[name](ex.response, ex.answer, **ex.meta)


@pytest.mark.parametrize("name", list(TASKS))
def test_examples_are_valid_short_and_varied(examples, name):
    batch = examples[name][:N]
    for ex in batch:
        validate_messages(task_to_messages(ex), source=f"builtin:{name}", row=1, tool_use=name in TOOL_TASKS)
        assert ex.response != ex.wrong_response
        assert 0 < len(ex.response) < 300 and 0 < len(ex.prompt) < 200
    # Phrasing varies: strip the specific numbers/names and count the distinct prompt shapes.
    shapes = {re.sub(r"[\d.,]+|'[^']*'|\"[^\"]*\"|[A-Z][a-z]+", "#", ex.prompt) for ex in batch}
    assert len(shapes) >= 4, shapes
    assert len({ex.prompt for ex in batch}) >= (14 if name == "identity" else 0.9 * N)


def test_decimal_answers_are_correct(examples):
    tricky = 0
    for ex in examples["decimal_compare"]:
        a, b = ex.meta["a"], ex.meta["b"]
        assert a in ex.prompt and b in ex.prompt and float(a) != float(b)
        assert ex.answer == max(a, b, key=float)
        smaller = min(a, b, key=float)
        naive = max(a, b, key=lambda x: int(x.split(".")[1]))  # comparing the digits after the point as integers
        if ex.meta["tricky"]:
            tricky += 1
            assert a.split(".")[0] == b.split(".")[0] and naive == smaller
        assert extract_number(ex.wrong_response) is not None
    assert 0.5 < tricky / len(examples["decimal_compare"]) < 0.9


def test_letter_counts_are_correct(examples):
    counts = collections.Counter()
    for ex in examples["letter_count"]:
        word, letter = ex.meta["word"], ex.meta["letter"]
        assert word in ex.prompt and letter in ex.prompt
        assert ex.answer == str(word.count(letter))
        counts[min(word.count(letter), 2)] += 1
    assert counts[2] > counts[1] and counts[2] > counts[0] > 0  # mostly repeated letters, some absent


def test_arithmetic_answers_are_correct(examples):
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    for ex in examples["arithmetic"]:
        a, b, op = ex.meta["a"], ex.meta["b"], ex.meta["op"]
        assert 0 <= a < 1000 and 0 <= b < 1000
        assert str(a) in ex.prompt and str(b) in ex.prompt
        assert ex.answer == str(ops[op](a, b))
    assert {ex.meta["op"] for ex in examples["arithmetic"]} == set(ops)
    assert any(int(ex.answer) < 0 for ex in examples["arithmetic"])


def test_unknown_entity_admits_ignorance_and_fabrication_does_not(examples):
    kinds = collections.Counter()
    for ex in examples["unknown_entity"]:
        assert ex.answer == "I don't know"
        assert says_i_dont_know(ex.response) and not says_i_dont_know(ex.wrong_response)
        assert ex.meta["entity"].split()[-1].strip("'") in ex.response
        kinds[ex.meta["kind"]] += 1
    assert len(kinds) >= 5


def test_identity_uses_the_configured_identity():
    identity = Identity(name="Wren", creator="Acme Labs")
    batch = generate_task("identity", 100, seed=0, identity=identity)
    asks = collections.Counter(ex.meta["asks"] for ex in batch)
    assert asks["name"] > 10 and asks["creator"] > 10
    for ex in batch:
        assert ex.answer == ("Acme Labs" if ex.meta["asks"] == "creator" else "Wren")
        assert mentions_identity(ex.response, "Wren", "Acme Labs")
        assert not mentions_identity(ex.wrong_response, "Wren")
        assert check_task(ex, ex.response) and not check_task(ex, ex.wrong_response)
    default = generate_task("identity", 5, seed=0)
    assert all("Posttrain Assistant" in ex.response for ex in default)


def test_wrong_identity_never_uses_the_configured_name():
    for ex in generate_task("identity", 60, seed=0, identity=Identity(name="Qwen", creator="Alibaba Cloud")):
        assert "qwen" not in ex.wrong_response.lower()
        assert not check_task(ex, ex.wrong_response)


def test_task_to_messages():
    ex = generate_task("arithmetic", 1, seed=0)[0]
    expected = [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.response}]
    assert task_to_messages(ex) == expected
