"""Chat templates: choose/apply the Jinja template, add ChatML to base models, and build assistant-only loss masks.

Masks are computed from the template itself, so any template works without ``{% generation %}`` markers and the
user's template is never replaced. For every assistant turn ``i`` the characters between
``render(messages[:i], add_generation_prompt=True)`` (the prompt a runtime sends before the model replies) and
``render(messages[:i+1])`` are the assistant's reply *including* the end-of-turn token (``<|im_end|>``,
``<|eot_id|>``, ``<end_of_turn>``, ``</s>``), which is what makes a model learn to stop. Tokens whose text starts
inside such a span are trained; everything else (system, user, role headers) is masked out of the loss.

*Prefix-preserving* templates (ChatML, Llama 3, Gemma, Qwen2.5, ...): rendering the conversation up to any assistant
turn is a prefix of rendering the whole conversation, so one sequence per conversation carries every turn's mask.

Templates that are not prefix-preserving rewrite earlier turns once the conversation goes on: Qwen3 drops the
reasoning of assistant turns before the last user message and gives the last reply a (possibly empty) ``<think>``
block; Mistral NeMo puts the system prompt into the user message only while that message is the last one, so a
conversation ending on a reply renders without it. A single rendering then shows each earlier reply in a context no
runtime ever produced. Such conversations are trained **turn by turn** (:func:`training_segments`): every assistant
turn is trained as the prompt the unchanged template renders at inference, ``render(messages[:i],
add_generation_prompt=True)``, followed by the reply as the template renders it; turns whose sequences extend one
another share one sequence.

We chose this over training variants of known templates (TRL's ``{% generation %}`` copies): a variant that renders
the whole conversation identically trains earlier replies in the rewritten history (Qwen3: without their ``<think>``
block; Mistral NeMo: without the system prompt), and one that keeps the history prefix-preserving no longer renders
like the template the model is served with. Per-turn rendering is exact for any template, known or not, at the cost
of repeating the history once per rewritten turn (only for such templates).

A generation prompt that ends with a think block the turn's rendering replaces (DeepSeek-R1 distills and Nemotron 3
open ``<think>\n``; their history renders no or an empty block) locates the reply after the prompt less that block,
and the turn is trained as the template renders it. A template with no end-of-turn token (GLM-4.5, whose replies end
where the next ``<|user|>``/``<|observation|>`` header starts, the tokens runtimes stop on) gets that next header
trained as the reply's end marker, appended after the conversation's last reply (docs/families.md).

Tool calling and template variables: every rendering of a conversation gets the same ``tools`` (the
``apply_chat_template(tools=...)`` schemas) and ``template_kwargs`` (extra template variables such as
``enable_thinking``), so the masks above hold for tool-calling conversations too: an assistant message's
``tool_calls`` (and ``reasoning_content``) are part of its reply and trained, ``tool`` results are context.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.errors import UserError

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
PAD_CANDIDATES = ("<|pad|>", "<pad>", "<|finetune_right_pad_id|>", "<|endoftext|>")


class ChatTemplateError(UserError, ValueError):
    """A chat template that cannot be used for training (missing, not prefix-preserving, ...)."""


class NotPrefixPreservingError(ChatTemplateError):
    """Rendering a conversation through an assistant turn is not a prefix of rendering all of it."""


def template_source(tokenizer) -> str:
    """The text of a tokenizer's chat template, all named templates joined ("" when it has none)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, Mapping):  # named templates
        return "\n".join(str(t) for t in template.values())
    return template or ""


def unreferenced_template_kwargs(source: str, keys) -> list[str]:
    """The template variables in ``keys`` that a template's ``source`` never mentions: passing them (e.g.
    ``enable_thinking`` to a template without a thinking switch) changes nothing, which training and evaluation warn
    about."""
    return [key for key in keys if key not in source]


def builtin_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.jinja"))


def load_template(name_or_path: str) -> str:
    """Template text from a built-in name (``chatml``) or a ``.jinja`` file path."""
    builtin = TEMPLATE_DIR / f"{name_or_path}.jinja"
    if builtin.is_file():
        return builtin.read_text(encoding="utf-8")
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ChatTemplateError(
        f"chat template '{name_or_path}' is neither a file nor a built-in template ({', '.join(builtin_templates())})"
    )


