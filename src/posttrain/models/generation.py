"""Batched chat generation with HF models: left padding, KV cache, greedy or seeded sampling, stop at EOS.

Shared by on-policy preference pairs, evaluation and RL rollouts. Conversations are rendered with the tokenizer's
chat template (``add_generation_prompt=True``); prompts are sorted by length so each batch pads little.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from posttrain.models.resolve import resolve_model


@dataclass
class Completion:
    text: str  # decoded reply, special tokens removed
    token_ids: list[int]  # generated ids, up to and including the first end-of-turn token
    finished: bool  # ended with an end-of-turn/EOS token within the budget (False: cut at max_new_tokens)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a reply: the generation config's EOS ids and the tokenizer's EOS."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def load_model_for_generation(name_or_path: str, *, dtype: torch.dtype = torch.float32, trust_remote_code=False):
    """A causal LM and its tokenizer from an embedded alias, HF folder, hub id or LoRA adapter folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name_or_path)
    if (Path(path) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model.eval()
    return model, tokenizer


def render_prompt(
    tokenizer, conversation: Sequence[dict], *, tools: list[dict] | None = None, template_kwargs: Mapping | None = None
) -> str:
    """The prompt text a conversation is generated from: the chat template with the generation prompt, the
    conversation's tools (omitted when None, as templates test ``tools is defined``) and extra template variables."""
    from posttrain.chat_templates import render

    return render(
        tokenizer, list(conversation), add_generation_prompt=True, tools=tools, template_kwargs=template_kwargs
    )


@torch.no_grad()
def generate(
    model,
    tokenizer,
    conversations: Sequence[list[dict]],
    *,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    batch_size: int = 16,
    seed: int | None = None,
    progress: bool = True,
    tools: Sequence[list[dict] | None] | None = None,
    template_kwargs: Mapping | None = None,
) -> list[list[Completion]]:
    """Generate ``num_return_sequences`` replies for each conversation (in input order).

    ``tools`` (one tool list or None per conversation) and ``template_kwargs`` (e.g. ``{"enable_thinking": False}``)
    go to the chat template: ``apply_chat_template(conversation, tools=..., **template_kwargs)``.
    """
    from tqdm.auto import tqdm

    from posttrain.chat_templates import encode_rendered

    if seed is not None:
        torch.manual_seed(seed)
    prompts = [
        render_prompt(tokenizer, c, tools=tools[i] if tools else None, template_kwargs=template_kwargs)
        for i, c in enumerate(conversations)
    ]
    encoded = [encode_rendered(tokenizer, p)["input_ids"] for p in prompts]  # BOS as training and runtimes
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    results: list[list[Completion]] = [[] for _ in conversations]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="Generating", disable=not progress, unit="batch"):
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):  # left padding: every prompt ends where generation starts
            ids = encoded[i]
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if do_sample else dict(do_sample=False)
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_return_sequences,
            eos_token_id=stops,
            pad_token_id=pad_id,
            use_cache=True,
            **sampling,
        )
        new_tokens = output[:, width:].tolist()
        for k, ids in enumerate(new_tokens):
            cut = next((j for j, t in enumerate(ids) if t in stops), None)
            kept = ids if cut is None else ids[: cut + 1]
            text = tokenizer.decode(kept, skip_special_tokens=True).strip()
            results[batch[k // num_return_sequences]].append(Completion(text, kept, cut is not None))
    return results
