"""The built-in ``calculator`` task: tool-calling conversations whose call, result and answer agree, a tool that runs
typed arguments and never evaluates text, and a task kept out of ``all``, preference pairs and RL prompts."""

from __future__ import annotations

import builtins
import json

import pytest

from posttrain.data import DataError, load_conversations
from posttrain.data.tools import Conversation
from posttrain.tasks import TASKS, TOOL_TASKS, check_task, generate_task, task_to_messages, task_to_preference
from posttrain.tasks.calculator import TOOLS, calculator, run_tool


@pytest.fixture(scope="module")
def examples():
    return {pool: generate_task("calculator", 60, seed=3, pool=pool) for pool in ("train", "validation", "test")}


def test_conversation_calls_the_tool_whose_result_the_answer_states(examples):
    for example in examples["train"] + examples["validation"] + examples["test"]:
        user, calling, result, answer = task_to_messages(example)
        assert user == {"role": "user", "content": example.prompt}
        [call] = calling["tool_calls"]
        arguments = call["function"]["arguments"]
        assert call["function"]["name"] == "calculator" and set(arguments) == {"operation", "a", "b"}
        assert str(arguments["a"]) in example.prompt and str(arguments["b"]) in example.prompt
        assert result["role"] == "tool" and json.loads(result["content"]) == {"result": int(example.answer)}
        assert int(example.answer) == {"add": int.__add__, "subtract": int.__sub__, "multiply": int.__mul__}[
            arguments["operation"]
        ](arguments["a"], arguments["b"])
        assert answer["content"] == example.response and example.answer in example.response
        assert check_task(example, example.response) and not check_task(example, example.wrong_response)


def test_numbers_are_large_and_the_pools_use_different_ones(examples):
    operands = {
        pool: {v for e in batch for k, v in e.meta["call"]["arguments"].items() if k in "ab"}
        for pool, batch in examples.items()
    }
    assert not any(n % 4 == 3 for n in operands["train"])
    assert all(n % 8 == 3 for n in operands["validation"]) and all(n % 8 == 7 for n in operands["test"])
    assert min(operands["train"] | operands["validation"] | operands["test"]) >= 10  # nothing a model just knows
    for pool in ("validation", "test"):
        assert {e.meta["call"]["arguments"]["operation"] for e in examples[pool]} == {"add", "subtract", "multiply"}


def test_rows_load_with_tools_and_validate(examples):
    data = load_conversations([{"path": "builtin:calculator", "num_samples": 6}], seed=1)["train"]
    assert "tools" in data.column_names
    conversation = Conversation.from_row(data[0])
    assert conversation.tools == list(TOOLS)
    assert [m["role"] for m in conversation.messages] == ["user", "assistant", "tool", "assistant"]


def test_task_is_not_part_of_all_nor_pairs_nor_rl_prompts():
    from posttrain.data.preference import load_preferences
    from posttrain.rl.prompt_items import task_prompts

    assert {"calculator"} == TOOL_TASKS and TASKS["calculator"].tools
    assert "calculator" not in {e.task for e in generate_task("all", 60, seed=0)}
    with pytest.raises(ValueError, match="tool-calling conversation"):
        task_to_preference(generate_task("calculator", 1)[0])
    with pytest.raises(DataError, match=r"^builtin:calculator: .*tool-calling conversation"):
        load_preferences([{"path": "builtin:calculator", "num_samples": 2}])
    with pytest.raises(DataError, match=r"builtin:calculator: .*no tool to call"):
        task_prompts(["builtin:calculator"], 4)


@pytest.mark.parametrize(
    "arguments, error",
    [
        ({"operation": "multiply", "a": "__import__('os').system('touch PWNED')", "b": 2}, "'a' must be a number"),
        ({"operation": "add", "a": 1, "b": "2 + 2"}, "'b' must be a number"),
        ({"operation": "exec", "a": 1, "b": 2}, "'operation' must be one of add, subtract, multiply"),
        ({"operation": "add", "a": True, "b": 2}, "boolean"),
        ({"operation": "add", "a": 1}, "takes operation, a and b"),
        ({"operation": "add", "a": 1, "b": 2, "c": 3}, "takes operation, a and b"),
        ({"operation": "add", "a": 1e300, "b": 2}, "finite number below 10^15"),
    ],
)
def test_tool_refuses_what_is_not_a_typed_number_and_evaluates_nothing(arguments, error, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the calculator evaluated text")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    reply = json.loads(run_tool("calculator", arguments))
    assert error in reply["error"] and "result" not in reply
    assert not (tmp_path / "PWNED").exists()


def test_tool_computes_typed_and_numeral_arguments_and_names_unknown_tools():
    assert json.loads(run_tool("calculator", {"operation": "multiply", "a": 4823, "b": 367})) == {"result": 1770041}
    assert json.loads(run_tool("calculator", {"operation": " Subtract ", "a": "1,000", "b": 1.5})) == {"result": 998.5}
    assert calculator("add", "12", 30) == 42
    assert "unknown tool 'python'" in json.loads(run_tool("python", {"code": "1+1"}))["error"]
