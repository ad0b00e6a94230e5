"""Tool calling, reasoning and chat-template variables in SFT data: normalised, validated, stored and passed on.

What a conversation may carry besides ``role``/``content`` (the layouts that hold it are in
:mod:`posttrain.data.formats`; ``docs/data-formats.md`` shows examples):

* an assistant message's ``tool_calls``: a list of ``{"type": "function", "function": {"name", "arguments"}}``
  (``id`` optional; a bare ``{"name", "arguments"}`` is wrapped). ``arguments`` may be an object or its JSON text; it
  becomes an object (a dict), what Hugging Face chat templates expect (Qwen2.5's ``arguments | tojson``). Such a
  message's ``content`` may be empty;
* ``tool`` messages, the results, after the assistant message that calls: ``content`` (an object or list is stored
  as its JSON text), optional ``tool_call_id`` (must be an ``id`` of that message's calls) and ``name`` (must be the
  name of one of its calls);
* an assistant message's ``reasoning_content`` (given as ``reasoning_content``, ``thinking`` or ``reasoning``);
* per row, ``tools``: the tool schemas offered to the model, a list of ``{"type": "function", "function": {"name",
  "description", "parameters"}}`` (a bare ``{"name", "description", "parameters"}`` is wrapped), or its JSON text.
  When a row lists tools, every call must name one of them;
* per row, ``chat_template_kwargs``: extra template variables (a mapping, or its JSON text), e.g.
  ``{"enable_thinking": false}``.

:func:`normalize_conversation` turns a row into a :class:`Conversation` or raises :class:`DataError` naming the file,
row/line, message and field. A conversation is stored in a ``datasets`` table by :meth:`Conversation.to_row` (call
arguments, tools and template variables as JSON text, so that rows of any shape share one Arrow schema) and read
back by :meth:`Conversation.from_row`, whose ``messages``, ``tools`` and ``chat_template_kwargs`` go to the chat
template as ``apply_chat_template(messages, tools=tools, **chat_template_kwargs)``
(:func:`posttrain.chat_templates.training_segments`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .validation import TOOL_ROLE, DataError, _type_name, validate_messages

__all__ = [
    "EXTRA_MESSAGE_KEYS",
    "RESERVED_TEMPLATE_VARIABLES",
    "Conversation",
    "normalize_conversation",
]

EXTRA_MESSAGE_KEYS: tuple[str, ...] = ("tool_calls", "tool_call_id", "name", "reasoning_content")
"""Message fields kept besides ``role`` and ``content``."""

RESERVED_TEMPLATE_VARIABLES: tuple[str, ...] = (
    "messages",
    "tools",
    "documents",
    "add_generation_prompt",
    "continue_final_message",
    "chat_template",
    "conversation",
    "tokenize",
    "padding",
    "truncation",
    "max_length",
    "return_tensors",
    "return_dict",
    "return_assistant_tokens_mask",
    "tokenizer_kwargs",
    "sanitize_control_tokens",
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
    "additional_special_tokens",
)
"""Names ``chat_template_kwargs`` may not set: posttrain or ``apply_chat_template`` pass them to the template."""


class _Problem(Exception):
    """A problem with one row, located by :func:`normalize_conversation`."""


def _json(value: str, what: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise _Problem(f"{what} is not valid JSON ({error.msg} at character {error.pos + 1})") from None


# ------------------------------------------------------------------------------------------- normalisation


def _normalize_tools(value: Any) -> list[dict[str, Any]] | None:
    """The row's tool schemas, each ``{"type": "function", "function": {...}}``, or None when it has none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        value = _json(value, "'tools'")
    if not isinstance(value, list):
        raise _Problem(f"'tools' must be a list of tool schemas (got {_type_name(value)})")
    tools, names = [], set()
    for k, tool in enumerate(value, start=1):
        where = f"'tools' item {k}"
        if not isinstance(tool, dict):
            raise _Problem(f"{where} is not a tool schema object (got {_type_name(tool)})")
        kind = tool.get("type", "function")
        if kind != "function":
            raise _Problem(f"{where} has type {kind!r}; only 'function' tools are supported")
        if "function" in tool:
            function, schema = tool["function"], {**tool, "type": "function"}
            if not isinstance(function, dict):
                raise _Problem(f"{where}: 'function' must be an object (got {_type_name(function)})")
        else:  # the bare form {"name", "description", "parameters"} (or the flat {"type": "function", "name", ...})
            function = {key: v for key, v in tool.items() if key != "type"}
            schema = {"type": "function", "function": function}
        name = function.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _Problem(f"{where} has no function name ('name' is {_type_name(name)})")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _Problem(
                f"{where} ({name!r}): 'parameters' must be an object (a JSON schema), got {_type_name(parameters)}"
            )
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise _Problem(f"{where} ({name!r}): 'description' must be a string, got {_type_name(description)}")
        if name in names:
            raise _Problem(f"{where}: tool {name!r} is listed twice")
        names.add(name)
        tools.append(schema)
    return tools or None


