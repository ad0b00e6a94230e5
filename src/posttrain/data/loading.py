"""Loading a mixture of data sources as one validated ``messages`` dataset, and fingerprinting it.

The pieces below are shared with :mod:`posttrain.data.preference` (preference pairs): :func:`source_tables` (raw
rows of a source), :func:`normalize_rows` (columns, format detection, per-row conversion with problems collected)
and :func:`build_mixture` (fractions, empty checks, train/test split); :func:`fingerprint` works for both.

:func:`load_conversations` goes through every source before returning (and so before any model is loaded):

1. each :class:`~posttrain.data.spec.DatasetSpec` is resolved to a builtin task, the chit-chat conversations, local
   files or a Hub dataset -- a source that cannot be opened raises :class:`DataError` right away;
2. every row is converted to messages (:mod:`~posttrain.data.formats`) and validated
   (:mod:`~posttrain.data.validation`, :mod:`~posttrain.data.tools` for tool calls, reasoning and template
   variables); all problems, including malformed JSON lines, are collected and raised together as one
   :class:`DataValidationError`;
3. the sources are mixed by ``fraction`` (:mod:`~posttrain.data.mixture`) and optionally split into train/test.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posttrain.tasks import generate_task, task_to_row
from posttrain.tasks.base import SELECTION_POOL, Pool, TaskExample
from posttrain.tasks.working import reply_for

from .chitchat import chitchat_conversations, chitchat_data_file
from .files import RawRow, read_rows, resolve_local_files
from .formats import detect_format, drop_trained_prompts, to_messages
from .mixture import MIXTURE_SOURCE, mixture_sizes
from .spec import BUILTIN_DEFAULT_SAMPLES, BUILTIN_PREFIX, CHITCHAT, DatasetSpec, Identity
from .tools import Conversation, normalize_conversation
from .validation import DataError, ProblemCollector

if TYPE_CHECKING:
    import datasets

__all__ = [
    "MESSAGES_COLUMN",
    "ORIGIN_COLUMN",
    "SourceTable",
    "as_specs",
    "build_mixture",
    "builtin_examples",
    "fingerprint",
    "load_conversations",
    "messages_features",
    "normalize_rows",
    "source_kind",
    "source_tables",
]

MESSAGES_COLUMN = "messages"
"""The column of every dataset :func:`load_conversations` returns (the only one, unless rows carry tool calls,
reasoning or template variables)."""

ORIGIN_COLUMN = "origin"
"""Where each row comes from (``data/tools.jsonl line 3``), in datasets whose rows carry tool calls, reasoning or
template variables: what the chat-template checks of :func:`posttrain.training.sft_templates.check_template_support`
name."""


def messages_features(extended: bool = False) -> datasets.Features:
    """The Arrow schema of the returned datasets: ``messages: list[{role: string, content: string}]``.

    ``extended``: the schema of a dataset some of whose rows carry tool calls, reasoning or template variables
    (:class:`~posttrain.data.tools.Conversation`): each message also has ``tool_calls`` (``[{id, type, function:
    {name, arguments}}]``, arguments as JSON text), ``tool_call_id``, ``name`` and ``reasoning_content`` (null where
    unset), and the rows have ``tools`` and ``chat_template_kwargs`` (JSON text or null) and ``origin``. Read a row
    back with :meth:`Conversation.from_row <posttrain.data.tools.Conversation.from_row>`.
    """
    import datasets

    text = datasets.Value("string")
    message = {"role": text, "content": text}
    if not extended:
        return datasets.Features({MESSAGES_COLUMN: datasets.List(message)})
    call = {"id": text, "type": text, "function": {"name": text, "arguments": text}}
    message.update(tool_calls=datasets.List(call), tool_call_id=text, name=text, reasoning_content=text)
    return datasets.Features(
        {
            MESSAGES_COLUMN: datasets.List(message),
            "tools": text,
            "chat_template_kwargs": text,
            ORIGIN_COLUMN: text,
        }
    )


_EXTRAS = "_extras"
"""Marks (in memory only) a row that needs :func:`messages_features`' extended schema."""


def _conversation_features(rows: list[dict[str, Any]]) -> datasets.Features:
    """The plain schema, or the extended one when some row carries more than role/content messages."""
    return messages_features(extended=any(row.get(_EXTRAS) for row in rows))


