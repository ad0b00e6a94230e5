"""PPO math against values computed by hand."""

import math

import pytest
import torch

from posttrain.rl import ppo_core


def test_masked_mean_and_unbiased_var_ignore_padding():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert ppo_core.masked_mean(x, mask).item() == pytest.approx(2.5)  # (1+2+3+4)/4
    # deviations -1.5, -.5, .5, 1.5 -> sum of squares 5, unbiased / 3
    assert ppo_core.masked_var(x, mask).item() == pytest.approx(5 / 3)


def test_whitening_gives_zero_mean_unit_variance_and_zero_padding():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    w = ppo_core.masked_whiten(x, mask)
    std = math.sqrt(5 / 3)
    expected = torch.tensor([[-1.5 / std, -0.5 / std, 0.5 / std], [1.5 / std, 0.0, 0.0]])
    assert torch.allclose(w, expected, atol=1e-5)
    kept = ppo_core.masked_whiten(x, mask, shift_mean=False)
    assert torch.allclose(kept[mask.bool()], (expected + 2.5)[mask.bool()], atol=1e-5)


def test_gae_by_hand():
    # one sequence of 3 tokens, gamma 0.9, lambda 0.8
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.4, 0.3]])
    mask = torch.ones(1, 3)
    adv, ret = ppo_core.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    d2 = 1.0 + 0 - 0.3  # last token: no next value
    d1 = 0.0 + 0.9 * 0.3 - 0.4
    d0 = 0.0 + 0.9 * 0.4 - 0.5
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2]]), atol=1e-6)
    assert torch.allclose(ret, adv + values, atol=1e-6)


def test_gae_stops_at_padding():
    rewards = torch.tensor([[0.0, 2.0, 9.0]])  # the 9 sits on padding and must not leak in
    values = torch.tensor([[1.0, 1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    adv, ret = ppo_core.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # A1 = 2 - 1 = 1; A0 = 0 + 1 - 1 + A1 = 1 ; monte-carlo return is 2 at both tokens
    assert torch.allclose(adv, torch.tensor([[1.0, 1.0, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[2.0, 2.0, 0.0]]))


def test_token_rewards_put_the_score_on_the_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r = ppo_core.token_rewards(torch.tensor([1.0, 2.0]), kl, 0.5, mask)
    expected = torch.tensor([[-0.05, -0.1, -0.15 + 1.0], [-0.2, -0.25 + 2.0, 0.0]])
    assert torch.allclose(r, expected, atol=1e-6)


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.5]]))  # ratios
    adv = torch.tensor([[1.0, -1.0, 2.0, -1.0]])
    out = ppo_core.clipped_policy_loss(new, old, adv, torch.ones(1, 4), clip=0.2)
    # token: max(-A r, -A clip(r)) -> [-1.2, 0.8, -2.2, 1.5]
    assert out.loss.item() == pytest.approx((-1.2 + 0.8 - 2.2 + 1.5) / 4, abs=1e-6)
    assert out.clip_fraction.item() == pytest.approx(0.5)  # tokens 0 and 1 are clipped
    log_r = torch.log(torch.tensor([1.5, 0.5, 1.1, 1.5]))
    assert out.approx_kl.item() == pytest.approx(0.5 * (log_r**2).mean().item(), abs=1e-6)


def test_clipped_policy_loss_ignores_padding_and_has_gradient():
    new = torch.zeros(1, 3, requires_grad=True)
    out = ppo_core.clipped_policy_loss(
        new, torch.zeros(1, 3), torch.tensor([[1.0, 1.0, 100.0]]), torch.tensor([[1, 1, 0]]), clip=0.2
    )
    out.loss.backward()
    assert out.loss.item() == pytest.approx(-1.0)
    assert torch.allclose(new.grad, torch.tensor([[-0.5, -0.5, 0.0]]))


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[2.0, 1.0]])
    loss, frac = ppo_core.clipped_value_loss(values, old, returns, torch.ones(1, 2), clip=0.2)
    # token 0: unclipped (1-2)^2 = 1, clipped (0.2-2)^2 = 3.24 -> 3.24; token 1: both (0-1)^2 = 1
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.0) / 2)
    assert frac.item() == pytest.approx(0.5)


def test_kl_estimators():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-2.0])
    assert ppo_core.kl_penalty(logp, ref, "k1").item() == pytest.approx(1.0)
    assert ppo_core.kl_penalty(logp, ref, "k3").item() == pytest.approx(math.exp(-1) - 1 + 1)
    with pytest.raises(ValueError, match="k2"):
        ppo_core.kl_penalty(logp, ref, "k2")


def test_logprobs_and_entropy_from_logits():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0]]])
    assert ppo_core.logprobs_from_logits(logits, torch.tensor([[2]])).item() == pytest.approx(-math.log(4))
    assert ppo_core.entropy_from_logits(logits).item() == pytest.approx(math.log(4))


def test_adaptive_kl_controller():
    ctl = ppo_core.AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(current_kl=12.0, n_steps=10)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    ctl.update(current_kl=4.5, n_steps=10)  # error -0.25 clipped to -0.2
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.98)
    fixed = ppo_core.FixedKLController(0.3)
    fixed.update(100.0, 10)
    assert fixed.value == 0.3