#: TRL's training-template markers (``*_training.jinja``): ``{% generation %}`` / ``{%- endgeneration -%}``...
#: (a Jinja comment, which may mention them, is matched whole and kept)
_GENERATION_TAG = re.compile(r"\{#.*?#\}|\{%([-+]?)\s*(end)?generation\s*([-+]?)%\}", re.DOTALL)


def has_generation_tags(template: str | None) -> bool:
    """Whether ``template`` carries TRL's ``{% generation %}`` markers (a training template)."""
    return bool(template) and any(m.group().startswith("{%") for m in _GENERATION_TAG.finditer(template))


def strip_generation_tags(template: str) -> str:
    """The inference template of a TRL training template: every ``{% generation %}``/``{% endgeneration %}`` becomes
    a comment with the same whitespace control (``{%- generation %}`` -> ``{#- generation #}``), so Jinja renders
    the same text (comments strip whitespace like block tags under ``trim_blocks``/``lstrip_blocks``) and runtimes
    that do not know the extension (llama.cpp, Ollama) can parse it."""

    def replace(match: re.Match) -> str:
        if match.group().startswith("{#"):
            return match.group()
        return f"{{#{match.group(1)} {match.group(2) or ''}generation {match.group(3)}#}}"

    return _GENERATION_TAG.sub(replace, template)


