"""``compact_lm_head``: TRL's fused LM head scores labelled positions only, on a CPU too.

DPO, GRPO and RLOO get per-token log-probs from TRL's chunked head (``trl.trainer.utils`` calls
``_use_triton(device)``), which projects only the positions with a label on CUDA/XPU but every position elsewhere (to
keep tile shapes fixed for compilers such as Neuron's); prompt positions carry no label, so on a CPU most of that
vocabulary projection is thrown away. Here the compact choice is made on a CPU as well. Unlabelled positions
contribute nothing to the loss either way, so the log-probs of labelled positions are the same.

The switch is TRL's module attribute, so the install is process-wide: it is scoped to training (the context manager
in :mod:`posttrain.training.fast_paths` undoes it when training ends, even on an error). Verified with TRL 1.16.
"""

from __future__ import annotations

import torch

from posttrain.training.fast_paths.base import Context, FastPath


class CompactLmHead(FastPath):
    name = "compact_lm_head"
    summary = "TRL's fused head scores labelled positions only"
    auto_devices = frozenset({"cpu"})
    verified = {"trl": "==1.16.*"}

    def supported(self, model, ctx: Context) -> str | None:
        try:
            import trl.trainer.utils as trl_utils
        except ImportError:  # pragma: no cover - trl is a dependency
            return "TRL is not installed"
        stock = getattr(trl_utils, "_use_triton", None)
        if stock is None or not callable(stock):
            return "this TRL version's fused LM head has no compact switch"
        if getattr(stock, "posttrain_compact", False):
            return "already installed by another run in this process"
        return None

    def install(self, model, ctx: Context):
        import trl.trainer.utils as trl_utils

        stock = trl_utils._use_triton
        calls = self.calls

        def compact(device) -> bool:
            if torch.device(device).type == "cpu":
                calls.fast += 1
                return True
            calls.fell_back("not a CPU")
            return stock(device)

        compact.posttrain_compact = True
        trl_utils._use_triton = compact

        def undo() -> None:
            if trl_utils._use_triton is compact:
                trl_utils._use_triton = stock

        calls.reset()
        return undo
