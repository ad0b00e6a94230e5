"""Fixtures for the data-layer tests: writers for small data files in ``tmp_path``. Everything runs offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest


def _chat(i: int, *, system: bool = False) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
    if system:
        messages.insert(0, {"role": "system", "content": "Be brief."})
    return {"messages": messages}


@pytest.fixture
def chat() -> Callable[..., dict[str, Any]]:
    """``chat(i, system=False)``: a valid ``messages`` row whose contents identify it by ``i``."""
    return _chat


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """``write_jsonl(name, lines)``: each line a row (dict, written as JSON) or a raw string written verbatim."""

    def write(name: str, lines: Iterable[Any]) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def write_json(tmp_path: Path) -> Callable[[str, Any], Path]:
    """``write_json(name, document)``: the document dumped as one JSON value."""

    def write(name: str, document: Any) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")
        return path

    return write


@pytest.fixture
def chdir_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from ``tmp_path`` so relative paths in specs resolve there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
