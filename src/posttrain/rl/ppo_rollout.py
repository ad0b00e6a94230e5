"""PPO's rollout: one batch of replies sampled from the policy and scored (steps 1 and 2 of :mod:`posttrain.rl.ppo`).

Each process samples one reply for each of its prompts (:func:`posttrain.models.generation.generate`: batched, left
padding, KV cache; ``top_k`` off so the sampling distribution is the softmax the loss uses, divided by
``temperature``, truncated to the ``top_p`` nucleus); replies are truncated after the first stop token. No-grad
forward passes give the policy's log-probabilities and values and the reference's log-probabilities: the PPO ratio
uses the policy's log-probs under the distribution that sampled (the top-p nucleus); the KL penalty compares policy
and reference on their full temperature-scaled softmaxes, which stays finite when the policy samples a token outside
the reference's nucleus (:func:`~posttrain.rl.ppo_core.sampling_logprobs`). The reference is the same model with the
LoRA adapter disabled. The reward functions score each reply (normalized by
:class:`~posttrain.rl.reward_normalization.RewardNormalizer`); a reply without the stop token loses
``missing_eos_penalty``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from posttrain.chat_templates import encode_rendered
from posttrain.data.validation import DataError
from posttrain.models.generation import generate
from posttrain.rl import ppo_core
from posttrain.rl.config import PPOConfig
from posttrain.rl.guard import distinct_bigram_ratio
from posttrain.rl.ppo_model import PolicyWithValueHead, sequence_inputs
from posttrain.rl.reward_normalization import RewardNormalizer
from posttrain.rl.rewards import RewardSet


@dataclass
class Rollout:
    """One PPO batch on this process: ``(B, Q)`` left-padded queries, ``(B, R)`` right-padded responses and per-token
    tensors over the response positions."""

    queries: torch.Tensor
    query_mask: torch.Tensor
    responses: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor  # the policy's, under the top-p sampler's distribution (the PPO ratio's denominator)
    ref_logprobs: torch.Tensor  # the reference's, under its full temperature-scaled softmax (the KL penalty's)
    values: torch.Tensor
    entropy: torch.Tensor
    scores: torch.Tensor
    finished: torch.Tensor
    per_reward: dict[str, float]
    raw_scores: torch.Tensor  # the weighted reward before normalization (what is logged as `reward`)
    distinct: float = 1.0  # mean distinct-bigram ratio of the replies (repetition, for the hacking guard)
    scored: dict[str, int] = field(default_factory=dict)  # replies each reward scored (not None), for the guard
    kl_logprobs: torch.Tensor | None = None  # the policy's under its full softmax (the KL penalty's; None: logprobs)

    def __len__(self) -> int:
        return self.queries.shape[0]


@contextmanager
def pure_sampling(model):
    """Sample from exactly ``softmax(logits / T)``: no top-k (transformers defaults it to 50), no penalties."""
    config = model.generation_config
    keys = {"top_k": 0, "typical_p": 1.0, "min_p": None, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
    saved = {k: getattr(config, k, None) for k in keys}
    for k, v in keys.items():
        setattr(config, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(config, k, v)


def token_logprobs(logits, responses, response_mask, args: PPOConfig, *, entropy: bool = False):
    """Log-probs of the response tokens from the model's logits over query + response (rollout and update alike):
    temperature-scaled, top-p sampler and full softmax (:func:`~posttrain.rl.ppo_core.sampling_logprobs`)."""
    context = logits.shape[1] - responses.shape[1]
    logits = logits[:, context - 1 : -1].float() / args.temperature
    return ppo_core.sampling_logprobs(logits, responses, response_mask, args.top_p, entropy=entropy)


class RolloutSampler:
    """Samples and scores :class:`Rollout` batches of prompt rows (``prompt``, ``task``, ``answer``, ``meta``) with
    ``tokenizer``, ``rewards`` (normalized by ``normalizer``) and ``args``; tensors end up on ``device``."""

    def __init__(self, tokenizer, rewards: RewardSet, args: PPOConfig, normalizer: RewardNormalizer, *, pad_id: int,
                 device) -> None:  # fmt: skip
        self.tokenizer, self.rewards, self.args, self.normalizer = tokenizer, rewards, args, normalizer
        self.pad_id, self.device = pad_id, device

    def __call__(self, model: PolicyWithValueHead, rows: list[dict]) -> Rollout:
        """Sample, truncate at the stop token, score with the rewards, the policy (+ values) and the reference."""
        prompts = [row["prompt"] for row in rows]
        completions = self._sample(model.policy, prompts)
        queries, query_mask = self.encode_prompts(prompts)
        responses, response_mask = self._pad_responses(completions)
        policy_out = self.score_tokens(model, queries, query_mask, responses, response_mask, reference=False)
        ref_out = self.score_tokens(model, queries, query_mask, responses, response_mask, reference=True)
        total, per_func = self.rewards(
            prompts,
            [[{"role": "assistant", "content": c.text}] for c in completions],
            completion_ids=[c.token_ids for c in completions],
            **{key: [row.get(key) for row in rows] for key in ("task", "answer", "meta")},
        )
        device = self.device
        finished = torch.tensor([c.finished for c in completions], device=device)
        penalty = (self.args.missing_eos_penalty or 0.0) * (~finished).float()
        raw_scores = torch.tensor(total, dtype=torch.float32, device=device) - penalty
        scores = torch.tensor(self.normalizer.total(per_func), dtype=torch.float32, device=device) - penalty
        per_reward = {
            name: sum(float(s) for s in vals if s is not None) / max(sum(s is not None for s in vals), 1)
            for name, vals in per_func.items()
        }
        return Rollout(
            queries.to(device),
            query_mask.to(device),
            responses.to(device),
            response_mask.to(device),
            policy_out["logprobs"],
            ref_out["full_logprobs"],
            policy_out["values"],
            policy_out["entropy"],
            scores,
            finished,
            per_reward,
            raw_scores,
            sum(distinct_bigram_ratio(c.token_ids) for c in completions) / max(len(completions), 1),
            scored={name: sum(s is not None and s == s for s in vals) for name, vals in per_func.items()},
            kl_logprobs=policy_out["full_logprobs"],
        )

    def _sample(self, policy, prompts):
        """One sampled completion a prompt, its token ids already cut after the first stop token."""
        policy.eval()
        with pure_sampling(policy):
            samples = generate(
                policy,
                self.tokenizer,
                prompts,
                max_new_tokens=self.args.max_completion_length,
                do_sample=True,
                temperature=self.args.temperature,
                top_p=self.args.top_p,
                batch_size=self.args.generation_batch_size,
                progress=False,
                compact=False,  # model.generate on whole batches: the seeded rollouts (and runs) stay as they were
            )
        return [s[0] for s in samples]

    def _pad_responses(self, completions) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded response ids and their mask."""
        width = max(c.num_tokens for c in completions)
        responses = torch.full((len(completions), width), self.pad_id, dtype=torch.long)
        response_mask = torch.zeros((len(completions), width), dtype=torch.long)
        for row, c in enumerate(completions):
            responses[row, : c.num_tokens] = torch.tensor(c.token_ids)
            response_mask[row, : c.num_tokens] = 1
        return responses, response_mask

    def encode_prompts(self, prompts: Sequence[list[dict]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded query ids rendered exactly as :func:`posttrain.models.generation.generate` renders them."""
        encoded = [  # BOS once where the tokenizer adds it, as SFT sequences and runtimes start
            encode_rendered(
                self.tokenizer, self.tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=False)
            )["input_ids"]
            for p in prompts
        ]
        too_long = [len(e) for e in encoded if len(e) > self.args.max_prompt_length]
        if too_long:
            raise DataError(
                "datasets", f"a prompt has {too_long[0]} tokens, over max_prompt_length {self.args.max_prompt_length}"
            )
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, width - len(e) :] = torch.tensor(e)
            mask[row, width - len(e) :] = 1
        return ids, mask

    @torch.no_grad()
    def score_tokens(self, model: PolicyWithValueHead, queries, query_mask, responses, response_mask, *,
                     reference: bool) -> dict[str, torch.Tensor]:  # fmt: skip
        """Log-probs of the response tokens: ``logprobs`` (the sampler's) and ``full_logprobs`` (the full softmax's);
        unless ``reference`` also values and entropy; in forward batches, every tensor 0 on padding."""
        out: dict[str, list] = {"logprobs": [], "full_logprobs": [], "values": [], "entropy": []}
        device, size, context = self.device, self.args.forward_batch_size, queries.shape[1]
        adapter_off = model.policy.disable_adapter() if reference else nullcontext()
        with adapter_off:
            for start in range(0, len(queries), size):
                chunk = slice(start, start + size)
                inputs = sequence_inputs(queries[chunk], query_mask[chunk], responses[chunk], response_mask[chunk])
                logits, values = model(*(t.to(device) for t in inputs))
                tokens, mask = responses[chunk].to(device), response_mask[chunk].to(device)
                scored = token_logprobs(logits, tokens, mask, self.args, entropy=not reference)
                out["logprobs"].append(scored.sampler)
                out["full_logprobs"].append(scored.full)
                if not reference:
                    out["values"].append(values[:, context - 1 : -1].float())
                    out["entropy"].append(scored.entropy)
        return {k: torch.cat(v) for k, v in out.items() if v}