def adds_bos(tokenizer) -> bool:
    """Whether tokenizing a text adds BOS (the tokenizer's post-processor): what the GGUF's
    ``tokenizer.ggml.add_bos_token`` then says, so llama.cpp and Ollama's runner put BOS in front of every prompt."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    return tokenizer("a")["input_ids"][:1] == [bos]


def encode_rendered(tokenizer, text: str, **kwargs: Any):
    """Token ids of a rendered chat text, starting the way every runtime starts it: with BOS once when the tokenizer
    adds BOS (:func:`adds_bos`; llama.cpp/Ollama prepend it as the GGUF says) and the template did not render it
    (posttrain's ChatML on a Llama-2 base), never a second one (Llama 3's template writes ``<|begin_of_text|>``).
    ``kwargs`` go to the tokenizer (``return_offsets_mapping``...); an added BOS has the offsets ``(0, 0)``."""
    encoding = tokenizer(text, add_special_tokens=False, **kwargs)
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and encoding["input_ids"][:1] != [bos] and adds_bos(tokenizer):
        encoding["input_ids"] = [bos, *encoding["input_ids"]]
        if "attention_mask" in encoding:
            encoding["attention_mask"] = [1, *encoding["attention_mask"]]
        if "offset_mapping" in encoding:
            encoding["offset_mapping"] = [(0, 0), *encoding["offset_mapping"]]
    return encoding


def keep_tokenizer_legacy(tokenizer) -> None:
    """Make ``save_pretrained`` write the tokenizer's ``legacy`` flag. transformers 5 reads it from
    ``tokenizer_config.json`` (Llama-2/Mistral-style tokenizers: ``legacy: true`` puts "▁" before the text after every
    special token, as llama.cpp's SPM tokenizer does) but does not save it back, so a saved and reloaded tokenizer
    would split chat text unlike the one the model was trained with, and unlike llama.cpp."""
    legacy = getattr(tokenizer, "legacy", None)
    if isinstance(legacy, bool) and "legacy" not in tokenizer.init_kwargs:
        tokenizer.init_kwargs["legacy"] = legacy


def setup_chat_template(model, tokenizer, choice: str = "auto") -> list[int]:
    """Make ``tokenizer`` carry a chat template and ``model`` agree on its special tokens.

    ``auto`` keeps the tokenizer's own template and adds ChatML only when there is none; ``chatml`` or a path
    replaces it. When ChatML's ``<|im_start|>``/``<|im_end|>`` are new to the vocabulary they are added as special
    tokens, the embeddings are resized (new rows start at the mean embedding) and their ids are returned so the
    caller makes those rows trainable. ``<|im_end|>`` becomes EOS (training and generation stop there).
    """
    if choice == "auto" and tokenizer.chat_template:
        template = None
    else:
        template = load_template("chatml" if choice == "auto" else choice)

    keep_tokenizer_legacy(tokenizer)
    new_ids: list[int] = []
    if template is not None:
        tokenizer.chat_template = template
        if all(token in template for token in CHATML_TOKENS):
            missing = [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
            if missing:
                tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
                new_ids = tokenizer.convert_tokens_to_ids(missing)
            tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        # A pad distinct from EOS: sequence-classification heads find the last real token by the pad id.
        vocab = tokenizer.get_vocab()
        pad = next((t for t in PAD_CANDIDATES if t in vocab and t != tokenizer.eos_token), tokenizer.eos_token)
        tokenizer.pad_token = pad

    embeddings = model.get_input_embeddings()
    if len(tokenizer) > embeddings.num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    for config in (model.config.get_text_config(), getattr(model, "generation_config", None)):
        if config is not None:
            config.eos_token_id = tokenizer.eos_token_id
            config.pad_token_id = tokenizer.pad_token_id
    return new_ids


def render(
    tokenizer,
    messages: list[dict],
    *,
    add_generation_prompt: bool = False,
    tools: list[dict] | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """The chat template's text for ``messages``, with the tool schemas ``tools`` and the extra template variables
    ``template_kwargs`` (e.g. ``{"enable_thinking": False}``); tool-call arguments are passed the way the template
    expects them (:func:`call_style`)."""
    if any(m.get("tool_calls") for m in messages):
        style = call_style(tokenizer)
        messages = [_in_call_style(m, style) for m in messages]
    return tokenizer.apply_chat_template(
        messages,
        tools=tools,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        **(template_kwargs or {}),
    )


_ARGUMENTS_PROBE = {"posttrain_probe": 1}


@dataclass(frozen=True)
class CallStyle:
    """How a template wants an assistant tool call: ``arguments`` as JSON text rather than an object, and an empty
    ``content`` as None."""

    text_arguments: bool = False
    content_none: bool = False


_CALL_STYLES: dict[str, CallStyle] = {}


def call_style(tokenizer) -> CallStyle:
    """The :class:`CallStyle` under which the tokenizer's chat template renders a tool call with its arguments as
    JSON.

    posttrain stores arguments as objects with ``content: ""``, what most templates expect (Qwen's
    ``arguments | tojson``, ``if message.content``). A template that prints ``tool['function']['arguments']`` as
    text (DeepSeek-V3's: an object fails or prints as Python's ``{'key': 1}``) or renders calls only when
    ``content is none`` needs them otherwise. Probed through the tokenizer's own ``apply_chat_template`` once per
    template: objects and ``""`` unless the call is then missing or printed as Python's repr, else the first other
    style whose rendering shows the arguments as JSON."""
    chat_template = getattr(tokenizer, "chat_template", None)
    if not isinstance(chat_template, str) or "arguments" not in chat_template:
        return CallStyle()
    if chat_template not in _CALL_STYLES:
        _CALL_STYLES[chat_template] = _probe_call_style(tokenizer)
    return _CALL_STYLES[chat_template]


def _probe_call_style(tokenizer) -> CallStyle:
    def rendering(style: CallStyle) -> str | None:
        arguments = json.dumps(_ARGUMENTS_PROBE) if style.text_arguments else _ARGUMENTS_PROBE
        call = {"type": "function", "function": {"name": "posttrain_probe_call", "arguments": arguments}}
        reply = {"role": "assistant", "content": None if style.content_none else "", "tool_calls": [call]}
        try:
            return tokenizer.apply_chat_template([{"role": "user", "content": "x"}, reply], tokenize=False)
        except Exception:  # the template refuses this style (e.g. '+' of a string and an object)
            return None

    text = rendering(CallStyle())
    if text is not None and "posttrain_probe_call" in text and repr(_ARGUMENTS_PROBE) not in text:
        return CallStyle()  # the call is rendered from the object, in the template's own way (tojson, Gemma 4's)
    for style in (CallStyle(content_none=True), CallStyle(True, False), CallStyle(True, True)):
        text = rendering(style)
        if text is not None and re.search(r'"posttrain_probe":\s*1', text):
            return style
    return CallStyle()


def _in_call_style(message: dict, style: CallStyle) -> dict:
    if not message.get("tool_calls") or style == CallStyle():
        return message
    calls = []
    for call in message["tool_calls"]:
        function = call.get("function", call)
        if style.text_arguments and not isinstance(function.get("arguments"), str):
            function = {**function, "arguments": json.dumps(function.get("arguments"), ensure_ascii=False)}
        calls.append({**call, "function": function} if "function" in call else function)
    content = None if style.content_none and not message.get("content") else message.get("content")
    return {**message, "content": content, "tool_calls": calls}


#: stands in for a reply's content to find where the template starts rendering it
_PROBE = "\u2063posttrain-probe\u2063"


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


def assistant_spans(tokenizer, messages: list[dict], **context: Any) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the ``[start, end)`` character spans of every assistant reply (``context``:
    :func:`render`'s ``tools`` and ``template_kwargs``).

    Raises :class:`NotPrefixPreservingError` for a template that rewrites earlier turns (see
    :func:`training_segments`, which then trains turn by turn)."""
    full = render(tokenizer, messages, **context)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True, **context)
        through = render(tokenizer, messages[: i + 1], **context)
        if not (through.startswith(before) and full.startswith(through)):
            raise NotPrefixPreservingError(
                "the chat template is not prefix-preserving (rendering a conversation up to an assistant turn is "
                "not a prefix of rendering the whole conversation), so one sequence cannot carry every turn's "
                f"mask; such conversations are trained turn by turn (training_segments). First differing turn: {i}"
            )
        spans.append((len(before), len(through)))
    if spans and _needs_end_marker(tokenizer, messages, **context):
        full, spans = _with_end_markers(tokenizer, messages, full, spans, **context)
    return full, spans