SpecLike = DatasetSpec | Mapping[str, Any]


def as_specs(specs: Sequence[SpecLike], factory: Callable[..., DatasetSpec] = DatasetSpec) -> list[DatasetSpec]:
    """Accept plain dicts (e.g. straight from YAML) as well as specs, like TRL's ``DatasetMixtureConfig``.

    ``factory`` builds a spec from a dict (a :class:`DatasetSpec` subclass for loaders with their own formats).
    """
    return [spec if isinstance(spec, DatasetSpec) else factory(**spec) for spec in specs]


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


def builtin_examples(
    spec: DatasetSpec, seed: int, identity: Identity, pool: Pool = "train", n: int | None = None
) -> list[TaskExample]:
    """The examples of a ``builtin:<task>`` source: ``n`` (default: its ``num_samples``, else
    :data:`BUILTIN_DEFAULT_SAMPLES`) from ``pool``; an unknown task is a DataError listing the known ones."""
    task = spec.path[len(BUILTIN_PREFIX) :]
    try:
        count = n if n is not None else spec.num_samples or BUILTIN_DEFAULT_SAMPLES
        return generate_task(task, count, seed=seed, identity=identity, pool=pool)
    except KeyError as error:  # unknown task: the message lists the available ones
        raise DataError(spec.path, error.args[0]) from error


def _builtin_rows(
    spec: DatasetSpec, seed: int, identity: Identity, pool: Pool = "train", n: int | None = None
) -> list[RawRow]:
    examples = builtin_examples(spec, seed, identity, pool, n)
    if spec.reply != "response":  # think-then-answer (or answer-only) assistant turns
        return [RawRow(_replied_row(ex, spec.reply), i) for i, ex in enumerate(examples, start=1)]
    return [RawRow(task_to_row(ex), i) for i, ex in enumerate(examples, start=1)]


def _replied_row(example: TaskExample, reply: str) -> dict[str, Any]:
    """``example``'s row with its assistant turn replaced by ``reply_for(example, reply)``."""
    row = task_to_row(example)
    row["messages"][-1] = {**row["messages"][-1], "content": reply_for(example, reply)}
    return row


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
    except Exception as error:
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


@dataclass(frozen=True)
class SourceTable:
    """The raw rows of one file, Hub split or generated source, with how to read them.

    Attributes:
        source: The name errors use for it (the path as the user wrote it, or the file inside a folder).
        rows: Its rows, located by row (and line for JSONL).
        fmt: The spec's ``format`` (``"auto"`` means: detect it from the columns).
        columns: The spec's ``columns`` (only these are used), or ``None`` for all.
    """

    source: str
    rows: list[RawRow]
    fmt: str
    columns: Sequence[str] | None = None


Row = dict[str, Any]
FormatDetector = Callable[[list[str], str, str], str]
"""``detect(columns, fmt, source) -> format``: the concrete format of a table, from its column names and the spec's
``format`` (raise DataError when the columns do not fit)."""
RowConverter = Callable[[Mapping[str, Any], str, str, RawRow], Row]
"""``convert(data, format, source, raw) -> row``: one normalised, validated output row (raise DataError)."""


def source_tables(
    spec: DatasetSpec, problems: ProblemCollector, *, generated: Callable[[DatasetSpec], SourceTable]
) -> list[SourceTable]:
    """The raw rows of one source, per file: ``generated(spec)`` for ``builtin:`` and ``chitchat`` sources, the
    local files (unreadable lines go to ``problems``) or the Hub split otherwise.

    Raises:
        DataError: When the source cannot be found or opened (see :func:`files.resolve_local_files`).
    """
    if spec.path == CHITCHAT or spec.path.startswith(BUILTIN_PREFIX):
        return [generated(spec)]
    files = resolve_local_files(spec)
    tables = [(spec.path, _hub_rows(spec))] if files is None else _local_tables(spec, files, problems)
    return [SourceTable(source, rows, spec.format, spec.columns) for source, rows in tables]


