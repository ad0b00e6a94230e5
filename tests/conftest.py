"""Shared fixtures: tiny Llamas (see ``tiny.py``), built once per session, offline.

``tiny_base_model`` has no chat template and no ChatML tokens (a *base* model: posttrain must add ChatML);
``tiny_chat_model`` already carries ChatML tokens and a template (an *instruct* model).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# training commands run in the test process (tests/test_cli_launch.py covers `posttrain <stage>` under accelerate)
os.environ.setdefault("POSTTRAIN_LAUNCHER", "none")

import pytest

from tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-base"), chat=False)


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat"), chat=True)


@pytest.fixture(scope="session")
def tiny_untied_base_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-untied"), chat=False, tie=False)


#: the training precisions every tiny-model training test runs in, whatever this CPU has natively
PRECISIONS = ("bf16", "fp32")


@pytest.fixture(scope="module", params=PRECISIONS)
def precision(request):
    """Train with ``POSTTRAIN_PRECISION`` set to each precision in turn (stages in subprocesses inherit it), so a
    machine with AVX512-BF16 also runs the fp32 path of an AVX2-only CPU, and the reverse."""
    patch = pytest.MonkeyPatch()
    patch.setenv("POSTTRAIN_PRECISION", request.param)
    yield request.param
    patch.undo()
