"""GGUF conversion with llama.cpp's own converter (pinned), loading and tokenizing with llama.cpp, bad input.

Needs llama-cpp-python (compiled; CI restores the wheel from pip's cache) and, once, PyPI for the converter sdist.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from posttrain.export.prompts import TEMPLATE_CONVERSATIONS, TOKENIZER_TEXTS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def converted(tiny_chat_model, tiny_qwen2_model, converter, tmp_path_factory):
    from posttrain.export.llama_cpp import check_architecture, convert

    out = tmp_path_factory.mktemp("gguf")
    results = {}
    for name, model in (("llama", Path(tiny_chat_model)), ("qwen2", Path(tiny_qwen2_model))):
        check_architecture(model, converter)
        info = convert(model, out / f"{name}.f16.gguf", "f16", llama_cpp=converter)
        results[name] = (model, out / f"{name}.f16.gguf", info)
    return results


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_llama_cpp_loads_and_tokenizes_like_hf(converted, name):
    from transformers import AutoTokenizer

    from posttrain.export.verify import check_tokenization, gguf_metadata, load_gguf

    model, gguf, info = converted[name]
    # the locally trained tokenizer's hash is unknown to llama.cpp: documented fallback, not a crash. transformers
    # loads the Qwen2 folder's tokenizer with Qwen2's own split pattern (not tokenizer.json's byte-level one).
    expected = {"llama": "gpt-2", "qwen2": "qwen2"}[name]
    assert info["pre_tokenizer_fallback"] == expected
    metadata = gguf_metadata(gguf)
    assert metadata["general.architecture"] == name
    assert metadata["tokenizer.ggml.pre"] == expected
    tokenizer = AutoTokenizer.from_pretrained(model)
    assert metadata["tokenizer.chat_template"] == tokenizer.chat_template
    llm = load_gguf(gguf, n_ctx=256, threads=2)
    try:
        check = check_tokenization(tokenizer, llm)
        assert check.passed, check.details["mismatches"]
        assert check.details["texts"] >= len(TOKENIZER_TEXTS)
        text = tokenizer.apply_chat_template(TEMPLATE_CONVERSATIONS[3], tokenize=False, add_generation_prompt=True)
        assert (
            llm.tokenize(text.encode(), add_bos=False, special=True)
            == tokenizer(text, add_special_tokens=False)["input_ids"]
        )
    finally:
        llm.close()


def test_f16_greedy_generation_agrees_with_hf(converted):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.export import verify

    model_dir, gguf, _ = converted["llama"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = [verify.chat_prompt_ids(tokenizer, c) for c in verify.default_generation_conversations(8)]
    stops = [tokenizer.eos_token_id]
    reference = [verify.greedy_hf(model, p, max_new_tokens=12, stops=stops) for p in prompts]
    llm = verify.load_gguf(gguf, n_ctx=256, threads=2)
    try:
        replies = [verify.greedy_llama(llm, p, max_new_tokens=12, stops=stops) for p in prompts]
    finally:
        llm.close()
    stats = verify.agreement(reference, replies)
    assert stats["token_agreement"] >= 0.9, stats
    # a random tiny model has flat logits, so f16 rounding can flip a token, but only where HF itself nearly ties
    margins = verify.divergence_margins(model, prompts, reference, replies)
    check = verify.check_generations("f16", reference, replies, threshold=1.0, margins=margins, tie_margin=0.1)
    assert check.passed, check.details

    # a reply that parts where HF is confident (its least likely token instead of its choice) is a real disagreement
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([prompts[0]])).logits[0, -1]
    wrong = [[int(logits.argmin())] + reference[0][1:]] + reference[1:]
    margins = verify.divergence_margins(model, prompts, reference, wrong)
    assert margins[0] > 1 and all(m is None for m in margins[1:])
    check = verify.check_generations("f16", reference, wrong, threshold=1.0, margins=margins, tie_margin=0.1)
    assert not check.passed and check.details["near_ties"] == 0


def test_quantize_q4_k_m(converted, tmp_path):
    from posttrain.export.llama_cpp import quantize
    from posttrain.export.verify import gguf_metadata

    _, gguf, _ = converted["llama"]
    quantize(gguf, tmp_path / "q4.gguf", "Q4_K_M", threads=2)
    assert gguf_metadata(tmp_path / "q4.gguf")["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M


def test_unsupported_architecture_is_refused_before_any_work(tiny_chat_model, converter, tmp_path, monkeypatch):
    from posttrain.configs import PosttrainArguments
    from posttrain.export import ExportError
    from posttrain.export.config import ExportArguments
    from posttrain.stages import export as stage_export

    model = tmp_path / "odd"
    shutil.copytree(tiny_chat_model, model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["FrobnicatorForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted although the architecture is unsupported")

    monkeypatch.setattr("posttrain.export.llama_cpp.convert", no_conversion)
    args = ExportArguments(model_name_or_path=str(model), output_dir=str(tmp_path / "out"), gguf_types=["f16"])
    with pytest.raises(ExportError, match="FrobnicatorForCausalLM cannot be converted"):
        stage_export.main(PosttrainArguments(), args)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-export-")]


def test_too_little_disk_is_refused_before_converting(tiny_chat_model, converter, tmp_path, monkeypatch):
    from collections import namedtuple

    from posttrain.configs import PosttrainArguments
    from posttrain.export import ExportError
    from posttrain.export.config import ExportArguments
    from posttrain.stages import export as stage_export

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("posttrain.export.build.shutil.disk_usage", lambda path: usage(10, 10, 1024))
    monkeypatch.setattr("posttrain.export.llama_cpp.convert", lambda *a, **k: pytest.fail("converted anyway"))
    args = ExportArguments(model_name_or_path=str(tiny_chat_model), output_dir=str(tmp_path / "out"))
    with pytest.raises(ExportError, match="not enough free disk space"):
        stage_export.main(PosttrainArguments(), args)
    assert not (tmp_path / "out").exists()


def test_fallback_pre_tokenizer_types(tmp_path, monkeypatch):
    from posttrain.export.llama_cpp import _LLAMA3, fallback_pre_tokenizer

    def with_pre(pre):
        monkeypatch.setattr("posttrain.export.llama_cpp._loaded_pre_tokenizer", lambda path: pre)
        return fallback_pre_tokenizer(tmp_path)

    assert with_pre({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}) == "gpt-2"
    assert (
        with_pre(
            {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": _LLAMA3}},
                    {"type": "ByteLevel", "use_regex": False},
                ],
            }
        )
        == "llama-bpe"
    )
    assert (
        with_pre(
            {
                "type": "Sequence",
                "pretokenizers": [{"type": "Digits", "individual_digits": True}, {"type": "ByteLevel"}],
            }
        )
        == "smollm"
    )
    assert with_pre({"type": "Whitespace"}) == "default"
