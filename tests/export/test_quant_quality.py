"""Quantization quality as llama.cpp's ``perplexity --kl-divergence`` measures it (KL divergence, top-1 agreement,
perplexity), tensor fallbacks, and importance-matrix quantization, on the tiny Llama (needs llama-cpp-python)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posttrain.export import quant_quality as qq

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CTX, CHUNKS = 64, 4


# ------------------------------------------------------------------------------------------------ no llama.cpp


def _logits_from(table: dict[int, np.ndarray]):
    return lambda chunk: np.stack([table[int(t)] for t in chunk])


def test_statistics_follow_llama_cpp_definitions():
    rng = np.random.default_rng(0)
    vocab = 11
    emb = {t: rng.standard_normal(vocab) * 3 for t in range(vocab)}
    chunks = [list(rng.integers(0, vocab, 32)) for _ in range(3)]
    reference = qq.Reference.build(chunks, _logits_from(emb), label="base")
    assert reference.first == 16 and reference.positions == 3 * 15  # first half is context, last logit unscored

    same = qq.measure(reference, _logits_from(emb))
    assert same["kl_mean"] == pytest.approx(0, abs=1e-6) and same["kl_max"] < 1e-5
    assert same["same_top"] == 1.0 and same["ln_ppl_ratio"] == pytest.approx(0, abs=1e-6)
    assert same["ppl"] == pytest.approx(same["ppl_reference"])

    noisy = {t: v + rng.standard_normal(vocab) for t, v in emb.items()}
    stats = qq.measure(reference, _logits_from(noisy))
    per = qq.compare(reference, _logits_from(noisy))
    # KL by hand at one position
    chunk, k = chunks[0], 16
    p = np.exp(emb[chunk[k]] - np.logaddexp.reduce(emb[chunk[k]]))
    q = np.exp(noisy[chunk[k]] - np.logaddexp.reduce(noisy[chunk[k]]))
    assert per["kl"][0] == pytest.approx(float((p * np.log(p / q)).sum()), rel=1e-4)
    assert stats["kl_mean"] > 0.05 and stats["kl_median"] <= stats["kl_p99"] <= stats["kl_max"]
    assert stats["kl_se"] > 0 and 0 < stats["same_top"] < 1

    check = qq.check_quality("q8_0", stats, max_kl=0.01, min_top1=0.9)
    assert check.passed is False and "exceeds max_kl 0.01" in check.summary
    assert qq.check_quality("Q4_K_M", stats, max_kl=None, min_top1=None).passed is None  # reported, not gated


# ------------------------------------------------------------------------------------------------ llama.cpp


@pytest.fixture(scope="module")
def ggufs(tiny_chat_model, converter, tmp_path_factory):
    from posttrain.export.llama_cpp import convert, quantize

    out = tmp_path_factory.mktemp("quality")
    model = Path(tiny_chat_model)
    convert(model, out / "f16.gguf", "f16", llama_cpp=converter)
    quantize(out / "f16.gguf", out / "Q4_K_M.gguf", "Q4_K_M", threads=2)
    return model, out


@pytest.fixture(scope="module")
def chunks(ggufs):
    from transformers import AutoTokenizer

    model, _ = ggufs
    tokenizer = AutoTokenizer.from_pretrained(model)
    return qq.token_chunks(tokenizer, qq.heldout_texts(tokenizer, 40), CTX, CHUNKS)


def _measure(reference, path):
    from posttrain.export.verify import load_gguf

    llm = load_gguf(path, n_ctx=CTX, threads=2)
    try:
        return qq.measure(reference, qq.gguf_logits(llm))
    finally:
        llm.close()


@pytest.fixture(scope="module")
def hf_reference(ggufs, chunks):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ggufs[0], dtype=torch.float32).eval()
    return qq.Reference.build(chunks, qq.hf_logits(model), label="hf")


def test_heldout_texts_are_not_training_texts(ggufs):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ggufs[0])
    held_out = set(qq.heldout_texts(tokenizer, 40))
    assert len(held_out) == 40 and not held_out & set(qq.calibration_texts(tokenizer, n=200))


def test_f16_against_itself_and_q4_against_f16(ggufs, chunks):
    from posttrain.export.verify import load_gguf

    _, out = ggufs
    llm = load_gguf(out / "f16.gguf", n_ctx=CTX, threads=2)
    try:
        reference = qq.Reference.build(chunks, qq.gguf_logits(llm), label="f16")
    finally:
        llm.close()
    itself = _measure(reference, out / "f16.gguf")
    assert itself["kl_mean"] < 1e-6 and itself["same_top"] == 1.0
    assert itself["positions"] == CHUNKS * (CTX // 2 - 1)
    q4 = _measure(reference, out / "Q4_K_M.gguf")
    assert q4["kl_mean"] > 1e-4 > itself["kl_mean"] and q4["kl_max"] > q4["kl_median"]


def test_f16_passes_and_a_corrupted_gguf_fails_the_kl_gate(ggufs, hf_reference, tmp_path):
    _, out = ggufs
    f16 = _measure(hf_reference, out / "f16.gguf")
    check = qq.check_quality("f16", f16, max_kl=0.01, min_top1=0.9)
    assert check.passed, check.summary
    assert f16["kl_mean"] < 1e-3

    tensor = qq.corrupt_gguf(out / "f16.gguf", tmp_path / "broken.gguf", tensor="blk.0.attn_q.weight")
    assert tensor == "blk.0.attn_q.weight"
    broken = _measure(hf_reference, tmp_path / "broken.gguf")
    check = qq.check_quality("f16", broken, max_kl=0.01, min_top1=0.9)
    assert check.passed is False
    assert check.name == "quant_quality[f16]" and "exceeds max_kl 0.01" in check.summary
    assert broken["kl_mean"] > 10 * f16["kl_mean"]


def test_fallback_tensors_are_counted(ggufs):
    _, out = ggufs
    info = qq.tensor_types(out / "Q4_K_M.gguf")
    # every weight of the tiny model has 64 or 128 columns: none can be Q4_K/Q6_K (256-column super-blocks)
    assert info["fallbacks"] == info["weights"] > 0
    assert "Q4_K" not in info["types"] and "fall back from Q4_K" in info["fallback_summary"]
    assert qq.tensor_types(out / "f16.gguf")["fallbacks"] == 0


def test_imatrix_is_collected_by_llama_cpp_and_changes_the_quantization(ggufs, chunks, tmp_path):
    from gguf import GGUFReader

    from posttrain.export.llama_cpp import quantize

    _, out = ggufs
    imatrix = qq.collect_imatrix(out / "f16.gguf", chunks, threads=2)
    assert imatrix.chunks == CHUNKS and imatrix.tokens == CHUNKS * CTX
    assert "blk.0.attn_q.weight" in imatrix.sums and "blk.1.ffn_down.weight" in imatrix.sums
    assert imatrix.sums["blk.0.attn_q.weight"].shape == (64,) and imatrix.sums["blk.1.ffn_down.weight"].shape == (128,)
    assert imatrix.counts["blk.0.attn_q.weight"] == CHUNKS * CTX and (imatrix.sums["blk.0.attn_q.weight"] > 0).all()
    assert not [n for n in imatrix.sums if not n.startswith("blk.")]  # output.weight is left out, as llama-imatrix does

    path = qq.write_imatrix_gguf(tmp_path / "imatrix.gguf", imatrix, datasets=["builtin"])
    reader = GGUFReader(str(path))
    names = {t.name for t in reader.tensors}
    assert "blk.0.attn_q.weight.in_sum2" in names and "blk.0.attn_q.weight.counts" in names
    assert reader.fields["general.type"].contents() == "imatrix"

    means = qq.imatrix_means(imatrix)
    quantize(out / "f16.gguf", tmp_path / "imatrix.Q4_K_M.gguf", "Q4_K_M", threads=2, imatrix=means)
    plain = (out / "Q4_K_M.gguf").read_bytes()
    assert (tmp_path / "imatrix.Q4_K_M.gguf").read_bytes() != plain  # the importance matrix weighted the rounding
    quantize(out / "f16.gguf", tmp_path / "again.gguf", "Q4_K_M", threads=2)
    assert (tmp_path / "again.gguf").read_bytes() == plain  # quantization is deterministic


def test_imatrix_settings_are_checked():
    from posttrain.errors import ConfigError
    from posttrain.export.config import ExportArguments

    with pytest.raises(ConfigError, match="imatrix: true needs a quantized type"):
        ExportArguments(model_name_or_path="m", gguf_types=["f16", "q8_0"], imatrix=True)
    with pytest.raises(ConfigError, match="quality_reference: f16 needs f16"):
        ExportArguments(model_name_or_path="m", gguf_types=["q8_0"], quality_reference="f16")
    with pytest.raises(ConfigError, match="min_top1_q8_0"):
        ExportArguments(model_name_or_path="m", min_top1_q8_0=1.5)


@pytest.mark.slow
def test_export_reports_quality_imatrix_and_fallbacks(tiny_chat_model, converter, tmp_path):
    import json

    from posttrain.configs import parse_args
    from posttrain.pipeline.report import build_context
    from posttrain.stages import export as stage_export

    settings = {
        "model_name_or_path": str(tiny_chat_model),
        "output_dir": str(tmp_path / "export"),
        "gguf_types": ["f16", "Q4_K_M"],
        "threads": 2,
        "verify_prompts": 2,
        "verify_max_new_tokens": 4,
        "min_agreement_f16": 0.0,
        "serve": False,
        "ollama_create": False,
        "quality_chunks": 2,
        "quality_ctx": 64,
        "imatrix": True,
        "imatrix_chunks": 2,
        "imatrix_ctx": 64,
    }
    config = tmp_path / "export.yaml"
    config.write_text(json.dumps(settings))
    report = stage_export.main(*parse_args(stage_export.make_parser(), ["--config", str(config)]))
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["quant_quality[f16]"]["status"] == "pass"  # gated
    q4 = checks["quant_quality[Q4_K_M]"]
    assert q4["status"] == "info" and q4["details"]["imatrix"] is True  # reported, not gated
    assert q4["details"]["kl_mean"] > checks["quant_quality[f16]"]["details"]["kl_mean"]
    assert "fall back from Q4_K" in q4["summary"]
    comparison = checks["imatrix"]["details"]["comparison"][0]
    assert comparison["type"] == "Q4_K_M" and comparison["kl_imatrix"] == q4["details"]["kl_mean"]
    assert comparison["kl_plain"] > 0 and checks["imatrix"]["details"]["chunks"] == 2
    out = tmp_path / "export"
    assert (out / "imatrix.gguf").is_file() and not list(out.glob("plain.*"))
    md = (out / "verification.md").read_text()
    assert "## Quantization quality" in md and "| Q4_K_M | info |" in md and "KL with imatrix" in md

    context = build_context(
        {
            "config": "c",
            "profile": None,
            "stages": [],
            "evaluations": [],
            "exports": [{"name": "export", "verification": report, "commands": [], "files": {}}],
        }
    )
    export = context["exports"][0]
    assert [q["type"] for q in export["quality"]] == ["f16", "Q4_K_M"]
    assert export["imatrix"][0]["type"] == "Q4_K_M"
