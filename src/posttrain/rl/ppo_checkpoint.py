"""PPO's checkpoints and saved model: posttrain's own format (PPO is not a transformers Trainer).

``output_dir/checkpoint-<step>`` holds the adapter (``adapter_model.safetensors`` and its config), the value head
(:data:`VALUE_HEAD_FILE`), the tokenizer, the optimizer state (``optimizer.safetensors``: ``<param index>.<key>``
tensors, ``optimizer.json``: the parameter groups), the random state of every process
(``rng_state_<rank>.safetensors``: the CPU generator and every GPU's) and the trainer state (:data:`STATE_FILE`: step,
KL coefficient, reward-normalization statistics, log history, number of processes). It is written to
``.checkpoint-<step>.partial`` and published (:func:`posttrain.storage.publish_dir`) when complete;
``save_total_limit`` keeps the newest. :func:`resolve_checkpoint` finds the folder ``resume_from_checkpoint`` names.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch

from posttrain.errors import ConfigError
from posttrain.rl.ppo_model import PolicyWithValueHead
from posttrain.storage import checkpoints, partial_dir, publish_dir, resume_value

VALUE_HEAD_FILE = "value_head.safetensors"
STATE_FILE = "trainer_state.json"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_GROUPS = "optimizer.json"


def rng_state() -> dict[str, torch.Tensor]:
    """This process's random states: the CPU generator (``torch``) and, with CUDA, every GPU's (``cuda_<i>``:
    sampling on a GPU draws from the CUDA generator, so without it a resumed run would sample differently)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda_{index}"] = cuda.cpu()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` saved (the CUDA states only where CUDA is available and they were saved)."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = [state[f"cuda_{i}"].cpu() for i in range(sum(k.startswith("cuda_") for k in state))]
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            warnings.warn(
                f"the checkpoint holds the random state of {len(cuda)} GPUs and this process sees "
                f"{torch.cuda.device_count()}: only the first ones are restored",
                stacklevel=2,
            )
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def resolve_checkpoint(resume: str | bool | None, output_dir: str | Path) -> Path | None:
    """The checkpoint folder to resume from (``resume`` read by :func:`posttrain.storage.resume_value`): None to start
    afresh, for ``true``/``latest`` the newest in ``output_dir`` (ConfigError if there is none), else the folder given
    (ConfigError if it is not a PPO checkpoint)."""
    resume = resume_value(resume)
    if resume is None:
        return None
    if resume is True:
        found = checkpoints(output_dir)
        if not found:
            raise ConfigError(f"resume_from_checkpoint: no checkpoint-* folder in {output_dir}")
        return found[-1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"resume_from_checkpoint: {path} is not a PPO checkpoint (no {STATE_FILE})")
    return path


def save_model(model: PolicyWithValueHead, tokenizer, output_dir: str | Path) -> None:
    """Adapter, value head and tokenizer in ``output_dir`` (call it on the main process)."""
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    model.policy.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    head = {k: v.detach().cpu().contiguous() for k, v in model.value_head.state_dict().items()}
    save_file(head, output_dir / VALUE_HEAD_FILE)


def _save_optimizer(optimizer, folder: Path) -> None:
    from safetensors.torch import save_file

    tensors, groups = {}, []
    state = optimizer.state_dict()
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            tensors[f"{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    for group in state["param_groups"]:
        groups.append({k: list(v) if isinstance(v, tuple) else v for k, v in group.items()})
    save_file(tensors, folder / OPTIMIZER_TENSORS)
    (folder / OPTIMIZER_GROUPS).write_text(json.dumps(groups))


def _load_optimizer(optimizer, folder: Path, device) -> None:
    from safetensors.torch import load_file

    tensors = load_file(folder / OPTIMIZER_TENSORS, device=str(device))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value.cpu() if name == "step" else value
    groups = json.loads((folder / OPTIMIZER_GROUPS).read_text())
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(accelerator, output_dir: str | Path, step: int, *, model: PolicyWithValueHead, tokenizer,
                    optimizer, trainer_state: dict, save_total_limit: int | None = None) -> Path:  # fmt: skip
    """``output_dir/checkpoint-<step>`` (``trainer_state`` is :data:`STATE_FILE`'s content), called on every
    process: the main one writes the model, optimizer and state, each its random state; then it is renamed."""
    from safetensors.torch import save_file

    final = Path(output_dir) / f"checkpoint-{step}"
    tmp = partial_dir(final)  # one name every process knows (each writes its random state into it)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(model, tokenizer, tmp)
        _save_optimizer(optimizer, tmp)
        (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=1))
    accelerator.wait_for_everyone()
    save_file(rng_state(), tmp / f"rng_state_{accelerator.process_index}.safetensors")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        publish_dir(tmp, final)
        if save_total_limit:
            for path in checkpoints(output_dir)[:-save_total_limit]:
                shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, checkpoint: str | Path, *, model: PolicyWithValueHead, optimizer) -> dict:
    """Restore the adapter, value head, optimizer state and this process's random state of ``checkpoint``; returns
    its trainer state (the caller restores the rest). ConfigError if it was written by another number of processes."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    saved = json.loads((checkpoint / STATE_FILE).read_text())
    if saved.get("world_size", 1) != accelerator.num_processes:
        raise ConfigError(
            f"{checkpoint} was written by {saved.get('world_size')} processes; resume with the same number "
            f"(now {accelerator.num_processes})"
        )
    device = str(accelerator.device)
    set_peft_model_state_dict(model.policy, load_file(checkpoint / "adapter_model.safetensors", device=device))
    model.value_head.load_state_dict(load_file(checkpoint / VALUE_HEAD_FILE, device=device))
    _load_optimizer(optimizer, checkpoint, device)
    set_rng_state(load_file(checkpoint / f"rng_state_{accelerator.process_index}.safetensors"))
    return saved
