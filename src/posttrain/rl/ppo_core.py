"""PPO math, free of models and trainers: masked statistics, GAE, whitening, clipped losses, KL penalty, KL controllers.

Every function works on ``(batch, response_length)`` tensors with a ``mask`` that is 1 on real response tokens (up to
and including the stop token) and 0 on padding after it. Padding is removed with :func:`torch.where`, never by
multiplying with the mask: a value there may be infinite (``0 * inf`` is NaN, and GAE would spread it). References:

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


def masked_fill_padding(values: torch.Tensor, mask: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """``values`` where ``mask`` is 1, ``value`` elsewhere, whatever (``inf``, NaN) the padding held."""
    return torch.where(mask.bool(), values, torch.as_tensor(value, dtype=values.dtype, device=values.device))


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over all elements, or along ``dim``)."""
    count = mask.to(values.dtype)
    values = masked_fill_padding(values, mask)
    if dim is None:
        return values.sum() / count.sum().clamp(min=1)
    return values.sum(dim) / count.sum(dim).clamp(min=1)


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
    return masked_fill_padding(whitened, mask)


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
    rewards = masked_fill_padding(-kl_coef * kl, mask)
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
    keep = mask.bool()
    values = masked_fill_padding(values, keep)
    rewards = masked_fill_padding(rewards, keep)
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    length = values.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = masked_fill_padding(delta + gamma * lam * last, keep[:, t])
        advantages[:, t] = last
    return advantages, masked_fill_padding(advantages + values, keep)


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
    """log p(token) under ``logits`` (``(B, T, V)`` and ``(B, T)``), computed in float32 (``-inf`` for a token
    whose logit is ``-inf``, e.g. outside a top-p nucleus)."""
    logits = logits.float()
    return torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the softmax over ``logits``; tokens with a ``-inf`` logit (outside a top-p nucleus)
    contribute 0, so the entropy of a truncated distribution is that over its kept support, finite."""
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.special.entr(probs).sum(-1)


@dataclass
class TokenLogprobs:
    sampler: torch.Tensor  # log-probs under the top-p sampler's distribution (the PPO ratio's)
    full: torch.Tensor  # log-probs under the whole temperature-scaled softmax (the KL penalty's)
    entropy: torch.Tensor | None = None  # entropy of the sampler's distribution (over the nucleus)


def sampling_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, top_p: float = 1.0, *, entropy: bool = False
) -> TokenLogprobs:
    """Log-probs of ``tokens`` (``(B, T)``) under temperature-scaled ``logits`` (``(B, T, V)``), finite everywhere and 0
    on padding (``mask`` 0) whichever token pads it.

    * ``sampler``: of the distribution top-p sampling drew from (:func:`top_p_logits`: the nucleus, renormalized).
      These are the log-probs of the PPO ratio, at rollout and in the update alike, so the ratio is an importance
      weight of the distribution that actually sampled (exactly 1 before any update). A token outside the nucleus
      recomputed here -- one an update pushed out of its policy's nucleus, or one at the nucleus boundary that
      rounding differences between the sampler and this forward pass left out -- gets its ``full`` log-prob (finite,
      and lower than its in-nucleus one would be) rather than ``-inf``.
    * ``full``: of the whole temperature-scaled softmax (full support). The KL penalty compares policy and reference
      on these: the reference's own nucleus may exclude a token the policy sampled, and a KL against a truncated
      reference would be ``+inf``; between the full distributions it is finite, and 0 for identical models.
    * ``entropy`` (with ``entropy=True``): of the sampler's distribution, over the nucleus it keeps (finite).

    With ``top_p >= 1`` ``sampler`` and ``full`` are the same."""
    logits = logits.float()
    full = logprobs_from_logits(logits, tokens)
    nucleus = top_p_logits(logits, top_p)
    if top_p < 1.0:
        sampler = logprobs_from_logits(nucleus, tokens)
        sampler = torch.where(torch.isfinite(sampler), sampler, full)
    else:
        sampler = full
    return TokenLogprobs(
        masked_fill_padding(sampler, mask),
        masked_fill_padding(full, mask),
        masked_fill_padding(entropy_from_logits(nucleus), mask) if entropy else None,
    )


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

    @classmethod
    def of(cls, count: int, mean: float, m2: float) -> RunningMoments:
        moments = cls()
        moments.count, moments.mean, moments.m2 = count, mean, m2
        return moments

    def update(self, values: list[float]) -> None:
        if not values:
            return
        n = len(values)
        mean = sum(values) / n
        self.merge(RunningMoments.of(n, mean, sum((v - mean) ** 2 for v in values)))

    def merge(self, other: RunningMoments) -> None:
        """Add the values ``other`` summarizes (e.g. another process's batch)."""
        if not other.count:
            return
        delta, total = other.mean - self.mean, self.count + other.count
        self.mean += delta * other.count / total
        self.m2 += other.m2 + delta**2 * self.count * other.count / total
        self.count = total

    @property
    def std(self) -> float:
        return (self.m2 / self.count) ** 0.5 if self.count > 1 else 1.0

    def state(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]
