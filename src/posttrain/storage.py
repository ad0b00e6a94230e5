"""Writing files and folders so that a reader never sees half of one.

Every file posttrain writes for someone else to read (manifests, results, reports, pipeline state, pairs) goes
through :func:`atomic_write_text` / :func:`atomic_write_json`: the bytes go to a temporary file beside the target,
which then replaces the target in one ``os.replace``. Folders are built under ``<name>.partial`` and published by
:func:`publish_dir`'s rename, so an interrupted run leaves either the old folder or no folder, never half a new one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> Path:
    """:func:`atomic_write_text` of ``data`` as JSON (non-JSON values through ``str``), ending with a newline."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=str, ensure_ascii=False) + "\n")


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
