"""Run manifests and model cards: what a stage produced, from what, with which code and settings.

A manifest (``run_manifest.json``) is written last, after every artifact is in place, so its presence means the
stage finished. Values of keys that look like secrets (tokens, API keys, passwords) are never written. It is strict
JSON: a number that does not exist (NaN, e.g. the proxy-reward curve of a run with only rule rewards) or is infinite
is written as ``null``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import posttrain
from posttrain.precision import cpu_has_bf16, hardware_class, requested
from posttrain.storage import atomic_write_text

MANIFEST_NAME = "run_manifest.json"
TRACKED_LIBRARIES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets")
# hub_token, hf_token, api_token, token, *api_key*, *secret*, *password*; not pad_token/eos_token or token counts
_SECRET_KEY = re.compile(r"^((hub|hf|api|access|auth)_)?token$|api_?key|secret|password|authorization", re.I)


def library_versions() -> dict[str, str | None]:
    versions = {}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """Commit of the posttrain checkout in use (with ``-dirty`` when it has local changes), if any."""
    root = Path(posttrain.__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def redact(value: Any) -> Any:
    """Drop the values of secret-looking keys, recursively."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if v and _SECRET_KEY.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "value") and isinstance(value.value, (str, int)):  # enums
        return value.value
    return str(value)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (also in nested dicts and lists) replaced by None: strict JSON has
    no NaN, and a number that does not exist is ``null``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def resolved_config(*configs) -> dict[str, Any]:
    """The parsed dataclasses of a run as one JSON-able mapping (secrets redacted)."""
    out = {}
    for config in configs:
        data = config.to_dict() if hasattr(config, "to_dict") else _jsonable(config)
        out[type(config).__name__] = redact(_jsonable(data))
    return out


def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_has_bf16(),
        "hardware_class": hardware_class(),
        "precision_switch": requested(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def write_manifest(output_dir: str | os.PathLike, *, stage: str, configs: tuple = (), **fields: Any) -> Path:
    """Write ``run_manifest.json`` into ``output_dir`` (atomically: temp file then rename)."""
    manifest = {
        "stage": stage,
        "posttrain_version": posttrain.__version__,
        "git_commit": git_commit(),
        "finished_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "libraries": library_versions(),
        "hardware": hardware(),
        # relative paths in the config (datasets, the model it started from) are relative to this folder
        "working_dir": os.getcwd(),
        **redact(_jsonable(fields)),
        "config": resolved_config(*configs),
    }
    text = json.dumps(finite(manifest), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_text(Path(output_dir) / MANIFEST_NAME, text + "\n")


def read_manifest(output_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(output_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_model_card(output_dir: str | os.PathLike, *, title: str, base_model: str, summary: dict[str, Any]) -> Path:
    """A short README.md for the saved artifact: what it is, how it was made, how to load it."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    text = f"""---
library_name: peft
base_model: {base_model}
tags: [posttrain, qlora, trl]
---

# {title}

Trained with posttrain {posttrain.__version__}. Full settings, library versions and data
fingerprints are in `{MANIFEST_NAME}`.

| | |
|---|---|
{rows}

## Load it

```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("{Path(output_dir).name}")
tokenizer = AutoTokenizer.from_pretrained("{Path(output_dir).name}")  # carries the chat template
```
"""
    return atomic_write_text(Path(output_dir) / "README.md", text)
