"""posttrain's PPO on the tiny chat model with an easy rule reward: reward rises, KL stays bounded, the adapter and
value head are trained and saved, checkpoints resume exactly where they stopped."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from posttrain.stages import run_stage

from helpers import ppo_config


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory, tiny_chat_model):
    tmp_path = tmp_path_factory.mktemp("ppo")
    config = ppo_config(tmp_path, tiny_chat_model, save_strategy="steps", save_steps=6)
    trainer, metrics = run_stage("ppo", ["--config", str(config)])
    return tmp_path, config, trainer, metrics


def _manifest_path(ppo_run):
    return ppo_run[0] / "ppo" / "run_manifest.json"


def test_reward_rises_and_kl_stays_bounded(ppo_run):
    _, _, trainer, metrics = ppo_run
    history = trainer.state.log_history
    assert [h["step"] for h in history] == list(range(1, 13))
    first = sum(h["reward"] for h in history[:3]) / 3
    last = sum(h["reward"] for h in history[-3:]) / 3
    assert last > first + 0.1, (first, last)
    # the held-out pass (greedy, reference and policy on the same 16 prompts) is measured and recorded; its outcome is
    # not asserted: greedy replies of a random tiny model flip with the CPU's kernels (on an Intel Xeon with AMX the
    # same run's held-out score fell by one prompt while the sampled training reward doubled)
    heldout = json.loads((trainer.args.output_dir and _manifest_path(ppo_run)).read_text())["heldout"]
    assert heldout["prompts"] == 16 and heldout["delta"]["has_number"]["n"] == 16, heldout
    assert heldout["delta"]["has_number"]["paired"], heldout
    assert metrics["eval_has_number_policy"] == heldout["policy"]["has_number"]
    assert metrics["eval_has_number_reference"] == heldout["reference"]["has_number"]
    assert 0 < metrics["kl_max"] < 15, metrics  # nats per 8-token reply: bounded by the KL penalty
    assert history[-1]["explained_variance"] > history[0]["explained_variance"] - 1, history  # logged and finite
    for key in (
        "entropy",
        "clipfrac",
        "value_loss",
        "response_length",
        "approx_kl",
        "reward/has_number",
        "explained_variance",
        "reward_normalized",
    ):
        assert all(key in h and h[key] == h[key] for h in history), key


def test_adapter_and_value_head_are_trained_and_saved(ppo_run):
    tmp_path, _, trainer, _ = ppo_run
    out = tmp_path / "ppo"
    adapter = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())  # LoRA B starts at zero
    head = load_file(out / "value_head.safetensors")
    assert head["weight"].abs().sum() > 0  # zero-initialised, so it learned
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert list(model.policy.peft_config) == ["default"]  # the reference is this adapter disabled, no copy
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["stage"] == "ppo" and len(manifest["reward_curve"]) == 12 and len(manifest["loss_curve"]) == 12
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    assert not list(out.glob(".checkpoint-*"))  # no temporary folder left


def test_resume_continues_where_it_stopped(ppo_run, tmp_path):
    run_dir, config, trainer, _ = ppo_run
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(run_dir / "ppo" / "checkpoint-6", resumed_dir / "checkpoint-6")
    resumed, _ = run_stage(
        "ppo", ["--config", str(config), "--output_dir", str(resumed_dir), "--resume_from_checkpoint", "true"]
    )
    history = resumed.state.log_history
    assert [h["step"] for h in history] == list(range(1, 13))  # steps 1-6 restored, 7-12 trained now
    original = {h["step"]: h for h in trainer.state.log_history}
    for h in history[6:]:  # same prompts, same samples, same updates as the uninterrupted run
        assert h["reward"] == pytest.approx(original[h["step"]]["reward"])
        assert h["kl"] == pytest.approx(original[h["step"]]["kl"], rel=1e-3, abs=1e-4)
    a = load_file(run_dir / "ppo" / "adapter_model.safetensors")
    b = load_file(resumed_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
