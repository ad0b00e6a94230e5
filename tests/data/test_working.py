"""Worked solutions (think-then-answer replies) of letter_count, arithmetic and decimal_compare: always correct, their
final answer line is what the checks read, the working itself is right; the `reply` option of builtin sources; and
the measures of a reply's working (share showing it, reasoning length)."""

from __future__ import annotations

import re

import pytest

from posttrain.checks import extract_number
from posttrain.data import load_conversations
from posttrain.data.loading import fingerprint
from posttrain.data.spec import DatasetSpec
from posttrain.data.validation import DataError
from posttrain.tasks import check_task, generate_task, task_to_messages
from posttrain.tasks.working import (
    REPLY_KINDS,
    WORKED_TASKS,
    answer_response,
    reasoning_length,
    reply_for,
    shows_working,
    split_final_answer,
    worked_response,
    working_stats,
)

POOLS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def examples():
    return {
        task: [ex for pool in POOLS for seed in (0, 1) for ex in generate_task(task, 150, seed=seed, pool=pool)]
        for task in WORKED_TASKS
    }


def _lines(reply: str) -> list[str]:
    return reply.splitlines()


@pytest.mark.parametrize("task", list(WORKED_TASKS))
def test_worked_reply_is_correct_and_its_final_line_is_the_answer(examples, task):
    for ex in examples[task]:
        reply = worked_response(ex)
        assert reply == worked_response(ex)  # deterministic
        assert _lines(reply)[-1] == f"Answer: {ex.answer}"
        assert check_task(ex, reply), reply
        assert not check_task(ex, ex.wrong_response), ex.wrong_response
        # the check reads the final answer line, not the working: a wrong final answer fails
        if ex.task == "decimal_compare":
            wrong = str(ex.meta["a"] if ex.answer == str(ex.meta["b"]) else ex.meta["b"])
        else:
            wrong = f"{extract_number(ex.wrong_response):g}"
        assert not check_task(ex, reply.rsplit("\n", 1)[0] + f"\nAnswer: {wrong}"), (reply, wrong)
        assert shows_working(task, reply)
        reasoning, final = split_final_answer(reply)
        assert final == f"Answer: {ex.answer}" and reasoning == reply.rsplit("\n", 1)[0]


def test_letter_count_working_spells_the_word_and_counts_the_letter(examples):
    for ex in examples["letter_count"]:
        word, letter = ex.meta["word"], ex.meta["letter"]
        spell, mark, count = _lines(worked_response(ex))[:3]
        assert spell == f'Spell "{word}": ' + " ".join(word)
        assert "".join(spell.split(": ", 1)[1].split()) == word  # the spelled letters are the word
        marked = mark.split(": ", 1)[1].split()
        assert "".join(m.strip("()") for m in marked) == word
        assert [m == f"({letter})" for m in marked] == [c == letter for c in word]
        expected = ", ".join(map(str, range(1, word.count(letter) + 1))) or "none"
        assert count == f"Count: {expected}" and int(ex.answer) == word.count(letter)


_EXPR = r"-?\d+(?:\s*[-+×]\s*\d+)*"


def _value(expression: str) -> int:
    first, rest = re.match(r"\s*(-?\d+)(.*)", expression).groups()
    total = int(first)
    for op, number in re.findall(r"([-+×])\s*(\d+)", rest):
        total = total + int(number) if op == "+" else total - int(number) if op == "-" else total * int(number)
    return total


def test_arithmetic_working_is_true_and_its_columns_make_the_result(examples):
    for ex in examples["arithmetic"]:
        a, b, op = ex.meta["a"], ex.meta["b"], ex.meta["op"]
        working = worked_response(ex).rsplit("\n", 1)[0]
        equations = re.findall(rf"({_EXPR})\s*=\s*({_EXPR}|-\(\d+ - \d+\))", working)
        assert equations, working
        for left, right in equations:  # every stated equation is true
            right_value = -_value(right[2:-1]) if right.startswith("-(") else _value(right)
            assert _value(left) == right_value, (left, right, working)
        if op in "+-":  # the written digits, last column first, are the result (of the larger minus the smaller)
            digits = re.findall(r"write (?:the carry )?(\d)", working)
            assert int("".join(reversed(digits))) == abs(int(ex.answer)), working
            carries = [line for line in working.splitlines() if line.endswith(", carry 1")]
            sums = [int(m) for m in re.findall(r"= (\d+), write", working)] if op == "+" else []
            assert len(carries) == sum(s >= 10 for s in sums)  # a carry exactly where a column reaches 10
        else:
            assert f"= {int(ex.answer)}" in working.splitlines()[-1] and str(a) in working and str(b) in working


