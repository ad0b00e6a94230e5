"""``shared_dropout`` (opt-in): one LoRA dropout mask per input -- **a different regulariser from peft's**.

peft draws a fresh Bernoulli mask over the input of every adapted layer (``nn.Dropout``), so q/k/v (and gate/up) each
draw and store their own copy of the same hidden states; on a CPU drawing those masks cost more than the matmuls they
feed (1.4 s of a 2 x 512-token step on an AVX2 CPU, ``benchmarks/README.md``). Here layers that read the same tensor
share one dropped copy (as peft does for a model with a fused ``qkv_proj``), drawn from 16-bit uniform integers and
applied with one multiply.

What differs from peft's dropout, and why ``auto`` never chooses it:

* q/k/v (and gate/up) see the **same** mask instead of independent ones;
* the drop probability is rounded to a multiple of 1/65536;
* the random stream differs from ``torch.nn.Dropout``'s, so runs are not reproducible against stock.

With a mask fixed, the dropped tensor and its gradient are exactly ``x * keep / (1 - p)``, what ``nn.Dropout``
computes (``tests/training/test_fast_paths.py``). It is a reasonable regulariser (the same marginal keep rate on each
element) but not stock training: ask for it by name (``fast_paths: shared_dropout`` or ``auto,shared_dropout``).

Verified with peft 0.21 (replaces the ``nn.Dropout`` entries of ``lora_dropout``).
"""

from __future__ import annotations

import torch

from posttrain.training.fast_paths.base import Calls, Context, FastPath
from posttrain.training.fast_paths.fused_lora import lora_layers


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


class SharedDropoutModule(torch.nn.Module):
    """LoRA dropout that returns the same dropped tensor to every layer reading the same input in a row (q/k/v,
    gate/up), drawing one mask per input."""

    def __init__(self, p: float, shared: dict, calls: Calls):
        super().__init__()
        self.p = p
        self._shared = shared  # one dict per model: the last input and its dropped copy
        self._calls = calls

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        last = self._shared.get("last")
        if last is not None and last[0] is x and last[1] == self.p and last[2] == x._version:
            self._calls.fast += 1
            return last[3]
        keep = keep_mask(x.shape, self.p, x.device)
        out = _DropoutMask.apply(x, keep.to(x.dtype), 1.0 / (1.0 - self.p))
        self._shared["last"] = (x, self.p, x._version, out)
        self._calls.fell_back("new input: mask drawn")
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}, shared with layers reading the same input"


class SharedDropout(FastPath):
    name = "shared_dropout"
    summary = "LoRA dropouts share one mask per input (a different regulariser from peft's)"
    exact = False
    auto_devices = frozenset()
    verified = {"peft": "==0.21.*", "torch": ">=2.4"}

    def supported(self, model, ctx: Context) -> str | None:
        if not any(
            isinstance(d, torch.nn.Dropout) and d.p > 0
            for layer in lora_layers(model)
            for d in layer.lora_dropout.values()
        ):
            return "LoRA dropout is 0"
        return None

    def install(self, model, ctx: Context):
        shared: dict = {}
        replaced = []
        for layer in lora_layers(model):
            for name, dropout in list(layer.lora_dropout.items()):
                if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                    layer.lora_dropout[name] = SharedDropoutModule(dropout.p, shared, self.calls)
                    replaced.append((layer, name, dropout))

        def undo() -> None:
            for layer, name, dropout in replaced:
                layer.lora_dropout[name] = dropout
            shared.clear()

        self.calls.reset()
        return undo
