"""Imported (as ``sitecustomize``) by every process of the 2-rank runs in ``tests/e2e/test_scale_out.py``, which puts
this folder on ``PYTHONPATH``; nothing else loads it.

1. **FSDP on a CPU-only host.** accelerate 1.15 turns its FSDP plugin on only for GPU-like distributed types
   (``AcceleratorState.__init__``): ranks started on a CPU host with an FSDP config come up as ``MULTI_CPU`` and the
   model is wrapped in DDP, silently. Here a ``MULTI_CPU`` state that was handed an FSDP plugin becomes ``FSDP`` on
   the CPU device, so torch's FSDP2 (``fully_shard`` over gloo) runs with the shipped ``fsdp_config`` unchanged.
   DeepSpeed and DDP need no help.
2. **What really wraps the model.** After ``Accelerator.prepare`` each rank prints one line
   ``e2e-engine: {json}``: distributed type, wrapper classes, and how much of each parameter this rank holds
   (FSDP2: local shard of each DTensor; ZeRO-3: ``ds_tensor`` partition), so the test can tell sharding from DDP.
"""

from __future__ import annotations

import json
import os

import torch

if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
    from accelerate import state as _state
    from accelerate.utils import DistributedType

    _accelerator_state_init = _state.AcceleratorState.__init__

    def _init_with_cpu_fsdp(self, *args, fsdp_plugin=None, **kwargs):
        _accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            self.device = torch.device("cpu")
            _state.PartialState._shared_state.update(distributed_type=DistributedType.FSDP, device=self.device)

    _state.AcceleratorState.__init__ = _init_with_cpu_fsdp


def _describe(accelerator, model) -> dict:
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    local = full = sharded = 0
    for p in params:
        if isinstance(p, DTensor):  # FSDP2
            sharded += 1
            local, full = local + p.to_local().numel(), full + p.numel()
        elif hasattr(p, "ds_tensor"):  # DeepSpeed ZeRO-3 partition
            sharded += 1
            local, full = local + p.ds_tensor.numel(), full + p.ds_numel
        else:
            local, full = local + p.numel(), full + p.numel()
    stage = getattr(model, "zero_optimization_stage", None)
    return {
        "rank": accelerator.process_index,
        "world": accelerator.num_processes,
        "node": int(os.environ.get("GROUP_RANK", "0")),
        "distributed_type": str(accelerator.distributed_type.value),
        "wrappers": sorted(
            {type(m).__name__ for m in model.modules() if type(m).__name__.startswith(("FSDP", "Distributed", "Deep"))}
        ),
        "zero_stage": stage() if callable(stage) else None,
        "params": len(params),
        "sharded_params": sharded,
        "local_numel": local,
        "full_numel": full,
        "linear4bit": sum(type(m).__name__ == "Linear4bit" for m in model.modules()),
    }


def _install_report():
    import accelerate.accelerator as _accelerator

    prepare = _accelerator.Accelerator.prepare

    def prepare_and_report(self, *objects, **kwargs):
        out = prepare(self, *objects, **kwargs)
        for obj in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(obj, torch.nn.Module):
                print("e2e-engine: " + json.dumps(_describe(self, obj)), flush=True)
        return out

    _accelerator.Accelerator.prepare = prepare_and_report


_install_report()
