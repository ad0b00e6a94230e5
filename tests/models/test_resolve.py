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


def _tiny_model(tmp_path, architecture: str):
    """A 2-layer random model of an architecture peft has no default LoRA targets for, saved and loaded back."""
    from transformers import AutoModelForCausalLM, GraniteConfig, Phi3Config

    from tiny import train_tokenizer

    tokenizer = train_tokenizer()
    config_class = {"granite": GraniteConfig, "phi3": Phi3Config}[architecture]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / architecture)
    tokenizer.save_pretrained(tmp_path / architecture)
    return AutoModelForCausalLM.from_pretrained(tmp_path / architecture)


@pytest.mark.parametrize("architecture", ["granite", "phi3"])
def test_lora_without_target_modules_adapts_all_linear_layers(tmp_path, capsys, architecture):
    from peft import get_peft_model
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    from posttrain.configs import ModelConfig
    from posttrain.training.common import peft_config

    model = _tiny_model(tmp_path, architecture)
    assert model.config.model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING  # peft: no default
    linear = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)} - {"lm_head"}
    model_args = ModelConfig(model_name_or_path=str(tmp_path / architecture), use_peft=True, lora_r=4)
    assert model_args.lora_target_modules is None
    config = peft_config(model, model_args, [])
    assert "lora_target_modules not set" in capsys.readouterr().out
    peft_model = get_peft_model(model, config)  # "Please specify `target_modules`" without the default
    adapted = {name.removeprefix("base_model.model.") for name, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == linear and not any(name.endswith("lm_head") for name in adapted)
    assert model_args.lora_target_modules is None  # the user's config is left as given


def test_lora_target_modules_given_are_kept(tmp_path, capsys):
    from posttrain.configs import ModelConfig
    from posttrain.models.loading import lora_config

    model_args = ModelConfig(model_name_or_path="x", use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"])
    assert lora_config(model_args).target_modules == {"q_proj", "v_proj"}
    assert "lora_target_modules" not in capsys.readouterr().out
