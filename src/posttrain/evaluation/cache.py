"""The generation cache: every reply on disk as it arrives, so re-scoring and re-running never regenerate.

Replies are keyed by the model's fingerprint, the exact conversation and the generation settings (and the tools and
chat-template variables, when given). A run that fails keeps what it had: the next run picks up from there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from posttrain.evaluation.backends import GenerationSettings, Output

__all__ = ["GenerationCache", "cached_generate", "cached_outputs", "generate_per_budget"]


class GenerationCache:
    """Replies on disk, one JSON line each, keyed by sha256(fingerprint, prompt, settings). Appended as they arrive."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry
                except (ValueError, KeyError):
                    continue  # a line cut by a crash: that reply is generated again

    @staticmethod
    def key(
        fingerprint: str,
        messages: list[dict],
        settings: dict,
        *,
        tools: list[dict] | None = None,
        template_kwargs: Mapping | None = None,
    ) -> str:
        """The cache key of one reply; tools and template variables count only when given, so replies cached
        without them keep their keys."""
        parts: list[Any] = [fingerprint, messages, settings]
        if tools or template_kwargs:
            parts.append({"tools": tools or None, "template_kwargs": dict(template_kwargs or {})})
        payload = json.dumps(parts, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str) -> Output | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        return Output(entry["text"], entry["finished"], entry["num_tokens"], entry.get("reasoning"))

    def put(self, key: str, output: Output) -> None:
        entry = {"key": key, **asdict(output)}
        self._entries[key] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def __len__(self) -> int:
        return len(self._entries)


def cached_generate(
    backend,
    conversations: list[list[dict]],
    settings: GenerationSettings,
    cache: GenerationCache,
    *,
    progress: bool = True,
    tools: Sequence[list[dict] | None] | None = None,
    template_kwargs: Mapping | None = None,
) -> tuple[list[Output | None], int]:
    """Replies for every conversation, from the cache when possible; returns them and how many were generated.

    ``tools`` (one list or None per conversation) and ``template_kwargs`` go to the backend's chat template and
    into the cache key."""
    fingerprint, key_settings = backend.fingerprint(), settings.key()
    per_conversation = list(tools) if tools is not None else [None] * len(conversations)
    keys = [
        GenerationCache.key(fingerprint, c, key_settings, tools=t, template_kwargs=template_kwargs)
        for c, t in zip(conversations, per_conversation, strict=True)
    ]
    outputs: list[Output | None] = [cache.get(k) for k in keys]
    missing = [i for i, o in enumerate(outputs) if o is None]
    if missing:

        def on_result(j: int, output: Output) -> None:
            outputs[missing[j]] = output
            cache.put(keys[missing[j]], output)

        extra: dict[str, Any] = {}
        if tools is not None:
            extra["tools"] = [per_conversation[i] for i in missing]
        if template_kwargs:
            extra["template_kwargs"] = dict(template_kwargs)
        backend.generate([conversations[i] for i in missing], settings, progress=progress, on_result=on_result, **extra)
    return outputs, len(missing)


def generate_per_budget(
    backend,
    conversations: list[list[dict]],
    settings: GenerationSettings,
    budgets: Sequence[int],
    cache: GenerationCache,
    *,
    progress: bool = True,
    template_kwargs: Mapping | None = None,
) -> tuple[list[Output | None], int]:
    """:func:`cached_generate` with each conversation's own ``max_new_tokens`` (``budgets``): one call per budget,
    so a batch of short-answer prompts never waits for a long budget."""
    outputs: list[Output | None] = [None] * len(conversations)
    generated = 0
    for cap in sorted(set(budgets)):
        indices = [i for i, b in enumerate(budgets) if b == cap]
        part, count = cached_generate(
            backend,
            [conversations[i] for i in indices],
            replace(settings, max_new_tokens=cap),
            cache,
            progress=progress,
            template_kwargs=template_kwargs,
        )
        generated += count
        for i, output in zip(indices, part, strict=True):
            outputs[i] = output
    return outputs, generated


def cached_outputs(
    backend,
    conversations: list[list[dict]],
    settings: GenerationSettings,
    budgets: Sequence[int],
    cache: GenerationCache,
    *,
    template_kwargs: Mapping | None = None,
) -> list[Output | None]:
    """The replies :func:`generate_per_budget` would return that are in the cache already (None for the others):
    what a run that failed half-way keeps."""
    fingerprint = backend.fingerprint()
    return [
        cache.get(
            GenerationCache.key(
                fingerprint, c, replace(settings, max_new_tokens=cap).key(), template_kwargs=template_kwargs
            )
        )
        for c, cap in zip(conversations, budgets)
    ]