#: the think block a generation prompt ends with: opened for the model to write into (DeepSeek-R1 distills,
#: Nemotron 3) or closed empty (Qwen3.5 without thinking)
_THINK_OPENING = re.compile(r"<think>\s*(</think>\s*)?$")


def _needs_end_marker(tokenizer, messages: list[dict], **context: Any) -> bool:
    """Whether the template renders a reply with nothing after it (GLM-4.5: no end-of-turn token; the next role
    header, ``<|user|>`` or ``<|observation|>``, is what ends the reply and what runtimes stop on)."""
    i = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
    if i is None:
        return False
    probe = render(tokenizer, [*messages[:i], {"role": "assistant", "content": _PROBE}], **context)
    return _PROBE in probe and not probe[probe.rindex(_PROBE) + len(_PROBE) :].strip()


def _end_marker(tokenizer, messages: list[dict], i: int, reply: str, **context: Any) -> str:
    """The next role header that ends assistant turn ``i`` in a template without an end-of-turn token: what the
    template renders between the reply and the next message's content (a user message when the conversation ends
    with the reply), up to its first whitespace (``<|user|>``, ``<|observation|>``, leading whitespace included)."""
    following = messages[i + 1] if i + 1 < len(messages) else {"role": "user"}
    text = render(tokenizer, [*messages[: i + 1], {**following, "content": _PROBE}], **context)
    content_at = text.find(_PROBE)
    # where the reply ends: the longest of its last characters found before the next content (the template may
    # render the reply differently once another message follows, e.g. GLM drops its reasoning)
    reply_end = -1
    for size in range(min(16, len(reply.rstrip())), 0, -1) if content_at >= 0 else ():
        tail = reply.rstrip()[-size:]
        if (found := text.rfind(tail, 0, content_at)) >= 0:
            reply_end = found + size
            break
    marker = re.match(r"\s*\S+", text[reply_end:content_at]) if reply_end >= 0 else None
    if marker is None or _PROBE in marker.group():
        raise ChatTemplateError(
            f"the chat template ends assistant turn {i} with no end-of-turn token and no role header after it, so "
            "the model could not learn where a reply ends"
        )
    return marker.group()


def _with_end_markers(tokenizer, messages, full: str, spans: list[tuple[int, int]], **context):
    """``full`` and ``spans`` with every reply's span extended over its end marker (:func:`_end_marker`); a marker
    that the rendering does not contain (after the conversation's last reply) is appended to the text."""
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    extended = []
    for i, (start, end) in zip(turns, spans):
        marker = _end_marker(tokenizer, messages, i, full[start:end], **context)
        if not full.startswith(marker, end):
            if end != len(full):
                raise NotPrefixPreservingError(f"assistant turn {i} is not followed by its end marker {marker!r}")
            full += marker
        extended.append((start, end + len(marker)))
    return full, extended


