"""What stops a reply: the end-of-turn tokens read from the chat template, and the stop ids every generator uses.

A model trained with a chat template stops by emitting the token its template puts after an assistant message
(``<|im_end|>`` for ChatML, ``<|eot_id|>`` for Llama 3, ``<end_of_turn>`` for Gemma). Every runtime must agree:
``generation_config.eos_token_id`` for transformers, the GGUF's EOS/EOT (llama.cpp's end-of-generation set), and
``PARAMETER stop`` in the Ollama Modelfile. Mismatches are the classic "endless output in Ollama".

A template may end replies with more than one token: gpt-oss ends a final answer with ``<|return|>`` and a tool call
with ``<|call|>`` (its ``<|end|>`` closes an analysis message inside a turn and an answer in the history, so it is
no stop); a template without an end-of-turn token (GLM-4.5) ends a reply where the next ``<|user|>`` or
``<|observation|>`` header starts, the markers posttrain's masks train (``chat_templates._end_marker``). Every one
is a stop.

:func:`stop_ids` is the one place a list of stop ids is assembled: from a generation config's
``eos_token_id`` (:func:`posttrain.models.generation.stop_token_ids`) or from the template's end-of-turn tokens
(:func:`end_of_turn_ids`, what a merged or exported model's ``generation_config`` gets), always with the tokenizer's
EOS.
"""

from __future__ import annotations

from posttrain.chat_templates import _end_marker, _needs_end_marker, render

_PROBE = "posttrain-probe-reply"
_USER = {"role": "user", "content": "posttrain-probe"}
#: a reply that calls a tool, and the tool's result: what ends a tool-calling reply
_TOOL_CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [{"type": "function", "function": {"name": "posttrain_probe", "arguments": {"x": 1}}}],
}
_TOOL_RESULT = {"role": "tool", "name": "posttrain_probe", "content": "posttrain-probe-result"}


def special_token_strings(tokenizer) -> list[str]:
    """Special and added tokens, longest first."""
    tokens = set(tokenizer.all_special_tokens)
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        tokens.add(str(token))
    return sorted((t for t in tokens if t), key=len, reverse=True)


def end_of_turn_tokens(tokenizer) -> list[str]:
    """Every special token the chat template ends an assistant reply with (a plain reply first, then a tool call),
    or, for a template that renders nothing after a reply, the role headers that end it (after a reply: the next
    user message; after a tool call: the tool result), then the tokenizer's EOS."""
    tokens: list[str] = []
    if tokenizer.chat_template:
        specials = special_token_strings(tokenizer)
        plain = [_USER, {"role": "assistant", "content": _PROBE}]
        try:
            markers = _needs_end_marker(tokenizer, plain)
        except Exception:  # a template that refuses the probe
            markers = False
        if markers:
            for messages, following in ((plain, _USER), ([_USER, _TOOL_CALL], _TOOL_RESULT)):
                tokens += _header_after(tokenizer, messages, following, specials)
        else:
            for messages in (plain, [_USER, _TOOL_CALL]):
                tokens += _token_after_reply(tokenizer, messages, specials)
    if tokenizer.eos_token:
        tokens.append(tokenizer.eos_token)
    return list(dict.fromkeys(tokens))


def _rendered_reply(tokenizer, messages: list[dict]) -> str | None:
    """What the template renders for the conversation's last (assistant) message after the generation prompt;
    None when the template refuses the conversation or rewrites the history around it."""
    try:
        prompt = render(tokenizer, messages[:-1], add_generation_prompt=True)
        full = render(tokenizer, messages)
    except Exception:
        return None
    return full[len(prompt) :] if full.startswith(prompt) else None


def _token_after_reply(tokenizer, messages: list[dict], specials: list[str]) -> list[str]:
    """The special token right after the reply's content (a plain reply), or that the rendered reply ends with."""
    if messages[-1].get("content") == _PROBE:
        try:
            text = render(tokenizer, messages)
        except Exception:
            return []
        if _PROBE not in text:
            return []
        rest = text.split(_PROBE, 1)[1].lstrip()
        return [token for token in specials if rest.startswith(token)][:1]
    reply = _rendered_reply(tokenizer, messages)
    if not reply:
        return []
    return [token for token in specials if reply.rstrip().endswith(token)][:1]


def _header_after(tokenizer, messages: list[dict], following: dict, specials: list[str]) -> list[str]:
    """The role header that ends the conversation's last reply in a template without end-of-turn tokens: the
    marker posttrain trains (``chat_templates._end_marker``), when it is one special token."""
    reply = messages[-1].get("content") or ""
    if not reply:
        reply = _rendered_reply(tokenizer, messages)
        if reply is None:
            return []
    try:
        marker = _end_marker(tokenizer, [*messages, following], len(messages) - 1, reply).strip()
    except Exception:
        return []
    return [marker] if marker in specials else []


def eos_id_list(eos_token_id: int | list[int] | None) -> list[int]:
    """A config's ``eos_token_id`` (one id, a list of ids or None) as a new list of ids."""
    if eos_token_id is None:
        return []
    return [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)


def stop_ids(tokenizer, eos_token_id: int | list[int] | None) -> list[int]:
    """Every id that ends a reply: ``eos_token_id`` (a config's: one id, a list or None), then the tokenizer's EOS
    when it is not among them."""
    ids = eos_id_list(eos_token_id)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def end_of_turn_ids(tokenizer) -> list[int]:
    """The ids of :func:`end_of_turn_tokens`: what a model's ``generation_config.eos_token_id`` must hold."""
    return stop_ids(tokenizer, [tokenizer.convert_tokens_to_ids(token) for token in end_of_turn_tokens(tokenizer)])