def test_decimal_working_pads_and_compares_digit_by_digit(examples):
    for ex in examples["decimal_compare"]:
        a, b = str(ex.meta["a"]), str(ex.meta["b"])
        lines = _lines(worked_response(ex))
        pad_a, pad_b = re.fullmatch(r"Same number of decimal places: (\S+) and (\S+)", lines[0]).groups()
        assert float(pad_a) == float(a) and float(pad_b) == float(b)
        assert len(pad_a.split(".")[1]) == len(pad_b.split(".")[1])
        # the last comparison names the larger digit of the larger number at the first place they differ
        high, low = map(int, re.search(r"(\d+) > (\d+)$", lines[-2]).groups())
        place = lines[-2].split(":")[0]
        larger = pad_a if float(a) > float(b) else pad_b
        digit = (
            int(larger.split(".")[0])
            if place == "Whole parts"
            else int(larger.split(".")[1][["Tenths", "Hundredths", "Thousandths"].index(place)])
        )
        assert high == digit and high > low
        assert all(line.endswith("the same") for line in lines[1:-2])
        assert not re.search(r"\bis (larger|bigger|greater|higher|smaller|less|lower)\b", "\n".join(lines[:-1]))


def test_answer_only_reply_and_reply_kinds(examples):
    ex = examples["arithmetic"][0]
    assert answer_response(ex) == f"Answer: {ex.answer}" and check_task(ex, answer_response(ex))
    assert reply_for(ex, "response") == ex.response
    assert reply_for(ex, "working") == worked_response(ex) and reply_for(ex, "answer") == answer_response(ex)
    assert REPLY_KINDS == ("response", "working", "answer")
    with pytest.raises(ValueError, match="reply must be one of"):
        reply_for(ex, "thinking")
    with pytest.raises(ValueError, match="no worked solution"):
        worked_response(generate_task("identity", 1)[0])


# ------------------------------------------------------------------------------------------------ measuring


def test_split_final_answer():
    assert split_final_answer("a\nb\nAnswer: 3") == ("a\nb", "Answer: 3")
    assert split_final_answer("**Answer:** 3") == ("", "**Answer:** 3")
    assert split_final_answer("work\nanswer: 3\nmore\nAnswer: 4.") == ("work\nanswer: 3\nmore", "Answer: 4.")
    assert split_final_answer("There are 3 r's.") == ("", "There are 3 r's.")
    assert split_final_answer("Line one.\nSo it is 5.\n") == ("Line one.", "So it is 5.")
    assert split_final_answer("") == ("", "")


def test_reasoning_length_counts_what_comes_before_the_answer_line():
    reply = "ones: 7 + 8 = 15, write 5\nAnswer: 15"
    assert reasoning_length(reply) == 8  # words without a tokenizer
    assert reasoning_length(reply, lambda texts: [len(t) for t in texts]) == len("ones: 7 + 8 = 15, write 5")
    assert reasoning_length("Answer: 15") == 0 and reasoning_length("15") == 0


