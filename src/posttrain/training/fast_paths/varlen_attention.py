"""``varlen_attention``: packed rows attend per sequence.

Padding-free packing (TRL's ``bfd``) flattens a batch into one row with ``position_ids`` restarting at each sequence.
Without FlashAttention's variable-length kernels, transformers turns that into a block-diagonal mask over the whole
row, and SDPA computes every query against every key of the row (1024 x 1024 for two packed rows of 512) and masks
most of it away. Here each sequence runs as its own causal SDPA call (``is_causal=True``: the kernel skips the upper
triangle): the same result for a fraction of the work, what ``flash_attn_varlen_func`` does on a GPU.

How it stays exact, and fails closed:

* The mask function drops transformers' mask only when transformers itself built a *packed causal* mask
  (``packed_sequence_compatibility_function`` around ``causal_mask_function``) for a one-row batch without padding,
  cache or offsets. Every other mask (sliding windows, padding, image-token overlays, caches) is transformers' own.
* The attention function splits the row where ``position_ids`` restart, exactly as transformers'
  ``find_packed_sequence_indices`` does. If a mask was dropped and the model did not pass ``position_ids`` to its
  attention function, or passed an attention variant a plain causal SDPA call would drop (soft-capping, sinks, a
  window), it raises instead of attending across sequence boundaries.
* At install a probe runs the real model on a packed row of two short sequences and on the second sequence alone; the
  path stays off unless the packed row took the per-sequence path in attention and gave the second sequence's
  logits. A model that does not route ``position_ids`` to attention is refused there, before training.
* Models with sliding windows, soft-capping or attention dropout (whose random masks would differ from stock) are
  refused from their config.

Verified with transformers 5.23 (the mask function reads the structure of its packed-mask closure, and calls the
private ``sdpa_attention_forward``/``repeat_kv``).
"""

from __future__ import annotations

import torch

from posttrain.training.fast_paths.base import Context, FastPath, Refused, base_model

ATTENTION = "posttrain_varlen_sdpa"
# attention variants a per-sequence causal SDPA call would drop
UNSUPPORTED_ATTENTION_KWARGS = ("sliding_window", "softcap", "s_aux", "sinks", "position_bias", "head_mask")


class _Dropped:
    """The length of the last packed row whose mask was dropped (one forward's layers all see the same row)."""

    length: int | None = None


