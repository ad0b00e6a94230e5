"""Assistant-only masks against every chat template TRL ships with a ``{% generation %}`` training copy.

Each conversation is rendered through the inference template with posttrain (:func:`training_segments`) and through
TRL's ``X_training.jinja`` with transformers' generation tracker (character spans of the ``{% generation %}``
blocks). Every reply must be trained by posttrain with what the model generates at inference: its content, its tool
calls, its reasoning where the inference template renders it, and the marker that ends it; the end marker must be
the one TRL's training copy trains. The check is on text (the templates are rendered as strings, trained text is
compared as character spans), so it needs no tokenizer; deliberate differences from TRL are in docs/families.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import trl
from jinja2 import TemplateError
from transformers.utils.chat_template_utils import render_jinja_template

from posttrain.chat_templates import render, training_segments

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
TRAINING = sorted(p.name.removesuffix("_training.jinja") for p in TRL_TEMPLATES.glob("*_training.jinja"))

#: vision-language templates: their conversations carry images, out of scope for posttrain's text SFT
VLM = {
    "idefics3": "vision-language (Idefics3)",
    "llava_next": "vision-language (LLaVA-NeXT)",
    "qwen2_5_vl": "vision-language (Qwen2.5-VL)",
    "qwen3_vl": "vision-language (Qwen3-VL)",
    "smolvlm": "vision-language (SmolVLM)",
    "lfm2_2_5_vl": "vision-language (LFM2.5-VL)",
}

#: end markers that deliberately differ from TRL's training copy: GPT-OSS ends a final answer with <|return|> (what
#: the model emits to stop), which its template turns into <|end|> once the answer is in the history; DiffusionGemma's
#: template ends a tool-call turn with <|tool_response>, the token the model stops on after a call, which TRL's copy
#: leaves out of the generation block
SAME_END = {("gptoss", "<|end|>"): "<|return|>", ("diffusion_gemma", "<tool_call|>"): "<|tool_response>"}

BOS, EOS = "<BOS>", "<EOS>"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def _call(arguments):
    return {"type": "function", "id": "call0", "function": {"name": "get_weather", "arguments": arguments}}


CONVERSATIONS = {
    "single": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello, friend."}],
    "system-multi": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Spain?"},
        {"role": "assistant", "content": "Madrid."},
    ],
    "tools": [
        {"role": "user", "content": "Weather in the capital of Norway?"},
        {"role": "assistant", "content": "", "tool_calls": [_call({"city": "Oslo"})]},
        {"role": "tool", "tool_call_id": "call0", "name": "get_weather", "content": "rain, 4 C"},
        {"role": "assistant", "content": "Rainy and cold."},
    ],
    "reasoning": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "reasoning_content": "Two plus two makes four.", "content": "4."},
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "reasoning_content": "Three plus three makes six.", "content": "6."},
    ],
}


class TextTemplate:
    """The part of a tokenizer that posttrain's rendering uses: ``apply_chat_template`` to text."""

    def __init__(self, template: str):
        self.template = template

    def apply_chat_template(self, messages, tools=None, tokenize=False, add_generation_prompt=False, **kwargs):
        return _render(self.template, messages, tools, add_generation_prompt=add_generation_prompt, **kwargs)[0]


def _render(template, messages, tools, **kwargs):
    rendered, indices = render_jinja_template(
        [messages], tools=tools, chat_template=template, bos_token=BOS, eos_token=EOS, **kwargs
    )
    return rendered[0], indices[0] if indices else []


def _end(text: str) -> str:
    """The marker a trained text ends with: its last special token (``<|im_end|>``) or its last word."""
    text = text.rstrip()
    match = re.search(r"<[^<>\s]+>$", text)
    return match.group() if match else (text.split() or [""])[-1]


def _string_arguments(messages):
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [_call(json.dumps(c["function"]["arguments"])) for c in m["tool_calls"]]
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out


def _usable(template, messages, tools):
    """``messages`` as the template renders them (tool-call arguments as an object or, where the template needs it,
    as JSON text), or None when the template cannot render this conversation."""
    for candidate in (messages, _string_arguments(messages)):
        try:
            _render(template, candidate, tools)
            return candidate
        except (TemplateError, TypeError):
            continue
    return None


