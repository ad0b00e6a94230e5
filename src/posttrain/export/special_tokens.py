"""End-of-turn tokens: what stops a reply, read from the chat template and the tokenizer.

A model trained with a chat template stops by emitting the token its template puts after an assistant message
(``<|im_end|>`` for ChatML, ``<|eot_id|>`` for Llama 3, ``<end_of_turn>`` for Gemma). Every runtime must agree:
``generation_config.eos_token_id`` for transformers, the GGUF's EOS/EOT (llama.cpp's end-of-generation set), and
``PARAMETER stop`` in the Ollama Modelfile. Mismatches are the classic "endless output in Ollama".
"""

from __future__ import annotations

_PROBE = "posttrain-probe-reply"


def special_token_strings(tokenizer) -> list[str]:
    """Special and added tokens, longest first."""
    tokens = set(tokenizer.all_special_tokens)
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        tokens.add(str(token))
    return sorted((t for t in tokens if t), key=len, reverse=True)


def end_of_turn_tokens(tokenizer) -> list[str]:
    """The special token the chat template writes right after an assistant reply, then the tokenizer's EOS."""
    tokens: list[str] = []
    if tokenizer.chat_template:
        conversation = [{"role": "user", "content": "posttrain-probe"}, {"role": "assistant", "content": _PROBE}]
        try:
            text = tokenizer.apply_chat_template(conversation, tokenize=False)
        except Exception:
            text = ""
        if _PROBE in text:
            rest = text.split(_PROBE, 1)[1].lstrip()
            for token in special_token_strings(tokenizer):
                if rest.startswith(token):
                    tokens.append(token)
                    break
    if tokenizer.eos_token and tokenizer.eos_token not in tokens:
        tokens.append(tokenizer.eos_token)
    return tokens


def end_of_turn_ids(tokenizer) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(token) for token in end_of_turn_tokens(tokenizer)]


def tokenizer_adds_bos(tokenizer) -> bool:
    """Whether tokenizing a text adds BOS (what the GGUF's ``tokenizer.ggml.add_bos_token`` says, so llama.cpp and
    Ollama's runner add it in front of every prompt)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    return tokenizer("a")["input_ids"][:1] == [bos]


def stop_problems(tokenizer, stops: list[str]) -> list[str]:
    """Modelfile stops that disagree with the tokenizer: every stop must be one special/added token of it."""
    specials = set(special_token_strings(tokenizer))
    return [f"{stop!r} is not a special token of the tokenizer" for stop in stops if stop not in specials]
