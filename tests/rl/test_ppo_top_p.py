"""PPO with nucleus sampling (top_p < 1): tokens outside the nucleus have log-prob -inf under the truncated
distribution, which must never reach the losses, the KL, the advantages or the logged entropy as NaN or inf -- not
at padding (whichever token pads a reply), not when the policy samples a token outside the reference's nucleus."""

from __future__ import annotations

import math

import pytest
import torch
from test_ppo_invariants import make_trainer

from posttrain.models.generation import Completion
from posttrain.rl import ppo_core
from posttrain.rl.ppo_model import sequence_inputs

INF = float("inf")


def test_masked_statistics_and_gae_ignore_infinite_padding():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    values = torch.tensor([[1.0, 2.0, -INF], [3.0, INF, float("nan")]])
    assert ppo_core.masked_mean(values, mask).item() == pytest.approx(2.0)
    assert ppo_core.masked_var(values, mask).item() == pytest.approx(1.0)
    whitened = ppo_core.masked_whiten(values, mask)
    assert torch.isfinite(whitened).all() and (whitened[~mask.bool()] == 0).all()
    rewards = ppo_core.token_rewards(torch.tensor([1.0, 2.0]), values, 0.1, mask)
    assert torch.isfinite(rewards).all() and (rewards[~mask.bool()] == 0).all()
    advantages, returns = ppo_core.gae(values, values, mask)
    assert torch.isfinite(advantages).all() and torch.isfinite(returns).all()
    assert (advantages[~mask.bool()] == 0).all() and (returns[~mask.bool()] == 0).all()


def test_sampling_logprobs_are_finite_and_entropy_is_over_the_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = torch.log(probs).expand(1, 3, 4)
    tokens = torch.tensor([[0, 3, 2]])  # token 3 is outside the 0.8 nucleus {0, 1}; position 2 is padding
    mask = torch.tensor([[1, 1, 0]])
    out = ppo_core.sampling_logprobs(logits, tokens, mask, 0.8, entropy=True)
    assert out.sampler[0, 0].item() == pytest.approx(math.log(0.625))  # the nucleus, renormalized
    assert out.sampler[0, 1].item() == pytest.approx(math.log(0.05))  # outside it: the full softmax's, not -inf
    assert out.full[0, 0].item() == pytest.approx(math.log(0.5))
    assert out.sampler[0, 2] == 0 and out.full[0, 2] == 0 and out.entropy[0, 2] == 0  # padding
    nucleus_entropy = -(0.625 * math.log(0.625) + 0.375 * math.log(0.375))
    assert out.entropy[0, :2].tolist() == pytest.approx([nucleus_entropy] * 2)
    full = ppo_core.sampling_logprobs(logits, tokens, mask, 1.0, entropy=True)
    assert torch.equal(full.sampler, full.full) and full.entropy[0, 0].item() == pytest.approx(
        -(probs * probs.log()).sum().item()
    )


def _truncated_logprobs(trainer, batch, *, reference: bool) -> torch.Tensor:
    """The log-probs the trainer used before this fix: of the top-p truncated distribution, -inf outside it."""
    model, context = trainer.unwrapped, batch.queries.shape[1]
    inputs = sequence_inputs(batch.queries, batch.query_mask, batch.responses, batch.response_mask)
    with torch.no_grad(), model.policy.disable_adapter() if reference else torch.enable_grad():
        logits, _ = model(*inputs)
    logits = ppo_core.top_p_logits(logits[:, context - 1 : -1].float() / trainer.args.temperature, trainer.args.top_p)
    return ppo_core.logprobs_from_logits(logits, batch.responses).detach()


def test_top_p_ppo_stays_finite_when_policy_and_reference_differ_and_padding_is_outside_the_nucleus(
    tmp_path, tiny_chat_model, monkeypatch
):
    import posttrain.rl.ppo_rollout as rollout_module

    generate = rollout_module.generate

    def early_stops(*args, **kwargs):  # every other reply ends after 3 tokens, so the batch has padding
        samples = generate(*args, **kwargs)
        for i, sample in enumerate(samples):
            if i % 2:
                sample[0] = Completion(sample[0].text, sample[0].token_ids[:3], False)
        return samples

    monkeypatch.setattr(rollout_module, "generate", early_stops)
    trainer = make_trainer(tmp_path, tiny_chat_model, top_p=0.5, temperature=0.7, rollout_batch_size=8,
                           generation_batch_size=8, per_device_train_batch_size=4, learning_rate=1e-2)  # fmt: skip
    torch.manual_seed(0)
    with torch.no_grad():  # a trained adapter: the policy no longer equals the reference
        for name, param in trainer.unwrapped.policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.3)
    batch = trainer.rollout([trainer.train_dataset[i] for i in range(8)])
    mask = batch.response_mask.bool()

    # the situation that used to produce NaN and inf: padding outside the policy's nucleus, and sampled tokens
    # outside the reference's nucleus
    assert (~mask).any()
    assert torch.isinf(_truncated_logprobs(trainer, batch, reference=False)[~mask]).any()
    assert torch.isinf(_truncated_logprobs(trainer, batch, reference=True)[mask]).any()

    for name in ("logprobs", "ref_logprobs", "kl_logprobs", "values", "entropy"):
        assert torch.isfinite(getattr(batch, name)).all(), name
    # over the nucleus: never negative, zero where the nucleus is one token (top_p 0.5 may keep a single one)
    assert (batch.entropy[mask] >= 0).all() and (batch.entropy[mask] > 0).any()
    kl, rewards, advantages, returns = trainer.advantages(batch)
    for name, tensor in (("kl", kl), ("rewards", rewards), ("advantages", advantages), ("returns", returns)):
        assert torch.isfinite(tensor).all(), name
    assert kl.sum() > 0  # the two policies differ

    before = {n: p.detach().clone() for n, p in trainer.unwrapped.named_parameters() if p.requires_grad}
    metrics = trainer.step(1)
    for key in ("loss", "policy_loss", "value_loss", "approx_kl", "kl", "entropy", "explained_variance"):
        assert math.isfinite(metrics[key]), (key, metrics[key])
    assert metrics["entropy"] > 0
    after = dict(trainer.unwrapped.named_parameters())
    assert all(torch.isfinite(after[n]).all() for n in before)
    lora = [n for n in before if "lora_" in n]
    assert any(not torch.equal(before[n], after[n].detach()) for n in lora)  # the policy adapter was updated
    assert not torch.equal(before["value_head.weight"], after["value_head.weight"].detach())
