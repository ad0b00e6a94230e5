"""PPO training state: the CUDA random state is checkpointed, reward-normalization statistics are the same on every
process, the policy and the value head are clipped on their own gradient norms, and a checkpoint written at the step
the hacking guard stops holds the adapter the guard kept."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_guard import fire_at
from test_ppo_invariants import make_trainer

from posttrain.stages import run_stage

from helpers import ppo_config

SMALL = {"rollout_batch_size": 8, "generation_batch_size": 8, "per_device_train_batch_size": 4}


def test_checkpoint_saves_and_restores_the_cuda_random_state(tmp_path, tiny_chat_model, monkeypatch):
    trainer = make_trainer(tmp_path, tiny_chat_model, **SMALL)
    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]  # two "GPUs"
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(states))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda new: restored.append([s.clone() for s in new]))
    checkpoint = trainer.save_checkpoint()
    saved = load_file(checkpoint / "rng_state_0.safetensors")
    assert torch.equal(saved["torch"], torch.get_rng_state())
    assert torch.equal(saved["cuda_0"], states[0]) and torch.equal(saved["cuda_1"], states[1])
    trainer.load_checkpoint(checkpoint)
    assert len(restored) == 1 and all(torch.equal(a, b) for a, b in zip(restored[0], states, strict=True))


def test_cpu_only_checkpoint_has_no_cuda_state_and_resumes(tmp_path, tiny_chat_model, monkeypatch):
    trainer = make_trainer(tmp_path, tiny_chat_model, **SMALL)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    checkpoint = trainer.save_checkpoint()
    assert set(load_file(checkpoint / "rng_state_0.safetensors")) == {"torch"}
    expected = torch.rand(3)  # the first numbers drawn after the state the checkpoint holds
    torch.rand(5)
    trainer.load_checkpoint(checkpoint)  # rewinds the generator
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("mode", ["running", "batch"])
def test_reward_statistics_are_gathered_over_every_process(tmp_path, tiny_chat_model, monkeypatch, mode):
    import accelerate.utils

    trainer = make_trainer(tmp_path, tiny_chat_model, reward_normalization=mode, **SMALL)
    # a second process scored 4 replies, all 1.0; this one scores [0, 0, 1, 0]
    other = {"has_number": {"count": 4, "mean": 1.0, "m2": 0.0}}
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda local: [*local, other])
    total = trainer.normalizer.total({"has_number": [0.0, 0.0, 1.0, 0.0]})
    everything = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    mean = sum(everything) / 8
    std = (sum((v - mean) ** 2 for v in everything) / 8) ** 0.5
    assert total == pytest.approx([(v - mean) / std for v in (0.0, 0.0, 1.0, 0.0)])
    moments = trainer.normalizer.moments["has_number"]
    if mode == "running":  # the statistics a checkpoint keeps (written once, by rank 0) are every process's
        assert (moments.count, moments.mean, moments.std) == (8, pytest.approx(mean), pytest.approx(std))
        state = json.loads((trainer.save_checkpoint() / "trainer_state.json").read_text())["reward_moments"]
        assert state["has_number"]["count"] == 8
    else:
        assert moments.count == 0


def test_a_huge_value_gradient_does_not_shrink_the_policy_update(tmp_path, tiny_chat_model):
    trainer = make_trainer(tmp_path, tiny_chat_model, rollout_batch_size=8, generation_batch_size=8,
                           per_device_train_batch_size=8, num_mini_batches=1, num_ppo_epochs=1,
                           max_grad_norm=1.0)  # fmt: skip
    batch = trainer.rollout([trainer.train_dataset[i] for i in range(8)])
    _, _, _, returns = trainer.advantages(batch)
    # advantages that move the policy whatever the rewards of this rollout were
    advantages = torch.randn(returns.shape, generator=torch.Generator().manual_seed(0)) * batch.response_mask
    model = trainer.unwrapped
    grads = []

    def record(*args, **kwargs):  # the gradients the optimizer step would use; the parameters stay as they are
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})

    trainer.optimizer.step = record
    trainer.update(batch, advantages, returns, step=1)
    trainer.update(batch, advantages, returns + 1e6, step=1)  # a critic far off: a huge value-loss gradient
    normal, huge = grads
    policy = [n for n in normal if n.startswith("policy.")]
    assert policy and sum(normal[n].norm() ** 2 for n in policy) ** 0.5 > 0.1
    assert all(torch.allclose(normal[n], huge[n]) for n in policy)  # the policy's step is unchanged
    head = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(huge[n]) for n in huge if "value_head" in n]))
    assert head.item() == pytest.approx(1.0, rel=1e-4)  # the value head's own norm, clipped to max_grad_norm


def test_a_checkpoint_at_the_guard_stop_holds_the_kept_adapter(tmp_path, tiny_chat_model, monkeypatch):
    import posttrain.rl.heldout as heldout

    fire_at(monkeypatch, 3)  # the guard fires at step 3, a save step
    scores = iter([1.0, 0.0, 0.0])  # the held-out scores of the candidates: the start adapter (step 0) wins
    monkeypatch.setattr(heldout, "heldout_rewards", lambda *args, **kwargs: {"policy": {}})
    monkeypatch.setattr(heldout, "heldout_task_score", lambda result, rule_names: next(scores))
    config = ppo_config(tmp_path, tiny_chat_model, max_steps=6, hacking_guard="stop", test_split_size=8,
                        save_strategy="steps", save_steps=3)  # fmt: skip
    trainer, _ = run_stage("ppo", ["--config", str(config)])
    assert trainer.state.global_step == 3
    [finding] = trainer.guard.findings
    assert finding["restored_step"] == 0
    checkpoint = tmp_path / "ppo" / "checkpoint-3"
    adapter = load_file(checkpoint / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all((v == 0).all() for v in lora_b)  # the start adapter (LoRA B is zero), not step 3's
    head = load_file(checkpoint / "value_head.safetensors")
    assert torch.equal(head["weight"], trainer.unwrapped.value_head.weight.detach().cpu())
    assert (head["weight"] == 0).all()