def normalize_rows(
    table: SourceTable, problems: ProblemCollector, *, detect: FormatDetector, convert: RowConverter
) -> list[Row]:
    """Convert and validate the rows of one table; record problems, return the valid rows.

    Applies ``table.columns`` (a missing one is a problem naming the columns available), resolves the format
    (``detect`` is called with the columns present -- the union of the rows' keys -- whatever ``table.fmt`` is, so
    it decides what a forced format means) and converts each row with ``convert``.
    """
    rows, source, columns = table.rows, table.source, table.columns
    if not rows:
        return []
    present = list(dict.fromkeys(key for raw in rows for key in raw.data))
    if columns:
        missing = [c for c in columns if c not in present]
        if missing:
            problems.add(
                DataError(
                    source,
                    f"column(s) {', '.join(map(repr, missing))} not found; available: {', '.join(map(repr, present))}",
                )
            )
            return []
        present = list(columns)
    try:
        fmt = detect(present, table.fmt, source)
    except DataError as error:
        problems.add(error)
        return []
    converted: list[Row] = []
    for raw in rows:
        data = {k: v for k, v in raw.data.items() if k in present} if columns else raw.data
        try:
            converted.append(convert(data, fmt, source, raw))
        except DataError as error:
            problems.add(error)
    return converted


def _messages_format(present: list[str], fmt: str, source: str) -> str:
    return detect_format(present, source=source) if fmt == "auto" else fmt


def _conversation_row(conversation: Conversation, origin: str | None = None) -> Row:
    return {**conversation.to_row(origin), _EXTRAS: conversation.has_extras}


def _messages_row(data: Mapping[str, Any], fmt: str, source: str, raw: RawRow) -> Row:
    messages = to_messages(data, fmt, source=source, row_index=raw.row - 1, line=raw.line)
    conversation = normalize_conversation(
        messages,
        data.get("tools"),
        data.get("chat_template_kwargs"),
        source=source,
        row=raw.row,
        line=raw.line,
    )
    origin = f"{source} line {raw.line}" if raw.line is not None else f"{source} row {raw.row}"
    return _conversation_row(conversation, origin)


