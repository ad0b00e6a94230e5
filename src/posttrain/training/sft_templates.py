"""The chat template SFT trains with and whether it renders the data: tool calls, tool results, reasoning, ``tools``
and ``chat_template_kwargs`` (:mod:`posttrain.data.tools`) are checked before anything trains, and ``chat_template:
auto`` swaps in posttrain's tool-capable ChatML when the model's own template cannot render the data's tool calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from posttrain import chat_templates
from posttrain.chat_templates import ChatTemplateError, training_segments
from posttrain.data.formats import with_system_prompt
from posttrain.data.loading import ORIGIN_COLUMN
from posttrain.data.tools import Conversation
from posttrain.data.validation import TOOL_ROLE, DataError
from posttrain.log import get_logger

logger = get_logger(__name__)

_TOOL_CAPABLE = "tool-capable template"
"""In every problem message about a tool-using row (what :func:`add_tool_template` looks for)."""


def _unrendered(tokenizer, conversation: Conversation, system_prompt: str | None, template: str):
    """``(problem, reasoning)`` for one conversation: the first tool call, tool schema or tool result the template
    does not render (a sentence, or None), and the 1-based index of the first assistant message whose
    ``reasoning_content`` is not in its trained reply (or None)."""
    messages = with_system_prompt(conversation.messages, system_prompt)
    offset = len(messages) - len(conversation.messages)  # a system prompt the stage adds
    tool_use = bool(conversation.tools) or any(m["role"] == TOOL_ROLE for m in conversation.messages)
    advice = (
        f"set `chat_template:` to a {_TOOL_CAPABLE} (`chatml`, or a .jinja file such as the model family's template "
        "with tool support), or leave the tool calls out of the data"
        if tool_use
        else "set `chat_template:` to a template that renders it (a .jinja file)"
    )
    try:
        segments = training_segments(
            tokenizer, messages, tools=conversation.tools, template_kwargs=conversation.chat_template_kwargs
        )
    except ChatTemplateError as error:
        kwargs = conversation.chat_template_kwargs
        if not kwargs:
            return str(error), None
        return (
            f"{error} (rendered with the row's chat_template_kwargs {json.dumps(kwargs)}: do they contradict the "
            "row, such as reasoning_content with enable_thinking false?)"
        ), None
    except Exception as error:  # the template's own raise_exception, or what it cannot handle
        return f"{template} cannot render this conversation ({type(error).__name__}: {error}); {advice}", None
    replies = [segment.text[a:b] for segment in segments for a, b in segment.spans]
    texts = [segment.text for segment in segments]
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    reasoning_missing = None
    for i, reply in zip(assistants, replies):
        message = messages[i]
        for call in message.get("tool_calls", ()):
            name = call["function"]["name"]
            if name not in reply:
                return (
                    f"message {i + 1 - offset} calls tool {name!r}, but {template} does not render tool calls (the "
                    f"trained reply lacks {name!r}); {advice}"
                ), None
        reasoning = (message.get("reasoning_content") or "").strip()
        if reasoning and reasoning not in reply and reasoning_missing is None:
            reasoning_missing = i + 1 - offset
    for tool in conversation.tools or ():
        name = tool["function"]["name"]
        if not any(name in text for text in texts):
            return (
                f"the row lists tools, but {template} does not render them (the rendered conversation lacks "
                f"{name!r}); {advice}"
            ), None
    for i, message in enumerate(messages):
        content = message["content"].strip() if message["role"] == TOOL_ROLE else ""
        escaped = json.dumps(content, ensure_ascii=False)[1:-1]
        if content and not any(content in text or escaped in text for text in texts):
            return (
                f"message {i + 1 - offset} is a tool result, but {template} does not render tool results (the "
                f"rendered conversation lacks its content); {advice}"
            ), None
    return None, reasoning_missing


def check_template_support(
    data,
    tokenizer,
    *,
    system_prompt: str | None = None,
    template: str | None = None,
    warn: Callable[[str], None] = logger.warning,
) -> None:
    """Make sure the chat template renders what the rows give it besides plain messages, before anything trains.

    ``data`` is a dataset or a ``DatasetDict`` from :func:`~posttrain.data.load_conversations`; only rows with tool
    calls, tool results, reasoning, ``tools`` or ``chat_template_kwargs`` are rendered (as training renders them).
    ``template`` names the template in messages (default: ``the chat template of <tokenizer path>``).

    Raises:
        DataError: Naming the row (file and line/row) and the template, when a tool call is missing from its trained
            reply, a listed tool or a tool result from the rendered conversation, or the template fails on the row.

    Warns (``warn``, one line each, once per call with a count): when the template leaves an assistant message's
    ``reasoning_content`` out of the trained reply (only the replies are trained), and for each
    ``chat_template_kwargs`` key the template's source never mentions (e.g. ``enable_thinking`` for a template
    without a thinking switch: it changes nothing).
    """
    splits = list(data.values()) if isinstance(data, Mapping) else [data]
    template = template or f"the chat template of {getattr(tokenizer, 'name_or_path', '') or 'the tokenizer'}"
    source = chat_templates.template_source(tokenizer)
    reasoning_rows, reasoning_missing, first_missing = 0, 0, ""
    unused: dict[str, list[str]] = {}
    for split in splits:
        if ORIGIN_COLUMN not in split.column_names:  # plain messages only
            continue
        for row in split:
            conversation = Conversation.from_row(row)
            if not conversation.has_extras:
                continue
            origin = row.get(ORIGIN_COLUMN) or "a training row"
            for key in chat_templates.unreferenced_template_kwargs(source, conversation.chat_template_kwargs or {}):
                unused.setdefault(key, []).append(origin)
            problem, missing = _unrendered(tokenizer, conversation, system_prompt, template)
            if problem is not None:
                raise DataError(origin, problem)
            if any(m.get("reasoning_content") for m in conversation.messages):
                reasoning_rows += 1
            if missing is not None:
                reasoning_missing += 1
                first_missing = first_missing or f"{origin}, message {missing}"
    if reasoning_missing:
        warn(
            f"{reasoning_missing} of {reasoning_rows} conversations with 'reasoning_content' (first: {first_missing}) "
            f"lose it: {template} does not render it, so the reasoning is not trained, only the replies are"
        )
    for key, origins in unused.items():
        rows = "1 row" if len(origins) == 1 else f"{len(origins)} rows"
        warn(
            f"chat_template_kwargs key {key!r} ({rows}, first: {origins[0]}) is never referenced by {template}: it "
            "changes nothing"
        )


def _has_tool_rows(data) -> bool:
    splits = list(data.values()) if isinstance(data, Mapping) else [data]
    for split in splits:
        if ORIGIN_COLUMN not in split.column_names:  # plain messages only
            continue
        for row in split:
            conversation = Conversation.from_row(row)
            if conversation.tools or any(m["role"] == TOOL_ROLE or m.get("tool_calls") for m in conversation.messages):
                return True
    return False


def add_tool_template(
    data,
    model,
    tokenizer,
    *,
    system_prompt: str | None = None,
    model_name: str = "the model",
    log: Callable[[str], None] = logger.info,
) -> list[int] | None:
    """``chat_template: auto`` with tool-calling rows the tokenizer's own template cannot render: add posttrain's
    tool-capable ChatML (Hermes/Qwen2.5-style ``<tool_call>`` JSON, ``chatml.jinja``), as ChatML is added to a base
    model without a template, and say so in one line (``log``: the logger's info by default).

    The template goes into the tokenizer the run saves, so evaluation, merge and export (the merged tokenizer's
    ``chat_template``, the GGUF's Jinja template, the Ollama TEMPLATE) use the same one. Returns the ids of tokens
    added to the vocabulary (``<|im_start|>``/``<|im_end|>`` for a model without them), or None when the own
    template is kept (no tool rows, or it renders them; :func:`check_template_support` then judges it as usual).
    """
    if not _has_tool_rows(data):
        return None
    if tokenizer.chat_template == chat_templates.load_template("chatml"):
        return None
    try:
        check_template_support(data, tokenizer, system_prompt=system_prompt, warn=lambda message: None)
        return None
    except DataError as error:
        if _TOOL_CAPABLE not in str(error):  # a problem of another kind (template variables): not ours to fix
            return None
        problem = str(error)
    new_ids = chat_templates.setup_chat_template(model, tokenizer, "chatml")
    log(
        f"posttrain: chat_template auto: the chat template of {model_name} cannot render the data's tool calls "
        f"({problem.split('; set `chat_template:`')[0]}); using posttrain's tool-capable ChatML template (chatml), "
        "saved with the tokenizer so that evaluation, merge and export use it too"
    )
    return new_ids


def settle_template(
    data, model, tokenizer, *, chat_template: str, system_prompt: str | None, model_name: str
) -> tuple[list[int], str]:
    """The template SFT trains with, checked against ``data`` (:func:`check_template_support`): the configured one,
    or under ``chat_template: auto`` posttrain's tool-capable ChatML where the model's own cannot render the tool
    calls (:func:`add_tool_template`). Returns the ids of tokens added to the vocabulary and the template's name
    for the run record."""
    template_used, added = chat_template, []
    template_name = (
        f"the chat template of {model_name}" if chat_template == "auto" else f"chat template {chat_template!r}"
    )
    if chat_template == "auto":
        tool_template = add_tool_template(data, model, tokenizer, system_prompt=system_prompt, model_name=model_name)
        if tool_template is not None:
            added, template_used = tool_template, "chatml (auto: tool calls)"
            template_name = "posttrain's tool-capable ChatML template (chosen by chat_template: auto)"
    check_template_support(data, tokenizer, system_prompt=system_prompt, template=template_name)
    return added, template_used
