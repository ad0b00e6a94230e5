"""Tool calls, tool results, tool schemas, reasoning and chat-template variables in SFT data: normalised, kept
through loading (Arrow), and every malformed case refused with the file, line, message and field."""

from __future__ import annotations

import json

import pytest

from posttrain.data import DataError, DatasetSpec, DataValidationError, fingerprint, load_conversations, to_messages
from posttrain.data.tools import Conversation, normalize_conversation

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOLS = [{"type": "function", "function": WEATHER}]


def call(name="get_weather", arguments='{"city": "Paris"}', **extra):
    return {"type": "function", "function": {"name": name, "arguments": arguments}, **extra}


def tool_row(**overrides):
    """An OpenAI-style tool-calling row: system, user, assistant call, tool result, assistant answer."""
    row = {
        "messages": [
            {"role": "system", "content": "You answer weather questions."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call(id="call_1")]},
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp_c": 21}'},
            {"role": "assistant", "content": "It is 21 °C in Paris.", "thinking": "The tool says 21."},
        ],
        "tools": TOOLS,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    row.update(overrides)
    return row


def normalize(row, source="tools.jsonl", line=3):
    messages = to_messages(row, "messages", source=source, row_index=line - 1, line=line)
    return normalize_conversation(
        messages, row.get("tools"), row.get("chat_template_kwargs"), source=source, row=line, line=line
    )


# --------------------------------------------------------------------------------------------- normalisation


def test_openai_row_is_normalized_to_what_templates_expect():
    conversation = normalize(tool_row())
    assert conversation.messages == [
        {"role": "system", "content": "You answer weather questions."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",  # null content of a call becomes empty text
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                    "id": "call_1",
                }
            ],
        },
        {"role": "tool", "content": '{"temp_c": 21}', "tool_call_id": "call_1", "name": "get_weather"},
        {"role": "assistant", "content": "It is 21 °C in Paris.", "reasoning_content": "The tool says 21."},
    ]
    assert conversation.tools == TOOLS
    assert conversation.chat_template_kwargs == {"enable_thinking": False}
    assert conversation.has_extras


