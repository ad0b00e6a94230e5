"""The Ollama Modelfile: golden file, values Ollama's parser reads back unchanged, end-of-turn stops."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import posttrain
from posttrain.export.modelfile import Modelfile, ModelfileError, default_num_ctx, parse_modelfile

GOLDEN = Path(__file__).parent / "golden" / "chatml.Modelfile"


def chatml_modelfile(tiny_chat_model, **overrides) -> Modelfile:
    from transformers import AutoTokenizer

    from posttrain.configs import PosttrainArguments
    from posttrain.export.build import build_modelfile
    from posttrain.export.config import ExportArguments

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    args = ExportArguments(model_name_or_path=str(tiny_chat_model), gguf_types=["f16", "q8_0"], **overrides)
    pt_args = PosttrainArguments(system_prompt="You are Posttrain Assistant.\nAnswer briefly.")
    modelfile, note = build_modelfile(tokenizer, {"max_position_embeddings": 512}, args, pt_args)
    assert note is None
    return modelfile


def test_modelfile_matches_golden_file(tiny_chat_model):
    text = chatml_modelfile(tiny_chat_model).render().replace(posttrain.__version__, "<version>")
    if not GOLDEN.is_file():  # first run writes it; review and commit
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_modelfile_parses_back(tiny_chat_model):
    modelfile = chatml_modelfile(tiny_chat_model)
    text = modelfile.render()
    assert modelfile.template_source == "known:chatml" and "known chatml template" in text
    parsed = parse_modelfile(text)
    assert parsed["FROM"] == ["./model.q8_0.gguf"]
    assert parsed["TEMPLATE"] == [modelfile.template]
    assert parsed["SYSTEM"] == ["You are Posttrain Assistant.\nAnswer briefly."]
    assert parsed["PARAMETER stop"] == ["<|im_end|>", "<|im_start|>"]
    assert parsed["PARAMETER num_ctx"] == ["512"]


def test_stops_that_are_not_tokens_are_reported(tiny_chat_model):
    from transformers import AutoTokenizer

    from posttrain.export.modelfile import stop_problems

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    assert stop_problems(tokenizer, ["<|im_end|>"]) == []
    problems = stop_problems(tokenizer, ["<|im_end|>", "<|eot_id|>"])
    assert problems == ["'<|eot_id|>' is not a special token of the tokenizer"]


def test_untranslatable_template_falls_back_to_the_gguf_template(tiny_chat_model, tmp_path):
    from transformers import AutoTokenizer

    from posttrain.configs import PosttrainArguments
    from posttrain.export.build import build_modelfile
    from posttrain.export.config import ExportArguments

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content.strip() }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    modelfile, note = build_modelfile(
        tokenizer, {}, ExportArguments(model_name_or_path="m", gguf_types=["f16"]), PosttrainArguments()
    )
    assert modelfile.template is None and "line 2: the method call .strip()" in note
    text = modelfile.render()
    assert "TEMPLATE" not in parse_modelfile(text)
    assert "uses the Jinja chat template stored in the GGUF" in text and ".strip()" in text
    assert parse_modelfile(text)["PARAMETER stop"] == ["<|im_end|>"]


@pytest.mark.parametrize(("value", "problem"), [('say """hi"""', '"""'), ("bell \x07", "U+0007")])
def test_values_ollama_would_change_are_refused(value, problem):
    with pytest.raises(ModelfileError, match=re.escape(problem)):
        Modelfile(gguf="./m.gguf", template=None, stops=[], system=value).render()


def test_num_ctx_is_capped_by_the_model():
    assert default_num_ctx({"max_position_embeddings": 8192}) == 4096
    assert default_num_ctx({"max_position_embeddings": 512}) == 512
    assert default_num_ctx({"max_position_embeddings": 8192}, 2048) == 2048


def test_ollama_commands_are_printed_without_ollama(tmp_path, monkeypatch, capsys):
    from posttrain.export.modelfile import ollama_create

    monkeypatch.setenv("PATH", str(tmp_path))
    assert ollama_create("posttrain", tmp_path / "Modelfile") is False
    assert f"ollama create posttrain -f {tmp_path / 'Modelfile'}" in capsys.readouterr().out
