"""Thinking models: separate a reply's reasoning from its answer before anything scores it.

A thinking model writes its reasoning before the answer: Qwen3 inside ``<think>...</think>``, DeepSeek-R1 distills
the same, except that their generation prompt already opened ``<think>`` (the reply starts inside the block and only
closes it), gpt-oss in harmony channels (``<|channel|>analysis<|message|>...<|end|>`` then
``<|channel|>final<|message|>...``). Rule checks, judges and reward models must see the answer only: a number in the
reasoning must not pass a math check, and a judge must not grade the scratchpad.

The format is read from the chat template, never from the model's name: :func:`detect_reasoning_format` renders an
assistant message carrying a probe ``reasoning_content`` (and ``thinking``, gpt-oss's name for it) and looks at what
surrounds it, then renders the generation prompt to see whether it opens the block itself. A template that renders
no reasoning and whose generation prompt opens nothing is a plain model: its replies are all answer, whatever they
contain.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ENDPOINT_DEFAULT",
    "HARMONY",
    "PLAIN",
    "ReasoningFormat",
    "ReasoningSplit",
    "decode_reply",
    "detect_reasoning_format",
    "split_reasoning",
    "tokenizer_renderer",
]

_PROBE_REASONING = "posttrain-reasoning-probe-5d1c"
_PROBE_ANSWER = "posttrain-answer-probe-5d1c"
_PROBE_QUESTION = "posttrain-question-probe-5d1c"

_HARMONY_MARKERS = ("<|channel|>", "<|message|>", "<|end|>", "<|start|>", "<|return|>", "<|call|>", "<|constrain|>")


@dataclass(frozen=True)
class ReasoningFormat:
    """How a model's replies mark their reasoning.

    ``style``: ``none`` (plain model), ``tags`` (reasoning between ``open`` and ``close``) or ``harmony`` (gpt-oss
    channels). ``opened_by_prompt``: the generation prompt ends inside an opened block, so a reply starts with
    reasoning and only its ``close`` tag ends it (DeepSeek-R1 distills). ``leading_only``: split only replies that
    start with ``open`` (endpoints, whose template posttrain cannot see).
    """

    style: str = "none"
    open: str = ""
    close: str = ""
    opened_by_prompt: bool = False
    leading_only: bool = False

    @property
    def markers(self) -> tuple[str, ...]:
        """The marker strings a reply must keep through decoding for :func:`split_reasoning` to see them."""
        if self.style == "harmony":
            return _HARMONY_MARKERS
        return tuple(t for t in (self.open, self.close) if t)

    def describe(self) -> dict:
        """What results.json records about the format."""
        if self.style == "tags":
            return {
                "style": "tags",
                "open": self.open,
                "close": self.close,
                "opened_by_prompt": self.opened_by_prompt,
                "leading_only": self.leading_only,
            }
        return {"style": self.style}


PLAIN = ReasoningFormat()
HARMONY = ReasoningFormat("harmony")
ENDPOINT_DEFAULT = ReasoningFormat("tags", "<think>", "</think>", leading_only=True)
"""For endpoints: servers with a reasoning parser return the reasoning apart (``reasoning_content``/``reasoning``);
without one a reply that starts with ``<think>`` is still split."""


@dataclass(frozen=True)
class ReasoningSplit:
    """``reasoning``: None when the reply has no reasoning block ("" for an empty one); ``answer``: what is scored;
    ``closed``: False when the reply ended inside its reasoning (cut by the token budget: no answer at all)."""

    reasoning: str | None
    answer: str
    closed: bool = True


_HARMONY_SEGMENT = re.compile(
    r"<\|channel\|>\s*(?P<channel>\w+)[^<]*?(?:<\|constrain\|>[^<]*)?<\|message\|>(?P<text>.*?)"
    r"(?P<end><\|end\|>|<\|return\|>|<\|call\|>|(?=<\|start\|>)|(?=<\|channel\|>)|\Z)",
    re.S,
)


def _split_harmony(text: str) -> ReasoningSplit:
    segments = list(_HARMONY_SEGMENT.finditer(text))
    analysis = [m for m in segments if m["channel"] == "analysis"]
    if not analysis:
        if not segments:  # no channels: the whole reply, less a trailing stop marker decoding kept
            return ReasoningSplit(None, re.sub(r"(?:<\|(?:return|end|call)\|>\s*)+$", "", text.strip()).strip())
        finals = [m["text"].strip() for m in segments if m["channel"] == "final"]
        return ReasoningSplit(None, "\n".join(finals) if finals else text.strip())
    reasoning = "\n".join(m["text"].strip() for m in analysis)
    closed = all(m["end"] for m in analysis)
    finals = [m["text"].strip() for m in segments if m["channel"] == "final"]
    if finals:
        return ReasoningSplit(reasoning, "\n".join(finals), closed)
    # no final channel: what is left besides the analysis (e.g. a commentary tool call) stays the answer, raw
    rest = text
    for m in reversed(analysis):
        rest = rest[: m.start()] + rest[m.end() :]
    rest = re.sub(r"^(?:<\|start\|>\s*assistant\s*)+", "", rest.strip())
    return ReasoningSplit(reasoning, rest.strip(), closed)


def split_reasoning(text: str, fmt: ReasoningFormat) -> ReasoningSplit:
    """Split a decoded reply into reasoning and answer.

    Tags: the reasoning is everything before the last ``close`` (after ``open``, when the reply has it: the
    templates keep only what follows the last ``</think>`` too); a reply that opens a block (or starts inside one
    its prompt opened) and never closes it is all reasoning, with an empty answer. Harmony: the ``analysis``
    channels are the reasoning, the ``final`` channels the answer. Plain: all answer.
    """
    if fmt.style == "harmony":
        return _split_harmony(text)
    if fmt.style != "tags":
        return ReasoningSplit(None, text.strip())
    stripped = text.strip()
    if fmt.leading_only and not stripped.startswith(fmt.open):
        return ReasoningSplit(None, stripped)
    if fmt.close in stripped:
        head, _, answer = stripped.rpartition(fmt.close)
        if fmt.open in head:
            head = head.split(fmt.open, 1)[1]
        return ReasoningSplit(head.strip(), answer.strip())
    if fmt.open in stripped:
        before, _, reasoning = stripped.partition(fmt.open)
        return ReasoningSplit(reasoning.strip(), before.strip(), closed=False)
    if fmt.opened_by_prompt:
        return ReasoningSplit(stripped, "", closed=False)
    return ReasoningSplit(None, stripped)


# ------------------------------------------------------------------------------------------------ detection

Render = Callable[..., str]
"""``render(messages, add_generation_prompt=...)``: the chat template (with its template variables bound) as text."""

_OPEN_BEFORE = re.compile(r"(<(?P<name>[A-Za-z_][\w-]*)>)\s*$")
_CLOSE_AFTER = re.compile(r"^\s*(</(?P<name>[A-Za-z_][\w-]*)>)")
_REASONING_TAG_NAMES = ("think", "thinking", "reasoning", "thought")


def detect_reasoning_format(render: Render, source: str = "") -> ReasoningFormat:
    """The reasoning format of a chat template.

    ``render`` renders messages with the template (template variables such as ``enable_thinking`` bound: they change
    the generation prompt); ``source`` is the template's text. A template that cannot render the probe messages
    counts as plain.
    """
    question = {"role": "user", "content": _PROBE_QUESTION}
    probe = {
        "role": "assistant",
        "content": _PROBE_ANSWER,
        "reasoning_content": _PROBE_REASONING,
        "thinking": _PROBE_REASONING,  # gpt-oss templates read `thinking`
    }
    fmt = PLAIN
    try:
        rendered = render([question, probe], add_generation_prompt=False)
    except Exception:  # a template that refuses the probe (e.g. raises on unknown keys): judged by its prompt
        rendered = ""
    where = rendered.find(_PROBE_REASONING)
    if where >= 0:
        before, after = rendered[:where], rendered[where + len(_PROBE_REASONING) :]
        opened, closed = _OPEN_BEFORE.search(before), _CLOSE_AFTER.search(after)
        if re.search(r"<\|channel\|>\s*analysis\s*<\|message\|>\s*$", before):
            return HARMONY
        if opened and closed and opened["name"] == closed["name"]:
            fmt = ReasoningFormat("tags", opened.group(1), closed.group(1))
    try:
        prompt = render([question], add_generation_prompt=True)
        bare = render([question], add_generation_prompt=False)
    except Exception:
        return fmt
    suffix = prompt[len(bare) :] if prompt.startswith(bare) else prompt[prompt.rfind(_PROBE_QUESTION) :]
    if fmt.style == "tags":
        if suffix.rstrip().endswith(fmt.open):
            return ReasoningFormat("tags", fmt.open, fmt.close, opened_by_prompt=True)
        return fmt
    opened = _OPEN_BEFORE.search(suffix)
    if opened and opened["name"] in _REASONING_TAG_NAMES and f"</{opened['name']}>" in source:
        return ReasoningFormat("tags", opened.group(1), f"</{opened['name']}>", opened_by_prompt=True)
    for name in _REASONING_TAG_NAMES:  # templates that only strip reasoning from history (content.split('</think>'))
        if f"</{name}>" in source:
            return ReasoningFormat("tags", f"<{name}>", f"</{name}>")
    return PLAIN


def tokenizer_renderer(tokenizer, template_kwargs: Mapping | None = None) -> Render:
    """A :data:`Render` for an HF tokenizer's chat template with ``template_kwargs`` bound."""
    extra = dict(template_kwargs or {})

    def render(messages, add_generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
        )

    return render


def decode_reply(tokenizer, token_ids: Sequence[int], fmt: ReasoningFormat) -> str:
    """Decode generated ids dropping special tokens, except the reasoning markers of ``fmt`` when the tokenizer
    counts them as special (gpt-oss's ``<|channel|>``...): ``skip_special_tokens=True`` would erase them and leave
    ``analysis...assistantfinal...`` that no split can undo. Qwen3's ``<think>`` is a plain added token, kept anyway.
    """
    ids = list(token_ids)
    special = set(tokenizer.all_special_ids)
    special.update(i for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items() if token.special)
    vocab = tokenizer.get_vocab()
    keep = {vocab[m] for m in fmt.markers if m in vocab} & special
    if not keep:
        return tokenizer.decode(ids, skip_special_tokens=True).strip()
    return tokenizer.decode([i for i in ids if i not in special or i in keep], skip_special_tokens=False).strip()
