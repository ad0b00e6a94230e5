"""The tool loop of evaluation: generate, run the tools the reply calls, hand back their results, generate again.

For a sample that offers tools (a ``builtin:`` task with tools, such as ``calculator``; suite ``tools``), one reply is
not the whole answer: the model first calls a tool, reads its result and then answers. :func:`run_tool_loop` plays
that conversation for every sample at once, round by round (each round is one batched ``generate`` call, so HF
batching and the generation cache work as for plain suites):

1. generate a reply to the conversation so far, with the sample's ``tools`` rendered by the chat template;
2. parse its calls (:func:`posttrain.checks.tool_calls.parse_tool_calls`: the ``<tool_call>`` JSON that posttrain's
   ChatML template and Qwen2.5/Hermes-style templates use);
3. none: that reply is the final answer. Otherwise append the reply (its calls as ``tool_calls``) and one ``tool``
   message per call with what the task's pure-Python tool returns (``Task.run_tool``: typed arguments, never an
   ``eval`` of model text), and go on -- at most ``max_rounds`` replies in all.

What comes back (:class:`LoopResult`) is every raw reply (what the ``tool_call``/``tool_name``/``tool_arguments``
checks and the task's check score), the added messages (shown in reports) and the final answer as an ``Output``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from posttrain.checks.tool_calls import parse_tool_calls
from posttrain.evaluation.backends import HFBackend, Output
from posttrain.log import get_logger
from posttrain.tasks import TASKS

__all__ = [
    "DEFAULT_MAX_ROUNDS",
    "LoopResult",
    "ToolItem",
    "prepare_backend",
    "run_tool_loop",
    "suite_items",
    "uses_tools",
]

logger = get_logger(__name__)

DEFAULT_MAX_ROUNDS = 3
"""Replies per sample at most: a call, an answer, and one more call for a model that retries."""

Generate = Callable[[list[list[dict]], list[list[dict] | None]], Sequence[Output | None]]
"""``generate(conversations, tools) -> outputs``: one reply per conversation (None where none came back)."""

RunTool = Callable[[str, Mapping[str, Any]], str]


@dataclass
class ToolItem:
    """One conversation to play: the prompt messages, the tool schemas offered and the function that runs a call."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    run_tool: RunTool


@dataclass
class LoopResult:
    """How one conversation went.

    Attributes:
        replies: The model's raw replies, in order (the first is the one that should call the tool).
        messages: What the loop added after the prompt: assistant messages (``content`` and parsed ``tool_calls``)
            and ``tool`` results.
        output: The final answer (the last reply without its call blocks), whether it ended within the budget, and
            the tokens of every reply together; None when the backend gave no reply.
    """

    replies: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    output: Output | None = None


def run_tool_loop(generate: Generate, items: Sequence[ToolItem], *, max_rounds: int = DEFAULT_MAX_ROUNDS):
    """Play every item's conversation (see the module docstring); returns one :class:`LoopResult` per item."""
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be at least 1 (got {max_rounds})")
    results = [LoopResult() for _ in items]
    conversations = [list(item.messages) for item in items]
    tokens = [0] * len(items)
    active = list(range(len(items)))
    for round_ in range(max_rounds):
        if not active:
            break
        outputs = generate([conversations[i] for i in active], [items[i].tools or None for i in active])
        still = []
        for i, output in zip(active, outputs):
            if output is None:  # the backend failed on it: no result
                continue
            result = results[i]
            result.replies.append(output.text)
            tokens[i] += output.num_tokens
            parsed = parse_tool_calls(output.text)
            has_blocks = bool(parsed.calls or parsed.errors)
            if not parsed.calls or round_ == max_rounds - 1:
                result.output = Output(
                    parsed.content if has_blocks else output.text, output.finished and not parsed.calls, tokens[i]
                )
                result.messages.append({"role": "assistant", "content": output.text})
                continue
            step = [
                {
                    "role": "assistant",
                    "content": parsed.content,
                    "tool_calls": [c.as_message_call() for c in parsed.calls],
                }
            ]
            step += [
                {"role": "tool", "name": c.name, "content": items[i].run_tool(c.name, c.arguments)}
                for c in parsed.calls
            ]
            conversations[i] += step
            result.messages += step
            still.append(i)
        active = still
    return results


# ------------------------------------------------------------------------------------------------- suites


def uses_tools(samples: Sequence[Any]) -> bool:
    """Whether a suite's samples offer tools (``meta["tools"]``: a builtin task with tools)."""
    return any(sample.meta.get("tools") for sample in samples)


def _runner(sample) -> RunTool:
    task = TASKS.get(sample.check or "")
    if task is None or task.run_tool is None:

        def unknown(name: str, arguments: Mapping[str, Any]) -> str:
            return '{"error": "no tool can run here"}'

        return unknown
    return task.run_tool


def suite_items(samples: Sequence[Any], prompts: Sequence[list[dict]]) -> list[ToolItem]:
    """The loop items of a suite's samples: each sample's prompt (as sent: system prompt included), its
    ``meta["tools"]`` and its builtin task's ``run_tool``."""
    return [ToolItem(list(p), list(s.meta.get("tools") or []), _runner(s)) for s, p in zip(samples, prompts)]


_PROBE_TOOL = {"type": "function", "function": {"name": "posttrain_probe_tool", "parameters": {"type": "object"}}}


def renders_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template shows the model the tools it is given."""
    if not tokenizer.chat_template:
        return False
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}], tools=[_PROBE_TOOL], add_generation_prompt=True, tokenize=False
        )
    except Exception:  # a template that refuses tools
        return False
    return "posttrain_probe_tool" in text


def prepare_backend(backend) -> None:
    """Make an HF backend with ``chat_template: auto`` show the tools: a model whose own template ignores them
    (SmolLM2's) gets posttrain's tool-capable ChatML template, as SFT gives it for tool data
    (:func:`posttrain.training.sft_templates.add_tool_template`), so that a base model and its tool-trained adapter
    are asked the same prompts. GGUF files and endpoints render with their own templates."""
    if not isinstance(backend, HFBackend) or backend.chat_template != "auto":
        return
    from posttrain.chat_templates import setup_chat_template

    model, tokenizer = backend._load()
    if renders_tools(tokenizer):
        return
    setup_chat_template(model, tokenizer, "chatml")
    backend.chat_template = "chatml"  # in its fingerprint: these replies are cached apart from the own template's
    logger.info(
        f"posttrain: tools: the chat template of {backend.label} does not render tools; evaluating it with "
        "posttrain's tool-capable ChatML template (chatml)"
    )