def _reply(tokenizer, messages: list[dict], i: int, **context: Any) -> tuple[str, str]:
    """``(prompt, reply)`` of assistant turn ``i``: the inference prompt ``render(messages[:i],
    add_generation_prompt=True)`` and the text the template renders for the reply (end-of-turn included).

    Usually the reply is what ``render(messages[:i+1])`` adds to the prompt. Some templates render the history
    differently once the conversation ends on a reply (Mistral NeMo's puts the system prompt into the user message
    only while it is the last message): the reply then starts where that rendering stops matching one with a probe
    in place of the content, just after the generation prompt."""
    before = render(tokenizer, messages[:i], add_generation_prompt=True, **context)
    through = render(tokenizer, messages[: i + 1], **context)
    if through.startswith(before):
        return before, through[len(before) :]
    probe = render(tokenizer, [*messages[:i], {**messages[i], "content": _PROBE}], **context)
    content_at = _common_prefix(through, probe)
    history = render(tokenizer, messages[:i], **context)
    generation_prompt = before[len(history) :] if before.startswith(history) else None
    found = through.rfind(generation_prompt, 0, content_at) if generation_prompt is not None else -1
    if found >= 0 and content_at < len(through):
        return before, through[found + len(generation_prompt) :]
    opening = _THINK_OPENING.search(generation_prompt or "")
    if opening is not None and opening.start() > 0:
        # The generation prompt ends with a think block that the turn's rendering replaces (DeepSeek-R1 distills:
        # the reply without its reasoning; Nemotron 3: an empty "<think></think>"; Qwen3.5 without thinking: the
        # reply's own reasoning): the reply is what the template renders after the prompt less that block.
        header = generation_prompt[: opening.start()]
        found = through.rfind(header, 0, content_at)
        if found >= 0 and content_at < len(through):
            return before[: len(before) - len(opening.group())], through[found + len(header) :]
    raise ChatTemplateError(
        f"the chat template renders assistant turn {i} without the generation prompt it gives the model "
        f"({generation_prompt!r}), so the reply to train cannot be located; fix the template's "
        "add_generation_prompt branch"
    )


@dataclass
class Segment:
    """One training sequence: rendered ``text`` and the ``[start, end)`` character spans it trains."""

    text: str
    spans: list[tuple[int, int]]


