"""The tool loop of evaluation: the ``<tool_call>`` parser, argument matching, the loop itself on scripted models
(each sub-check moves with the mistake it is about), the ``tools`` suite through ``evaluate`` with paired deltas,
and an endpoint that receives the tools."""

from __future__ import annotations

import json

import pytest

from posttrain.checks.tool_calls import arguments_match, calls_from_message, parse_tool_calls
from posttrain.evaluation.backends import Output
from posttrain.evaluation.config import EvalArguments
from posttrain.evaluation.suites import SuiteError, load_suite
from posttrain.evaluation.tool_loop import ToolItem, run_tool_loop, suite_items

SCORES = ("tool_use", "tool_call", "tool_name", "tool_arguments", "final_answer")


def block(payload) -> str:
    return f"<tool_call>\n{payload if isinstance(payload, str) else json.dumps(payload)}\n</tool_call>"


# ------------------------------------------------------------------------------------------------- parser


def test_parser_reads_well_formed_calls_and_the_text_around_them():
    text = "Let me compute.\n" + block({"name": "calculator", "arguments": {"operation": "add", "a": 1, "b": 2}})
    text += block({"name": "other", "arguments": '{"x": 1}'})  # OpenAI-style JSON-text arguments
    parsed = parse_tool_calls(text)
    assert [(c.name, c.arguments) for c in parsed.calls] == [
        ("calculator", {"operation": "add", "a": 1, "b": 2}),
        ("other", {"x": 1}),
    ]
    assert parsed.content == "Let me compute." and parsed.errors == []
    # a reply cut right after its JSON (no closing tag: max_new_tokens, or a stop string) still counts
    assert parse_tool_calls('<tool_call>\n{"name": "f", "arguments": {}}').calls[0].name == "f"
    assert parse_tool_calls("The answer is 3.").calls == []


@pytest.mark.parametrize(
    "body, problem",
    [
        ('{"name": "calculator", "arguments": {"a": 1,}}', "not valid JSON"),
        ('{"arguments": {"a": 1}}', "has no 'name'"),
        ('{"name": "calculator", "arguments": [1, 2]}', "must be a JSON object, got list"),
        ('{"name": "calculator", "arguments": "{oops"}', "arguments of 'calculator' are not valid JSON"),
        ('["calculator"]', "must be a JSON object, got list"),
    ],
)
def test_parser_reports_malformed_calls_and_never_raises(body, problem):
    parsed = parse_tool_calls("Sure. " + block(body))
    assert parsed.calls == [] and parsed.content == "Sure."
    [error] = parsed.errors
    assert error.startswith("<tool_call> block 1: ") and problem in error


def test_calls_from_an_openai_message_with_tool_calls_or_calls_in_content():
    message = {
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"a": 1}'}}],
    }
    assert [(c.name, c.arguments) for c in calls_from_message(message).calls] == [("calculator", {"a": 1})]
    in_content = calls_from_message({"content": block({"name": "calculator", "arguments": {"a": 2}})})
    assert in_content.calls[0].arguments == {"a": 2}
    broken = calls_from_message({"content": "", "tool_calls": [{"function": {"arguments": "{}"}}]})
    assert broken.calls == [] and broken.errors == ["tool_calls item 1: the call has no 'name'"]


def test_arguments_match_by_meaning():
    expected = {"operation": "multiply", "a": 4823, "b": 367}
    assert arguments_match({"operation": "Multiply ", "a": 4823.0, "b": "367"}, expected)
    assert arguments_match({"operation": "multiply", "a": 367, "b": 4823}, expected, ["a", "b"])
    assert not arguments_match({"operation": "multiply", "a": 367, "b": 4823}, expected)  # not commutative here
    assert not arguments_match({"operation": "multiply", "a": 4823, "b": 368}, expected, ["a", "b"])
    assert not arguments_match({"operation": "multiply", "a": 4823}, expected)
    assert not arguments_match({**expected, "c": 0}, expected)
    assert not arguments_match({"operation": "multiply", "a": "4823 + 0", "b": 367}, expected)


