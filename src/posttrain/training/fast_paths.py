"""Fast paths for training: the same computation as transformers + peft, without the work the hardware does not need.

Profiling a QLoRA SFT step of SmolLM2-135M on a 2-core AVX2 CPU (2 x 512 tokens, fp32; ``benchmarks/README.md``)
found three costs that are not model FLOPs:

* ``varlen_attention`` -- **packed rows attend per sequence.** Padding-free packing (TRL's ``bfd``) flattens a batch
  into one row with ``position_ids`` restarting at each sequence. Without FlashAttention's variable-length kernels,
  transformers turns that into a block-diagonal mask over the whole row, and SDPA computes every query against every
  key of the row (1024 x 1024 for two packed rows of 512) and masks most of it away. Here each sequence runs as its
  own causal SDPA call (``is_causal=True``: the kernel skips the upper triangle), which is the same result for a
  fraction of the work -- what ``flash_attn_varlen_func`` does on a GPU. Used for models whose layers all attend
  fully (no sliding windows or soft-capping, which the per-sequence call would drop); any other input (padding, a KV
  cache, one sequence) goes to transformers' own SDPA path unchanged.
* ``fused_lora`` -- **one fused add per adapted layer.** peft computes ``base(x) + lora_B(lora_A(dropout(x))) *
  scaling`` as a defensive copy of the base output (4-bit layers), a scaled copy of the LoRA output and an add: three
  full-size temporaries per layer, on a CPU as costly as the adapter's own matmuls. Here the LoRA output is added
  into the base output by one ``addmm`` (``beta=1, alpha=scaling``).
* ``shared_dropout`` -- **one LoRA dropout mask per input.** peft draws a fresh Bernoulli mask over the input of every
  adapted layer (``nn.Dropout``), so q/k/v (and gate/up) each draw and store their own copy of the same hidden
  states; on a CPU drawing those masks cost more than the matmuls they feed. Here layers that read the same tensor
  share one dropped copy (as peft does for a model with a fused ``qkv_proj``), drawn from 16-bit uniform integers
  (the drop probability is rounded to a multiple of 1/65536) and applied with one multiply. The regulariser is the
  same Bernoulli dropout of the adapter's input with the same ``p``; masks are correlated across q/k/v.
* ``compact_lm_head`` -- **TRL's fused LM head scores labelled positions only, on a CPU too.** DPO, GRPO and RLOO
  get per-token log-probs from TRL's chunked head (``add_fused_lm_head``), which projects only the positions with a
  label on CUDA/XPU but every position elsewhere (to keep tile shapes fixed for compilers such as Neuron's); prompt
  positions carry no label, so on a CPU most of that vocabulary projection is thrown away. Here the compact choice
  is made on a CPU as well (posttrain's SFT already asks for logits at trained positions only).

Every fast path is exact for the forward pass and its gradients (tests compare logits and gradients against the
stock path; ``shared_dropout`` compares with masks fixed) and can be switched off with ``fast_paths`` in a stage
config (``none``, or a comma list of the names above). :func:`apply` patches one model in place and reports what it
changed.
"""

from __future__ import annotations

import types

import torch

NAMES = ("varlen_attention", "fused_lora", "shared_dropout", "compact_lm_head")
ATTENTION = "posttrain_varlen_sdpa"


def parse(value: str) -> tuple[str, ...]:
    """``all`` | ``none`` | a comma list of :data:`NAMES` -> the chosen names; anything else is a ValueError."""
    text = (value or "").strip().lower()
    if text in ("all", "auto", ""):
        return NAMES
    if text == "none":
        return ()
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in chosen if name not in NAMES]
    if unknown:
        raise ValueError(f"unknown fast path(s) {', '.join(unknown)}: choose all, none or from {', '.join(NAMES)}")
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# varlen_attention


