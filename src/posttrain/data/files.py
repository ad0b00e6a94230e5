"""Local data files: deciding whether a spec names local data, finding its files, and reading their rows.

JSON and JSONL are parsed here with :mod:`json` (not through :mod:`datasets`) so that every problem can be reported
with its file and line number. CSV is read with :mod:`csv` so every cell stays a string (``"42"`` must not turn into
an integer answer); Parquet with :mod:`pyarrow`.

Problems are recorded in a :class:`~posttrain.data.validation.ProblemCollector` rather than raised, so that one pass
reports every malformed line of every file.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import DatasetSpec
from .validation import DataError, ProblemCollector

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "RawRow",
    "looks_local",
    "read_rows",
    "resolve_local_files",
]

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".jsonl", ".json", ".parquet", ".csv")
"""File types posttrain reads."""

# Extensions that mark a path as local (so a missing file is reported as such, not looked up on the Hub).
_DATA_LIKE_EXTENSIONS = SUPPORTED_EXTENSIONS + (
    ".ndjson",
    ".tsv",
    ".txt",
    ".arrow",
    ".feather",
    ".xlsx",
    ".xls",
    ".gz",
    ".zip",
    ".bz2",
    ".xz",
    ".zst",
    ".yaml",
    ".yml",
    ".pkl",
    ".pickle",
)
_BUILDER_NAMES = ("json", "csv", "parquet")  # `path: json` + `data_files: ...`, as with datasets.load_dataset
_JSON_LIST_KEYS = ("data", "rows")  # a .json file may hold {"data": [...]} or {"rows": [...]}
_JSON_COLUMNS_IN_CSV = ("messages", "conversations")  # CSV cells holding a JSON list of turns


@dataclass(frozen=True)
class RawRow:
    """One example as read from its source, with where it was found (see :mod:`posttrain.data.validation`)."""

    data: Any
    row: int
    line: int | None = None


def _supported_list() -> str:
    return ", ".join(SUPPORTED_EXTENSIONS)


def looks_local(path: str) -> bool:
    """Whether ``path`` names local data rather than a Hugging Face Hub dataset.

    True when it exists on disk, starts with ``.``, ``/`` or ``~``, contains the platform's path separator other
    than ``/`` (Hub names are ``org/name``, so one ``/`` alone is not enough), contains more than one ``/``, or ends
    with a data-file extension (``.jsonl``, ``.csv``, ``.parquet``, ``.txt``...).
    """
    if os.path.exists(os.path.expanduser(path)):
        return True
    separators = {os.sep, os.altsep or os.sep} - {"/"}
    return (
        path.startswith((".", "/", "~"))
        or any(sep in path for sep in separators)
        or path.count("/") > 1
        or path.lower().endswith(_DATA_LIKE_EXTENSIONS)
    )


def _check_supported(path: Path, display: str) -> None:
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise DataError(
            display,
            f"unsupported file type {path.suffix or '(no extension)'!r}; supported: {_supported_list()}",
        )


def _data_files(spec: DatasetSpec) -> list[str]:
    """``spec.data_files`` as a list (a ``{split: files}`` mapping is resolved with ``spec.split``)."""
    files = spec.data_files
    if isinstance(files, dict):
        if spec.split not in files:
            raise DataError(spec.path, f"data_files has no entry for split {spec.split!r} (has: {', '.join(files)})")
        files = files[spec.split]
    return [files] if isinstance(files, str) else list(files or [])


def _named_files(base: Path, names: Iterable[str], source: str) -> list[Path]:
    paths = [base / Path(name).expanduser() for name in names]
    for path in paths:
        if not path.is_file():
            raise DataError(source, f"data file {str(path)!r} not found (resolved to {path.resolve()})")
        _check_supported(path, str(path))
    return paths


def resolve_local_files(spec: DatasetSpec) -> list[Path] | None:
    """The local files ``spec`` refers to, in load order, or ``None`` when it names a Hub dataset.

    A file gives itself; a folder gives its supported files (directly inside it, hidden ones skipped) in sorted
    order, or the ``data_files`` listed relative to it (``data_dir`` is joined to the folder first); ``json``,
    ``csv`` or ``parquet`` with ``data_files`` gives those files.

    Raises:
        DataError: When a path that looks local (see :func:`looks_local`) does not exist, a file has an
            unsupported extension, or a folder holds no supported file.
    """
    path = spec.path
    if path in _BUILDER_NAMES and spec.data_files is not None:
        return _named_files(Path(spec.data_dir or "."), _data_files(spec), path)
    local = Path(path).expanduser()
    if local.is_file():
        _check_supported(local, path)
        return [local]
    if local.is_dir():
        folder = local / spec.data_dir if spec.data_dir else local
        if spec.data_files is not None:
            return _named_files(folder, _data_files(spec), path)
        if not folder.is_dir():
            raise DataError(path, f"data_dir {spec.data_dir!r} is not a folder inside {path!r}")
        entries = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        files = [p for p in entries if p.suffix.lower() in SUPPORTED_EXTENSIONS]
        if not files:
            found = ", ".join(p.name for p in entries[:10]) or "nothing"
            raise DataError(
                path, f"folder has no data files with a supported extension ({_supported_list()}); found: {found}"
            )
        return files
    if looks_local(path):
        raise DataError(
            path,
            f"local file or folder not found (resolved to {local.resolve()}). The path looks local (not a Hugging "
            "Face Hub name like 'org/dataset'), so it was not looked up on the Hub; check the spelling and the "
            "working directory.",
        )
    return None


# --------------------------------------------------------------------------------------------------- readers


def _json_rows(
    items: Iterable[tuple[Any, int, int | None]], display: str, problems: ProblemCollector, limit: int | None
) -> list[RawRow]:
    """Keep the JSON objects among ``(value, row, line)``, recording a problem for anything else."""
    rows: list[RawRow] = []
    for value, row, line in items:
        if limit is not None and len(rows) >= limit:
            break
        if isinstance(value, dict):
            rows.append(RawRow(value, row, line))
        else:
            problems.add(DataError(display, f"expected a JSON object, got {_json_type(value)}", row=row, line=line))
    return rows


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _jsonl_items(lines: Iterable[str], display: str, problems: ProblemCollector) -> Iterator[tuple[Any, int, int]]:
    row = 0
    for line_number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        row += 1
        try:
            yield json.loads(text.rstrip("\r\n")), row, line_number
        except json.JSONDecodeError as error:
            problems.add(DataError(display, f"invalid JSON: {error.msg} (column {error.colno})", line=line_number))


def _read_jsonl(path: Path, display: str, problems: ProblemCollector, limit: int | None) -> list[RawRow]:
    with path.open(encoding="utf-8-sig") as handle:
        return _json_rows(_jsonl_items(handle, display, problems), display, problems, limit)


def _read_json(path: Path, display: str, problems: ProblemCollector, limit: int | None) -> list[RawRow]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":  # one object per line in a .json file: read it as JSONL
            return _json_rows(_jsonl_items(text.splitlines(), display, problems), display, problems, limit)
        problems.add(DataError(display, f"invalid JSON: {error.msg} (column {error.colno})", line=error.lineno))
        return []
    if isinstance(document, dict):
        key = next((k for k in _JSON_LIST_KEYS if isinstance(document.get(k), list)), None)
        if key is None:
            keys = ", ".join(repr(k) for k in list(document)[:10]) or "none"
            problems.add(
                DataError(
                    display,
                    "expected a JSON array of rows or an object with a 'data' or 'rows' "
                    f"array (found an object with keys {keys})",
                )
            )
            return []
        document = document[key]
    if not isinstance(document, list):
        problems.add(DataError(display, f"expected a JSON array of rows, got {_json_type(document)}"))
        return []
    return _json_rows(((value, i, None) for i, value in enumerate(document, start=1)), display, problems, limit)


def _decode_json_cell(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _read_csv(path: Path, display: str, problems: ProblemCollector, limit: int | None) -> list[RawRow]:
    rows: list[RawRow] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            for row_number, record in enumerate(reader, start=1):
                if limit is not None and len(rows) >= limit:
                    break
                if None in record:
                    problems.add(DataError(display, "has more fields than the header row", row=row_number))
                    continue
                for column in _JSON_COLUMNS_IN_CSV:
                    if column in record:
                        record[column] = _decode_json_cell(record[column])
                rows.append(RawRow(dict(record), row_number))
        except csv.Error as error:
            problems.add(DataError(display, f"malformed CSV (file line {reader.line_num}): {error}"))
    return rows


def _read_parquet(path: Path, display: str, problems: ProblemCollector, limit: int | None) -> list[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        problems.add(DataError(display, f"cannot read Parquet file: {error}"))
        return []
    if limit is not None:
        table = table.slice(0, limit)
    return [RawRow(record, i) for i, record in enumerate(table.to_pylist(), start=1)]


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def read_rows(path: Path, *, display: str, problems: ProblemCollector, limit: int | None = None) -> list[RawRow]:
    """Read the rows of one supported file.

    Args:
        path: The file (its extension picks the reader).
        display: The name to use in error messages (the path as the user wrote it).
        problems: Where unreadable lines/rows and unreadable files are recorded.
        limit: Stop after this many good rows.

    Returns:
        The rows that could be read: dicts for JSON/JSONL/CSV/Parquet records, located by row (and line for JSONL).
    """
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        _check_supported(path, display)
    try:
        return reader(path, display, problems, limit)  # type: ignore[misc]
    except UnicodeDecodeError as error:
        problems.add(DataError(display, f"is not UTF-8 text ({error.reason} at byte {error.start})"))
    except OSError as error:
        problems.add(DataError(display, f"cannot read file: {error.strerror or error}"))
    return []