@pytest.mark.parametrize("name", TRAINING)
def test_every_reply_is_trained_with_its_end_marker(name):
    if name in VLM:
        pytest.skip(VLM[name])
    inference = (TRL_TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    training = (TRL_TEMPLATES / f"{name}_training.jinja").read_text(encoding="utf-8")
    tokenizer = TextTemplate(inference)
    checked = 0
    for label, conversation in CONVERSATIONS.items():
        tools = TOOLS if label == "tools" else None
        messages = _usable(inference, conversation, tools)
        if messages is None or _usable(training, messages, tools) is None:
            continue  # e.g. Gemma (v1) has no system role
        if tools and "Oslo" not in _render(inference, messages, tools)[0]:
            continue  # the template does not render tool calls
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]

        segments = training_segments(tokenizer, messages, tools=tools)
        ours = [(s.text, a, b) for s in segments for a, b in s.spans]
        trl_text, trl_spans = _render(training, messages, tools, return_assistant_tokens_mask=True)
        theirs = []  # one text per reply: TRL's adjacent generation blocks (content, then end token) joined
        for k, (a, b) in enumerate(trl_spans):
            if k and not trl_text[trl_spans[k - 1][1] : a].strip():
                theirs[-1] += trl_text[trl_spans[k - 1][1] : b]
            elif trl_text[a:b].strip():
                theirs.append(trl_text[a:b])
        where = f"{name}/{label}"
        assert len(ours) == len(turns), where
        assert len(theirs) == len(turns), f"{where}: TRL trains {theirs}"

        for i, (text, start, end), trl_reply in zip(turns, ours, theirs, strict=True):
            message, trained = messages[i], text[start:end]
            # the context is the prompt the template renders at inference (less a think block it opens, which
            # the template's rendering of the turn replaces)
            prompt = render(tokenizer, messages[:i], add_generation_prompt=True, tools=tools)
            assert text[:start] == prompt or re.sub(r"<think>\s*(</think>\s*)?$", "", prompt) == text[:start], where
            assert (message.get("content") or "").strip() in trained, where
            if message.get("tool_calls"):
                assert "get_weather" in trained and "Oslo" in trained, where
            reasoning = message.get("reasoning_content")
            if reasoning and reasoning in render(tokenizer, messages[: i + 1], tools=tools):
                assert reasoning in trained, f"{where}: turn {i} reasoning rendered but not trained"
            # a template's EOS after the end-of-turn token (Phi-3 closes a conversation with it) may follow
            trl_end = _end(trl_reply.rstrip().removesuffix(EOS))
            marker = SAME_END.get((name, trl_end), trl_end)
            assert marker and trained.rstrip().removesuffix(EOS).rstrip().endswith(marker), (
                f"{where}: turn {i} trained as {trained!r}, TRL trains {trl_reply!r} (end marker {marker!r})"
            )
            checked += 1
    assert checked, f"{name}: no conversation rendered"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # the generation prompt opens "<think>\n"; a reply without reasoning is rendered "<think></think>..."
        ("nemotron_3_nano", ["<think></think>Paris.<|im_end|>\n", "<think></think>Madrid.<|im_end|>\n"]),
        # no end-of-turn token: the next role header ends a reply, appended after the last one
        ("glm4moe", ["\n<think></think>\nParis.<|user|>", "\n<think></think>\nMadrid.<|user|>"]),
    ],
)
def test_tokens_trained_with_a_real_tokenizer(name, expected):
    """The same on tokens: the Qwen3 tokenizer (``<think>``, ``<|im_end|>`` in its vocabulary, GLM's role headers
    added as special tokens) with the TRL template."""
    from families import load_family_tokenizer

    from posttrain.chat_templates import tokenize_conversations

    tokenizer = load_family_tokenizer("qwen3")
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["[gMASK]", "<sop>", "<|user|>", "<|assistant|>", "<|system|>"]},
        replace_extra_special_tokens=False,
    )
    tokenizer.chat_template = (TRL_TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    trained = []
    for sequence in tokenize_conversations(tokenizer, CONVERSATIONS["system-multi"]):
        ids, mask = sequence["input_ids"], sequence["assistant_masks"]
        runs, run = [], []
        for token, flag in zip(ids, mask, strict=True):
            if flag:
                run.append(token)
            elif run:
                runs.append(run)
                run = []
        trained += [tokenizer.decode(r) for r in [*runs, run] if r]
    assert trained == expected
