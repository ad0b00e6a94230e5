"""Scoring conversations with a trained reward model (a one-output sequence-classification model).

Used by the reward stage (held-out pairwise accuracy), on-policy preference pairs, evaluation and RL rewards. A
reward model is a plain HF folder (what ``recipes/reward.py`` writes) or a LoRA adapter folder of a
sequence-classification task (merged on load). Conversations are rendered with the reward model's own chat
template, so a policy whose tokenizer differs can still be scored from its decoded text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from posttrain.errors import UserError
from posttrain.models.resolve import resolve_model


class RewardModelError(UserError, ValueError):
    """A path that is not a usable reward model (missing, not sequence classification, not one output)."""


class RewardModelAtChanceWarning(UserWarning):
    """A reward model whose measured validation pairwise accuracy is not above chance (its 95% CI reaches 0.5)."""


#: the run manifest's record of a reward model's held-out pairwise accuracy (written by the reward stage)
VALIDATION_RECORD = "validation_pairwise"


def validation_record(path: str | Path) -> dict | None:
    """The reward stage's held-out pairwise-accuracy record (``run_manifest.json``'s ``validation_pairwise``) of a
    reward model folder, or ``None`` when the folder has no manifest or the manifest none (another HF model)."""
    manifest = Path(path) / "run_manifest.json"
    if not manifest.is_file():
        return None
    try:
        record = json.loads(manifest.read_text(encoding="utf-8")).get(VALIDATION_RECORD)
    except (OSError, ValueError, AttributeError):
        return None
    return record if isinstance(record, dict) and "accuracy" in record else None


def warn_if_at_chance(path: str | Path, key: str) -> dict | None:
    """Warn (:class:`RewardModelAtChanceWarning`) when the reward model at ``path`` was measured at chance: its
    manifest's validation pairwise accuracy has a 95% CI that reaches 0.5 (or lies below it). ``key`` names the
    config key that points at it; a reward label such as ``rewards[1] (reward_model, path: X)`` is named as
    ``rewards[1].path``. Returns the record (``None``: nothing measured, nothing said)."""
    import re
    import warnings

    record = validation_record(path)
    if record is None or record.get("above_chance", True):
        return record
    entry = re.match(r"rewards\[\d+\]", key)
    key = f"{entry.group(0)}.path" if entry else key
    warnings.warn(
        f"{key}: reward model {path} ranks held-out pairs at chance: validation pairwise accuracy "
        f"{record['accuracy']:.3f} [95% CI {record['low']:.3f}, {record['high']:.3f}] on {record['n']} pairs "
        f"({record.get('source', 'held out')}; its run_manifest.json), so its scores carry no measured signal of "
        f"what the pairs ranked and training on them learns noise. Set {key} to a reward model measured above "
        "chance (train it on more, or on-policy, pairs: the reward stage with validation_pairs)",
        RewardModelAtChanceWarning,
        stacklevel=3,
    )
    return record
    warnings.warn(
        f"{key}: reward model {path} ranks held-out pairs at chance: validation pairwise accuracy "
        f"{record['accuracy']:.3f} [95% CI {record['low']:.3f}, {record['high']:.3f}] on {record['n']} pairs "
        f"({record.get('source', 'held out')}; its run_manifest.json), so its scores carry no measured signal and "
        "training on them learns noise. Point this key at a reward model whose accuracy is above chance (train it "
        "on more or on-policy pairs: recipes/reward.py with validation_pairs)",
        RewardModelAtChanceWarning,
        stacklevel=3,
    )
    return record


class RewardModel:
    def __init__(self, model, tokenizer, *, max_length: int = 1024, batch_size: int = 8, source: str = ""):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_length, self.batch_size, self.source = max_length, batch_size, source

    @classmethod
    def load(cls, name_or_path: str, *, dtype: torch.dtype = torch.float32, **kwargs) -> RewardModel:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(resolve_model(name_or_path))
        config_file = path / "config.json"
        if not config_file.is_file():
            raise RewardModelError(f"reward model {name_or_path}: no config.json in {path}")
        config = json.loads(config_file.read_text())
        architectures = config.get("architectures") or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise RewardModelError(
                f"reward model {name_or_path} is not a sequence-classification model (architectures: "
                f"{architectures or 'none'}); train one with recipes/reward.py"
            )
        num_labels = len(config.get("id2label") or {}) or config.get("num_labels", 1)
        if num_labels != 1:
            raise RewardModelError(f"reward model {name_or_path} has {num_labels} outputs; a reward model has one")
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if not tokenizer.chat_template:
            raise RewardModelError(f"reward model {name_or_path}: its tokenizer has no chat template")
        return cls(model, tokenizer, source=str(name_or_path), **kwargs)

    @torch.no_grad()
    def score(self, conversations: Sequence[list[dict]]) -> list[float]:
        """One scalar per conversation (each ending with the assistant reply being judged)."""
        texts = [self.tokenizer.apply_chat_template(list(c), tokenize=False) for c in conversations]
        scores: list[float] = []
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.model.config.pad_token_id = pad_id
        for start in range(0, len(texts), self.batch_size):
            encoded = [
                self.tokenizer(t, add_special_tokens=False, truncation=True, max_length=self.max_length)["input_ids"]
                for t in texts[start : start + self.batch_size]
            ]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for row, ids in enumerate(encoded):  # right padding: the score is read at the last real token
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention_mask[row, : len(ids)] = 1
            device = next(self.model.parameters()).device
            logits = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            scores.extend(logits[:, 0].float().tolist())
        return scores

    def score_replies(self, prompts: Sequence[list[dict]], replies: Sequence[str]) -> list[float]:
        return self.score([[*p, {"role": "assistant", "content": r}] for p, r in zip(prompts, replies, strict=True)])

    def pairwise_accuracy(self, pairs) -> dict[str, float]:
        """Share of preference pairs (``prompt``/``chosen``/``rejected`` rows) where chosen scores higher."""
        chosen = self.score([[*row["prompt"], *row["chosen"]] for row in pairs])
        rejected = self.score([[*row["prompt"], *row["rejected"]] for row in pairs])
        wins = [c > r for c, r in zip(chosen, rejected)]
        margins = [c - r for c, r in zip(chosen, rejected)]
        return {"accuracy": sum(wins) / max(len(wins), 1), "mean_margin": sum(margins) / max(len(margins), 1)}
