"""Tool calling, reasoning and template variables through the real family templates (tests/families.py): what
the rows carry reaches every rendering, the assistant-only masks train the calls and replies (never the tool
results), and a template that cannot render them is named before anything trains."""

from __future__ import annotations

import json
import re

import pytest
from families import load_family_tokenizer, trained_runs

from posttrain.data import DataError, DatasetSpec, load_conversations
from posttrain.data.tools import Conversation, normalize_conversation

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
RESULT = '{"temp_c": 21}'
ANSWER = "It is 21 °C in Paris."
MESSAGES = [
    {"role": "system", "content": "You answer weather questions."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
    },
    {"role": "tool", "content": RESULT},
    {"role": "assistant", "content": ANSWER},
]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def conversation(messages=MESSAGES, tools=(WEATHER,), kwargs=None) -> Conversation:
    return normalize_conversation(messages, list(tools) or None, kwargs, source="tools.jsonl", row=1, line=1)


def tokenize(tokenizer, conv: Conversation):
    from posttrain.chat_templates import tokenize_conversations

    return tokenize_conversations(tokenizer, conv.messages, tools=conv.tools, template_kwargs=conv.chat_template_kwargs)


@pytest.fixture(scope="module", params=["qwen2_5", "qwen3"])
def family(request):
    return request.param


@pytest.fixture(scope="module")
def tokenizer(family):
    return load_family_tokenizer(family)


def test_tool_conversation_trains_the_call_and_the_answer_not_the_result(family, tokenizer):
    from posttrain.chat_templates import render

    conv = conversation()
    text = render(tokenizer, conv.messages, tools=conv.tools)
    assert '"name": "get_weather"' in text and '"parameters"' in text  # the schema, in the system turn
    assert CALL in text and f"<tool_response>\n{RESULT}\n</tool_response>" in text

    rows = tokenize(tokenizer, conv)
    think = "<think>\n\n</think>\n\n" if family == "qwen3" else ""  # Qwen3's replies open with their think block
    expected = [f"{think}{CALL}<|im_end|>\n", f"{think}{ANSWER}<|im_end|>\n"]
    if family == "qwen3":  # not prefix-preserving: one sequence per reply, the history as inference renders it
        assert [trained_runs(tokenizer, row) for row in rows] == [[e] for e in expected]
        assert CALL in tokenizer.decode(rows[1]["input_ids"])
    else:
        assert len(rows) == 1 and trained_runs(tokenizer, rows[0]) == expected
    trained = "".join(run for row in rows for run in trained_runs(tokenizer, row))
    assert RESULT not in trained and "Weather in Paris?" not in trained and 'get_weather", "description' not in trained
    tool_call = tokenizer.convert_tokens_to_ids("<tool_call>")
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    masked = [(t, m) for row in rows for t, m in zip(row["input_ids"], row["assistant_masks"])]
    assert sum(m for t, m in masked if t == tool_call) == 1  # the call's own token (the system turn's are not)
    assert sum(m for t, m in masked if t == eot) == 2  # both replies' end-of-turn, nothing else

    # every reply follows exactly the prompt the template renders at inference (tools included)
    starts = [
        (row, k)
        for row in rows
        for k, flag in enumerate(row["assistant_masks"])
        if flag and (k == 0 or not row["assistant_masks"][k - 1])
    ]
    for (row, k), i in zip(starts, (2, 4), strict=True):
        prompt = render(tokenizer, conv.messages[:i], add_generation_prompt=True, tools=conv.tools)
        assert row["input_ids"][:k] == tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_qwen3_reasoning_content_is_trained_in_the_last_turn():
    tokenizer = load_family_tokenizer("qwen3")
    messages = [*MESSAGES[:4], {**MESSAGES[4], "reasoning_content": "The tool says 21 degrees."}]
    rows = tokenize(tokenizer, conversation(messages))
    assert trained_runs(tokenizer, rows[-1]) == [
        f"<think>\nThe tool says 21 degrees.\n</think>\n\n{ANSWER}<|im_end|>\n"
    ]