def _normalize_template_kwargs(value: Any) -> dict[str, Any] | None:
    """The row's extra template variables (null values left out), or None when it has none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        value = _json(value, "'chat_template_kwargs'")
    if not isinstance(value, Mapping):
        raise _Problem(
            "'chat_template_kwargs' must be a mapping of template variables, like {\"enable_thinking\": false} "
            f"(got {_type_name(value)})"
        )
    kwargs = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise _Problem(f"'chat_template_kwargs' key {key!r} is not a string")
        if key in RESERVED_TEMPLATE_VARIABLES:
            raise _Problem(f"'chat_template_kwargs' sets {key!r}, which posttrain passes to the chat template itself")
        if item is not None:
            kwargs[key] = item
    return kwargs or None


def _normalize_calls(index: int, value: Any) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls`` as ``[{"type": "function", "function": {"name", "arguments": {...}},
    ("id")}]``."""
    if not isinstance(value, list):
        raise _Problem(f"message {index} 'tool_calls' must be a list of calls (got {_type_name(value)})")
    calls = []
    for k, call in enumerate(value, start=1):
        where = f"message {index} tool call {k}"
        if not isinstance(call, dict):
            raise _Problem(f"{where} is not an object (got {_type_name(call)})")
        kind = call.get("type", "function")
        if kind != "function":
            raise _Problem(f"{where} has type {kind!r}; only 'function' calls are supported")
        function = call["function"] if "function" in call else {k: call[k] for k in ("name", "arguments") if k in call}
        if not isinstance(function, dict):
            raise _Problem(f"{where}: 'function' must be an object (got {_type_name(function)})")
        name = function.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _Problem(f"{where} has no function name ('name' is {_type_name(name)})")
        arguments = function.get("arguments")
        if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
            arguments = {}
        elif isinstance(arguments, str):
            arguments = _json(arguments, f"{where} ({name!r}): 'arguments'")
        if not isinstance(arguments, dict):
            raise _Problem(f"{where} ({name!r}): 'arguments' must be a JSON object, got {_type_name(arguments)}")
        normalized: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
        call_id = call.get("id")
        if call_id is not None:
            if not isinstance(call_id, str):
                raise _Problem(f"{where} ({name!r}): 'id' must be a string, got {_type_name(call_id)}")
            normalized["id"] = call_id
        calls.append(normalized)
    return calls


def _normalize_message(index: int, message: dict[str, Any]) -> dict[str, Any]:
    """One message with its tool calls normalised, empty reasoning dropped and a tool result's JSON content as text
    (the rest is left for :func:`~posttrain.data.validation.validate_messages`)."""
    message = dict(message)
    role = message.get("role")
    if message.get("tool_calls") is None:
        message.pop("tool_calls", None)
    else:
        if role != "assistant":
            raise _Problem(f"message {index} ({role!r}) has 'tool_calls'; only assistant messages call tools")
        message["tool_calls"] = _normalize_calls(index, message["tool_calls"])
        if not message["tool_calls"]:
            del message["tool_calls"]
        elif message.get("content") is None:
            message["content"] = ""
    reasoning = message.pop("reasoning_content", None)
    if reasoning is not None:
        if role != "assistant":
            raise _Problem(f"message {index} ({role!r}) has 'reasoning_content'; only assistant messages carry it")
        if not isinstance(reasoning, str):
            raise _Problem(f"message {index} has the wrong type: reasoning_content is {_type_name(reasoning)}")
        if reasoning.strip():
            message["reasoning_content"] = reasoning
    if role == TOOL_ROLE:
        if isinstance(message.get("content"), (dict, list)):
            message["content"] = json.dumps(message["content"], ensure_ascii=False)
        for key in ("tool_call_id", "name"):
            if message.get(key) is None:
                message.pop(key, None)
            elif not isinstance(message[key], str):
                raise _Problem(f"message {index} has the wrong type: {key} is {_type_name(message[key])}")
    else:
        message.pop("tool_call_id", None)
        message.pop("name", None)
    return message