def test_accepted_variants_normalize_to_one_form():
    row = tool_row(
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            # a bare call without "type"/"function", arguments as an object, no id
            {"role": "assistant", "content": "Let me check.", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
            {"role": "tool", "content": {"temp_c": 21}},  # an object result is stored as its JSON text
            {"role": "assistant", "content": "21 °C.", "reasoning_content": "  "},  # blank reasoning is dropped
        ],
        tools=json.dumps([WEATHER]),  # bare schema, as JSON text (LLaMA-Factory, CSV, Parquet)
        chat_template_kwargs='{"enable_thinking": true, "unset": null}',
    )  # fmt: skip
    conversation = normalize(row)
    assert conversation.messages[1]["tool_calls"] == [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert conversation.messages[2] == {"role": "tool", "content": '{"temp_c": 21}'}
    assert conversation.messages[3] == {"role": "assistant", "content": "21 °C."}
    assert conversation.tools == TOOLS  # wrapped
    assert conversation.chat_template_kwargs == {"enable_thinking": True}


def test_plain_conversation_has_no_extras():
    conversation = normalize({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    assert conversation == Conversation([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    assert not conversation.has_extras


def test_sharegpt_function_call_and_observation():
    """LLaMA-Factory's ShareGPT layout: function_call turns become assistant tool_calls, observation turns tool
    results; a tools column holding JSON text of bare schemas."""
    row = {
        "conversations": [
            {"from": "human", "value": "Weather in Paris and Rome?"},
            {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
            {"from": "observation", "value": '{"temp_c": 21}'},
            {"from": "gpt", "value": "Checking Rome too."},
            {"from": "function_call", "value": json.dumps([{"name": "get_weather", "arguments": '{"city": "Rome"}'}])},
            {"from": "observation", "value": '{"temp_c": 25}'},
            {"from": "gpt", "value": "Paris 21 °C, Rome 25 °C."},
        ],
        "tools": json.dumps([WEATHER]),
    }
    messages = to_messages(row, "sharegpt", source="glaive.json", row_index=0)
    conversation = normalize_conversation(messages, row["tools"], source="glaive.json", row=1)

    def calls(city):
        return [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}]

    assert conversation.messages == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": calls("Paris")},
        {"role": "tool", "content": '{"temp_c": 21}'},
        # a function_call right after the assistant's text joins that message
        {"role": "assistant", "content": "Checking Rome too.", "tool_calls": calls("Rome")},
        {"role": "tool", "content": '{"temp_c": 25}'},
        {"role": "assistant", "content": "Paris 21 °C, Rome 25 °C."},
    ]
    assert conversation.tools == TOOLS


def test_sharegpt_function_call_that_is_not_json_names_row_and_message():
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "get_weather(Paris)"}]}
    with pytest.raises(
        DataError, match=r"^glaive\.jsonl line 4: message 2 \('function_call'\) value is not valid JSON"
    ):
        to_messages(row, "sharegpt", source="glaive.jsonl", row_index=3, line=4)


def test_row_round_trips_through_its_stored_form():
    conversation = normalize(tool_row())
    row = conversation.to_row("tools.jsonl line 3")
    assert isinstance(row["tools"], str) and isinstance(row["chat_template_kwargs"], str)
    assert isinstance(row["messages"][2]["tool_calls"][0]["function"]["arguments"], str)
    assert Conversation.from_row(row) == conversation


# -------------------------------------------------------------------------------------------------- errors

ERRORS = [
    # (id, row overrides, the problem after "tools.jsonl line 3: ")
    (
        "arguments-not-json",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [call(arguments="{city: Paris}")]}]},
        "message 2 tool call 1 ('get_weather'): 'arguments' is not valid JSON (Expecting property name enclosed in "
        "double quotes at character 2)",
    ),
    (
        "arguments-not-an-object",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [call(arguments="[1]")]}]},
        "message 2 tool call 1 ('get_weather'): 'arguments' must be a JSON object, got list",
    ),
    (
        "call-to-unlisted-tool",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [call(name="get_wether")]}]},
        "message 2 tool call 1 calls 'get_wether', which is not in the row's 'tools' (get_weather)",
    ),
    (
        "tool-result-without-call",
        {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "21"}, {"role": "assistant", "content": "a"}]},
        "message 2 is a tool result with no preceding tool call",
    ),
    (
        "tool-result-after-a-plain-reply",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "tool", "content": "21"}]},
        "message 3 is a tool result with no preceding tool call",
    ),
    (
        "tool-call-id-matches-no-call",
        {"messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [call(id="call_1")]},
            {"role": "tool", "tool_call_id": "call_2", "content": "21"},
            {"role": "assistant", "content": "a"},
        ]},
        "message 3 'tool_call_id' 'call_2' matches no call of message 2 (its ids: 'call_1')",
    ),
    (
        "tool-name-matches-no-call",
        {"messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [call()]},
            {"role": "tool", "name": "get_time", "content": "21"},
            {"role": "assistant", "content": "a"},
        ]},
        "message 3 'name' 'get_time' matches no call of message 2 (it calls get_weather)",
    ),
    (
        "call-without-results",
        {"messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [call()]},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a"},
        ]},
        "message 3 has role 'user' but 'tool' was expected (message 2 calls tools: its results come next)",
    ),
    (
        "ends-on-tool-result",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [call()]}, {"role": "tool", "content": "21"}]},
        "conversation ends with a tool result (no assistant reply to learn from)",
    ),
    (
        "tool-calls-not-a-list",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": call()}]},
        "message 2 'tool_calls' must be a list of calls (got dict)",
    ),
    (
        "call-without-function-name",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": "{}"}}]}]},
        "message 2 tool call 1 has no function name ('name' is null)",
    ),
    (
        "tool-calls-on-a-user-message",
        {"messages": [{"role": "user", "content": "q", "tool_calls": [call()]}, {"role": "assistant", "content": "a"}]},
        "message 1 ('user') has 'tool_calls'; only assistant messages call tools",
    ),
    (
        "reasoning-on-a-user-message",
        {"messages": [{"role": "user", "content": "q", "reasoning_content": "hm"}, {"role": "assistant", "content": "a"}]},
        "message 1 ('user') has 'reasoning_content'; only assistant messages carry it",
    ),
    (
        "schema-without-function-name",
        {"tools": [{"type": "function", "function": {"description": "no name"}}]},
        "'tools' item 1 has no function name ('name' is null)",
    ),
    (
        "schema-parameters-not-an-object",
        {"tools": [{**WEATHER, "parameters": ["city"]}]},
        "'tools' item 1 ('get_weather'): 'parameters' must be an object (a JSON schema), got list",
    ),
    ("tools-not-a-list", {"tools": WEATHER}, "'tools' must be a list of tool schemas (got dict)"),
    ("tools-not-json", {"tools": "[{name: get_weather}]"}, "'tools' is not valid JSON"),
    (
        "template-kwargs-not-a-mapping",
        {"chat_template_kwargs": ["enable_thinking"]},
        "'chat_template_kwargs' must be a mapping of template variables, like {\"enable_thinking\": false} (got list)",
    ),
    (
        "template-kwargs-reserved-name",
        {"chat_template_kwargs": {"add_generation_prompt": True}},
        "'chat_template_kwargs' sets 'add_generation_prompt', which posttrain passes to the chat template itself",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "problem"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_each_problem_names_file_line_message_and_field(write_jsonl, overrides, problem):
    path = write_jsonl("tools.jsonl", [tool_row(), "", tool_row(**overrides)])
    with pytest.raises(DataValidationError) as info:
        load_conversations([DatasetSpec(path=str(path))])
    [error] = info.value.errors
    assert str(error).startswith(f"{path} line 3: {problem}")
    assert (error.source, error.line) == (str(path), 3)


def test_plain_validation_still_refuses_tool_messages():
    """Preference data (validate_messages without tool_use) keeps refusing the tool role."""
    from posttrain.data import validate_messages

    messages = [
        {"role": "user", "content": "q"},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "a"},
    ]
    with pytest.raises(DataError, match="message 2 has unknown role 'tool'"):
        validate_messages(messages, source="x", row=1)


