"""A model's shape from its ``config.json`` alone: no weights, no torch model.

The model name is read as the stages read it (:func:`posttrain.models.resolve.resolve_model`), without its side
effects: an adapter folder stands for its base (``adapter_config.json``'s ``base_model_name_or_path``, followed
through a chain of adapters), an embedded alias for its cached folder (or, not materialized yet, its known shape),
a local folder for its ``config.json``. A hub id is not fetched: give a local folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from posttrain.errors import UserError


class ShapeError(UserError, ValueError):
    """A model whose shape cannot be read: no ``config.json``, or one without the fields a plan needs."""


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a decoder-only transformer (Llama-shaped: attention + gated MLP per layer)."""

    source: str  # the config.json it was read from (or "embedded:<alias>")
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    gated_mlp: bool = True  # gate_proj + up_proj + down_proj (Llama, Qwen, Mistral, ...); False: fc1 + fc2

    def linear_shapes(self) -> list[tuple[str, int, int]]:
        """(name, in_features, out_features) of the linear layers of one decoder layer: LoRA's ``all-linear``."""
        h, q, kv, i = (
            self.hidden_size,
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
            self.intermediate_size,
        )
        attention = [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h)]
        mlp = (
            [("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]
            if self.gated_mlp
            else [("fc1", h, i), ("fc2", i, h)]
        )
        return attention + mlp

    @property
    def layer_linear_params(self) -> int:
        return sum(din * dout for _, din, dout in self.linear_shapes())

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def head_params(self) -> int:
        """The output head's own parameters (0 when tied to the embeddings)."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def norm_params(self) -> int:
        return (2 * self.num_layers + 1) * self.hidden_size

    @property
    def params(self) -> int:
        return self.embedding_params + self.head_params + self.num_layers * self.layer_linear_params + self.norm_params


#: embedded aliases not materialized yet: their config.json values (posttrain.models.registry.EMBEDDED_MODELS)
EMBEDDED_SHAPES = {
    "smollm2-135m-instruct": dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9, num_kv_heads=3,
        head_dim=64, tie_word_embeddings=True,
    ),
}  # fmt: skip

#: (field, alternatives): the config.json keys of each field across families
_FIELDS = {
    "vocab_size": ("vocab_size", "n_vocab", "padded_vocab_size"),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "intermediate_size": ("intermediate_size", "ffn_hidden_size", "n_inner", "d_ff"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_heads": ("num_attention_heads", "n_head", "num_heads"),
}


def _config_path(name_or_path: str, seen: tuple[str, ...] = ()) -> Path | str:
    from posttrain.models.adapters import ADAPTER_CONFIG, adapter_base, is_adapter
    from posttrain.models.registry import EMBEDDED_MODELS, cache_dir

    if name_or_path in EMBEDDED_MODELS:
        folder = cache_dir() / "models" / name_or_path
        return folder / "config.json" if (folder / "config.json").is_file() else f"embedded:{name_or_path}"
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.name == "config.json":
        return path
    if path.is_dir():
        if is_adapter(path):
            if str(path) in seen:
                raise ShapeError(f"{path / ADAPTER_CONFIG}: base_model_name_or_path loops back to {path}")
            return _config_path(adapter_base(path), (*seen, str(path)))
        if not (path / "config.json").is_file():
            raise ShapeError(f"{path / 'config.json'}: not found (the plan reads the model's config.json)")
        return path / "config.json"
    if path.exists():
        raise ShapeError(f"{path}: not a model folder (the plan reads the model's config.json)")
    raise ShapeError(
        f"model {name_or_path!r}: not a local folder or an embedded alias ({', '.join(EMBEDDED_MODELS)}); the plan "
        "does not download models: give a local folder with config.json (an earlier stage's output that does not exist "
        "yet plans as its base model: `posttrain plan --model BASE`)"
    )


def read_shape(name_or_path: str) -> ModelShape:
    """The shape of ``name_or_path`` (a model folder, an adapter folder, an embedded alias); ShapeError naming the
    file and key when it cannot be read."""
    where = _config_path(str(name_or_path))
    if isinstance(where, str):  # an embedded alias not materialized yet
        return ModelShape(source=where, **EMBEDDED_SHAPES[where.split(":", 1)[1]])
    try:
        config = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ShapeError(f"{where}: unreadable ({err})") from None
    if not isinstance(config, dict):
        raise ShapeError(f"{where}: not a JSON object")
    if isinstance(config.get("text_config"), dict):  # a multimodal wrapper: the language model's config
        config = {
            **config["text_config"],
            "tie_word_embeddings": config.get("tie_word_embeddings", config["text_config"].get("tie_word_embeddings")),
        }
    values = {}
    for field, keys in _FIELDS.items():
        value = next((config[k] for k in keys if config.get(k) is not None), None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            got = f"got {value!r}" if value is not None else "missing"
            raise ShapeError(
                f"{where}: key '{keys[0]}' must be a positive integer ({got}); cannot plan for this architecture"
            )
        values[field] = value
    if values["hidden_size"] % values["num_heads"] and not config.get("head_dim"):
        raise ShapeError(f"{where}: key 'head_dim' missing and hidden_size is not a multiple of num_attention_heads")
    kv = config.get("num_key_value_heads") or values["num_heads"]
    head_dim = config.get("head_dim") or values["hidden_size"] // values["num_heads"]
    for key, value in (("num_key_value_heads", kv), ("head_dim", head_dim)):
        if not isinstance(value, int) or value < 1:
            raise ShapeError(f"{where}: key '{key}' must be a positive integer (got {value!r})")
    tie = config.get("tie_word_embeddings")
    gated = config.get("model_type") not in ("gpt2", "gpt_neox", "opt", "phi", "falcon", "bloom")
    return ModelShape(
        source=str(where),
        num_kv_heads=kv,
        head_dim=head_dim,
        tie_word_embeddings=True if tie is None else bool(tie),
        gated_mlp=gated,
        **values,
    )
