"""PPO math, free of models and trainers: masked statistics, GAE, whitening, clipped losses, KL penalty, KL controllers.

Every function works on ``(batch, response_length)`` tensors with a ``mask`` that is 1 on real response tokens (up to
and including the stop token) and 0 on padding after it. References:

* Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv:1707.06347): clipped surrogate objective.
* Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation"
  (arXiv:1506.02438): GAE(gamma, lambda).
* Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences" (arXiv:1909.08593): per-token KL penalty
  against the reference policy, adaptive KL coefficient.
* Ouyang et al. 2022, "Training language models to follow instructions with human feedback" (InstructGPT,
  arXiv:2203.02155).
* Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO: A Case Study on TL;DR Summarization"
  (arXiv:2403.17031): unbiased masked whitening, value clipping, reward at the last response token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over all elements, or along ``dim``)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` where ``mask`` is 1 (Bessel-corrected by default)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = mask.sum()
        if count < 2:
            return torch.zeros((), dtype=values.dtype, device=values.device)
        var = var * count / (count - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(values - mean) / std`` over the masked elements; ``shift_mean=False`` keeps the mean (reward whitening).

    Masked-out positions are returned as 0."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL estimate between the sampling policy and the reference at the sampled tokens.

    ``k1``: ``log p - log p_ref`` (unbiased, the InstructGPT penalty); ``k3``: ``(r - 1) - log r`` with
    ``r = p_ref / p`` (unbiased, lower variance, always >= 0; http://joschu.net/blog/kl-approx.html)."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; use 'k1' or 'k3'")


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, mask: torch.Tensor) -> torch.Tensor:
    """Per-token rewards: ``-kl_coef * kl`` on every response token, plus the sequence score at its last token."""
    rewards = -kl_coef * kl * mask.to(kl.dtype)
    last = (mask.long().sum(1) - 1).clamp(min=0)
    rewards[torch.arange(len(scores), device=scores.device), last] += scores.to(rewards.dtype)
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over right-padded responses.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (``V`` is 0 after the last real token),
    ``A_t = delta_t + gamma * lam * A_{t+1}``; returns ``(advantages, returns = advantages + values)``, both 0 on
    padding."""
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    length = values.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    clip_fraction: torch.Tensor  # share of tokens where the clipped term was the active one
    approx_kl: torch.Tensor  # 0.5 * mean((log ratio)^2): how far this update moved from the rollout policy


def clipped_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> PolicyLoss:
    """PPO-clip surrogate: ``mean(max(-A * r, -A * clip(r, 1 - eps, 1 + eps)))`` with ``r = exp(logp - logp_old)``."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
        approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return PolicyLoss(loss, clip_fraction, approx_kl)


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``0.5 * mean(max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2))``; returns (loss, clip fraction)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped_loss > unclipped_loss).to(values.dtype), mask)
    return loss, clip_fraction


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under ``logits`` (``(B, T, V)`` and ``(B, T)``), computed in float32."""
    logits = logits.float()
    return torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the softmax over ``logits``."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. 2019, section 2.2: ``beta <- beta * (1 + K_beta * e_t)``, ``e_t = clip(KL / target - 1, -0.2,
    0.2)``, ``K_beta = n_steps / horizon``: the coefficient grows when KL exceeds the target and shrinks below it."""

    def __init__(self, kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"adaptive KL needs target > 0 and horizon > 0 (got {target}, {horizon})")
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


def top_p_logits(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """``logits`` with every token outside the nucleus (the smallest set whose probability reaches ``top_p``) set to
    -inf: the distribution top-p sampling draws from, so the log-probs of sampled tokens are the sampler's."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    remove = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - Var(returns - values) / Var(returns)`` over the masked positions: 1 for a perfect critic, 0 for one no
    better than a constant, negative for a worse one."""
    var_returns = masked_var(returns, mask, unbiased=False)
    return 1 - masked_var(returns - values, mask, unbiased=False) / var_returns.clamp(min=1e-8)


class RunningMoments:
    """Mean and standard deviation of every value seen so far (Chan et al.'s parallel update)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: list[float]) -> None:
        if not values:
            return
        n = len(values)
        mean = sum(values) / n
        m2 = sum((v - mean) ** 2 for v in values)
        delta, total = mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return (self.m2 / self.count) ** 0.5 if self.count > 1 else 1.0

    def state(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]
