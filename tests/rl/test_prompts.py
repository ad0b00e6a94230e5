"""RL prompts from conversation sources (hub datasets, chitchat): plain role/content turns; tool and reasoning
fields, which an RL prompt cannot carry, are refused by name instead of dropped."""

from __future__ import annotations

import pytest

import posttrain.rl.prompts as prompts
from posttrain.data.spec import DatasetSpec
from posttrain.data.validation import DataError

TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}]
PLAIN = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
TOOL_ROW = {
    "tools": TOOLS,
    "messages": [
        {"role": "user", "content": "2+3?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "add", "arguments": {}}}]},
        {"role": "tool", "content": "5"},
        {"role": "assistant", "content": "5"},
    ],
}


def items(monkeypatch, rows):
    monkeypatch.setattr(prompts, "load_conversations", lambda specs, **kwargs: {"train": rows})
    return prompts._items(DatasetSpec(path="org/chats"), seed=0, identity=None, system_prompt=None)


def test_conversation_prompts_end_on_the_user_turn(monkeypatch):
    [item] = items(monkeypatch, [PLAIN])
    assert item.messages == [{"role": "user", "content": "Hi"}]


def test_tool_fields_in_a_prompt_are_refused_by_name(monkeypatch):
    with pytest.raises(DataError, match=r"org/chats row 2: tools, tool_calls in an RL prompt"):
        items(monkeypatch, [PLAIN, TOOL_ROW])