def _call_problem(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str | None:
    """A call to a tool the row does not list, or a tool result that answers no call of the message before it."""
    available = [tool["function"]["name"] for tool in tools] if tools else None
    caller: tuple[int, list[dict[str, Any]]] | None = None
    for index, message in enumerate(messages, start=1):
        if message["role"] == "assistant" and message.get("tool_calls"):
            caller = (index, message["tool_calls"])
            for k, call in enumerate(message["tool_calls"], start=1):
                name = call["function"]["name"]
                if available is not None and name not in available:
                    return (
                        f"message {index} tool call {k} calls {name!r}, which is not in the row's 'tools' "
                        f"({', '.join(available)})"
                    )
        elif message["role"] == TOOL_ROLE and caller is not None:  # validation put a call before every result
            at, calls = caller
            call_id = message.get("tool_call_id")
            ids = [call["id"] for call in calls if "id" in call]
            if call_id is not None and call_id not in ids:
                known = f"its ids: {', '.join(map(repr, ids))}" if ids else "its calls have no 'id'"
                return f"message {index} 'tool_call_id' {call_id!r} matches no call of message {at} ({known})"
            name = message.get("name")
            names = [call["function"]["name"] for call in calls]
            if name is not None and name not in names:
                return f"message {index} 'name' {name!r} matches no call of message {at} (it calls {', '.join(names)})"
    return None


# ------------------------------------------------------------------------------------------- conversations


@dataclass
class Conversation:
    """A validated conversation and what its chat template receives besides the messages.

    Attributes:
        messages: ``{"role", "content"}`` dicts, with ``tool_calls`` (arguments as dicts), ``reasoning_content``,
            ``tool_call_id`` and ``name`` only where set.
        tools: The tool schemas (``apply_chat_template(tools=...)``), or None.
        chat_template_kwargs: Extra template variables, or None.
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    @property
    def has_extras(self) -> bool:
        """Whether anything besides plain ``role``/``content`` messages reaches the template."""
        return bool(self.tools or self.chat_template_kwargs) or any(
            m["role"] == TOOL_ROLE or len(m) > 2 for m in self.messages
        )

    def to_row(self, origin: str | None = None) -> dict[str, Any]:
        """The conversation as a ``datasets`` row: ``messages`` (call arguments as JSON text), ``tools`` and
        ``chat_template_kwargs`` as JSON text (or None), and ``origin`` (where the row comes from, for messages)."""

        def encode(message: dict[str, Any]) -> dict[str, Any]:
            if "tool_calls" not in message:
                return dict(message)
            calls = [
                {
                    **call,
                    "function": {
                        **call["function"],
                        "arguments": json.dumps(call["function"]["arguments"], ensure_ascii=False),
                    },
                }
                for call in message["tool_calls"]
            ]
            return {**message, "tool_calls": calls}

        return {
            "messages": [encode(m) for m in self.messages],
            "tools": json.dumps(self.tools, ensure_ascii=False) if self.tools else None,
            "chat_template_kwargs": (
                json.dumps(self.chat_template_kwargs, ensure_ascii=False) if self.chat_template_kwargs else None
            ),
            "origin": origin,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Conversation:
        """The conversation of a ``datasets`` row (:meth:`to_row`'s, or a plain ``{"messages": [...]}``): null
        fields left out, call arguments, ``tools`` and ``chat_template_kwargs`` decoded from JSON text."""

        def decode(message: Mapping[str, Any]) -> dict[str, Any]:
            decoded = {k: v for k, v in message.items() if v is not None}
            if "tool_calls" in decoded:
                calls = []
                for call in decoded["tool_calls"]:
                    call = {k: v for k, v in call.items() if v is not None}
                    arguments = call["function"]["arguments"]
                    if isinstance(arguments, str):
                        arguments = json.loads(arguments) if arguments.strip() else {}
                    calls.append({**call, "function": {**call["function"], "arguments": arguments}})
                decoded["tool_calls"] = calls
            return decoded

        def load(value: Any) -> Any:
            return json.loads(value) if isinstance(value, str) else value

        return cls(
            [decode(m) for m in row["messages"]],
            load(row.get("tools")) or None,
            load(row.get("chat_template_kwargs")) or None,
        )


def normalize_conversation(
    messages: Any,
    tools: Any = None,
    chat_template_kwargs: Any = None,
    *,
    source: str,
    row: int | None,
    line: int | None = None,
) -> Conversation:
    """Normalise and validate one conversation with its tool calls, tool results, reasoning, tool schemas and
    template variables (see the module docstring for what each may be).

    Args:
        messages: The messages as :func:`~posttrain.data.formats.to_messages` gives them.
        tools: The row's ``tools`` (a list, its JSON text or None).
        chat_template_kwargs: The row's ``chat_template_kwargs`` (a mapping, its JSON text or None).
        source, row, line: Where the row comes from, for error messages (see :mod:`posttrain.data.validation`).

    Raises:
        DataError: On the first problem: everything :func:`~posttrain.data.validation.validate_messages` refuses,
            ``tool_calls`` that are not a list, a call without a function name, arguments that are not valid JSON
            or not an object, a call to a tool the row's ``tools`` does not list, a tool result with no preceding
            call or whose ``tool_call_id``/``name`` matches none of the calls before it, a malformed tool schema
            (no function name, ``parameters`` not an object), reasoning on a non-assistant message, or
            ``chat_template_kwargs`` that is not a mapping or sets a name posttrain passes itself.
    """

    def fail(problem: str) -> DataError:
        return DataError(source, problem, row=row, line=line)

    try:
        tool_schemas = _normalize_tools(tools)
        kwargs = _normalize_template_kwargs(chat_template_kwargs)
        if isinstance(messages, list):
            messages = [_normalize_message(i, m) if isinstance(m, dict) else m for i, m in enumerate(messages, 1)]
    except _Problem as problem:
        raise fail(str(problem)) from None
    validate_messages(messages, source=source, row=row, line=line, tool_use=True)
    problem = _call_problem(messages, tool_schemas)
    if problem is not None:
        raise fail(problem)
    return Conversation(messages, tool_schemas, kwargs)
