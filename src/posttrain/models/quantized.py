"""4-bit layers that train correctly after an inference pass on a CPU.

bitsandbytes 0.50 repacks a ``Linear4bit`` weight into a CPU inference layout the first time the layer runs in eval
mode without gradients on a CPU with AVX512-BF16 (``Linear4bit.forward``: ``support_avx512bf16_for_cpu and not
self.training``), and keeps the repacked weight. A later training-mode forward then computes a different function
(logits 0.095 apart on the tiny test model: ``tests/models/test_quantized.py``). Every stage that generates or
evaluates between training steps (PPO's rollouts, a held-out probe, a guard's evaluation) would train a model other
than the one loaded, and only on AVX512-BF16 CPUs. Training models keep the training layout: the layer's own switch
is turned off (an attribute bitsandbytes reads, not a patch of its code).
"""

from __future__ import annotations


def keep_4bit_weights_for_training(model) -> int:
    """Turn off bitsandbytes' CPU inference repacking on every 4-bit layer of ``model``; returns how many layers."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:  # no bitsandbytes: no 4-bit layers
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count
