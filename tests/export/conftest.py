"""Fixtures for export tests: the tiny Qwen2 chat model and llama.cpp's converter (fetched once with pip)."""

from __future__ import annotations

import pytest
from tiny_export import build_tiny_qwen2


@pytest.fixture(scope="session")
def tiny_qwen2_model(tmp_path_factory):
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def converter():
    """llama.cpp's converter at the pinned version (needs llama-cpp-python for the runtime side)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from posttrain.export.llama_cpp import converter_dir

    return converter_dir()


@pytest.fixture
def go_tool():
    import shutil

    if shutil.which("go") is None:
        pytest.skip("the `go` tool is not installed (Debian/Ubuntu: apt-get install -y golang-go)")
