"""LoRA adapter folders as models: merge an adapter (chain) into full-precision weights.

A stage that starts from an earlier stage's adapter (DPO from SFT, a reward model from SFT, ...) names the adapter
folder as ``model_name_or_path``. :func:`merged_adapter` turns it into a plain HF folder: the base is loaded in full
precision (never merged into 4-bit weights), the adapter applied and ``merge_and_unload``-ed, and the result cached
under ``$POSTTRAIN_CACHE/merged/<content hash>``. Bases that are themselves adapters are merged first, so a chain
SFT → DPO → PPO resolves recursively.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
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


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path, *, dtype=None) -> Path:
    """Merge ``adapter_dir`` into its full-precision base and save model + tokenizer + chat template to
    ``output_dir`` (written to a temporary folder first; files are moved into place only when all are written, so
    an existing ``output_dir`` -- e.g. a stage's folder holding ``adapter/`` -- keeps its other contents)."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from posttrain.models.registry import resolve_model

    dtype = dtype or torch.float32
    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    base_path = resolve_model(adapter_base(adapter_dir))
    model_class = task_model_class(adapter_dir)
    kwargs = {"num_labels": 1} if model_class.__name__.endswith("SequenceClassification") else {}
    base = model_class.from_pretrained(base_path, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    if len(tokenizer) > base.get_input_embeddings().num_embeddings:  # the adapter's stage added tokens (ChatML)
        base.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    try:
        model = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as err:
        raise AdapterError(f"adapter {adapter_dir} does not fit its base {base_path}: {err}") from None
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        adapter = adapter_dir.resolve()
        if adapter.parent == output_dir.resolve():  # the adapter ships inside the merged folder (reward model)
            adapter = Path(adapter.name)
        (tmp / "posttrain_merged.json").write_text(
            json.dumps({"adapter": str(adapter), "base": adapter_base(adapter_dir)}, indent=2)
        )
        if not output_dir.exists():
            tmp.rename(output_dir)
        else:
            for file in tmp.iterdir():
                file.replace(output_dir / file.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


def merged_adapter(adapter_dir: str | Path) -> Path:
    """Cached full-precision merge of an adapter folder (rebuilt when the adapter's files change)."""
    from filelock import FileLock

    from posttrain.models.registry import cache_dir

    target = cache_dir() / "merged" / f"{Path(adapter_dir).resolve().name}-{adapter_digest(adapter_dir)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            print(f"posttrain: merging adapter {adapter_dir} into its full-precision base -> {target}", flush=True)
            merge_adapter(adapter_dir, target)
    return target
