"""Safe loading of local weights: safetensors only, and intact.

A pickle file (``pytorch_model.bin``, ``adapter_model.bin``, ``*.pt``/``*.pth``/``*.ckpt``) can run arbitrary code
when it is loaded, so posttrain refuses a model or adapter folder whose weights are only pickles unless
``POSTTRAIN_ALLOW_PICKLE=1`` is set (then transformers/peft load them, with torch's ``weights_only`` loader).
Every safetensors file is opened before a stage loads it, so a truncated or corrupt download is named up front
instead of failing deep inside ``from_pretrained``.

Trainer checkpoints also hold ``optimizer.pt``, ``scheduler.pt`` and ``rng_state.pth``: transformers loads those with
``torch.load(weights_only=True)`` (tensors and plain containers only, no code), and ``training_args.bin`` is never
read. posttrain's own PPO checkpoints are safetensors + JSON throughout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from posttrain.errors import UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
ALLOW_PICKLE_ENV = "POSTTRAIN_ALLOW_PICKLE"


class WeightsError(UserError, ValueError):
    """A model or adapter folder whose weights are missing, corrupt, or pickles that were not allowed."""


def pickle_allowed() -> bool:
    return os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")


def _safetensors_files(folder: Path, prefix: str) -> list[Path]:
    index = folder / f"{prefix}.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as err:
            raise WeightsError(f"{index}: unreadable safetensors index ({err})") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise WeightsError(f"{index} lists shard(s) missing from {folder}: {', '.join(missing)}")
        return [folder / s for s in shards]
    return sorted(folder.glob(f"{prefix}*.safetensors"))


def check_safetensors(path: Path) -> None:
    """Open the file's header and every tensor's byte range; a truncated or corrupt file raises WeightsError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if keys:
                f.get_slice(keys[-1])  # the last tensor's range must lie inside the file
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path} is not a valid safetensors file ({err}); re-save or re-download it") from None


def check_weights(folder: str | Path, *, adapter: bool = False) -> None:
    """Check the folder's safetensors weights; refuse pickle-only weights unless allowed (see module doc)."""
    folder = Path(folder)
    prefix = "adapter_model" if adapter else "model"
    files = _safetensors_files(folder, prefix)
    if files:
        for path in files:
            check_safetensors(path)
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")
    if pickles:
        if pickle_allowed():
            return
        raise WeightsError(
            f"{folder} holds its weights only as pickle files ({', '.join(pickles)}), which can run code when "
            f"loaded; posttrain loads safetensors only. Convert them (load once where you trust them and "
            f"save_pretrained(..., safe_serialization=True)), or set {ALLOW_PICKLE_ENV}=1 to load them anyway"
        )
    what = "adapter_model.safetensors" if adapter else "model.safetensors (or a sharded index)"
    raise WeightsError(f"{folder} has no weights: expected {what}")


def check_gguf(path: str | Path) -> None:
    """Parse a GGUF file's header, metadata and tensor table (memory-mapped, no weights read); a truncated or
    corrupt file raises WeightsError naming it."""
    from gguf import GGUFReader

    path = Path(path)
    try:
        reader = GGUFReader(str(path))
        if reader.tensors:
            last = reader.tensors[-1]
            if last.data_offset + last.n_bytes > path.stat().st_size:
                raise ValueError("the tensor data ends past the end of the file")
    except (ValueError, KeyError, IndexError, OSError, EOFError) as err:
        raise WeightsError(f"{path} is not a valid GGUF file ({err}); convert it again or re-download it") from None
