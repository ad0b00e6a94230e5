"""Loading a mixture of data sources as one validated ``messages`` dataset, and fingerprinting it.

:func:`load_conversations` goes through every source before returning (and so before any model is loaded):

1. each :class:`~posttrain.data.spec.DatasetSpec` is resolved to a builtin task, the chit-chat conversations, local
   files or a Hub dataset -- a source that cannot be opened raises :class:`DataError` right away;
2. every row is converted to messages (:mod:`~posttrain.data.formats`) and validated
   (:mod:`~posttrain.data.validation`); all problems, including malformed JSON lines, are collected and raised
   together as one :class:`DataValidationError`;
3. the sources are mixed by ``fraction`` (:mod:`~posttrain.data.mixture`) and optionally split into train/test.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .builtin import generate_task, task_to_messages
from .chitchat import chitchat_conversations, chitchat_data_file
from .files import RawRow, read_rows, resolve_local_files
from .formats import detect_format, to_messages
from .mixture import MIXTURE_SOURCE, mixture_sizes
from .spec import BUILTIN_DEFAULT_SAMPLES, BUILTIN_PREFIX, CHITCHAT, DatasetSpec, Identity
from .validation import DataError, ProblemCollector, validate_messages

if TYPE_CHECKING:
    import datasets

__all__ = ["MESSAGES_COLUMN", "fingerprint", "load_conversations", "messages_features", "source_kind"]

MESSAGES_COLUMN = "messages"
"""The single column of every dataset :func:`load_conversations` returns."""

Messages = list[dict[str, str]]


def messages_features() -> datasets.Features:
    """The Arrow schema of the returned datasets: ``messages: list[{role: string, content: string}]``."""
    import datasets

    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    return datasets.Features({MESSAGES_COLUMN: datasets.List(message)})


SpecLike = DatasetSpec | Mapping[str, Any]


def _as_specs(specs: Sequence[SpecLike]) -> list[DatasetSpec]:
    """Accept plain dicts (e.g. straight from YAML) as well as specs, like TRL's ``DatasetMixtureConfig``."""
    return [spec if isinstance(spec, DatasetSpec) else DatasetSpec(**spec) for spec in specs]


def source_kind(spec: DatasetSpec) -> str:
    """``"builtin"``, ``"chitchat"``, ``"local"`` or ``"hub"``: where ``spec``'s rows come from.

    Raises:
        DataError: If ``spec.path`` looks like a local path that does not exist (see :func:`files.looks_local`).
    """
    if spec.path == CHITCHAT:
        return "chitchat"
    if spec.path.startswith(BUILTIN_PREFIX):
        return "builtin"
    return "hub" if resolve_local_files(spec) is None else "local"


# ------------------------------------------------------------------------------------------------- sources

def _builtin_rows(spec: DatasetSpec, seed: int, identity: Identity) -> list[RawRow]:
    task = spec.path[len(BUILTIN_PREFIX):]
    try:
        examples = generate_task(task, spec.num_samples or BUILTIN_DEFAULT_SAMPLES, seed=seed, identity=identity)
    except KeyError as error:  # unknown task: the message lists the available ones
        raise DataError(spec.path, error.args[0]) from error
    return [RawRow({MESSAGES_COLUMN: task_to_messages(ex)}, i) for i, ex in enumerate(examples, start=1)]


def _chitchat_rows(spec: DatasetSpec) -> list[RawRow]:
    conversations = chitchat_conversations(spec.num_samples)
    return [RawRow({MESSAGES_COLUMN: messages}, i) for i, messages in enumerate(conversations, start=1)]


def _hub_problem(error: Exception) -> str:
    from huggingface_hub import constants

    text = str(error).strip()
    detail = type(error).__name__ + (f": {text.splitlines()[0]}" if text else "")
    if constants.is_offline_mode() or isinstance(error, ConnectionError):
        why = "offline mode is on (HF_HUB_OFFLINE is set)" if constants.is_offline_mode() else "the Hub is unreachable"
        return (
            f"cannot load this Hugging Face Hub dataset: {why} and it is not in the local cache ({detail}). "
            "Use a local .jsonl/.json/.parquet/.csv file or folder instead (there is no local path with this name), "
            "or load the dataset once while online so that it is cached."
        )
    return (
        f"cannot load this Hugging Face Hub dataset ({detail}). It is not a local file or folder either "
        f"(relative to {os.getcwd()})."
    )


