"""What a model name in a config means: an embedded alias, an earlier stage's LoRA adapter folder (its cached
full-precision merge), a local model folder, or a hub id."""

from __future__ import annotations

from pathlib import Path

from posttrain.models.adapters import is_adapter
from posttrain.models.merge import merged_adapter
from posttrain.models.registry import ModelNotFoundError, resolve_base
from posttrain.models.weights import check_weights


def resolve_model(name_or_path: str) -> str:
    """A path or hub id that ``from_pretrained`` accepts for ``name_or_path``: an adapter folder resolves to its cached
    merge into the full-precision base (:func:`~posttrain.models.merge.merged_adapter`); anything else as
    :func:`~posttrain.models.registry.resolve_base` says."""
    path = Path(name_or_path).expanduser()
    if path.exists() and is_adapter(path):  # an earlier stage's LoRA adapter: its merged full-precision model
        check_weights(path, adapter=True)
        try:
            return str(merged_adapter(path))
        except ModelNotFoundError as err:
            raise ModelNotFoundError(f"adapter {path} names a base model that cannot be found: {err}") from None
    return resolve_base(name_or_path)