def _segments(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """``(start, end)`` of each packed sequence of a one-row batch: a sequence starts where the position does not
    continue the previous one. Computed once per forward (every layer receives the same ``position_ids`` tensor)."""
    cached = _segments.last
    if cached is not None and cached[0] is position_ids:
        return cached[1]
    pos = position_ids[0]
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[1:] = pos[1:] != pos[:-1] + 1
    edges = starts.nonzero().flatten().tolist() + [pos.numel()]
    bounds = list(zip(edges[:-1], edges[1:]))
    _segments.last = (position_ids, bounds)
    return bounds


_segments.last = None


# attention variants a per-sequence causal SDPA call would drop: those inputs go to transformers' own path
UNSUPPORTED_ATTENTION_KWARGS = ("sliding_window", "softcap", "s_aux", "sinks", "position_bias", "head_mask")


def varlen_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kw):
    """Causal SDPA per packed sequence of a padding-free row; transformers' SDPA for everything else."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    position_ids = kw.get("position_ids")
    packed = (
        attention_mask is None
        and position_ids is not None
        and query.shape[0] == 1
        and position_ids.shape[0] == 1
        and query.shape[2] == key.shape[2] == position_ids.shape[-1]
        and getattr(module, "is_causal", True)
        and is_causal is not False
        and not any(kw.get(key) is not None for key in UNSUPPORTED_ATTENTION_KWARGS)
    )
    bounds = _segments(position_ids) if packed else None
    if not bounds or len(bounds) < 2:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kw
        )
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    outputs = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=dropout, scale=scaling, is_causal=e - s > 1
        )
        for s, e in bounds
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def varlen_sdpa_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, attention_mask=None,
                     **kwargs):  # fmt: skip
    """No mask for a one-row batch without padding or cache (the attention function splits it by ``position_ids``);
    transformers' SDPA mask otherwise."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    no_padding = attention_mask is None or bool(attention_mask[:, -kv_length:].all())
    if batch_size == 1 and q_length == kv_length and q_offset == 0 and no_padding:
        return None
    return sdpa_mask(
        batch_size,
        q_length,
        kv_length,
        q_offset,
        kv_offset,
        mask_function or causal_mask_function,
        attention_mask,
        **kwargs,
    )


def varlen_supported(config) -> str | None:
    """None when every layer of the model attends fully and causally over its sequence; else why not."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
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
    return None


def install_varlen_attention(model) -> str | None:
    """Register and select :func:`varlen_sdpa_attention`; returns why not when the model does not qualify."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    reason = varlen_supported(base.config)
    if reason:
        return reason
    AttentionInterface.register(ATTENTION, varlen_sdpa_attention)
    AttentionMaskInterface.register(ATTENTION, varlen_sdpa_mask)
    base.set_attn_implementation(ATTENTION)
    return None


def uninstall_varlen_attention(model) -> None:
    """Back to transformers' SDPA (before a model is saved or used elsewhere)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    if getattr(config, "_attn_implementation", None) == ATTENTION:
        base.set_attn_implementation("sdpa")


# ---------------------------------------------------------------------------------------------------------------
# fused_lora and shared_dropout


class _DropoutMask(torch.autograd.Function):
    """``x * keep * scale`` with the mask kept as bytes for the backward pass."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.mul(x, keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.mul(grad, keep).mul_(ctx.scale), None, None


def keep_mask(shape, p: float, device) -> torch.Tensor:
    """Bernoulli(1 - p) keep-mask from 16-bit uniform integers: three 16-bit draws per 64-bit random word (the top
    word has a zero sign bit and is not used); ``p`` is rounded to a multiple of 1/65536."""
    numel = 1
    for size in shape:
        numel *= size
    words = torch.empty((numel + 2) // 3, dtype=torch.int64, device=device).random_()
    draws = words.view(torch.int16).view(-1, 4)[:, :3].reshape(-1)[:numel].view(shape)
    threshold = round(p * 65536) - 32768  # int16 draws are uniform on [-32768, 32767]
    return draws >= threshold


class SharedDropout(torch.nn.Module):
    """LoRA dropout that returns the same dropped tensor to every layer reading the same input in a row (q/k/v,
    gate/up), drawing one mask per input."""

    def __init__(self, p: float, shared: dict):
        super().__init__()
        self.p = p
        self._shared = shared  # one dict per model: the last input and its dropped copy

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        last = self._shared.get("last")
        if last is not None and last[0] is x and last[1] == self.p and last[2] == x._version:
            return last[3]
        keep = keep_mask(x.shape, self.p, x.device)
        out = _DropoutMask.apply(x, keep.to(x.dtype), 1.0 / (1.0 - self.p))
        self._shared["last"] = (x, self.p, x._version, out)
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}, shared with layers reading the same input"