def _hub_rows(spec: DatasetSpec) -> list[RawRow]:
    import datasets

    try:
        dataset = datasets.load_dataset(
            spec.path, name=spec.name, data_dir=spec.data_dir, data_files=spec.data_files, split=spec.split
        )
    except Exception as error:  # noqa: BLE001 -- the boundary with `datasets`: turn anything into one clear error
        raise DataError(spec.path, _hub_problem(error)) from error
    if not isinstance(dataset, datasets.Dataset):
        raise DataError(spec.path, f"split must name one split of the dataset (got {spec.split!r})")
    if spec.num_samples is not None:
        dataset = dataset.select(range(min(spec.num_samples, len(dataset))))
    return [RawRow(record, i) for i, record in enumerate(dataset.to_list(), start=1)]


def _local_tables(spec: DatasetSpec, files: list[Path], problems: ProblemCollector) -> list[tuple[str, list[RawRow]]]:
    """``(display name, rows)`` per file, reading no more than ``spec.num_samples`` rows in all."""
    single = len(files) == 1 and Path(spec.path).expanduser().is_file()
    remaining = spec.num_samples
    tables = []
    for path in files:
        if remaining == 0:
            break
        display = spec.path if single else str(path)
        rows = read_rows(path, display=display, problems=problems, limit=remaining)
        tables.append((display, rows))
        remaining = None if remaining is None else remaining - len(rows)
    return tables


def _normalize(
    rows: list[RawRow], fmt: str, columns: Sequence[str] | None, source: str, problems: ProblemCollector
) -> list[Messages]:
    """Convert and validate ``rows`` of one file or dataset; record problems, return the valid conversations."""
    if not rows:
        return []
    present = list(dict.fromkeys(key for raw in rows for key in raw.data))
    if columns:
        missing = [c for c in columns if c not in present]
        if missing:
            problems.add(DataError(source, f"column(s) {', '.join(map(repr, missing))} not found; available: "
                                           f"{', '.join(map(repr, present))}"))
            return []
        present = list(columns)
    try:
        fmt = detect_format(present, source=source) if fmt == "auto" else fmt
    except DataError as error:
        problems.add(error)
        return []
    conversations: list[Messages] = []
    for raw in rows:
        data = {k: v for k, v in raw.data.items() if k in present} if columns else raw.data
        try:
            messages = to_messages(data, fmt, source=source, row_index=raw.row - 1, line=raw.line)
            validate_messages(messages, source=source, row=raw.row, line=raw.line)
        except DataError as error:
            problems.add(error)
            continue
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    return conversations


def _load_spec(spec: DatasetSpec, *, seed: int, identity: Identity, problems: ProblemCollector) -> list[Messages]:
    """The valid conversations of one source (problems with its rows go to ``problems``)."""
    if spec.path == CHITCHAT:
        return _normalize(_chitchat_rows(spec), MESSAGES_COLUMN, None, spec.path, problems)
    if spec.path.startswith(BUILTIN_PREFIX):
        return _normalize(_builtin_rows(spec, seed, identity), MESSAGES_COLUMN, None, spec.path, problems)
    files = resolve_local_files(spec)
    tables = [(spec.path, _hub_rows(spec))] if files is None else _local_tables(spec, files, problems)
    return [conv for source, rows in tables for conv in _normalize(rows, spec.format, spec.columns, source, problems)]


# ------------------------------------------------------------------------------------------------- mixture

def _test_split_size(test_split_size: float | int, total: int) -> float | int:
    """``test_split_size`` as ``train_test_split`` wants it, or a :class:`DataError` when it is not a fraction in
    (0, 1) or a count leaving at least one training row. A whole float >= 1 (``10.0``, as a float-typed config
    field delivers ``10``) is a row count."""
    if isinstance(test_split_size, bool) or not isinstance(test_split_size, (int, float)):
        raise DataError(MIXTURE_SOURCE, f"test_split_size must be a fraction or a row count (got {test_split_size!r})")
    if isinstance(test_split_size, float) and test_split_size >= 1 and test_split_size.is_integer():
        test_split_size = int(test_split_size)
    if isinstance(test_split_size, float):
        if not 0.0 < test_split_size < 1.0:
            raise DataError(MIXTURE_SOURCE, f"test_split_size {test_split_size} must be between 0 and 1 (exclusive)")
        n_test = math.ceil(test_split_size * total)  # as datasets.train_test_split rounds it
    else:
        n_test = test_split_size
    if n_test < 1 or total - n_test < 1:
        raise DataError(
            MIXTURE_SOURCE,
            f"test_split_size {test_split_size} leaves {int(n_test)} test and {int(total - n_test)} training rows of "
            f"{total}; both need at least one",
        )
    return test_split_size