def test_qwen3_enable_thinking_false_changes_the_render():
    """``enable_thinking: false`` puts Qwen3's empty think block into the generation prompt: it is context, and
    only the reply is trained."""
    from posttrain.chat_templates import render

    tokenizer = load_family_tokenizer("qwen3")
    plain = conversation(MESSAGES[1:2] + [{"role": "assistant", "content": ANSWER}], tools=())
    off = conversation(plain.messages, tools=(), kwargs={"enable_thinking": False})
    prompt = render(tokenizer, plain.messages[:1], add_generation_prompt=True)
    prompt_off = render(
        tokenizer, off.messages[:1], add_generation_prompt=True, template_kwargs={"enable_thinking": False}
    )
    assert prompt_off == prompt + "<think>\n\n</think>\n\n"
    [row] = tokenize(tokenizer, plain)
    [row_off] = tokenize(tokenizer, off)
    assert trained_runs(tokenizer, row) == [f"<think>\n\n</think>\n\n{ANSWER}<|im_end|>\n"]
    assert trained_runs(tokenizer, row_off) == [f"{ANSWER}<|im_end|>\n"]
    assert row["input_ids"] == row_off["input_ids"]  # the same text, trained differently


def test_mistral_nemo_renders_calls_with_its_ids():
    tokenizer = load_family_tokenizer("mistral_nemo")
    messages = [
        MESSAGES[1],
        {**MESSAGES[2], "tool_calls": [{**MESSAGES[2]["tool_calls"][0], "id": "abc123XYZ"}]},
        {"role": "tool", "tool_call_id": "abc123XYZ", "content": RESULT},
        MESSAGES[4],
    ]
    rows = tokenize(tokenizer, conversation(messages))
    runs = [run for row in rows for run in trained_runs(tokenizer, row)]
    assert runs[0].startswith("[TOOL_CALLS]") and '"get_weather"' in runs[0] and runs[-1] == f"{ANSWER}</s>"
    assert all(RESULT not in run for run in runs)


# ----------------------------------------------------------------------------------------- template support


def load_rows(write, rows):
    path = write(rows)
    return path, load_conversations([DatasetSpec(path=str(path))])


@pytest.fixture
def tool_data(tmp_path):
    def write(rows):
        path = tmp_path / "tools.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        return path

    return write


def plain_row(i):
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


def tool_row(**extra):
    return {"messages": MESSAGES, "tools": [WEATHER], **extra}


@pytest.mark.parametrize("family", ["llama3_1", "smollm2"])
def test_template_without_tool_support_is_refused_naming_template_and_row(tool_data, family):
    """The llama3_1 test tokenizer carries the short Llama 3 template (no tools), SmolLM2 plain ChatML: the tool
    call would train as an empty reply."""
    from posttrain.training.sft_templates import check_template_support

    path, data = load_rows(tool_data, [plain_row(1), tool_row()])
    tokenizer = load_family_tokenizer(family)
    with pytest.raises(DataError) as info:
        check_template_support(data, tokenizer, template=f"the chat template of {family}")
    message = str(info.value)
    assert message.startswith(f"{path} line 2: message 3 calls tool 'get_weather', but the chat template of {family}")
    assert "does not render tool calls" in message and "`chat_template:`" in message


def test_template_that_raises_on_tool_rows_is_refused_naming_the_row(tool_data):
    """Mistral NeMo's template needs 9-character call ids: its own error, located."""
    from posttrain.training.sft_templates import check_template_support

    path, data = load_rows(tool_data, [tool_row()])
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))} line 1: the chat template of mistral_nemo cannot render .*length 9"
    ):
        check_template_support(
            data, load_family_tokenizer("mistral_nemo"), template="the chat template of mistral_nemo"
        )


