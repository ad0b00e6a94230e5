"""``fused_lora``: one fused add per adapted layer.

peft computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling`` as a defensive copy of the base output (4-bit
layers), a scaled copy of the LoRA output and an add: three full-size temporaries per layer, on a CPU as costly as the
adapter's own matmuls. Here the LoRA output is added into the base output by one ``addmm`` (``beta=1,
alpha=scaling``): the same sum in fp32 (equal to peft's within fp32 rounding; the tests compare per-step losses).

The fused forward runs only where it is that computation: one plain LoRA adapter (no DoRA or other variant, no
``lora_B`` bias), active, unmerged, **fp32** input and adapter, and **no autocast** on the input's device (in
bf16, or under autocast, one rounding of the fused sum would differ from peft's three separately rounded ops by more
than stock bf16 differs from itself). Every other call
goes to peft's own forward and is counted as a fallback, so the end-of-training report says how many calls were
fused. It stays off when parameters are sharded (DeepSpeed ZeRO-3, FSDP): it reads ``lora_B.weight`` directly, which
those engines gather only around a module's own forward.

Verified with peft 0.21 (``Linear``, ``Linear4bit`` and ``Linear8bitLt`` LoRA layers, matched by class, not name).
"""

from __future__ import annotations

import types

import torch

from posttrain.training.fast_paths.base import Context, FastPath, autocast_on


def lora_layers(model) -> list:
    """peft LoRA layers of the classes the fused forward was verified on."""
    from peft.tuners.lora import Linear, LoraLayer

    classes = [Linear]
    try:
        from peft.tuners.lora.bnb import Linear4bit, Linear8bitLt

        classes += [Linear4bit, Linear8bitLt]
    except ImportError:  # bitsandbytes missing: no quantized layers either
        pass
    return [
        m
        for m in model.modules()
        if type(m) in classes
        and isinstance(m, LoraLayer)
        and isinstance(getattr(m, "lora_A", None), torch.nn.ModuleDict)
    ]


class FusedLora(FastPath):
    name = "fused_lora"
    summary = "LoRA added by one addmm per adapted layer"
    auto_devices = frozenset({"cpu"})
    verified = {"peft": "==0.21.*", "bitsandbytes": ">=0.45,<0.51", "torch": ">=2.4"}

    def supported(self, model, ctx: Context) -> str | None:
        if ctx.sharded:
            return f"{ctx.sharded} (peft's own forward gathers them)"
        if not lora_layers(model):
            return "no LoRA layers"
        return None

    def install(self, model, ctx: Context):
        calls = self.calls
        patched = []
        for layer in lora_layers(model):
            if "forward" in layer.__dict__:  # patched already (or by someone else): leave it alone
                continue
            stock = layer.forward
            layer.forward = types.MethodType(_fused_forward(stock, calls), layer)
            patched.append(layer)

        def undo() -> None:
            for layer in patched:
                layer.__dict__.pop("forward", None)

        calls.reset()
        return undo


def _fallback_reason(layer, x, args, kwargs) -> str | None:
    adapters = layer.active_adapters
    if args or kwargs:
        return "extra forward arguments"
    if len(adapters) != 1:
        return "not exactly one active adapter"
    name = adapters[0]
    if layer.disable_adapters or layer.merged:
        return "adapter disabled or merged"
    if name not in layer.lora_A:
        return "adapter not on this layer"
    if name in getattr(layer, "lora_variant", {}) or layer.lora_B[name].bias is not None:
        return "LoRA variant or bias"
    if autocast_on(x.device.type):
        return "autocast"
    if x.dtype != torch.float32 or layer.lora_A[name].weight.dtype != torch.float32:
        return "not fp32"  # in bf16/fp16 one rounding of the fused sum is not peft's three
    return None


def _fused_forward(stock, calls):
    def forward(self, x, *args, **kwargs):
        """peft's LoRA forward for one plain adapter, as ``addmm(base(x), h, B^T, alpha=scaling)``."""
        reason = _fallback_reason(self, x, args, kwargs)
        if reason:
            calls.fell_back(reason)
            return stock(x, *args, **kwargs)
        name = self.active_adapters[0]
        lora_A, lora_B = self.lora_A[name], self.lora_B[name]
        result = self.base_layer(x)
        hidden = lora_A(self.lora_dropout[name](x))
        if result.dtype != lora_B.weight.dtype:  # peft's own sum, without running the base layer again
            calls.fell_back("base output dtype differs from the adapter's")
            return result + (lora_B(hidden) * self.scaling[name]).to(result.dtype)
        calls.fast += 1
        out = torch.addmm(
            result.reshape(-1, result.shape[-1]),
            hidden.reshape(-1, hidden.shape[-1]),
            lora_B.weight.t(),
            alpha=self.scaling[name],
        )
        return out.view(result.shape)

    return forward
