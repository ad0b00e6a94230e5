"""Writing files and folders so that a reader never sees half of one.

Every file posttrain writes for someone else to read (manifests, results, reports, pipeline state, pairs) goes
through :func:`atomic_write_text` / :func:`atomic_write_json`: the bytes go to a temporary file beside the target,
which then replaces the target in one ``os.replace``. Folders are built under ``<name>.partial`` and published by
:func:`publish_dir`'s rename, so an interrupted run leaves either the old folder or no folder, never half a new one:
:func:`staged_dir` (a fresh temporary folder, for work that is redone whole) or :func:`partial_dir` (one fixed folder
per output, for a training run that an interruption leaves to be resumed from its ``checkpoint-<step>`` folders:
:func:`checkpoints`, :func:`resume_value`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder; returns the path. The file gets a new
    file's usual permissions (not ``mkstemp``'s private ones). With ``overwrite=False`` a ``path`` that exists when
    the new file is ready (another writer got there first) is left alone and FileExistsError raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if not overwrite and path.exists():
            raise FileExistsError(path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> Path:
    """:func:`atomic_write_text` of ``data`` as JSON (non-JSON values through ``str``), ending with a newline."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=str, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary folder beside ``final`` to write into; when the block ends without an error it replaces
    ``final`` as a whole (:func:`publish_dir`), otherwise it is removed and ``final`` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", suffix=".partial", dir=final.parent))
    try:
        yield work
        publish_dir(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def publish_dir(work: str | os.PathLike, final: str | os.PathLike, *, replace: bool = True) -> Path:
    """Move the finished folder ``work`` to ``final`` by rename. An existing ``final`` is replaced (``replace``) or
    refused with FileExistsError; it is removed only after the new folder is in place."""
    work, final = Path(work), Path(final)
    old = None
    if final.exists():
        if not replace:
            raise FileExistsError(final)
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    work.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def partial_dir(final: str | os.PathLike) -> Path:
    """The work folder of a resumable run whose result is published to ``final``: ``<parent>/.<name>.partial``, the
    same for every run, so a run that was interrupted can be continued (:func:`publish_dir` publishes it)."""
    final = Path(final)
    return final.parent / f".{final.name}.partial"


def resume_value(value: str | bool | None) -> str | bool | None:
    """``resume_from_checkpoint`` as a run acts on it: True (the newest checkpoint) for ``true``/``latest``, None
    (start afresh) for ``false``/``none``/``null``/empty, else the checkpoint folder given. Values from the command
    line arrive as strings; either spelling, any case."""
    if value is None or isinstance(value, bool):
        return value or None
    text = str(value).strip().lower()
    if text in ("true", "latest"):
        return True
    if text in ("false", "none", "null", ""):
        return None
    return value


CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(*folders: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-<step>`` folders in ``folders``, oldest step first (the last one is the one to resume)."""
    found = [
        (int(m.group(1)), path)
        for folder in folders
        if Path(folder).is_dir()
        for path in Path(folder).iterdir()
        if path.is_dir() and (m := CHECKPOINT_RE.match(path.name))
    ]
    return [path for _, path in sorted(found)]