def test_shows_working_needs_the_tasks_working_before_the_answer():
    assert shows_working("letter_count", 'Spell "kayak": k a y a k\nAnswer: 2')
    assert shows_working("letter_count", "k-a-y-a-k has\n2 k's")
    assert not shows_working("letter_count", "Answer: 2")
    assert not shows_working("letter_count", "There are 2 k's in kayak.\nAnswer: 2")
    assert shows_working("arithmetic", "tens: 5 + 6 + 1 = 12, write 2\nAnswer: 125")
    assert not shows_working("arithmetic", "457 + 68 = 525")  # the equation is the answer line itself
    assert not shows_working("arithmetic", "Let me think.\nAnswer: 525")
    assert shows_working("decimal_compare", "Tenths: 9 and 1, 9 > 1\nAnswer: 9.9")
    assert not shows_working("decimal_compare", "9.9 is larger than 9.11.")
    with pytest.raises(ValueError, match="no worked solution"):
        shows_working("identity", "I am Posttrain Assistant.")
    stats = working_stats([("arithmetic", "1 + 2 = 3, so\nAnswer: 3"), ("arithmetic", "Answer: 3")])
    assert stats.n == 2 and stats.shows_working == 0.5 and stats.answer_line == 1.0
    assert stats.mean_reasoning_length == 3.0  # "1 + 2 = 3, so": 6 words, over 2 replies
    assert working_stats([]).n == 0


# ------------------------------------------------------------------------------------------- the data option


def test_reply_option_gives_think_then_answer_turns():
    default = load_conversations([{"path": "builtin:arithmetic", "num_samples": 12}])["train"]
    worked = load_conversations([{"path": "builtin:arithmetic", "num_samples": 12, "reply": "working"}])["train"]
    answer = load_conversations([{"path": "builtin:arithmetic", "num_samples": 12, "reply": "answer"}])["train"]
    examples = generate_task("arithmetic", 12, seed=42)
    assert [row["messages"] for row in default] == [task_to_messages(ex) for ex in examples]  # unchanged
    for row_w, row_a, ex in zip(worked, answer, examples):
        assert row_w["messages"][0] == row_a["messages"][0] == {"role": "user", "content": ex.prompt}
        assert row_w["messages"][-1] == {"role": "assistant", "content": worked_response(ex)}
        assert row_a["messages"][-1] == {"role": "assistant", "content": answer_response(ex)}


def test_reply_option_reaches_the_held_out_split_and_the_fingerprint():
    specs = [{"path": "builtin:letter_count", "num_samples": 20, "reply": "working"}]
    ds = load_conversations(specs, test_split_size=4)
    for split in ("train", "test"):
        for row in ds[split]:
            assert row["messages"][-1]["content"].startswith("Spell ")
            assert row["messages"][-1]["content"].splitlines()[-1].startswith("Answer: ")
    validation = {ex.prompt for ex in generate_task("letter_count", 400, seed=42, pool="validation")}
    assert all(row["messages"][0]["content"] in validation for row in ds["test"])  # from the validation pool
    assert fingerprint(ds, specs)["sources"][0]["reply"] == "working"
    assert "reply" not in fingerprint(ds, [{"path": "builtin:letter_count"}])["sources"][0]


def test_reply_option_is_validated():
    with pytest.raises(DataError, match="reply must be one of"):
        DatasetSpec(path="builtin:arithmetic", reply="thinking")
    with pytest.raises(DataError, match="needs a builtin task with a worked solution"):
        DatasetSpec(path="builtin:identity", reply="working")
    with pytest.raises(DataError, match="needs a builtin task with a worked solution"):
        DatasetSpec(path="data/train.jsonl", reply="answer")
    assert DatasetSpec(path="builtin:decimal_compare", reply="answer").reply == "answer"


def test_a_reply_style_is_refused_where_no_reply_is_used():
    """Preference pairs and RL prompts have no assistant turn to restyle: ``reply`` is refused by name there, never
    silently ignored."""
    import pytest

    from posttrain.data.preference import load_preferences
    from posttrain.data.spec import DatasetSpec
    from posttrain.data.validation import DataError
    from posttrain.rl.prompts import load_prompts

    spec = {"path": "builtin:arithmetic", "num_samples": 8, "reply": "working"}
    with pytest.raises(DataError, match="reply: working is for SFT conversations, not preference pairs"):
        load_preferences([spec])
    with pytest.raises(DataError, match="reply: working is for SFT conversations, not RL prompts"):
        load_prompts([DatasetSpec(**spec)])