def _segments(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """``(start, end)`` of each packed sequence of a one-row batch: a sequence starts where the position does not
    continue the previous one (transformers' ``find_packed_sequence_indices``). Cached per ``position_ids`` tensor
    (every layer of a forward receives the same one)."""
    cached = _LAST_SEGMENTS.get("value")
    if cached is not None and cached[0] is position_ids:
        return cached[1]
    pos = position_ids[0]
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[1:] = pos[1:] != pos[:-1] + 1
    edges = starts.nonzero().flatten().tolist() + [pos.numel()]
    bounds = list(zip(edges[:-1], edges[1:]))
    _LAST_SEGMENTS["value"] = (position_ids, bounds)
    return bounds


_LAST_SEGMENTS: dict = {}


def _closure(fn) -> dict:
    code = getattr(fn, "__code__", None)
    if code is None or not fn.__closure__:
        return {}
    return {name: cell.cell_contents for name, cell in zip(code.co_freevars, fn.__closure__)}


def is_packed_causal(mask_function) -> bool:
    """True for the mask function transformers builds for a packed causal row: ``and_masks(packed sequence ids,
    causal mask on remapped positions)`` (transformers 5.23 ``packed_sequence_compatibility_function``)."""
    from transformers.masking_utils import causal_mask_function

    if getattr(mask_function, "__qualname__", "") != "and_masks.<locals>.and_mask":
        return False
    parts = _closure(mask_function).get("mask_functions", ())
    if len(parts) != 2:
        return False
    segments, remap = parts
    return (
        getattr(segments, "__qualname__", "") == "packed_sequence_mask_function.<locals>.inner_mask"
        and getattr(remap, "__qualname__", "") == "remap_positions_for_packed_sequence.<locals>.inner_mask"
        and _closure(remap).get("mask_function") is causal_mask_function
    )


def varlen_sdpa_mask(*args, **kwargs):
    """No mask for a packed causal one-row batch (the attention function splits it); transformers' SDPA mask for
    everything else."""
    from transformers.masking_utils import sdpa_mask

    q_length, kv_length = kwargs.get("q_length"), kwargs.get("kv_length")
    if (
        not args
        and kwargs.get("batch_size") == 1
        and kwargs.get("attention_mask") is None
        and q_length == kv_length
        and not kwargs.get("q_offset")
        and not kwargs.get("kv_offset")
        and is_packed_causal(kwargs.get("mask_function"))
    ):
        _Dropped.length = q_length
        return None
    _Dropped.length = None
    return sdpa_mask(*args, **kwargs)


class VarlenAttention(FastPath):
    name = "varlen_attention"
    summary = "packed sequences attend one by one (causal SDPA per sequence)"
    auto_devices = frozenset({"cpu"})  # on CUDA, FlashAttention's varlen kernel does this natively
    verified = {"transformers": "==5.23.*", "torch": ">=2.4"}

    def supported(self, model, ctx: Context) -> str | None:
        if not ctx.padding_free:
            return "batches are padded, not packed padding-free"
        if ctx.sharded:
            return f"{ctx.sharded}; the install probe needs whole parameters"
        return config_reason(base_model(model).config)

    def install(self, model, ctx: Context):
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        base = base_model(model)
        previous = text_config(base.config)._attn_implementation
        AttentionInterface.register(ATTENTION, self.attention)
        AttentionMaskInterface.register(ATTENTION, varlen_sdpa_mask)
        base.set_attn_implementation(ATTENTION)

        def undo() -> None:
            if text_config(base.config)._attn_implementation == ATTENTION:
                base.set_attn_implementation(previous)

        reason = self.probe(model)
        if reason:
            undo()
            raise Refused(reason)
        self.calls.reset()
        return undo

    def attention(self, module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kw):
        """Causal SDPA per packed sequence of a padding-free row; transformers' SDPA for everything else."""
        from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

        position_ids = kw.get("position_ids")
        one_row = attention_mask is None and query.shape[0] == 1 and query.shape[2] == key.shape[2]
        dropped = one_row and _Dropped.length == query.shape[2]
        bounds = None
        if one_row and position_ids is not None and position_ids.dim() == 2 and position_ids.shape[0] == 1:
            bounds = _segments(position_ids)
        if dropped and bounds is None:
            raise RuntimeError(
                f"varlen_attention: {type(module).__name__} received no position_ids for a packed row whose mask was "
                "dropped; run with fast_paths: none"
            )
        if not bounds or len(bounds) < 2:
            self.calls.fell_back("one sequence" if one_row else "padded or cached input")
            return sdpa_attention_forward(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kw
            )
        dropping = [name for name in UNSUPPORTED_ATTENTION_KWARGS if kw.get(name) is not None]
        if dropping or not getattr(module, "is_causal", True) or is_causal is False:
            raise RuntimeError(
                f"varlen_attention: {type(module).__name__} asks for {', '.join(dropping) or 'non-causal attention'}, "
                "which a per-sequence causal SDPA call would drop; run with fast_paths: none"
            )
        self.calls.fast += 1
        groups = getattr(module, "num_key_value_groups", 1)
        if groups > 1:
            key, value = repeat_kv(key, groups), repeat_kv(value, groups)
        outputs = [
            torch.nn.functional.scaled_dot_product_attention(
                query[:, :, s:e],
                key[:, :, s:e],
                value[:, :, s:e],
                dropout_p=dropout,
                scale=scaling,
                is_causal=e - s > 1,
            )
            for s, e in bounds
        ]
        return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None

    def probe(self, model, lengths: tuple[int, int] = (5, 4)) -> str | None:
        """None when a packed row of two sequences takes the per-sequence path and gives the second sequence the
        logits it has alone; else why not."""
        base = base_model(model)
        first, second = lengths
        try:
            device = next(p.device for p in model.parameters())
            vocab = text_config(base.config).vocab_size
            ids = torch.randint(0, vocab, (1, first + second), generator=torch.Generator().manual_seed(0)).to(device)
            positions = torch.cat([torch.arange(first), torch.arange(second)]).unsqueeze(0).to(device)
            # dropout off for the probe, the rest of the model left in its mode (a 4-bit layer in eval mode may
            # repack its weights for inference)
            dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.training]
            for module in dropouts:
                module.eval()
            fast_before = self.calls.fast
            try:
                with torch.no_grad():
                    packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits.float()
                    fast_calls = self.calls.fast - fast_before
                    alone = model(input_ids=ids[:, first:], use_cache=False).logits.float()
            finally:
                for module in dropouts:
                    module.train()
        except Exception as err:  # the probe proves the path or turns it off; it never stops training itself
            return f"the packed-row probe failed on {type(base).__name__}: {err}"
        if packed.dim() != 3 or packed.shape[1] != first + second:
            return f"{type(base).__name__} gives no per-token logits to compare packed and separate sequences"
        if fast_calls == 0:
            return (
                f"{type(base).__name__} does not route packed position_ids to its attention function, so sequence "
                "boundaries cannot be proven to reach attention"
            )
        diff = (packed[:, first:] - alone).abs().max().item()
        tolerance = (1e-4 if packed.dtype == torch.float32 and _dtype(model) == torch.float32 else 2e-2) * max(
            1.0, alone.abs().max().item()
        )
        if not diff <= tolerance:
            return f"a packed sequence's logits differ by {diff:.3g} from the sequence run alone (probe)"
        return None


def _dtype(model) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def config_reason(config) -> str | None:
    """None when every layer of the model attends fully and causally with SDPA and no attention dropout; else why
    not."""
    text = text_config(config)
    if getattr(text, "_attn_implementation", None) not in ("sdpa", ATTENTION):
        return f"attention is {getattr(text, '_attn_implementation', None)!r}, not sdpa"
    layer_types = getattr(text, "layer_types", None) or ()
    if any(kind != "full_attention" for kind in layer_types):
        return "the model has sliding-window or other non-full attention layers"
    window = getattr(text, "sliding_window", None)
    if window and getattr(text, "use_sliding_window", True):
        return f"the model uses a {window}-token sliding window"
    if getattr(text, "attn_logit_softcapping", None):
        return "the model soft-caps attention logits"
    if float(getattr(text, "attention_dropout", 0.0) or 0.0) > 0:
        return "attention dropout > 0 (per-sequence calls would draw other random masks than stock)"
    return None