# --------------------------------------------------------------------------------------------------- loop


def _expected(conversation, samples) -> dict:
    prompt = next(m["content"] for m in conversation if m["role"] == "user")
    return samples[prompt]


def scripted(behaviour: str, samples: dict):
    """A model with one kind of mistake: replies from the conversation (first turn: the call; after a tool result:
    the answer, read from that result unless the mistake is not calling at all)."""

    def reply(conversation) -> str:
        sample = _expected(conversation, samples)
        call = sample.meta["call"]
        last = conversation[-1]
        if behaviour == "loops":
            return block({"name": call["name"], "arguments": call["arguments"]})  # never stops calling
        if last["role"] == "tool":
            result = json.loads(last["content"])
            if "error" in result:  # a wrong tool: the model guesses the answer from the question
                return f"It is {sample.answer}."
            return f"The result is {result['result']}."
        arguments = dict(call["arguments"])
        if behaviour == "right":
            return block({"name": call["name"], "arguments": arguments})
        if behaviour == "wrong_tool":
            return block({"name": "calc", "arguments": arguments})
        if behaviour == "wrong_args":
            return block({"name": call["name"], "arguments": {**arguments, "b": arguments["b"] + 1}})
        if behaviour == "malformed":
            return '<tool_call>\n{"name": "calculator", "arguments": {"a": 1,}}\n</tool_call>'
        return "I think it is 42."  # no_call

    return reply


class ScriptedBackend:
    """A backend answering with ``reply(conversation)``; records the tools each conversation was given."""

    def __init__(self, label, reply):
        self.label, self.reply, self.calls = label, reply, []

    def fingerprint(self):
        return f"scripted:{self.label}"

    def generate(self, conversations, settings, *, progress=True, on_result=None, tools=None, template_kwargs=None):
        self.calls.append({"conversations": conversations, "tools": tools})
        outputs = []
        for i, conversation in enumerate(conversations):
            output = Output(self.reply(conversation), True, 7)
            outputs.append(output)
            if on_result:
                on_result(i, output)
        return outputs

    def close(self):
        pass


@pytest.fixture(scope="module")
def suite():
    return load_suite("tools", max_samples=6)


def test_loop_runs_the_pure_python_tool_and_hands_back_its_result(suite):
    samples = {s.messages[-1]["content"]: s for s in suite.samples}
    backend = ScriptedBackend("right", scripted("right", samples))
    items = suite_items(suite.samples, [s.messages for s in suite.samples])
    results = run_tool_loop(lambda c, t: backend.generate(c, None, tools=t), items)
    assert len(backend.calls) == 2  # one batched round for the calls, one for the answers
    assert all(t == suite.samples[0].meta["tools"] for t in backend.calls[0]["tools"])
    for sample, result in zip(suite.samples, results):
        calling, tool, answer = result.messages
        assert calling["tool_calls"][0]["function"] == sample.meta["call"]
        assert tool == {"role": "tool", "name": "calculator", "content": sample.meta["tool_result"]}
        assert answer == {"role": "assistant", "content": f"The result is {sample.answer}."}
        assert result.output == Output(f"The result is {sample.answer}.", True, 14) and len(result.replies) == 2


def test_loop_is_bounded_and_a_last_call_is_no_answer(suite):
    samples = {s.messages[-1]["content"]: s for s in suite.samples}
    backend = ScriptedBackend("loops", scripted("loops", samples))
    items = [ToolItem(s.messages, s.meta["tools"], lambda name, args: '{"result": 0}') for s in suite.samples[:2]]
    results = run_tool_loop(lambda c, t: backend.generate(c, None, tools=t), items, max_rounds=3)
    assert len(backend.calls) == 3
    for result in results:
        assert len(result.replies) == 3 and result.output.text == "" and not result.output.finished


