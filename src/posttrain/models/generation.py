"""Batched chat generation with HF models: left padding, KV cache, greedy or seeded sampling, stop at EOS.

Shared by on-policy preference pairs, evaluation and RL rollouts. Conversations are rendered with the tokenizer's
chat template (``add_generation_prompt=True``); prompts are sorted by length so each batch pads little.

By default (``compact=True``) a batch is decoded by this module's own KV-cached loop in which a row that has emitted
an end-of-turn token (or used up ``max_new_tokens``) leaves the batch: its input, attention mask and cache rows are
dropped, so the remaining steps compute only the replies still running instead of the whole batch until its longest
reply ends. The loop does what ``model.generate`` does -- the same prefill, position ids, cache, float32 logits,
argmax or HF's temperature/top-k/top-p warpers and ``torch.multinomial`` -- so greedy replies are the same tokens and
samples come from the same distribution (not the same draws: the batch shrinks). Models or generation configs the
loop does not cover (encoder-decoder, non-dynamic caches, logits processors such as a repetition penalty, prompt
learning adapters, models with their own input preparation) go through ``model.generate`` as with ``compact=False``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from posttrain.chat_templates.stops import stop_ids
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
    """Every id that ends a reply: the generation config's EOS ids and the tokenizer's EOS
    (:func:`posttrain.chat_templates.stops.stop_ids`)."""
    return stop_ids(tokenizer, getattr(model.generation_config, "eos_token_id", None))


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


#: generation-config fields whose non-default value means a logits processor or decoding mode the compact loop does
#: not implement (their default: None, or the value given here); such models go through ``model.generate``
_UNSUPPORTED_DEFAULTS = {
    "num_beams": 1,
    "num_beam_groups": 1,
    "penalty_alpha": None,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "min_length": 0,
    "min_new_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "remove_invalid_values": False,
    "exponential_decay_length_penalty": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "guidance_scale": None,
    "watermarking_config": None,
    "renormalize_logits": False,
    "prompt_lookup_num_tokens": None,
    "assistant_early_exit": None,
    "stop_strings": None,
    "prefill_chunk_size": None,
    "token_healing": False,
    "custom_generate": None,
}
#: the same when sampling: warpers besides temperature, top-k and top-p
_UNSUPPORTED_SAMPLING_DEFAULTS = {
    "typical_p": 1.0,
    "min_p": None,
    "top_h": None,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}


def _is_default(config, name: str, default) -> bool:
    value = getattr(config, name, None)
    return value is None or (not isinstance(value, (list, dict)) and value == default)


def _compact_forward_model(model, do_sample: bool):
    """The module whose forward the compact loop calls, or None where the model must use ``model.generate``."""
    forward_model = model
    if hasattr(model, "active_peft_config") and hasattr(model, "get_base_model"):  # a PEFT model
        try:
            if model.active_peft_config.is_prompt_learning:  # virtual tokens are added in peft's own forward
                return None
        except (AttributeError, ValueError):
            return None
        forward_model = model.get_base_model()  # LoRA-style adapters are in its layers: what peft's generate runs
    config = getattr(forward_model, "config", None)
    generation_config = getattr(forward_model, "generation_config", None)
    if config is None or generation_config is None or getattr(config, "is_encoder_decoder", False):
        return None
    try:
        from transformers import DynamicCache  # noqa: F401
        from transformers.generation.utils import GenerationMixin
    except ImportError:
        return None
    if not isinstance(forward_model, GenerationMixin):
        return None
    # models that prepare their own inputs (multimodal, rope deltas, remote code, ...) keep HF's loop
    if type(forward_model).prepare_inputs_for_generation is not GenerationMixin.prepare_inputs_for_generation:
        return None
    if getattr(forward_model, "is_remote_code", lambda: False)():
        return None
    supports_dynamic = getattr(forward_model, "_supports_default_dynamic_cache", None)
    if supports_dynamic is None or not supports_dynamic():
        return None
    if getattr(generation_config, "cache_implementation", None) not in (None, "dynamic"):
        return None
    import inspect

    parameters = inspect.signature(forward_model.forward).parameters
    if not {"input_ids", "attention_mask", "position_ids", "past_key_values"} <= set(parameters):
        return None
    checks = dict(_UNSUPPORTED_DEFAULTS, **(_UNSUPPORTED_SAMPLING_DEFAULTS if do_sample else {}))
    if not all(_is_default(generation_config, name, default) for name, default in checks.items()):
        return None
    return forward_model


def _new_dynamic_cache(forward_model):
    """The cache ``model.generate`` would create (``DynamicCache`` for the decoder's config), or None where one of its
    layers cannot drop batch rows."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    config = forward_model.config
    text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    cache = DynamicCache(config=text_config)
    if not hasattr(cache, "batch_select_indices") or not hasattr(cache, "batch_repeat_interleave"):
        return None
    if not all(isinstance(layer, DynamicLayer) for layer in getattr(cache, "layers", [None])):
        return None
    return cache


def _sampling_warpers(forward_model, temperature: float, top_p: float) -> list:
    """HF's warpers in HF's order for ``do_sample=True``: temperature, then top-k (the generation config's, HF's
    default 50 where unset), then top-p; each only where it changes the distribution, as ``model.generate`` adds it."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = []
    if temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    top_k = getattr(forward_model.generation_config, "top_k", None)
    top_k = 50 if top_k is None else top_k
    if top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return warpers


def _compact_decode(
    forward_model,
    cache,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    stops: Sequence[int],
    do_sample: bool,
    warpers: list,
    num_return_sequences: int,
) -> list[list[int]]:
    """Decode a left-padded batch with a KV cache, dropping each row from the batch once it emits a stop id or has
    ``max_new_tokens`` tokens. Returns the new ids of each row (``num_return_sequences`` consecutive rows per prompt),
    ending at the first stop id. Every forward gets what ``model.generate`` gives it: position ids from the attention
    mask (no mask at all when the batch has no padding), ``logits_to_keep=1`` where the model takes it."""
    import inspect

    device = input_ids.device
    stop_set = set(stops)
    if bool((attention_mask == 1).all()):
        mask = None
        positions = torch.arange(input_ids.shape[1], device=device).unsqueeze(0).expand(input_ids.shape[0], -1)
    else:
        mask = attention_mask
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    extra = {}
    if "logits_to_keep" in inspect.signature(forward_model.forward).parameters:
        extra["logits_to_keep"] = 1

    def forward(ids: torch.Tensor, mask: torch.Tensor | None, position_ids: torch.Tensor, cache):
        """One forward with the cache: the last position's float32 logits and the cache."""
        out = forward_model(
            input_ids=ids.contiguous(),
            attention_mask=mask,
            position_ids=position_ids.contiguous(),
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
            **extra,
        )
        return out.logits[:, -1].to(copy=True, dtype=torch.float32), out.past_key_values

    logits, cache = forward(input_ids, mask, positions, cache)
    last_position = positions[:, -1:]
    if num_return_sequences > 1:  # one prefill per prompt, its cache copied for each sequence
        logits = logits.repeat_interleave(num_return_sequences, dim=0)
        cache.batch_repeat_interleave(num_return_sequences)
        last_position = last_position.repeat_interleave(num_return_sequences, dim=0)
        mask = None if mask is None else mask.repeat_interleave(num_return_sequences, dim=0)
    generated: list[list[int]] = [[] for _ in range(logits.shape[0])]
    active = list(range(logits.shape[0]))  # the row of ``generated`` each batch row writes to
    while True:
        if do_sample:
            scores = logits
            for warper in warpers:
                scores = warper(None, scores)
            next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            next_tokens = torch.argmax(logits, dim=-1)
        keep = []
        for row, token in enumerate(next_tokens.tolist()):
            ids = generated[active[row]]
            ids.append(token)
            if token not in stop_set and len(ids) < max_new_tokens:
                keep.append(row)
        if not keep:
            return generated
        if len(keep) < len(active):  # finished rows leave the batch: inputs, mask, positions and cache
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            next_tokens = next_tokens[index]
            last_position = last_position[index]
            mask = None if mask is None else mask[index]
            active = [active[row] for row in keep]
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        last_position = last_position + 1
        logits, cache = forward(next_tokens[:, None], mask, last_position, cache)


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
    compact: bool = True,
) -> list[list[Completion]]:
    """Generate ``num_return_sequences`` replies for each conversation (in input order).

    ``tools`` (one tool list or None per conversation) and ``template_kwargs`` (e.g. ``{"enable_thinking": False}``)
    go to the chat template: ``apply_chat_template(conversation, tools=..., **template_kwargs)``.

    ``compact`` (default): decode with this module's loop in which finished replies leave the batch (greedy: the same
    tokens as ``model.generate``; sampling: the same distribution, other draws); models it does not cover fall back to
    ``model.generate``. ``compact=False``: always ``model.generate`` on the whole batch (as PPO rollouts, whose seeded
    samples stay those of earlier runs).
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
    forward_model = _compact_forward_model(model, do_sample) if compact and max_new_tokens >= 1 and stops else None
    warpers = _sampling_warpers(forward_model, temperature, top_p) if forward_model is not None and do_sample else []
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
        cache = _new_dynamic_cache(forward_model) if forward_model is not None else None
        if cache is not None:
            new_tokens = _compact_decode(
                forward_model,
                cache,
                input_ids.to(device),
                attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                stops=stops,
                do_sample=do_sample,
                warpers=warpers,
                num_return_sequences=num_return_sequences,
            )
        else:
            sampling = (
                dict(do_sample=True, temperature=temperature, top_p=top_p) if do_sample else dict(do_sample=False)
            )
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
