"""PPO for language models on (Q)LoRA, built on accelerate: posttrain's replacement for TRL's removed PPOTrainer.

One PPO step (Ouyang et al. 2022, InstructGPT, arXiv:2203.02155; Ziegler et al. 2019, arXiv:1909.08593; details as
in Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO", arXiv:2403.17031):

1. **Rollout** -- each process samples one reply for each of ``rollout_batch_size`` prompts from the policy
   (:func:`posttrain.models.generation.generate`: batched, left padding, KV cache; ``top_k`` off so the sampling
   distribution is the softmax the loss uses, divided by ``temperature``, truncated to the ``top_p`` nucleus).
   Replies are truncated after the first stop token.
2. **Scoring** -- no-grad forward passes give the policy's log-probabilities and values and the reference's
   log-probabilities. The PPO ratio uses the policy's log-probs under the distribution that sampled (the top-p
   nucleus); the KL penalty compares policy and reference on their full temperature-scaled softmaxes, which stays
   finite when the policy samples a token outside the reference's nucleus
   (:func:`~posttrain.rl.ppo_core.sampling_logprobs`). The reference is the same model with the LoRA adapter
   disabled (no second copy). The reward functions (:mod:`posttrain.rl.rewards`: rule checks, a reward model,
   weighted) score each reply; a reply without the stop token loses ``missing_eos_penalty``.
3. **Rewards and advantages** -- per-token reward ``-kl_coef * KL_t`` plus the score at the last token
   (:func:`~posttrain.rl.ppo_core.token_rewards`); GAE(gamma, lambda) with the value head; advantages whitened over
   the batch. ``kl_coef`` is fixed or adaptive (:class:`~posttrain.rl.ppo_core.AdaptiveKLController`).
4. **Update** -- ``num_ppo_epochs`` passes over the batch in ``num_mini_batches`` shuffled minibatches (each
   accumulated over micro-batches of ``per_device_train_batch_size``): clipped policy loss plus ``vf_coef`` times
   the clipped value loss, one optimizer step per minibatch, gradients all-reduced by DDP across processes, the
   policy's and the value head's gradients each clipped to ``max_grad_norm`` on their own.

The value model is a scalar head (zero-initialised) on the policy's last hidden state, sharing the LoRA-adapted
trunk (as TRL's original ``AutoModelForCausalLMWithValueHead``): one forward pass gives logits and values, and DDP
sees one module. Dropout is disabled (rollout and update must score the same function).

Logged every step: mean score (and per reward function), KL to the reference, entropy, policy/value loss, policy
and value clip fractions, approximate KL of the update, reply length, share of replies with the stop token, the KL
coefficient, the learning rate. Checkpoints (``save_strategy: steps``) hold the adapter, the value head, the
optimizer state (safetensors + JSON), the RNG state (CPU and CUDA) of every process and the trainer state (with the
reward-normalization statistics, gathered over every process so they are the same on each); ``resume_from_checkpoint``
(a folder, or ``true`` for the newest in ``output_dir``) continues from the step after it with the same prompts and
samples an uninterrupted run would have used.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from posttrain.chat_templates import encode_rendered
from posttrain.data.validation import DataError
from posttrain.errors import ConfigError
from posttrain.models.generation import generate, stop_token_ids
from posttrain.rl import ppo_core
from posttrain.rl.config import PPOConfig
from posttrain.rl.guard import HackingGuard, distinct_bigram_ratio
from posttrain.rl.heldout import BestAdapter
from posttrain.rl.rewards import RewardSet
from posttrain.storage import checkpoints

VALUE_HEAD_FILE = "value_head.safetensors"
STATE_FILE = "trainer_state.json"


class PolicyWithValueHead(nn.Module):
    """A causal LM (a peft model: the policy) and a scalar value head on its last hidden state."""

    def __init__(self, policy: nn.Module, *, detach_features: bool = True) -> None:
        super().__init__()
        self.policy = policy
        self.detach_features = detach_features
        hidden = policy.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        device = next(policy.parameters()).device
        self.value_head.to(device=device, dtype=torch.float32)

    def forward(self, input_ids, attention_mask, position_ids):
        output = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = output.hidden_states[-1]
        if self.detach_features:  # value gradients train the head only, never the policy adapter
            hidden = hidden.detach()
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return output.logits, values


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


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def sequence_inputs(queries, query_mask, responses, response_mask):
    """Concatenated ids, attention mask and position ids (counting real tokens only, so left padding is harmless)."""
    input_ids = torch.cat([queries, responses], dim=1)
    attention_mask = torch.cat([query_mask, response_mask], dim=1)
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


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


def rng_state() -> dict[str, torch.Tensor]:
    """This process's random states: the CPU generator (``torch``) and, with CUDA, every GPU's (``cuda_<i>``:
    sampling on a GPU draws from the CUDA generator, so without it a resumed run would sample differently)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda_{index}"] = cuda.cpu()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` saved (the CUDA states only where CUDA is available and they were saved)."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = [state[f"cuda_{i}"].cpu() for i in range(sum(k.startswith("cuda_") for k in state))]
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            warnings.warn(
                f"the checkpoint holds the random state of {len(cuda)} GPUs and this process sees "
                f"{torch.cuda.device_count()}: only the first ones are restored",
                stacklevel=2,
            )
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def resolve_checkpoint(resume: str | bool | None, output_dir: str | Path) -> Path | None:
    """The checkpoint folder to resume from: an explicit folder, or for ``true``/``latest`` the newest in
    ``output_dir`` (ConfigError if there is none)."""
    if resume in (None, False, "", "false", "False"):
        return None
    if resume in (True, "true", "True", "latest"):
        found = checkpoints(output_dir)
        if not found:
            raise ConfigError(f"resume_from_checkpoint: no checkpoint-* folder in {output_dir}")
        return found[-1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"resume_from_checkpoint: {path} is not a PPO checkpoint (no {STATE_FILE})")
    return path