def fused_lora_forward(self, x, *args, **kwargs):
    """peft's LoRA ``Linear``/``Linear4bit`` forward for one plain adapter, as ``addmm(base(x), h, B^T, alpha=s)``."""
    adapters = self.active_adapters
    name = adapters[0] if len(adapters) == 1 else None
    if (
        args
        or kwargs
        or name is None
        or self.disable_adapters
        or self.merged
        or name not in self.lora_A
        or name in getattr(self, "lora_variant", {})
        or self.lora_B[name].bias is not None
        or torch.is_autocast_enabled()
    ):
        return self._posttrain_stock_forward(x, *args, **kwargs)
    lora_A, lora_B = self.lora_A[name], self.lora_B[name]
    if x.dtype != lora_A.weight.dtype:
        return self._posttrain_stock_forward(x, *args, **kwargs)
    result = self.base_layer(x)
    hidden = lora_A(self.lora_dropout[name](x))
    if result.dtype != lora_B.weight.dtype:  # peft's own sum, without running the base layer again
        return result + (lora_B(hidden) * self.scaling[name]).to(result.dtype)
    out = torch.addmm(
        result.reshape(-1, result.shape[-1]),
        hidden.reshape(-1, hidden.shape[-1]),
        lora_B.weight.t(),
        alpha=self.scaling[name],
    )
    return out.view(result.shape)


def lora_layers(model):
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer) and hasattr(m, "base_layer") and
            isinstance(getattr(m, "lora_A", None), torch.nn.ModuleDict) and
            type(m).__name__ in ("Linear", "Linear4bit", "Linear8bitLt")]  # fmt: skip


def parameters_sharded() -> str | None:
    """Why the fused LoRA forward must not run, or None: it reads ``lora_B.weight`` directly, which DeepSpeed ZeRO-3
    and FSDP only gather around a module's own forward."""
    import os

    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        return "DeepSpeed ZeRO-3 shards the LoRA weights (peft's forward gathers them)"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "FSDP shards the LoRA weights (peft's forward gathers them)"
    return None


def install_fused_lora(model) -> int:
    count = 0
    for layer in lora_layers(model):
        if hasattr(layer, "_posttrain_stock_forward"):
            continue
        layer._posttrain_stock_forward = layer.forward
        layer.forward = types.MethodType(fused_lora_forward, layer)
        count += 1
    return count


def install_shared_dropout(model) -> int:
    shared: dict = {}
    count = 0
    for layer in lora_layers(model):
        for name, dropout in list(layer.lora_dropout.items()):
            if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                layer.lora_dropout[name] = SharedDropout(dropout.p, shared)
                count += 1
    return count


# ---------------------------------------------------------------------------------------------------------------
# compact_lm_head


def install_compact_lm_head() -> str | None:
    """Make TRL's fused LM head compact on CPUs (process-wide); returns why not when this TRL has no such switch."""
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover - trl is a dependency
        return "TRL is not installed"
    stock = getattr(trl_utils, "_use_triton", None)
    if stock is None or not callable(stock):
        return "this TRL version's fused LM head has no compact switch"
    if getattr(stock, "posttrain_compact", False):
        return None

    def compact(device) -> bool:
        return torch.device(device).type == "cpu" or stock(device)

    compact.posttrain_compact = True
    compact.stock = stock
    trl_utils._use_triton = compact
    return None


def uninstall_compact_lm_head() -> None:
    import trl.trainer.utils as trl_utils

    current = getattr(trl_utils, "_use_triton", None)
    if getattr(current, "posttrain_compact", False):
        trl_utils._use_triton = current.stock


def apply(model, chosen: tuple[str, ...] = NAMES, *, padding_free: bool = True) -> dict[str, str]:
    """Install the chosen fast paths on ``model`` (a peft model or a plain one); returns ``{name: what it did}``,
    including why a chosen path was not used."""
    done: dict[str, str] = {}
    if "varlen_attention" in chosen:
        if not padding_free:
            done["varlen_attention"] = "off: batches are padded, not packed padding-free"
        else:
            reason = install_varlen_attention(model)
            done["varlen_attention"] = f"off: {reason}" if reason else "packed sequences attend one by one (causal)"
    if "fused_lora" in chosen:
        sharded = parameters_sharded()
        count = 0 if sharded else install_fused_lora(model)
        done["fused_lora"] = (
            f"off: {sharded}"
            if sharded
            else f"{count} adapted layers add LoRA by one addmm"
            if count
            else "off: no LoRA layers"
        )
    if "shared_dropout" in chosen:
        count = install_shared_dropout(model)
        done["shared_dropout"] = (
            f"{count} LoRA dropouts share one mask per input" if count else "off: LoRA dropout is 0"
        )
    if "compact_lm_head" in chosen:
        reason = install_compact_lm_head()
        done["compact_lm_head"] = f"off: {reason}" if reason else "TRL's fused head scores labelled positions only"
    return done
