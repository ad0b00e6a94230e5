"""Training fast paths: the same training as transformers + peft + TRL, without work the hardware does not need.

Profiling a QLoRA SFT step of SmolLM2-135M on a 2-core AVX2 CPU (``benchmarks/README.md``) found costs that are not
model FLOPs; each fast path removes one. One module per path, each keeping the contract of
:class:`~posttrain.training.fast_paths.base.FastPath`:

==================== ======= ============== ===========================================================================
path                 exact   ``auto`` on    what it does
==================== ======= ============== ===========================================================================
``varlen_attention`` yes     CPU            packed rows attend per sequence (causal SDPA per sequence)
``fused_lora``       yes     CPU            LoRA added into the base output by one ``addmm``
``compact_lm_head``  yes     CPU            TRL's fused LM head scores labelled positions only
``shared_dropout``   **no**  never          q/k/v share one LoRA dropout mask: a different regulariser, opt-in
==================== ======= ============== ===========================================================================

* **Exact** means the forward and gradients of stock training: ``tests/training/test_fast_paths.py`` compares
  per-step losses with the paths on and off on every architecture ``docs/families.md`` lists and on architectures
  with unusual attention or projections; where a path cannot keep a model exact it detects that and stays off.
* **``auto``** (the default) turns on, per device, the exact paths measured faster and equal there. On CUDA nothing
  is on until ``benchmarks/gpu_check.sh`` has measured it on a GPU.
* **Versions**: each path names the library versions it was verified with (``verified``); with another version
  installed it stays off with a one-line notice naming the version.
* **Scoped and undone**: :func:`applied` installs the chosen paths around training and undoes every install when
  training ends (on an error too); no patch outlives the run.
* **Counted**: the patched code counts the calls it ran fast and the calls it handed to the stock code; the end of
  training prints both per path, so a log never claims what did not happen.

``fast_paths`` in a stage config: ``auto`` | ``all`` | ``none`` | a comma list of path names, optionally with
``auto`` (``auto,shared_dropout``). A path named explicitly that cannot run is an error; under ``auto`` or ``all`` it
stays off with a notice and training proceeds on the stock path. The setting itself (its path names,
:func:`~posttrain.configs.parse_fast_paths`) is part of the configs, which check it when a recipe is parsed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from posttrain.configs import FastPathError, FastPathSelection, parse_fast_paths
from posttrain.training.fast_paths.base import Calls, Context, FastPath, Refused, version_problem
from posttrain.training.fast_paths.compact_lm_head import CompactLmHead
from posttrain.training.fast_paths.fused_lora import FusedLora, lora_layers
from posttrain.training.fast_paths.shared_dropout import SharedDropout, keep_mask
from posttrain.training.fast_paths.varlen_attention import ATTENTION, VarlenAttention

PATHS: dict[str, FastPath] = {
    path.name: path for path in (VarlenAttention(), FusedLora(), CompactLmHead(), SharedDropout())
}

__all__ = [
    "ATTENTION",
    "PATHS",
    "Calls",
    "Context",
    "FastPath",
    "FastPathError",
    "FastPathSelection",
    "Installed",
    "applied",
    "context_for",
    "install",
    "keep_mask",
    "lora_layers",
]


def sharded_reason(accelerator=None) -> str | None:
    """Why parameters are sharded across ranks, asked of transformers/accelerate (the trainer's accelerator when
    given), or None."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        return "DeepSpeed ZeRO-3 shards the parameters"
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    state = getattr(accelerator, "state", None)
    if state is None and AcceleratorState._shared_state:
        state = AcceleratorState()
    kind = getattr(state, "distributed_type", None)
    if kind == DistributedType.FSDP:
        return "FSDP shards the parameters"
    if kind == DistributedType.DEEPSPEED:
        plugin = getattr(state, "deepspeed_plugin", None)
        if plugin is not None and getattr(plugin, "zero_stage", 0) == 3:
            return "DeepSpeed ZeRO-3 shards the parameters"
    return None


def context_for(trainer, *, padding_free: bool | None = None) -> Context:
    """The :class:`Context` of a transformers/TRL trainer (or posttrain's PPO trainer)."""
    args = getattr(trainer, "args", None)
    device = getattr(args, "device", None) or getattr(getattr(trainer, "accelerator", None), "device", None)
    if padding_free is None:
        padding_free = bool(getattr(trainer, "padding_free", False))
    return Context(
        device=torch.device(device or "cpu"),
        padding_free=padding_free,
        sharded=sharded_reason(getattr(trainer, "accelerator", None)),
    )


@dataclass
class Installed:
    """The paths installed on one model: what each did (``done``: ``{name: summary or 'off: why'}``), how to undo
    them, and their call counts."""

    done: dict[str, str] = field(default_factory=dict)
    undos: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.undos)

    def undo(self) -> None:
        while self.undos:
            _, undo = self.undos.pop()
            undo()

    def line(self) -> str:
        return "; ".join(f"{name}: {what}" for name, what in self.done.items())

    def calls(self) -> dict[str, str]:
        return {name: PATHS[name].calls.summary() for name in self.active}


def install(model, selection: FastPathSelection, ctx: Context) -> Installed:
    """Install the selected paths on ``model``; a path that cannot run here stays off with its reason (a
    :class:`FastPathError` when it was named explicitly)."""
    installed = Installed()
    try:
        for name, path in PATHS.items():
            if not selection.wants(path, ctx.device.type):
                if selection.auto and name not in selection.named:
                    why = (
                        "not exact (opt-in)"
                        if not path.exact
                        else f"not measured faster and equal on {ctx.device.type}"
                    )
                    installed.done[name] = f"off: {why}"
                continue
            reason = version_problem(path.verified) or path.supported(model, ctx)
            if reason is None:
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        undo = path.install(model, ctx)
                    deprecated = [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
                    if deprecated:
                        undo()
                        reason = f"the patched library warns: {deprecated[0].message}"
                    else:
                        installed.undos.append((name, undo))
                except Refused as refused:
                    reason = str(refused)
            if reason is not None:
                if name in selection.named:
                    raise FastPathError(f"fast_paths: {name} was asked for but cannot run: {reason}")
                installed.done[name] = f"off: {reason}"
            else:
                installed.done[name] = path.summary
    except BaseException:
        installed.undo()
        raise
    return installed


@contextmanager
def applied(
    model, selection: FastPathSelection | str, ctx: Context, *, log: Callable[[str], None] | None = None
) -> Iterator[Installed]:
    """Install the selected paths around a block of training; undo them when it ends (on an error too). ``log``
    (the main process's printer) gets what each path did before, and the call counts after."""
    if isinstance(selection, str):
        selection = parse_fast_paths(selection)
    installed = install(model, selection, ctx)
    if log and installed.done:
        log("posttrain: fast paths: " + installed.line())
    try:
        yield installed
    finally:
        counts = installed.calls()
        installed.undo()
        if log and counts:
            log("posttrain: fast paths taken: " + "; ".join(f"{name}: {text}" for name, text in counts.items()))