class PPOTrainer:
    """PPO on a causal LM with a LoRA adapter (see the module docstring).

    Args:
        model: The causal LM (optionally 4-bit). With ``peft_config`` a new adapter is added; a peft model is used
            as is. The reference policy is this model with the adapter disabled.
        tokenizer: Its tokenizer (with a chat template).
        rewards: The reward functions (:func:`posttrain.rl.rewards.build_rewards`).
        args: :class:`~posttrain.rl.config.PPOConfig`.
        train_dataset: Prompt rows (``prompt`` messages, ``task``, ``answer``, ``meta``; see
            :func:`posttrain.rl.prompts.load_prompts`).
        peft_config: LoRA config for a new adapter.
    """

    def __init__(self, model, tokenizer, rewards: RewardSet, args: PPOConfig, train_dataset, *, peft_config=None,
                 eval_dataset=None):  # fmt: skip
        from accelerate import Accelerator
        from transformers import TrainerState

        self.args, self.tokenizer, self.rewards = args, tokenizer, rewards
        self.accelerator = Accelerator(cpu=args.use_cpu)
        if len(train_dataset) == 0:
            raise DataError("datasets", "no training prompts")
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        if peft_config is not None:
            from peft import get_peft_model, prepare_model_for_kbit_training

            if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
            model = get_peft_model(model, peft_config)
        elif not hasattr(model, "disable_adapter"):
            raise ConfigError("PPO trains a LoRA adapter: set use_peft: true (the reference is the adapter disabled)")
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        disable_dropout(model)
        self.stop_ids = stop_token_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        for func in rewards.funcs:  # rule rewards read `finished` from the last completion id
            if hasattr(func, "stop_token_ids"):
                func.stop_token_ids = set(self.stop_ids)
        rewards.to(self.accelerator.device)

        wrapped = PolicyWithValueHead(model, detach_features=args.detach_value_features)
        value_lr = args.value_learning_rate if args.value_learning_rate is not None else 10 * args.learning_rate
        groups = [  # the critic has its own parameter group and learning rate
            {"params": [p for p in wrapped.policy.parameters() if p.requires_grad], "lr": args.learning_rate},
            {"params": list(wrapped.value_head.parameters()), "lr": value_lr},
        ]
        optimizer = torch.optim.AdamW(
            groups,
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            eps=args.adam_epsilon,
            weight_decay=args.weight_decay,
        )
        self.model, self.optimizer = self.accelerator.prepare(wrapped, optimizer)
        self.scheduler = self._make_scheduler()
        self.kl_ctl = (
            ppo_core.AdaptiveKLController(args.kl_coef, args.target_kl, args.kl_horizon)
            if args.adaptive_kl
            else ppo_core.FixedKLController(args.kl_coef)
        )
        self.state = TrainerState(max_steps=args.max_steps)
        self.state.global_step = 0
        self.reward_moments = {name: ppo_core.RunningMoments() for name in rewards.names}
        self.guard = HackingGuard.for_rewards(
            rewards.names, rewards.weights, mode=args.hacking_guard, window=args.hacking_guard_window,
            max_length=args.max_completion_length, rule_names=rewards.rule_names, alpha=args.hacking_guard_alpha,
            max_steps=args.max_steps,
        )  # fmt: skip
        self.best_adapter = BestAdapter(self.unwrapped)  # what hacking_guard: stop keeps

    # ------------------------------------------------------------------------------------------------ helpers

    @property
    def unwrapped(self) -> PolicyWithValueHead:
        return self.accelerator.unwrap_model(self.model)

    def _make_scheduler(self):
        from transformers import get_scheduler

        return get_scheduler(
            self.args.lr_scheduler_type,
            self.optimizer,
            num_warmup_steps=self.args.get_warmup_steps(self.args.max_steps),
            num_training_steps=self.args.max_steps,
            scheduler_specific_kwargs=self.args.lr_scheduler_kwargs or {},
        )

    def prompt_indices(self, step: int) -> list[int]:
        """This process's prompts at PPO step ``step`` (1-based): consecutive slices of a seeded permutation per
        epoch over the dataset, so a resumed run sees the prompts an uninterrupted one would."""
        n, per_rank = len(self.train_dataset), self.args.rollout_batch_size
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        start = (step - 1) * per_rank * world + rank * per_rank
        indices = []
        for position in range(start, start + per_rank):
            epoch, offset = divmod(position, n)
            permutation = torch.randperm(n, generator=torch.Generator().manual_seed(self.args.seed + epoch))
            indices.append(int(permutation[offset]))
        return indices

    def _encode_prompts(self, prompts: Sequence[list[dict]]) -> tuple[torch.Tensor, torch.Tensor]:
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

    def token_logprobs(self, logits, responses, response_mask, *, entropy: bool = False) -> ppo_core.TokenLogprobs:
        """Log-probs of the response tokens from the model's logits over query + response (rollout and update alike):
        temperature-scaled, top-p sampler and full softmax (:func:`~posttrain.rl.ppo_core.sampling_logprobs`)."""
        context = logits.shape[1] - responses.shape[1]
        logits = logits[:, context - 1 : -1].float() / self.args.temperature
        return ppo_core.sampling_logprobs(logits, responses, response_mask, self.args.top_p, entropy=entropy)

    @torch.no_grad()
    def _score_tokens(self, queries, query_mask, responses, response_mask, *, reference: bool):
        """Log-probs of the response tokens: ``logprobs`` (the sampler's) and ``full_logprobs`` (the full softmax's);
        unless ``reference`` also values and entropy; in forward batches, every tensor 0 on padding."""
        model, out = self.unwrapped, {"logprobs": [], "full_logprobs": [], "values": [], "entropy": []}
        device, size, context = self.accelerator.device, self.args.forward_batch_size, queries.shape[1]
        adapter_off = model.policy.disable_adapter() if reference else nullcontext()
        with adapter_off:
            for start in range(0, len(queries), size):
                chunk = slice(start, start + size)
                inputs = sequence_inputs(queries[chunk], query_mask[chunk], responses[chunk], response_mask[chunk])
                logits, values = model(*(t.to(device) for t in inputs))
                tokens, mask = responses[chunk].to(device), response_mask[chunk].to(device)
                scored = self.token_logprobs(logits, tokens, mask, entropy=not reference)
                out["logprobs"].append(scored.sampler)
                out["full_logprobs"].append(scored.full)
                if not reference:
                    out["values"].append(values[:, context - 1 : -1].float())
                    out["entropy"].append(scored.entropy)
        return {k: torch.cat(v) for k, v in out.items() if v}

    # ------------------------------------------------------------------------------------------------ rollout

    def rollout(self, rows: list[dict]) -> Rollout:
        """Sample, truncate at the stop token, score with the rewards, the policy (+ values) and the reference."""

        prompts = [row["prompt"] for row in rows]
        policy = self.unwrapped.policy
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
        completions = [s[0] for s in samples]  # token ids already cut after the first stop token
        queries, query_mask = self._encode_prompts(prompts)
        width = max(c.num_tokens for c in completions)
        responses = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        response_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, c in enumerate(completions):
            responses[row, : c.num_tokens] = torch.tensor(c.token_ids)
            response_mask[row, : c.num_tokens] = 1
        policy_out = self._score_tokens(queries, query_mask, responses, response_mask, reference=False)
        ref_out = self._score_tokens(queries, query_mask, responses, response_mask, reference=True)

        total, per_func = self.rewards(
            prompts,
            [[{"role": "assistant", "content": c.text}] for c in completions],
            completion_ids=[c.token_ids for c in completions],
            **{key: [row.get(key) for row in rows] for key in ("task", "answer", "meta")},
        )
        device = self.accelerator.device
        finished = torch.tensor([c.finished for c in completions], device=device)
        penalty = (self.args.missing_eos_penalty or 0.0) * (~finished).float()
        raw_scores = torch.tensor(total, dtype=torch.float32, device=device) - penalty
        scores = torch.tensor(self.normalized_total(per_func), dtype=torch.float32, device=device) - penalty
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

    def normalized_total(self, per_func: dict[str, list]) -> list[float]:
        """The weighted sum of the reward components, each standardized first (``reward_normalization``): a reward
        model's offset and a 0/1 task check then weigh what their weights say. ``None`` scores count 0."""
        mode = self.args.reward_normalization
        n = len(next(iter(per_func.values()))) if per_func else 0
        total = [0.0] * n
        values_by_name = {
            name: [float(v) if v is not None and not math.isnan(v) else None for v in per_func[name]]
            for name in self.rewards.names
        }
        if mode in ("running", "batch"):
            batch_moments = self._global_moments(
                {k: [v for v in vs if v is not None] for k, vs in values_by_name.items()}
            )
        for name, weight in zip(self.rewards.names, self.rewards.weights, strict=True):
            values = values_by_name[name]
            if mode == "running":
                self.reward_moments[name].merge(batch_moments[name])
                mean, std = self.reward_moments[name].mean, self.reward_moments[name].std
            elif mode == "batch" and batch_moments[name].count > 1:
                mean, std = batch_moments[name].mean, (batch_moments[name].m2 / batch_moments[name].count) ** 0.5
            else:
                mean, std = 0.0, 1.0
            std = std if std > 1e-6 else 1.0
            for i, v in enumerate(values):
                if v is not None:
                    total[i] += weight * (v - mean) / std
        return total

    def _global_moments(self, present: dict[str, list[float]]) -> dict[str, ppo_core.RunningMoments]:
        """Count, mean and sum of squared deviations of each component's scores over every process's rollout
        (gathered, then combined in rank order): every process normalizes with the same statistics, so the one copy
        a checkpoint keeps is every process's. With one process these are the local batch's."""
        from accelerate.utils import gather_object

        local = {}
        for name, values in present.items():
            moments = ppo_core.RunningMoments()
            moments.update(values)
            local[name] = moments.state()
        out = {name: ppo_core.RunningMoments() for name in present}
        for rank in gather_object([local]):
            for name, state in rank.items():
                out[name].merge(ppo_core.RunningMoments.of(state["count"], state["mean"], state["m2"]))
        return out

    # ------------------------------------------------------------------------------------------------- update

    def advantages(self, batch: Rollout):
        """Per-token KL (between the policy's and the reference's full temperature-scaled distributions, see
        :func:`~posttrain.rl.ppo_core.sampling_logprobs`) and rewards, GAE advantages (whitened) and returns."""
        args, mask = self.args, batch.response_mask
        logprobs = batch.kl_logprobs if batch.kl_logprobs is not None else batch.logprobs
        kl = ppo_core.masked_fill_padding(ppo_core.kl_penalty(logprobs, batch.ref_logprobs, args.kl_estimator), mask)
        rewards = ppo_core.token_rewards(batch.scores, kl, self.kl_ctl.value, mask)
        if args.whiten_rewards:
            rewards = ppo_core.masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = ppo_core.gae(rewards, batch.values, mask, args.gamma, args.lam)
        advantages = ppo_core.masked_whiten(advantages, mask)
        return kl, rewards, advantages, returns

    def update(self, batch: Rollout, advantages, returns, step: int) -> dict[str, float]:
        """``num_ppo_epochs`` x ``num_mini_batches`` optimizer steps of the clipped PPO loss."""
        args, accelerator = self.args, self.accelerator
        n = len(batch)
        mini = n // args.num_mini_batches
        micro = args.per_device_train_batch_size
        stats: dict[str, list[float]] = {
            k: [] for k in ("loss", "policy_loss", "value_loss", "clipfrac", "value_clipfrac", "approx_kl")
        }
        generator = torch.Generator().manual_seed(args.seed * 100003 + step)
        context = batch.queries.shape[1]
        self.model.train()
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(n, generator=generator)
            for mb_start in range(0, n, mini):
                mb = order[mb_start : mb_start + mini]
                for mc_start in range(0, mini, micro):
                    idx = mb[mc_start : mc_start + micro].to(batch.queries.device)
                    last = mc_start + micro >= mini
                    mask = batch.response_mask[idx]
                    inputs = sequence_inputs(batch.queries[idx], batch.query_mask[idx], batch.responses[idx], mask)
                    with nullcontext() if last else accelerator.no_sync(self.model):
                        logits, values = self.model(*inputs)
                        logprobs = self.token_logprobs(logits, batch.responses[idx], mask).sampler
                        policy = ppo_core.clipped_policy_loss(
                            logprobs, batch.logprobs[idx], advantages[idx], mask, args.cliprange
                        )
                        value_loss, value_clipfrac = ppo_core.clipped_value_loss(
                            values[:, context - 1 : -1].float(),
                            batch.values[idx],
                            returns[idx],
                            mask,
                            args.cliprange_value,
                        )
                        loss = policy.loss + args.vf_coef * value_loss
                        accelerator.backward(loss * (len(idx) / mini))
                    for key, value in (
                        ("loss", loss),
                        ("policy_loss", policy.loss),
                        ("value_loss", value_loss),
                        ("clipfrac", policy.clip_fraction),
                        ("value_clipfrac", value_clipfrac),
                        ("approx_kl", policy.approx_kl),
                    ):
                        stats[key].append(float(value.detach()))
                self.clip_gradients()
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        return {k: sum(v) / len(v) for k, v in stats.items()}

    def clip_gradients(self) -> None:
        """Clip the policy adapter's and the value head's gradients each to ``max_grad_norm`` (their optimizer
        groups): under one joint norm a large value-loss gradient (a fresh critic, a reward on a new scale) would
        shrink the policy's step with it."""
        from accelerate.utils import DistributedType

        max_norm, accelerator = self.args.max_grad_norm, self.accelerator
        if not max_norm or max_norm <= 0:
            return
        if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP, DistributedType.XLA):
            accelerator.clip_grad_norm_(self.model.parameters(), max_norm)  # sharded gradients: their own clipping
            return
        accelerator.unscale_gradients()  # once per step (fp16 loss scaling refuses a second unscale_)
        for group in self.optimizer.param_groups:
            torch.nn.utils.clip_grad_norm_(group["params"], max_norm)

    def step(self, step: int) -> dict[str, float]:
        """One PPO iteration: rollout, advantages, update, KL controller, learning-rate schedule; gathered metrics."""
        rows = [self.train_dataset[i] for i in self.prompt_indices(step)]
        batch = self.rollout(rows)
        if step == 1 and self.args.value_init == "first_batch":
            self.init_value_bias(batch)
        kl, _, advantages, returns = self.advantages(batch)
        update = self.update(batch, advantages, returns, step)
        mask = batch.response_mask.float()
        local = {
            "reward": batch.raw_scores.mean(),
            "reward_normalized": batch.scores.mean(),
            "explained_variance": ppo_core.explained_variance(batch.values, returns, mask),
            "kl": kl.sum(1).mean(),
            "entropy": ppo_core.masked_mean(batch.entropy, mask),
            "response_length": mask.sum(1).mean(),
            "eos_fraction": batch.finished.float().mean(),
            "distinct_2": torch.tensor(batch.distinct),
            **{f"reward/{k}": torch.tensor(v) for k, v in batch.per_reward.items()},
            "replies": torch.tensor(float(len(batch))),
            **{f"scored/{k}": torch.tensor(float(v)) for k, v in batch.scored.items()},
            **{k: torch.tensor(v) for k, v in update.items()},
        }
        names = list(local)
        stacked = torch.stack(
            [torch.as_tensor(local[k], dtype=torch.float32).to(self.accelerator.device) for k in names]
        )
        gathered = self.accelerator.reduce(stacked, reduction="mean")
        metrics = {k: float(v) for k, v in zip(names, gathered.tolist(), strict=True)}
        for k in names:  # counts: the mean over the processes times their number is the total (the guard's samples)
            if k == "replies" or k.startswith("scored/"):
                metrics[k] = float(round(metrics[k] * self.accelerator.num_processes))
        metrics["kl_coef"] = self.kl_ctl.value
        metrics["learning_rate"] = self.scheduler.get_last_lr()[0]
        self.kl_ctl.update(metrics["kl"], len(batch) * self.accelerator.num_processes)
        self.scheduler.step()
        return metrics

    @torch.no_grad()
    def init_value_bias(self, batch: Rollout) -> None:
        """Start the critic at the first rollout's mean score (the same on every process): with a zero value head
        the first advantages would carry the reward's offset rather than how good each reply was."""
        mean = self.accelerator.reduce(batch.scores.mean().reshape(1), reduction="mean")[0]
        head = self.unwrapped.value_head
        head.bias.fill_(float(mean))
        batch.values += float(mean) * batch.response_mask  # the rollout's values came from the zero-bias head

    def _guard(self, step: int, metrics: dict[str, float], write) -> None:
        """Feed the hacking guard; with ``stop`` also offer this step's adapter as a candidate to keep."""
        for message in self.guard.observe(step, metrics):
            if write:
                write(f"posttrain ppo: warning: {message}")
        if self.guard.mode == "stop" and self.guard.history:
            self.best_adapter.offer(step, self.guard.history[-1]["rule"])

    def _restore_best_adapter(self, write) -> None:
        """After the guard stopped training: keep the candidate with the best held-out task score."""
        args = self.args
        kept = self.best_adapter.keep_best(
            self.state.global_step, self.unwrapped.policy, self.tokenizer, self.rewards, self.eval_dataset,
            max_new_tokens=args.eval_max_new_tokens or args.max_completion_length,
            batch_size=args.generation_batch_size, missing_eos_penalty=args.missing_eos_penalty,
        )  # fmt: skip
        if kept is None:
            return
        self.guard.findings[-1].update(restored_step=kept["step"], restored_by=kept["by"],
                                       heldout_task_scores=kept["heldout_task_scores"])  # fmt: skip
        if write:
            write(f"posttrain ppo: hacking_guard stop: training ended at step {self.state.global_step}; the adapter of "
                  f"step {kept['step']} ({kept['label']}: {kept['by']}) is kept")  # fmt: skip

    # ------------------------------------------------------------------------------------------------ training

    def train(self, resume_from_checkpoint: str | bool | None = None, should_stop=None) -> dict[str, float]:
        """Run PPO steps up to ``max_steps`` (continuing after a checkpoint); returns summary metrics.

        ``should_stop`` (called after every step, on every rank) ends training early with a checkpoint of that step,
        e.g. on SIGTERM; the summary then covers the steps run."""
        from tqdm.auto import tqdm

        args = self.args
        checkpoint = resolve_checkpoint(resume_from_checkpoint, args.output_dir)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        first = self.state.global_step + 1
        started = time.perf_counter()  # monotonic: a VM's wall clock can be stepped
        main = self.accelerator.is_main_process
        if self.guard.mode == "stop":
            self.best_adapter.start(first - 1)
        bar = tqdm(range(first, args.max_steps + 1), desc="PPO", unit="step", disable=not main)
        for step in bar:
            metrics = self.step(step)
            self.state.global_step = step
            self.state.log_history.append({"step": step, **metrics})
            self._guard(step, metrics, bar.write if main else None)
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics['kl']:.3f}")
            if main and args.logging_steps and step % max(int(args.logging_steps), 1) == 0:
                bar.write(
                    "posttrain ppo: " + json.dumps({"step": step, **{k: round(v, 4) for k, v in metrics.items()}})
                )
            saved = args.save_strategy == "steps" and args.save_steps and step % int(args.save_steps) == 0
            if self.guard.should_stop:  # first restore the kept adapter, so this step's checkpoint holds it
                self._restore_best_adapter(bar.write if main else None)
            if saved:
                self.save_checkpoint()
            if self.guard.should_stop:
                bar.close()
                break
            if should_stop is not None and should_stop():
                if not saved:
                    self.save_checkpoint()
                bar.close()
                break
        history = [h for h in self.state.log_history if "reward" in h]
        elapsed = time.perf_counter() - started
        steps_run = self.state.global_step - first + 1
        summary = {
            "train_runtime": elapsed,
            "steps_per_second": steps_run / elapsed if elapsed > 0 and steps_run > 0 else 0.0,
        }
        if history:
            k = max(1, len(history) // 4)
            summary["reward_first"] = sum(h["reward"] for h in history[:k]) / k
            summary["reward_last"] = sum(h["reward"] for h in history[-k:]) / k
            summary["kl_last"] = history[-1]["kl"]
            summary["kl_max"] = max(h["kl"] for h in history)
        return summary

    # ------------------------------------------------------------------------------------------ checkpoints

    def save_model(self, output_dir: str | Path) -> None:
        """Adapter, value head and tokenizer (main process)."""
        from safetensors.torch import save_file

        if not self.accelerator.is_main_process:
            return
        output_dir = Path(output_dir)
        model = self.unwrapped
        model.policy.save_pretrained(output_dir)
        self.tokenizer.save_pretrained(output_dir)
        head = {k: v.detach().cpu().contiguous() for k, v in model.value_head.state_dict().items()}
        save_file(head, output_dir / VALUE_HEAD_FILE)

    def save_checkpoint(self) -> Path:
        """``output_dir/checkpoint-<step>``, written to a temporary folder and renamed when complete."""
        from safetensors.torch import save_file

        accelerator, step = self.accelerator, self.state.global_step
        final = Path(self.args.output_dir) / f"checkpoint-{step}"
        tmp = final.with_name(f".{final.name}.tmp")
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.save_model(tmp)
            tensors, groups = {}, []
            state = self.optimizer.state_dict()
            for index, param_state in state["state"].items():
                for key, value in param_state.items():
                    tensors[f"{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
            for group in state["param_groups"]:
                groups.append({k: list(v) if isinstance(v, tuple) else v for k, v in group.items()})
            save_file(tensors, tmp / "optimizer.safetensors")
            (tmp / "optimizer.json").write_text(json.dumps(groups))
            (tmp / STATE_FILE).write_text(
                json.dumps(
                    {
                        "global_step": step,
                        "kl_coef": self.kl_ctl.value,
                        "reward_moments": {k: m.state() for k, m in self.reward_moments.items()},
                        "log_history": self.state.log_history,
                        "world_size": accelerator.num_processes,
                    },
                    indent=1,
                )
            )
        accelerator.wait_for_everyone()
        save_file(rng_state(), tmp / f"rng_state_{accelerator.process_index}.safetensors")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            self._rotate_checkpoints()
        accelerator.wait_for_everyone()
        return final

    def _rotate_checkpoints(self) -> None:
        limit = self.args.save_total_limit
        if not limit:
            return
        for path in checkpoints(self.args.output_dir)[:-limit]:
            shutil.rmtree(path, ignore_errors=True)

    def load_checkpoint(self, checkpoint: str | Path) -> None:
        """Restore adapter, value head, optimizer, scheduler position, KL coefficient, RNG and step."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        checkpoint = Path(checkpoint)
        saved = json.loads((checkpoint / STATE_FILE).read_text())
        if saved.get("world_size", 1) != self.accelerator.num_processes:
            raise ConfigError(
                f"{checkpoint} was written by {saved.get('world_size')} processes; resume with the same number "
                f"(now {self.accelerator.num_processes})"
            )
        model = self.unwrapped
        device = self.accelerator.device
        adapter = load_file(checkpoint / "adapter_model.safetensors", device=str(device))
        set_peft_model_state_dict(model.policy, adapter)
        model.value_head.load_state_dict(load_file(checkpoint / VALUE_HEAD_FILE, device=str(device)))
        tensors = load_file(checkpoint / "optimizer.safetensors", device=str(device))
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value.cpu() if name == "step" else value
        groups = json.loads((checkpoint / "optimizer.json").read_text())
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        self.state.global_step = saved["global_step"]
        self.state.log_history = saved["log_history"]
        self.kl_ctl.value = saved["kl_coef"]
        for name, moments in saved.get("reward_moments", {}).items():
            if name in self.reward_moments:
                self.reward_moments[name].load(moments)
        self.scheduler = self._make_scheduler()  # on the restored optimizer, then replayed to the saved step
        with warnings.catch_warnings():  # replaying the schedule before any optimizer step is intended here
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            for _ in range(self.state.global_step):
                self.scheduler.step()
        set_rng_state(load_file(checkpoint / f"rng_state_{self.accelerator.process_index}.safetensors"))
        if self.accelerator.is_main_process:
            print(f"posttrain ppo: resumed from {checkpoint} at step {self.state.global_step}", flush=True)


def steps_summary(history: list[dict]) -> str:
    """``reward a -> b, KL c`` over the first and last quarter of logged steps."""
    if not history:
        return "no steps"
    k = max(1, len(history) // 4)
    first = sum(h["reward"] for h in history[:k]) / k
    last = sum(h["reward"] for h in history[-k:]) / k
    return f"mean reward {first:.3f} -> {last:.3f}, KL {history[-1]['kl']:.3f}" if math.isfinite(first) else "n/a"
