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


# --- the loss: TRL's SFTTrainer.compute_loss settings, computed at the trained positions only -----------------------


def _sft_trainer(tmp_path, model_path, *, model=None, peft=True, **settings):
    """posttrain's SFT trainer over the tiny conversations, fp32, with a dropout-free LoRA (``peft``)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.configs import SFTConfig
    from posttrain.training.sft import tokenize_dataset, trainer_class

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = tokenize_dataset(Dataset.from_list([{"messages": c} for c in CONVERSATIONS]), tokenizer)
    args = SFTConfig(
        output_dir=str(tmp_path / "out"), bf16=False, max_length=128, per_device_train_batch_size=4, report_to="none",
        **settings,
    )  # fmt: skip
    trainer = trainer_class()(
        model=model if model is not None else AutoModelForCausalLM.from_pretrained(model_path),
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear") if peft else None,
    )
    trainer.model.train()
    return trainer


def _batch(trainer):
    rows = trainer.train_dataset
    return trainer._prepare_inputs(trainer.data_collator([rows[i] for i in range(len(rows))]))


def _loss_and_metrics(trainer, compute_loss, batch, **kwargs):
    """(loss, its LoRA gradients, the metrics it logged) of one ``compute_loss`` call on a copy of ``batch``."""
    trainer.model.zero_grad()
    trainer._metrics["train"].clear()
    tokens_before = trainer._total_train_tokens
    loss = compute_loss(trainer, trainer.model, dict(batch), **kwargs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    if "num_tokens" in metrics:  # a running total
        metrics["num_tokens"] -= tokens_before
    return loss.detach(), grads, metrics


def _assert_same_as_trl(trainer, batch, **kwargs):
    from trl import SFTTrainer

    ours = _loss_and_metrics(trainer, type(trainer).compute_loss, batch, **kwargs)
    trl = _loss_and_metrics(trainer, SFTTrainer.compute_loss, batch, **kwargs)
    assert ours[0].item() == pytest.approx(trl[0].item(), rel=1e-5)
    assert ours[1].keys() == trl[1].keys() and ours[1]
    for name, grad in ours[1].items():
        assert torch.allclose(grad, trl[1][name], rtol=1e-4, atol=1e-7), name
    assert ours[2].keys() == trl[2].keys() >= {"entropy", "mean_token_accuracy", "num_tokens"}
    assert ours[2] == pytest.approx(trl[2], rel=1e-5)
    return ours[0]


@pytest.mark.parametrize(
    "settings",
    [{}, {"loss_type": "dft"}, {"label_smoothing_factor": 0.2}, {"packing": True}],
    ids=["nll", "dft", "label_smoothing", "packed"],
)
def test_loss_gradients_and_metrics_are_trls(tmp_path, tiny_chat_model, settings):
    """Every SFTConfig key TRL's compute_loss reads: the compact loss gives TRL's loss, gradients and metrics, with
    and without ``num_items_in_batch`` (gradient accumulation, ``average_tokens_across_devices``)."""
    trainer = _sft_trainer(tmp_path, tiny_chat_model, **settings)
    batch = _batch(trainer)
    assert ("position_ids" in batch) == bool(settings.get("packing"))  # packed: padding-free, no attention mask
    loss = _assert_same_as_trl(trainer, batch)
    _assert_same_as_trl(trainer, batch, num_items_in_batch=torch.tensor(97))
    if settings and not settings.get("packing"):  # the setting changes the loss: it is not ignored
        trainer.args.loss_type, trainer.args.label_smoothing_factor = "nll", 0.0
        trainer.label_smoother = None
        plain = _loss_and_metrics(trainer, type(trainer).compute_loss, batch)[0]
        assert abs(loss.item() - plain.item()) > 1e-3


def test_moe_load_balancing_loss_is_added(tmp_path, tiny_chat_model):
    """A model returning router logits (Mixtral) gets TRL's auxiliary loss, weighted by ``router_aux_loss_coef``."""
    from transformers import AutoTokenizer, MixtralConfig, MixtralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    config = MixtralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = MixtralForCausalLM(config)
    trainer = _sft_trainer(tmp_path, tiny_chat_model, model=model, peft=False, router_aux_loss_coef=0.5)
    assert trainer.aux_loss_enabled
    batch = _batch(trainer)
    loss = _assert_same_as_trl(trainer, batch)
    aux = trainer._metrics["train"]["aux_loss"][-1]
    assert aux > 0
    trainer.aux_loss_enabled = False
    plain = _loss_and_metrics(trainer, type(trainer).compute_loss, batch)[0]
    assert loss.item() == pytest.approx(plain.item() + 0.5 * aux, rel=1e-5)


def test_assistant_only_loss_true_is_what_posttrain_trains(tmp_path, tiny_chat_model):
    """TRL refuses ``assistant_only_loss: true`` on tokenized rows; posttrain's rows carry exactly those masks."""
    default = _batch(_sft_trainer(tmp_path, tiny_chat_model))
    trainer = _sft_trainer(tmp_path, tiny_chat_model, assistant_only_loss=True)
    assert trainer.args.assistant_only_loss is True  # the config (and so the manifest) keeps the value given
    batch = _batch(trainer)
    assert torch.equal(batch["labels"], default["labels"]) and (batch["labels"] == -100).any()


@pytest.mark.parametrize(
    "settings, key", [({"completion_only_loss": False}, "completion_only_loss"), ({"loss_type": "focal"}, "loss_type")]
)
def test_loss_settings_posttrain_cannot_honour_are_refused(tmp_path, settings, key):
    from posttrain.configs import SFTConfig
    from posttrain.errors import ConfigError
    from posttrain.training.sft import check_loss_settings

    args = SFTConfig(output_dir=str(tmp_path), report_to="none", **settings)
    with pytest.raises(ConfigError, match=f"SFTConfig.{key}="):
        check_loss_settings(args)


def test_trl_metrics_are_logged(trained):
    _, trainer = trained
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all({"entropy", "mean_token_accuracy", "num_tokens"} <= entry.keys() for entry in logged)
    tokens = [entry["num_tokens"] for entry in logged]
    assert tokens == sorted(tokens) and tokens[0] > 0
    assert logged[-1]["mean_token_accuracy"] > logged[0]["mean_token_accuracy"]


def test_stage_trains_with_dft_and_assistant_only_loss(tmp_path, tiny_chat_model):
    settings = dict(
        max_steps=2, load_in_4bit=False, loss_type="dft", assistant_only_loss=True, completion_only_loss=True
    )
    trainer = run_stage("sft", ["--config", str(write_sft_config(tmp_path, tiny_chat_model, **settings))])
    config = read_manifest(tmp_path / "out")["config"]["SFTConfig"]
    assert (config["loss_type"], config["assistant_only_loss"], config["completion_only_loss"]) == ("dft", True, True)
    assert [entry["entropy"] > 0 for entry in trainer.state.log_history if "loss" in entry] == [True, True]
