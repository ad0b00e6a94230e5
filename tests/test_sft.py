"""4-bit QLoRA SFT on CPU with a tiny Llama: loss drops, LoRA weights change, the adapter loads back and generates."""

import pytest
import torch

from posttrain.manifest import read_manifest
from posttrain.stages import run_stage

from tiny import CONVERSATIONS, write_sft_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base_model, precision):
    tmp_path = tmp_path_factory.mktemp("sft")
    trainer = run_stage("sft", ["--config", str(write_sft_config(tmp_path, tiny_base_model))])
    return tmp_path / "out", trainer


def test_loss_goes_down(trained):
    out, _ = trained
    losses = read_manifest(out)["loss_curve"]
    assert len(losses) == 60
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4


def test_lora_and_new_token_weights_change(trained, tiny_base_model):
    from safetensors.torch import load_file

    out, _ = trained
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b, "no LoRA weights saved"
    assert all(v.abs().sum() > 0 for v in lora_b.values())  # lora_B starts at zero: nonzero means trained
    deltas = [v for k, v in weights.items() if "trainable_tokens_delta" in k]
    assert deltas and all(v.abs().sum() > 0 for v in deltas)  # ChatML token rows were learned


def test_model_is_4bit_and_adapter_loads_back_and_generates(trained):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    out, trainer = trained
    import bitsandbytes as bnb

    linear4bit = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4bit, "the base model must be loaded in 4-bit"
    expected = torch.bfloat16 if trainer.args.bf16 else torch.float32  # compute dtype follows the hardware
    assert all(m.compute_dtype == expected for m in linear4bit)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    model = AutoPeftModelForCausalLM.from_pretrained(out)
    prompt = tokenizer.apply_chat_template(
        CONVERSATIONS[0][:1], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    new_tokens = generated[0, prompt["input_ids"].shape[1] :]
    assert len(new_tokens) > 0
    # the memorized reply comes back, and generation stops at the trained end-of-turn token
    assert tokenizer.decode(new_tokens, skip_special_tokens=True).startswith("9.9")
    assert tokenizer.eos_token_id in new_tokens.tolist()


def test_outputs_model_card_and_manifest(trained):
    out, _ = trained
    manifest = read_manifest(out)
    assert (out / "README.md").is_file() and "SFT adapter" in (out / "README.md").read_text()
    assert manifest["stage"] == "sft"
    assert manifest["new_special_tokens"] == ["<|im_start|>", "<|im_end|>"]
    assert manifest["data_fingerprint"]
    assert manifest["libraries"]["trl"].startswith("1.16")
    assert manifest["config"]["ModelConfig"]["load_in_4bit"] is True
    assert 0 < manifest["loss_mask"]["trained_tokens"] < manifest["loss_mask"]["total_tokens"]


def test_resume_from_checkpoint_and_tensorboard(tmp_path, tiny_chat_model):
    overrides = dict(max_steps=4, save_strategy="steps", save_steps=2, report_to="tensorboard")
    config = write_sft_config(tmp_path, tiny_chat_model, **overrides)
    run_stage("sft", ["--config", str(config)])
    out = tmp_path / "out"
    assert (out / "checkpoint-2").is_dir() and (out / "checkpoint-4").is_dir()
    assert list(out.rglob("events.out.tfevents.*")), "TensorBoard logs were not written"

    resumed = run_stage("sft", ["--config", str(config), "--resume_from_checkpoint", str(out / "checkpoint-2")])
    assert resumed.state.global_step == 4
    steps = [entry["step"] for entry in resumed.state.log_history if "loss" in entry]
    # the history of steps 1-2 comes from the checkpoint; only steps 3-4 were trained again
    assert steps == [1, 2, 3, 4], "training must continue after the checkpoint, not restart"