def _load_spec(spec: DatasetSpec, *, seed: int, identity: Identity, problems: ProblemCollector) -> list[Row]:
    """The valid conversations of one source as ``{"messages": ...}`` rows (problems go to ``problems``)."""

    def generated(spec: DatasetSpec) -> SourceTable:
        rows = _chitchat_rows(spec) if spec.path == CHITCHAT else _builtin_rows(spec, seed, identity)
        return SourceTable(spec.path, rows, MESSAGES_COLUMN)

    return [
        row
        for table in source_tables(spec, problems, generated=generated)
        for row in normalize_rows(table, problems, detect=_messages_format, convert=_messages_row)
    ]


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
        from user and ending with an assistant turn. When some row carries tool calls, tool results, reasoning,
        ``tools`` or ``chat_template_kwargs`` (:mod:`~posttrain.data.tools`), the splits have the extended schema
        of :func:`messages_features` instead (``tool`` messages then follow an assistant message that calls tools);
        read rows with :meth:`Conversation.from_row <posttrain.data.tools.Conversation.from_row>`.

    Raises:
        DataError: A source cannot be found, opened or configured (missing local path, unsupported extension,
            unknown builtin task, Hub unreachable...), a source or the mixture is empty, or the mixture settings
            are invalid.
        DataValidationError: Some rows are malformed or invalid; every problem found (up to a cap) is listed.
    """
    identity = identity or Identity()

    def heldout(spec: DatasetSpec, n: int) -> list[Row] | None:
        if not spec.path.startswith(BUILTIN_PREFIX):
            return None
        rows = _builtin_rows(spec, seed, identity, pool=SELECTION_POOL, n=n)
        return [_conversation_row(Conversation(raw.data[MESSAGES_COLUMN])) for raw in rows]

    return build_mixture(
        as_specs(specs),
        lambda spec, problems: _load_spec(spec, seed=seed, identity=identity, problems=problems),
        _conversation_features,
        test_split_size=test_split_size,
        seed=seed,
        heldout=heldout,
    )


def build_mixture(
    specs: Sequence[DatasetSpec],
    load_spec: Callable[[DatasetSpec, ProblemCollector], list[Row]],
    features: datasets.Features | Callable[[list[Row]], datasets.Features],
    *,
    test_split_size: float | int | None,
    seed: int,
    heldout: Callable[[DatasetSpec, int], list[Row] | None] | None = None,
) -> datasets.DatasetDict:
    """Load every source with ``load_spec``, raise all problems together, mix by ``fraction`` and split.

    The shared back half of :func:`load_conversations` and :func:`~posttrain.data.preference.load_preferences`:
    ``load_spec(spec, problems)`` returns the valid rows of one source (dicts with exactly the ``features``
    columns, or more), recording bad rows in ``problems``; see :func:`load_conversations` for the mixture and split
    rules. ``features`` may be a function of the mixed rows (the same schema then serves both splits).
    ``heldout(spec, n)``, when given, returns up to ``n`` rows of a source's own validation pool (built-in tasks) or
    None: the test rows drawn from such a source are replaced by them (those it has no distinct row for are left
    out), so no held-out row comes from a training pool.

    Raises:
        DataError: No sources, an empty source or mixture, or a bad ``test_split_size``.
        DataValidationError: Any problem recorded while loading.
    """
    import datasets

    if not specs:
        raise DataError(MIXTURE_SOURCE, "no datasets given")
    problems = ProblemCollector()
    parts = [load_spec(spec, problems) for spec in specs]
    problems.raise_if_any()
    for spec, part in zip(specs, parts, strict=True):
        if not part:
            raise DataError(spec.path, "dataset is empty: it has no rows")
    counts = mixture_sizes([len(part) for part in parts], [spec.fraction for spec in specs])
    rows = [row for part, count in zip(parts, counts, strict=True) for row in part[:count]]
    sources = [k for k, count in enumerate(counts) for _ in range(min(count, len(parts[k])))]
    if not rows:
        raise DataError(MIXTURE_SOURCE, f"the mixture is empty (rows taken per source: {counts})")
    if callable(features):
        features = features(rows)

    def table(selected: list[Row]) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {name: [row[name] for row in selected] for name in features}, features=features
        )

    if test_split_size is None:
        return datasets.DatasetDict({"train": table(rows)})
    test_size = _test_split_size(test_split_size, len(rows))
    split = datasets.Dataset.from_dict({"i": list(range(len(rows)))}).train_test_split(
        test_size=test_size, shuffle=True, seed=seed
    )
    train, test = [rows[i] for i in split["train"]["i"]], [rows[i] for i in split["test"]["i"]]
    if heldout is not None:
        test_sources = [sources[i] for i in split["test"]["i"]]
        for k, spec in enumerate(specs):
            places = [j for j, source in enumerate(test_sources) if source == k]
            replacement = heldout(spec, len(places)) if places else None
            if replacement is None:
                continue
            for j, row in zip(places, replacement, strict=False):
                test[j] = row
            short = set(places[len(replacement) :])  # its pool has fewer distinct prompts: a smaller held-out split
            test = [row for j, row in enumerate(test) if j not in short]
            test_sources = [source for j, source in enumerate(test_sources) if j not in short]
    test = drop_trained_prompts(train, test, lambda row: row.get(MESSAGES_COLUMN, row.get("prompt")))
    if not test:
        return datasets.DatasetDict({"train": table(train)})
    return datasets.DatasetDict({"train": table(train), "test": table(test)})


# ----------------------------------------------------------------------------------------------- fingerprint


def _split_sha256(split: datasets.Dataset) -> str:
    """One canonical JSON line per row: the value itself for a one-column split (``messages``), else the row
    (without ``origin``, which says where a row comes from, not what it is)."""
    digest = hashlib.sha256()
    names = [name for name in split.column_names if name != ORIGIN_COLUMN]
    for batch in split.iter(batch_size=1000):
        for i in range(len(batch[names[0]])):
            value = batch[names[0]][i] if len(names) == 1 else {name: batch[name][i] for name in names}
            digest.update(json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode())
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
    if spec.reply != "response":
        info["reply"] = spec.reply
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
        per row: the conversation of a ``messages`` split, the ``{column: value}`` object of a split with several
        columns such as preference pairs), so it changes when any row, or the row order, changes. Local sources also
        list their files with ``bytes`` and ``sha256``; ``chitchat`` lists its data file; Hub sources their
        ``name``/``split``.
    """
    return {
        "splits": {name: {"rows": len(split), "sha256": _split_sha256(split)} for name, split in ds.items()},
        "sources": [_source_info(spec) for spec in as_specs(specs)],
    }