def load_conversations(
    specs: Sequence[SpecLike],
    *,
    test_split_size: float | int | None = None,
    seed: int = 42,
    identity: Identity | None = None,
) -> datasets.DatasetDict:
    """Load, validate and mix data sources into conversations.

    Args:
        specs: The sources (:class:`~posttrain.data.spec.DatasetSpec`, or dicts of its fields). With ``fraction``
            set on all of them they are mixed by TRL's rule (:mod:`~posttrain.data.mixture`); otherwise they are
            concatenated in order.
        test_split_size: Size of a held-out ``"test"`` split: a fraction in (0, 1) or a number of rows (an int, or
            a whole float >= 1). The split is shuffled with ``seed``. ``None``: only ``"train"``, in source order.
        seed: Seed for builtin task generation and the train/test split; same inputs and seed, same rows.
        identity: Who the assistant is, for the ``builtin:identity`` task (default :class:`Identity()`).

    Returns:
        A ``DatasetDict`` with ``"train"`` (and ``"test"``), each with exactly one column, ``messages``: a list of
        ``{"role", "content"}`` with an optional leading system message, then user/assistant turns alternating
        from user and ending with an assistant turn.

    Raises:
        DataError: A source cannot be found, opened or configured (missing local path, unsupported extension,
            unknown builtin task, Hub unreachable...), a source or the mixture is empty, or the mixture settings
            are invalid.
        DataValidationError: Some rows are malformed or invalid; every problem found (up to a cap) is listed.
    """
    import datasets

    specs = _as_specs(specs)
    if not specs:
        raise DataError(MIXTURE_SOURCE, "no datasets given")
    identity = identity or Identity()
    problems = ProblemCollector()
    parts = [_load_spec(spec, seed=seed, identity=identity, problems=problems) for spec in specs]
    problems.raise_if_any()
    for spec, part in zip(specs, parts, strict=True):
        if not part:
            raise DataError(spec.path, "dataset is empty: it has no rows")
    counts = mixture_sizes([len(part) for part in parts], [spec.fraction for spec in specs])
    rows = [conv for part, count in zip(parts, counts, strict=True) for conv in part[:count]]
    if not rows:
        raise DataError(MIXTURE_SOURCE, f"the mixture is empty (rows taken per source: {counts})")
    dataset = datasets.Dataset.from_dict({MESSAGES_COLUMN: rows}, features=messages_features())
    if test_split_size is None:
        return datasets.DatasetDict({"train": dataset})
    test_size = _test_split_size(test_split_size, len(dataset))
    return dataset.train_test_split(test_size=test_size, shuffle=True, seed=seed)


# ----------------------------------------------------------------------------------------------- fingerprint

def _split_sha256(split: datasets.Dataset) -> str:
    digest = hashlib.sha256()
    for batch in split.iter(batch_size=1000):
        for messages in batch[MESSAGES_COLUMN]:
            digest.update(json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode())
            digest.update(b"\n")
    return digest.hexdigest()


def _file_info(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _source_info(spec: DatasetSpec) -> dict[str, Any]:
    kind = source_kind(spec)
    info: dict[str, Any] = {
        "path": spec.path,
        "kind": kind,
        "format": spec.format,
        "fraction": spec.fraction,
        "num_samples": spec.num_samples,
    }
    if kind == "hub":
        info.update(name=spec.name, data_dir=spec.data_dir, data_files=spec.data_files, split=spec.split)
    elif kind == "local":
        info["files"] = [_file_info(path) for path in resolve_local_files(spec) or []]
    elif kind == "chitchat":
        info["files"] = [_file_info(chitchat_data_file())]
    if spec.columns:
        info["columns"] = list(spec.columns)
    return info


def fingerprint(ds: datasets.DatasetDict, specs: Sequence[SpecLike]) -> dict[str, Any]:
    """A JSON-serialisable record of exactly which data a run used, for the run manifest.

    Returns:
        ``{"splits": {split: {"rows": n, "sha256": hex}}, "sources": [{"path", "kind", "format", "fraction",
        "num_samples", ...}]}``. A split's ``sha256`` covers its normalised rows in order (one canonical JSON line
        per conversation), so it changes when any row, or the row order, changes. Local sources also list their
        files with ``bytes`` and ``sha256``; ``chitchat`` lists its data file; Hub sources their ``name``/``split``.
    """
    return {
        "splits": {name: {"rows": len(split), "sha256": _split_sha256(split)} for name, split in ds.items()},
        "sources": [_source_info(spec) for spec in _as_specs(specs)],
    }