def test_tools_suite_scores_each_step_and_pairs_the_deltas(tmp_path, monkeypatch, suite):
    """Through ``evaluate``: five scripted models, each failing the sub-checks its mistake is about."""
    from posttrain.evaluation import runner

    samples = {s.messages[-1]["content"]: s for s in suite.samples}
    behaviours = ["right", "wrong_tool", "wrong_args", "no_call", "malformed"]
    backends = {b: ScriptedBackend(b, scripted(b, samples)) for b in behaviours}
    monkeypatch.setattr(runner, "make_backend", lambda spec, args: backends[spec.label])
    args = EvalArguments(
        models=[{"label": b, "model": b, "endpoint": "http://127.0.0.1:9/v1"} for b in behaviours],
        suites=["tools"],
        max_samples=6,
        baseline="no_call",
        output_dir=str(tmp_path / "eval"),
        bootstrap_samples=200,
        progress=False,
    )
    results = json.loads(runner.evaluate(args).read_text())
    means = {label: tuple(stats[s]["mean"] for s in SCORES) for label, stats in results["summary"]["tools"].items()}
    # tool_use, tool_call, tool_name, tool_arguments, final_answer
    assert means == {
        "right": (1.0, 1.0, 1.0, 1.0, 1.0),
        "wrong_tool": (0.0, 1.0, 0.0, 0.0, 1.0),
        "wrong_args": (0.0, 1.0, 1.0, 0.0, 0.0),
        "no_call": (0.0, 0.0, 0.0, 0.0, 0.0),
        "malformed": (0.0, 0.0, 0.0, 0.0, 0.0),
    }
    record = next(r for r in results["samples"] if r["model"] == "right")
    assert [m["role"] for m in record["transcript"]] == ["assistant", "tool", "assistant"]
    assert len(record["replies"]) == 2 and record["output"].startswith("The result is ")
    delta = next(
        d for d in results["deltas"] if (d["from"], d["to"], d["score"]) == ("right", "wrong_tool", "tool_use")
    )
    assert delta["paired"] and delta["n"] == 6 and delta["delta"] == -1.0 and delta["high"] < 0
    assert results["counts"]["generated"] == 6 * 2 + 6 * 2 + 6 * 2 + 6 + 6  # a second round only after a call


def test_tool_checks_need_samples_with_tools(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("data:\n  - samples: [{prompt: hi, answer: '1'}]\nscoring: [tool_call]\n")
    with pytest.raises(SuiteError, match="check 'tool_call' scores a tool loop, but sample 'samples-0' offers no"):
        load_suite(str(path))


def test_endpoint_gets_the_tools_and_the_results(tmp_path, chat_server):
    """An OpenAI-compatible endpoint plays the loop: each request carries the tools, the second the tool result."""
    from posttrain.evaluation import runner

    suite = load_suite("tools", max_samples=2)
    samples = {s.messages[-1]["content"]: s for s in suite.samples}
    chat_server.reply = scripted("right", samples)
    args = EvalArguments(
        models=[{"label": "m", "model": "m", "endpoint": chat_server.url}],
        suites=["tools"],
        max_samples=2,
        output_dir=str(tmp_path / "eval"),
        bootstrap_samples=50,
        progress=False,
    )
    results = json.loads(runner.evaluate(args).read_text())
    assert results["summary"]["tools"]["m"]["tool_use"]["mean"] == 1.0
    payloads = [r["payload"] for r in chat_server.requests]
    assert len(payloads) == 4 and all(p["tools"] == suite.samples[0].meta["tools"] for p in payloads)
    answered = [p for p in payloads if p["messages"][-1]["role"] == "tool"]
    assert len(answered) == 2 and all(p["messages"][-2]["tool_calls"] for p in answered)


def test_hf_backend_gets_a_tool_capable_template_when_its_own_hides_tools():
    from families import load_family_tokenizer

    from posttrain.evaluation.tool_loop import renders_tools

    assert not renders_tools(load_family_tokenizer("smollm2"))  # SmolLM2's ChatML has no tool format
    assert renders_tools(load_family_tokenizer("qwen2_5"))
    tokenizer = load_family_tokenizer("smollm2")
    from posttrain.chat_templates import load_template

    tokenizer.chat_template = load_template("chatml")
    assert renders_tools(tokenizer)
