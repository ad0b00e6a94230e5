"""Model names: embedded alias materialization, local folders, clear errors for missing ones."""

import pytest
import torch

from posttrain.models.registry import EMBEDDED_MODELS, ModelNotFoundError, materialize
from posttrain.models.resolve import resolve_model


def test_missing_local_path_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        resolve_model(str(tmp_path / "no-such-model"))


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve_model(str(tmp_path))


def test_hub_id_offline_is_refused(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        resolve_model("someone/some-model")


def test_local_folder_resolves_to_itself(tiny_chat_model):
    assert resolve_model(str(tiny_chat_model)) == str(tiny_chat_model)


@pytest.mark.slow
def test_embedded_default_materializes_once_and_matches_the_gguf(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path))
    folder = materialize("smollm2-135m-instruct")
    assert folder.parent == tmp_path / "models"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names
    assert materialize("smollm2-135m-instruct") == folder  # second call reuses the cache
    assert not list((tmp_path / "models").glob(".smollm2*"))  # no temp folder left behind

    gguf = EMBEDDED_MODELS["smollm2-135m-instruct"].gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer("Which is larger, 9.11 or 9.9?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(reference(ids).logits, model(ids).logits, atol=1e-5)