def test_reasoning_a_template_drops_warns_once_with_a_count(tool_data):
    from posttrain.training.sft_templates import check_template_support

    reasoning = {**MESSAGES[4], "reasoning_content": "The tool says 21."}
    rows = [tool_row(messages=[*MESSAGES[:4], reasoning]) for _ in range(3)]
    path, data = load_rows(tool_data, [plain_row(0), *rows])
    warnings = []
    check_template_support(data, load_family_tokenizer("qwen2_5"), template="qwen2.5's template", warn=warnings.append)
    assert warnings == [
        f"3 of 3 conversations with 'reasoning_content' (first: {path} line 2, message 5) lose it: qwen2.5's template "
        "does not render it, so the reasoning is not trained, only the replies are"
    ]
    warnings.clear()
    check_template_support(data, load_family_tokenizer("qwen3"), warn=warnings.append)
    assert warnings == []  # Qwen3 renders (and trains) it


def test_enable_thinking_on_a_template_without_it_warns_naming_the_key(tool_data):
    from posttrain.training.sft_templates import check_template_support

    rows = [{**plain_row(i), "chat_template_kwargs": {"enable_thinking": False}} for i in range(2)]
    path, data = load_rows(tool_data, rows)
    warnings = []
    check_template_support(data, load_family_tokenizer("qwen2_5"), template="qwen2.5's template", warn=warnings.append)
    assert warnings == [
        f"chat_template_kwargs key 'enable_thinking' (2 rows, first: {path} line 1) is never referenced by "
        "qwen2.5's template: it changes nothing"
    ]
    warnings.clear()
    check_template_support(data, load_family_tokenizer("qwen3"), warn=warnings.append)
    assert warnings == []


def test_loaded_tool_data_tokenizes_through_the_sft_path(tool_data):
    from posttrain.training.sft import tokenize_dataset
    from posttrain.training.sft_templates import check_template_support

    tokenizer = load_family_tokenizer("qwen2_5")
    _, data = load_rows(tool_data, [plain_row(0), tool_row()])
    check_template_support(data, tokenizer, warn=pytest.fail)
    tokenized = tokenize_dataset(data["train"], tokenizer, system_prompt="Be brief.")
    assert len(tokenized) == 2
    assert trained_runs(tokenizer, tokenized[1]) == [f"{CALL}<|im_end|>\n", f"{ANSWER}<|im_end|>\n"]
    assert "Be brief." in tokenizer.decode(tokenized[0]["input_ids"])  # the stage's system prompt, plain rows only


def test_arguments_go_to_each_template_the_way_it_prints_them():
    """Arguments are stored as objects; TRL's DeepSeek-V3 template prints ``tool['function']['arguments']`` as text
    (an object fails there), Qwen's ``| tojson`` and Gemma 4's own syntax take the object: each gets what it needs."""
    from pathlib import Path

    import trl

    from posttrain.chat_templates import CallStyle, call_style, render

    templates = Path(trl.__file__).parent / "chat_templates"
    conv = conversation()
    qwen = load_family_tokenizer("qwen2_5")
    assert call_style(qwen) == CallStyle()
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in render(qwen, conv.messages, tools=conv.tools)

    deepseek = load_family_tokenizer("qwen2_5")
    deepseek.chat_template = (templates / "deepseekv3.jinja").read_text()
    assert call_style(deepseek) == CallStyle(text_arguments=True)
    with pytest.raises(TypeError):  # what the stored object would do
        deepseek.apply_chat_template(conv.messages, tools=conv.tools, tokenize=False)
    assert '```json\n{"city": "Paris"}\n```' in render(deepseek, conv.messages, tools=conv.tools)

    gemma4 = load_family_tokenizer("qwen2_5")
    gemma4.chat_template = (templates / "gemma4.jinja").read_text()
    assert call_style(gemma4) == CallStyle()
    assert "call:get_weather{city:" in render(gemma4, conv.messages, tools=conv.tools)
