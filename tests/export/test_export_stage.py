"""`posttrain export` end to end on a tiny Llama: GGUF f16/q8_0/Q4_K_M, Modelfile, verification, served GGUF.

Slow (about a minute each): CI runs them; they need llama-cpp-python (+ its server extra for the served check).
"""

from __future__ import annotations

import json
import re

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]


def export_config(tmp_path, model, **overrides):
    settings = {
        "model_name_or_path": str(model),
        "output_dir": str(tmp_path / "export"),
        "gguf_types": ["f16", "q8_0", "Q4_K_M"],
        "system_prompt": "Answer briefly.",
        "threads": 2,
        "verify_prompts": 10,
        "verify_max_new_tokens": 16,
        "serve_max_samples": 2,
        "serve_max_new_tokens": 16,
        # a random tiny model has flat logits: f16 rounding flips some late tokens (real models reach >= 98%)
        "min_agreement_f16": 0.5,
        "min_agreement_q8_0": 0.0,
        **overrides,
    }
    path = tmp_path / "export.yaml"
    path.write_text(json.dumps(settings))
    return path


def run_export(config):
    from posttrain.configs import parse_args
    from posttrain.stages import export as stage_export

    return stage_export.main(*parse_args(stage_export.make_parser(), ["--config", str(config)]))


def test_export_ships_verified_gguf_and_modelfile(tiny_chat_model, converter, go_tool, tmp_path):
    from posttrain.export.modelfile import parse_modelfile

    report = run_export(export_config(tmp_path, tiny_chat_model))
    out = tmp_path / "export"
    for name in (
        "model.f16.gguf",
        "model.q8_0.gguf",
        "model.Q4_K_M.gguf",
        "Modelfile",
        "verification.md",
        "run_manifest.json",
    ):
        assert (out / name).is_file(), name
    assert not [p for p in tmp_path.iterdir() if "-export-" in p.name]  # the temporary folder is gone
    checks = {c["name"]: c for c in report["checks"]}
    assert report["passed"]
    assert checks["go_template"]["details"]["equal"] == checks["go_template"]["details"]["conversations"] >= 10
    assert checks["tokenization[f16]"]["status"] == checks["tokenization[Q4_K_M]"]["status"] == "pass"
    assert checks["end_of_turn"]["status"] == "pass"
    assert checks["generations[Q4_K_M]"]["status"] == "info"  # reported, not gated
    if checks["served"]["status"] != "info":  # skipped without llama-cpp-python[server]
        assert checks["served"]["status"] == "pass"
    modelfile = parse_modelfile((out / "Modelfile").read_text())
    assert modelfile["FROM"] == ["./model.Q4_K_M.gguf"]
    assert modelfile["PARAMETER stop"] == ["<|im_end|>", "<|im_start|>"]  # the tokenizer's, then Ollama's chatml
    assert "known chatml template" in (out / "Modelfile").read_text()  # the known-family path, not a translation
    assert modelfile["SYSTEM"] == ["Answer briefly."]
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["stage"] == "export" and manifest["pre_tokenizer_fallback"] == "gpt-2"


def test_export_of_an_adapter_with_a_jinja_only_template(tiny_chat_model, converter, tmp_path, monkeypatch):
    """An adapter is merged first; a template Go cannot express (a Python method call) still ships a usable
    Modelfile: no TEMPLATE, the construct and its line named, the stops and the GGUF's own Jinja template."""
    from tiny_export import make_adapter
    from transformers import AutoTokenizer

    from posttrain.export.modelfile import parse_modelfile

    adapter = make_adapter(tiny_chat_model, tmp_path / "sft")
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    assert "message['content']" in tokenizer.chat_template
    tokenizer.chat_template = tokenizer.chat_template.replace("message['content']", "message['content'].strip()")
    tokenizer.save_pretrained(adapter)
    report = run_export(export_config(tmp_path, adapter, gguf_types=["f16"], serve=False))
    checks = {c["name"]: c for c in report["checks"]}
    assert report["passed"]
    summary = checks["go_template"]["summary"]
    assert checks["go_template"]["status"] == "info" and re.search(r"line \d+: the method call \.strip\(\)", summary)
    text = (tmp_path / "export" / "Modelfile").read_text()
    assert re.search(r"line \d+: the method call \.strip\(\)", text)
    parsed = parse_modelfile(text)
    assert "TEMPLATE" not in parsed and parsed["FROM"] == ["./model.f16.gguf"]
    assert parsed["PARAMETER stop"] == ["<|im_end|>"]  # from the tokenizer, with or without a TEMPLATE
    assert checks["end_of_turn"]["status"] == "pass"
    assert (tmp_path / "export" / "hf" / "model.safetensors").is_file()


def test_failed_verification_exits_non_zero_without_manifest(tiny_chat_model, converter, tmp_path, monkeypatch):
    from posttrain.export import verify

    monkeypatch.setattr(
        verify,
        "check_go_template",
        lambda *a, **k: verify.ExportCheck("go_template", False, "0/12 conversations render identically"),
    )
    with pytest.raises(SystemExit) as exit_info:
        run_export(export_config(tmp_path, tiny_chat_model, gguf_types=["f16"], serve=False))
    assert exit_info.value.code == 1
    out = tmp_path / "export"
    assert "**FAILED**" in (out / "verification.md").read_text()
    assert (out / "model.f16.gguf").is_file() and not (out / "run_manifest.json").exists()


def test_a_new_export_never_mixes_with_an_earlier_one(tmp_path):
    from posttrain.export.publish import move_into_place

    out, work = tmp_path / "export", tmp_path / "work"
    (out / "served").mkdir(parents=True)
    for name in ("model.q8_0.gguf", "model.f16.gguf", "Modelfile", "run_manifest.json", "notes.txt"):
        (out / name).write_text("old")
    work.mkdir()
    for name in ("model.f16.gguf", "Modelfile"):
        (work / name).write_text("new")
    move_into_place(work, out, ["model.f16.gguf", "Modelfile"])
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model.f16.gguf", "notes.txt"]  # user files stay
    assert (out / "model.f16.gguf").read_text() == "new"
