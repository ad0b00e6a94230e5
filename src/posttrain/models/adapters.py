"""LoRA adapter folders: recognise one, read its base, fingerprint its weights, pick its model class.

A stage that starts from an earlier stage's adapter (DPO from SFT, a reward model from SFT, ...) names the adapter
folder as ``model_name_or_path``; :func:`posttrain.models.resolve.resolve_model` turns it into its cached
full-precision merge (:func:`posttrain.models.merge.merged_adapter`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from posttrain.errors import UserError

ADAPTER_CONFIG = "adapter_config.json"


class AdapterError(UserError, ValueError):
    """An adapter folder that cannot be used (unreadable config, base missing or mismatched)."""


def is_adapter(path: str | Path) -> bool:
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def adapter_base(path: str | Path) -> str:
    try:
        config = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise AdapterError(f"{Path(path) / ADAPTER_CONFIG}: unreadable adapter config ({err})") from None
    base = config.get("base_model_name_or_path")
    if not base:
        raise AdapterError(f"{Path(path) / ADAPTER_CONFIG}: no base_model_name_or_path")
    return base


def adapter_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(Path(path).glob("adapter_*")):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def task_model_class(path: str | Path):
    """AutoModelForCausalLM or AutoModelForSequenceClassification, from the adapter's peft task type."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    return AutoModelForSequenceClassification if config.get("task_type") == "SEQ_CLS" else AutoModelForCausalLM