# ------------------------------------------------------------------------------------------------- loading


def test_plain_data_keeps_its_one_column_schema(write_jsonl, chat):
    path = write_jsonl("plain.jsonl", [chat(i) for i in range(3)])
    ds = load_conversations([DatasetSpec(path=str(path))])
    assert ds["train"].column_names == ["messages"]
    assert ds["train"][0]["messages"] == chat(0)["messages"]


def test_tool_rows_load_with_everything_the_template_needs(write_jsonl, chat):
    tools = write_jsonl("tools.jsonl", [tool_row(), tool_row(chat_template_kwargs=None)])
    plain = write_jsonl("plain.jsonl", [chat(1)])
    ds = load_conversations([DatasetSpec(path=str(tools)), DatasetSpec(path=str(plain))])["train"]
    assert ds.column_names == ["messages", "tools", "chat_template_kwargs", "origin"]
    assert ds["origin"] == [f"{tools} line 1", f"{tools} line 2", f"{plain} line 1"]
    assert Conversation.from_row(ds[0]) == normalize(tool_row())
    assert Conversation.from_row(ds[1]).chat_template_kwargs is None
    assert Conversation.from_row(ds[2]) == Conversation(chat(1)["messages"])  # null fields left out


def test_fingerprint_covers_tool_fields_not_origins(tmp_path, write_jsonl):
    def digest(name, rows):
        path = write_jsonl(name, rows)
        spec = DatasetSpec(path=str(path))
        return fingerprint(load_conversations([spec]), [spec])["splits"]["train"]["sha256"]

    base = digest("a.jsonl", [tool_row()])
    assert digest("elsewhere/b.jsonl", [tool_row()]) == base  # where a row comes from is not what it is
    assert digest("c.jsonl", [tool_row(chat_template_kwargs={"enable_thinking": True})]) != base
    assert digest("d.jsonl", [tool_row(tools=[*TOOLS, {"name": "get_time"}])]) != base
