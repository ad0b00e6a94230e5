"""Training precision: bf16 or fp32, decided once (hardware, the ``POSTTRAIN_PRECISION`` switch, or ``bf16:``) and
applied to every part of the model that trains.

* **Hardware** (default): bf16 on GPUs with bf16 and on CPUs that execute it natively (AVX512-BF16 or AMX), fp32
  elsewhere. On an AVX2-only CPU bf16 is emulated and several times slower than fp32.
* **Switch**: ``POSTTRAIN_PRECISION=bf16|fp32|auto`` (environment variable) forces the choice for every stage, so
  the fp32 path can be exercised on a bf16 machine and the bf16 path on an fp32 one (the test suite runs the training
  stages both ways). A stage config's explicit ``bf16: true|false`` still wins over it.
* **One dtype for what trains**: the LoRA adapter, trained heads (a reward model's ``score``) and trained token rows
  are kept in the compute dtype. TRL casts every trainable parameter of a quantized model to bf16 whatever the
  compute dtype (QLoRA paper's recommendation); under fp32 compute that leaves a reward model's ``score`` head a bf16
  ``Linear`` fed fp32 hidden states, which fails in the first forward, and runs every LoRA matmul in emulated bf16 on
  CPUs without it. :func:`match_trainable_dtype` applies the decided dtype after the trainer is built, before its
  optimizer is.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from posttrain.errors import ConfigError
from posttrain.log import get_logger

logger = get_logger(__name__)

ENV = "POSTTRAIN_PRECISION"
CHOICES = ("auto", "bf16", "fp32")


class PrecisionError(ConfigError):
    """``POSTTRAIN_PRECISION`` holds a value that is not a precision."""


@functools.cache
def cpu_has_bf16() -> bool:
    """True when this CPU executes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast is faster than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def hardware_has_bf16() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def requested() -> str:
    """The ``POSTTRAIN_PRECISION`` setting (``auto`` when unset); an unknown value is an error naming the variable."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    aliases = {"bfloat16": "bf16", "float32": "fp32"}
    value = aliases.get(value, value)
    if value not in CHOICES:
        raise PrecisionError(f"{ENV}={os.environ[ENV]!r}: must be one of {', '.join(CHOICES)}")
    return value


def use_bf16() -> bool:
    """The precision every stage uses when its config does not say: the switch, else the hardware."""
    choice = requested()
    if choice == "auto":
        return hardware_has_bf16()
    if choice == "bf16":
        warn_if_emulated("POSTTRAIN_PRECISION=bf16")
    return choice == "bf16"


def torch_dtype_name() -> str:
    """``bfloat16`` or ``float32``: the dtype name ``dtype: auto`` resolves to (evaluation, generation)."""
    return "bfloat16" if use_bf16() else "float32"


def hardware_class() -> str:
    """The machine class as the results files (docs/results.md) name it."""
    import torch

    if torch.cuda.is_available():
        return f"GPU ({torch.cuda.get_device_name(0)})"
    return "CPU with AVX512-BF16" if cpu_has_bf16() else "CPU without AVX512-BF16"


_warned: set[str] = set()


def warn_if_emulated(source: str) -> None:
    """bf16 asked for (``source``: the key or variable) on a CPU that only emulates it: say so once, keep going."""
    import torch

    if torch.cuda.is_available() or cpu_has_bf16() or source in _warned:
        return
    _warned.add(source)
    logger.warning(
        f"posttrain: warning: {source} on a CPU without AVX512-BF16/AMX: bf16 is emulated here and several times "
        f"slower than fp32; leave `bf16` unset (or set {ENV}=fp32) to train in fp32"
    )


def resolve_training_precision(config) -> None:
    """Fill ``config.bf16`` when unset (TRL defaults it to True, which is emulated on AVX2-only CPUs); warn when an
    explicit ``bf16: true`` will be emulated."""
    if config.bf16 is None and not config.fp16:
        config.bf16 = use_bf16()
    elif config.bf16:
        warn_if_emulated("bf16: true")


def compute_dtype(training_args):
    import torch

    if getattr(training_args, "bf16", False):
        return torch.bfloat16
    if getattr(training_args, "fp16", False):
        return torch.float16
    return torch.float32


def match_trainable_dtype(model, dtype) -> int:
    """Keep every trainable parameter (LoRA A/B, ``modules_to_save`` heads, trained token rows) in ``dtype``; returns
    how many were cast. DoRA magnitude vectors stay fp32 (bf16 would round their small updates away)."""
    changed = 0
    for name, param in model.named_parameters():
        if "lora_magnitude_vector" in name:
            continue
        if param.requires_grad and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
            changed += 1
    return changed