def training_segments(
    tokenizer,
    messages: list[dict],
    *,
    tools: list[dict] | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> list[Segment]:
    """The sequences that train every assistant turn of ``messages`` in the context the template gives it, every
    rendering with the tool schemas ``tools`` and the extra template variables ``template_kwargs``.

    A prefix-preserving template gives one segment: the whole rendering with every reply's span. Otherwise each
    assistant turn ``i`` is trained as its inference prompt ``render(messages[:i], add_generation_prompt=True)``
    followed by its rendered reply (:func:`_reply`); going from the last turn back, a turn whose sequence is a
    prefix of the next segment's text joins it instead of starting a new one, so turns the template does not
    rewrite never repeat the history.
    """
    context = {"tools": tools, "template_kwargs": template_kwargs}
    try:
        full, spans = assistant_spans(tokenizer, messages, **context)
        return [Segment(full, spans)]
    except NotPrefixPreservingError:
        pass
    segments: list[Segment] = []
    end_marker = _needs_end_marker(tokenizer, messages, **context)
    for i in reversed([i for i, m in enumerate(messages) if m["role"] == "assistant"]):
        prompt, reply = _reply(tokenizer, messages, i, **context)
        if end_marker:
            reply += _end_marker(tokenizer, messages, i, reply, **context)
        text = prompt + reply
        span = (len(prompt), len(text))
        if segments and segments[-1].text.startswith(text):
            segments[-1].spans.insert(0, span)
        else:
            segments.append(Segment(text, [span]))
    return segments[::-1]


def _tokenize_segment(tokenizer, segment: Segment) -> dict[str, list[int]]:
    """Ids and mask of one training sequence, BOS included as runtimes send it (:func:`encode_rendered`); an added
    BOS has offsets ``(0, 0)``, before every reply, so it is never trained."""
    encoding = encode_rendered(tokenizer, segment.text, return_offsets_mapping=True)
    mask = [int(any(s <= start < e for s, e in segment.spans)) for start, _ in encoding["offset_mapping"]]
    return {"input_ids": encoding["input_ids"], "assistant_masks": mask}


def tokenize_conversations(
    tokenizer,
    messages: list[dict],
    *,
    tools: list[dict] | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> list[dict[str, list[int]]]:
    """``input_ids`` + ``assistant_masks`` (1 = token is trained) of every training sequence of one conversation:
    one for a prefix-preserving template, one per diverging assistant turn otherwise (:func:`training_segments`,
    which passes ``tools`` and ``template_kwargs`` to every rendering)."""
    segments = training_segments(tokenizer, messages, tools=tools, template_kwargs=template_kwargs)
    return [_tokenize_segment(tokenizer, segment) for segment in segments]


def tokenize_conversation(
    tokenizer,
    messages: list[dict],
    *,
    tools: list[dict] | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, list[int]]:
    """``input_ids`` of the rendered conversation and ``assistant_masks`` (1 = token is trained), as one sequence;
    raises :class:`NotPrefixPreservingError` where the template needs several (use :func:`tokenize_conversations`)."""
    text, spans = assistant_spans(tokenizer, messages, tools=tools, template_kwargs=template_kwargs)
    return _tokenize_segment(tokenizer, Segment(text, spans))


@dataclass
class MaskStats:
    trained: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trained / self.total if self.total else 0.0


def check_mask_coverage(dataset, *, name: str = "train") -> MaskStats:
    """Fail when the loss mask covers 0% or 100% of the tokens: either nothing or everything would be trained."""
    trained = total = 0
    for mask in dataset["assistant_masks"]:
        trained += sum(mask)
        total += len(mask)
    stats = MaskStats(trained, total)
    if total == 0 or trained == 0:
        raise ChatTemplateError(f"{name} data: the assistant-only loss mask covers 0% of {total} tokens")
    if trained == total:
        raise ChatTemplateError(
            f"{name} data: the loss mask covers 100% of {total} tokens: prompts would be trained too"
        )
    return stats


def check_lengths(dataset, max_length: int | None, policy: str, *, name: str = "train", tokenizer=None):
    """Conversations longer than ``max_length`` tokens: ``error`` names them (row, length, opening words), ``drop``
    removes them (with a warning), ``truncate`` keeps them for the trainer to cut."""
    if not max_length:
        return dataset
    lengths = [len(ids) for ids in dataset["input_ids"]]
    over = [i for i, n in enumerate(lengths) if n > max_length]
    if not over or policy == "truncate":
        return dataset

    def describe(i: int) -> str:
        opening = tokenizer.decode(dataset[i]["input_ids"][:24]) if tokenizer is not None else ""
        return f"row {i} ({lengths[i]} tokens{', ' + repr(opening[:60]) if opening else ''})"

    if policy == "error":
        listed = "; ".join(describe(i) for i in over[:5]) + (f"; and {len(over) - 5} more" if len(over) > 5 else "")
        raise ChatTemplateError(
            f"{name} data: {len(over)} of {len(lengths)} conversations are longer than max_length {max_length} "
            f"tokens: {listed}. Raise max_length, or set overlong_samples: drop (skip them) or truncate (cut them)"
        )
    if len(over) == len(lengths):
        raise ChatTemplateError(
            f"{name} data: every conversation is longer than max_length {max_length} tokens "
            "(overlong_samples: drop would leave nothing)"
        )
    logger.warning(
        "%s data: dropping %d of %d conversations longer than max_length %d tokens",
        name,
        len(over),
        len(lengths),
        max_length,
    )
    return dataset.select([i for i, n in enumerate(lengths) if n <= max_length])


def format_masked(tokenizer, input_ids: list[int], mask: list[int], *, color: bool = False) -> str:
    """Human-readable rendering: trained text in green (``color``) or between ``⟦`` and ``⟧``."""
    pieces, run, run_flag = [], [], None
    for token, flag in zip(input_ids, mask):
        if run and flag != run_flag:
            pieces.append((run_flag, tokenizer.decode(run)))
            run = []
        run.append(token)
        run_flag = flag
    if run:
        pieces.append((run_flag, tokenizer.decode(run)))
    out = []
    for flag, text in pieces:
        if flag:
            out.append(f"\033[32m{text}\033[0m" if color else f"⟦{text}⟧")
        else:
            out.append(text)
    return "".join(out)
