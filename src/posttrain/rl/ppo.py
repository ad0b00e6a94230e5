"""PPO for language models on (Q)LoRA, built on accelerate: posttrain's replacement for TRL's removed PPOTrainer.

One PPO step (Ouyang et al. 2022, InstructGPT, arXiv:2203.02155; Ziegler et al. 2019, arXiv:1909.08593; details as
in Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO", arXiv:2403.17031):

1. **Rollout** -- each process samples one reply for each of ``rollout_batch_size`` prompts from the policy.
2. **Scoring** -- the policy's log-probabilities and values, the reference's log-probabilities (the adapter disabled:
   no second copy) and the reward functions' scores (:mod:`posttrain.rl.rewards`: rule checks, a reward model,
   weighted) of each reply. Steps 1 and 2 are :mod:`posttrain.rl.ppo_rollout`.
3. **Rewards and advantages** -- per-token reward ``-kl_coef * KL_t`` plus the score at the last token
   (:func:`~posttrain.rl.ppo_core.token_rewards`); GAE(gamma, lambda) with the value head; advantages whitened over
   the batch. ``kl_coef`` is fixed or adaptive (:class:`~posttrain.rl.ppo_core.AdaptiveKLController`).
4. **Update** -- ``num_ppo_epochs`` passes over the batch in ``num_mini_batches`` shuffled minibatches (each
   accumulated over micro-batches of ``per_device_train_batch_size``): clipped policy loss plus ``vf_coef`` times
   the clipped value loss, one optimizer step per minibatch, gradients all-reduced by DDP across processes, the
   policy's and the value head's gradients each clipped to ``max_grad_norm`` on their own.

The model (policy and value head, one forward pass) is :mod:`posttrain.rl.ppo_model`, the math
:mod:`posttrain.rl.ppo_core`; this module is the loop that wires them. Logged every step: mean score (and per reward
function), KL to the reference, entropy, policy/value loss, policy and value clip fractions, approximate KL of the
update, reply length, share of replies with the stop token, the KL coefficient, the learning rate. Checkpoints
(``save_strategy: steps``, :mod:`posttrain.rl.ppo_checkpoint`) hold everything a resumed run needs;
``resume_from_checkpoint`` (a folder, or ``true`` for the newest in ``output_dir``) continues from the step after it
with the same prompts and samples an uninterrupted run would have used. The reward-hacking guard
(:class:`~posttrain.rl.guard_stop.GuardStop`) watches every step.

With ``report_to: trackio`` and/or ``tensorboard`` every step's metrics (``train/<name>``: KL, ``kl_coef``, the value
statistics ``value_loss``, ``value_clipfrac``, ``value_mean``, ``return_mean``, ``explained_variance``, ...), the guard's
signals (``guard/...``) and each held-out evaluation with its CIs (``heldout/...``: every ``eval_steps`` with
``eval_strategy: steps``, and :meth:`PPOTrainer.evaluate` after training) go to the tracker
(:func:`posttrain.tracking.open_tracker`, main process only; docs/tracking.md).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

from posttrain import tracking
from posttrain.data.validation import DataError
from posttrain.log import get_logger
from posttrain.models.generation import stop_token_ids
from posttrain.rl import ppo_checkpoint, ppo_core
from posttrain.rl.config import PPOConfig
from posttrain.rl.guard_stop import GuardStop, make_guard
from posttrain.rl.heldout import heldout_metrics, heldout_rewards, heldout_series
from posttrain.rl.ppo_model import PolicyWithValueHead, make_optimizer, sequence_inputs, with_adapter
from posttrain.rl.ppo_rollout import Rollout, RolloutSampler, token_logprobs
from posttrain.rl.reward_normalization import RewardNormalizer
from posttrain.rl.rewards import RewardSet

logger = get_logger(__name__)

UPDATE_STATS = ("loss", "policy_loss", "value_loss", "clipfrac", "value_clipfrac", "approx_kl")


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
        eval_dataset: Held-out prompt rows (``hacking_guard: stop`` keeps the adapter that scores best on them).
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
        model = with_adapter(model, args, peft_config)
        stop_ids = stop_token_ids(model, tokenizer)
        for func in rewards.funcs:  # rule rewards read `finished` from the last completion id
            if hasattr(func, "stop_token_ids"):
                func.stop_token_ids = set(stop_ids)
        rewards.to(self.accelerator.device)

        wrapped = PolicyWithValueHead(model, detach_features=args.detach_value_features)
        self.model, self.optimizer = self.accelerator.prepare(wrapped, make_optimizer(wrapped, args))
        self.scheduler = self._make_scheduler()
        self.kl_ctl = (
            ppo_core.AdaptiveKLController(args.kl_coef, args.target_kl, args.kl_horizon)
            if args.adaptive_kl
            else ppo_core.FixedKLController(args.kl_coef)
        )
        self.state = TrainerState(max_steps=args.max_steps)
        self.state.global_step = 0
        self.normalizer = RewardNormalizer(rewards.names, rewards.weights, args.reward_normalization)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
        self.sampler = RolloutSampler(tokenizer, rewards, args, self.normalizer, pad_id=pad_id,
                                      device=self.accelerator.device)  # fmt: skip
        self.guard = make_guard(args, rewards)
        self.guard_stop = GuardStop(self.guard, self.unwrapped, stage="ppo", warning_prefix="posttrain ppo: warning: ")
        tracking.configure(args)  # report_to: trackio stays local, in its folder beside output_dir; a run name
        self.tracker: tracking.Tracker = tracking.Tracker()  # opened by train() on the main process

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

    # ------------------------------------------------------------------------------------------------ one step

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

    def rollout(self, rows: list[dict]) -> Rollout:
        """Sample replies to ``rows`` and score them (:class:`~posttrain.rl.ppo_rollout.RolloutSampler`)."""
        return self.sampler(self.unwrapped, rows)

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
        args = self.args
        n = len(batch)
        mini = n // args.num_mini_batches
        micro = args.per_device_train_batch_size
        stats: dict[str, list[float]] = {k: [] for k in UPDATE_STATS}
        generator = torch.Generator().manual_seed(args.seed * 100003 + step)
        self.model.train()
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(n, generator=generator)
            for mb_start in range(0, n, mini):
                mb = order[mb_start : mb_start + mini]
                for mc_start in range(0, mini, micro):
                    idx = mb[mc_start : mc_start + micro].to(batch.queries.device)
                    sync = mc_start + micro >= mini  # gradients are all-reduced on the minibatch's last micro-batch
                    losses = self._micro_batch_loss(batch, idx, advantages, returns, mini, sync=sync)
                    for key, value in zip(UPDATE_STATS, losses, strict=True):
                        stats[key].append(float(value.detach()))
                self.clip_gradients()
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        return {k: sum(v) / len(v) for k, v in stats.items()}

    def _micro_batch_loss(self, batch: Rollout, idx, advantages, returns, mini: int, *, sync: bool):
        """Forward and backward pass of the rows ``idx`` (their share of a minibatch of ``mini``); the
        :data:`UPDATE_STATS` tensors."""
        args, accelerator, context = self.args, self.accelerator, batch.queries.shape[1]
        mask = batch.response_mask[idx]
        inputs = sequence_inputs(batch.queries[idx], batch.query_mask[idx], batch.responses[idx], mask)
        with nullcontext() if sync else accelerator.no_sync(self.model):
            logits, values = self.model(*inputs)
            logprobs = token_logprobs(logits, batch.responses[idx], mask, args).sampler
            policy = ppo_core.clipped_policy_loss(logprobs, batch.logprobs[idx], advantages[idx], mask, args.cliprange)
            value_loss, value_clipfrac = ppo_core.clipped_value_loss(
                values[:, context - 1 : -1].float(), batch.values[idx], returns[idx], mask, args.cliprange_value
            )
            loss = policy.loss + args.vf_coef * value_loss
            accelerator.backward(loss * (len(idx) / mini))
        return loss, policy.loss, value_loss, policy.clip_fraction, value_clipfrac, policy.approx_kl

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
        metrics = self._gathered({
            "reward": batch.raw_scores.mean(),
            "reward_normalized": batch.scores.mean(),
            "explained_variance": ppo_core.explained_variance(batch.values, returns, mask),
            "value_mean": ppo_core.masked_mean(batch.values, mask),
            "return_mean": ppo_core.masked_mean(returns, mask),
            "kl": kl.sum(1).mean(),
            "entropy": ppo_core.masked_mean(batch.entropy, mask),
            "response_length": mask.sum(1).mean(),
            "eos_fraction": batch.finished.float().mean(),
            "distinct_2": torch.tensor(batch.distinct),
            **{f"reward/{k}": torch.tensor(v) for k, v in batch.per_reward.items()},
            "replies": torch.tensor(float(len(batch))),
            **{f"scored/{k}": torch.tensor(float(v)) for k, v in batch.scored.items()},
            **{k: torch.tensor(v) for k, v in update.items()},
        })  # fmt: skip
        metrics["kl_coef"] = self.kl_ctl.value
        metrics["learning_rate"] = self.scheduler.get_last_lr()[0]
        self.kl_ctl.update(metrics["kl"], len(batch) * self.accelerator.num_processes)
        self.scheduler.step()
        return metrics

    def _gathered(self, local: dict[str, torch.Tensor]) -> dict[str, float]:
        """This step's metrics averaged over the processes; counts (``replies``, ``scored/<name>``, the guard's
        samples) summed: the mean over the processes times their number is the total."""
        names = list(local)
        stacked = torch.stack(
            [torch.as_tensor(local[k], dtype=torch.float32).to(self.accelerator.device) for k in names]
        )
        gathered = self.accelerator.reduce(stacked, reduction="mean")
        metrics = {k: float(v) for k, v in zip(names, gathered.tolist(), strict=True)}
        for k in names:
            if k == "replies" or k.startswith("scored/"):
                metrics[k] = float(round(metrics[k] * self.accelerator.num_processes))
        return metrics

    @torch.no_grad()
    def init_value_bias(self, batch: Rollout) -> None:
        """Start the critic at the first rollout's mean score (the same on every process): with a zero value head
        the first advantages would carry the reward's offset rather than how good each reply was."""
        mean = self.accelerator.reduce(batch.scores.mean().reshape(1), reduction="mean")[0]
        head = self.unwrapped.value_head
        head.bias.fill_(float(mean))
        batch.values += float(mean) * batch.response_mask  # the rollout's values came from the zero-bias head

    # ------------------------------------------------------------------------------------------------ training

    def train(self, resume_from_checkpoint: str | bool | None = None, should_stop=None) -> dict[str, float]:
        """Run PPO steps up to ``max_steps`` (continuing after a checkpoint); returns summary metrics.

        ``should_stop`` (called after every step, on every rank) ends training early with a checkpoint of that step,
        e.g. on SIGTERM; the summary then covers the steps run."""
        args = self.args
        checkpoint = ppo_checkpoint.resolve_checkpoint(resume_from_checkpoint, args.output_dir)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        first = self.state.global_step + 1
        started = time.perf_counter()  # monotonic: a VM's wall clock can be stepped
        self.open_tracker()
        try:
            self._train_steps(first, should_stop)
        finally:
            self.tracker.finish()  # a later evaluate() reopens the run for its point
        return self._summary(first, time.perf_counter() - started)

    def open_tracker(self) -> tracking.Tracker:
        """The tracker ``report_to`` names (main process; a no-op elsewhere), also the guard's."""
        if self.accelerator.is_main_process:
            args = self.args
            self.tracker = tracking.open_tracker(args.report_to, args.output_dir, args.run_name, args.to_dict(),
                                                 project=getattr(args, "project", None))  # fmt: skip
        self.guard_stop.tracker = self.tracker
        return self.tracker

    def eval_every(self) -> int:
        """Steps between held-out evaluations during training (``eval_strategy: steps``, ``eval_steps``; a value
        below 1 is a share of ``max_steps``), 0 for none."""
        args = self.args
        if str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "steps" or not self.eval_dataset:
            return 0
        every = args.eval_steps or args.logging_steps or 1
        return max(1, math.ceil(every * args.max_steps) if every < 1 else int(every))

    def evaluate(self, step: int | None = None) -> dict:
        """Held-out rewards of the policy and the reference (:func:`~posttrain.rl.heldout.heldout_rewards`, on every
        process), logged to the tracker at ``step`` (default: the current step) with their CIs."""
        args = self.args
        result = heldout_rewards(
            self.unwrapped.policy, self.tokenizer, self.rewards, self.eval_dataset,
            max_new_tokens=args.eval_max_new_tokens or args.max_completion_length,
            batch_size=args.generation_batch_size, missing_eos_penalty=args.missing_eos_penalty,
        )  # fmt: skip
        self.tracker.log(heldout_series(result), self.state.global_step if step is None else step)
        self._last_evaluation = (self.state.global_step if step is None else step, result)
        return result

    def final_evaluation(self) -> dict:
        """The held-out rewards of the policy as trained: the evaluation of the last step when one ran there (and no
        adapter was restored after it), else a new one (logged like any other)."""
        step, result = getattr(self, "_last_evaluation", (None, None))
        return result if step == self.state.global_step and result is not None else self.evaluate()

    def _train_steps(self, first: int, should_stop) -> None:
        from tqdm.auto import tqdm

        args = self.args
        self.guard_stop.start(first - 1)
        eval_every = self.eval_every()
        bar = tqdm(range(first, args.max_steps + 1), desc="PPO", unit="step",
                   disable=not self.accelerator.is_main_process)  # fmt: skip
        for step in bar:
            metrics = self.step(step)
            self.state.global_step = step
            self.state.log_history.append({"step": step, **metrics})
            self.tracker.log({f"train/{k}": v for k, v in metrics.items()}, step)
            self.guard_stop.observe(step, metrics)
            if eval_every and step % eval_every == 0:
                self.state.log_history.append({"step": step, **heldout_metrics(self.evaluate(step))})
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics['kl']:.3f}")
            if args.logging_steps and step % max(int(args.logging_steps), 1) == 0:
                logger.info(
                    "posttrain ppo: " + json.dumps({"step": step, **{k: round(v, 4) for k, v in metrics.items()}})
                )
            saved = args.save_strategy == "steps" and args.save_steps and step % int(args.save_steps) == 0
            if self.guard_stop.should_stop:  # first restore the kept adapter, so this step's checkpoint holds it
                self._keep_best_adapter()
                self._last_evaluation = (None, None)  # the policy changed: evaluate it again
            if saved:
                self.save_checkpoint()
            if self.guard_stop.should_stop:
                break
            if should_stop is not None and should_stop():
                if not saved:
                    self.save_checkpoint()
                break
        bar.close()

    def _keep_best_adapter(self) -> None:
        """After the guard stopped training: keep the candidate with the best held-out task score."""
        args = self.args
        self.guard_stop.keep_best(
            self.state.global_step, self.unwrapped.policy, self.tokenizer, self.rewards, self.eval_dataset,
            max_new_tokens=args.eval_max_new_tokens or args.max_completion_length,
            batch_size=args.generation_batch_size, missing_eos_penalty=args.missing_eos_penalty,
        )  # fmt: skip

    def _summary(self, first: int, elapsed: float) -> dict[str, float]:
        """Runtime and speed of the steps from ``first`` on; mean reward of the first and last quarter of every
        logged step, last and largest KL."""
        history = [h for h in self.state.log_history if "reward" in h]
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
        if self.accelerator.is_main_process:
            ppo_checkpoint.save_model(self.unwrapped, self.tokenizer, output_dir)

    def save_checkpoint(self) -> Path:
        """``output_dir/checkpoint-<step>`` (:func:`posttrain.rl.ppo_checkpoint.save_checkpoint`)."""
        trainer_state = {
            "global_step": self.state.global_step,
            "kl_coef": self.kl_ctl.value,
            "reward_moments": self.normalizer.state(),
            "log_history": self.state.log_history,
            "world_size": self.accelerator.num_processes,
        }
        return ppo_checkpoint.save_checkpoint(
            self.accelerator, self.args.output_dir, self.state.global_step, model=self.unwrapped,
            tokenizer=self.tokenizer, optimizer=self.optimizer, trainer_state=trainer_state,
            save_total_limit=self.args.save_total_limit,
        )  # fmt: skip

    def load_checkpoint(self, checkpoint: str | Path) -> None:
        """Restore adapter, value head, optimizer, scheduler position, KL coefficient, RNG and step."""
        saved = ppo_checkpoint.load_checkpoint(self.accelerator, checkpoint, model=self.unwrapped,
                                               optimizer=self.optimizer)  # fmt: skip
        self.state.global_step = saved["global_step"]
        self.state.log_history = saved["log_history"]
        self.kl_ctl.value = saved["kl_coef"]
        self.normalizer.load(saved.get("reward_moments", {}))
        self.scheduler = self._make_scheduler()  # on the restored optimizer, then replayed to the saved step
        with warnings.catch_warnings():  # replaying the schedule before any optimizer step is intended here
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            for _ in range(self.state.global_step):
                self.scheduler.step()
        logger.info(f"posttrain ppo: resumed from {checkpoint} at step {self.state.global_step}")


def steps_summary(history: list[dict]) -> str:
    """``reward a -> b, KL c`` over the first and last quarter of logged steps."""
    if not history:
        return "no steps"
    k = max(1, len(history) // 4)
    first = sum(h["reward"] for h in history[:k]) / k
    last = sum(h["reward"] for h in history[-k:]) / k
    return f"mean reward {first:.3f} -> {last:.3f}, KL {history[-1]['kl']:.3f}" if math.isfinite(first) else "n/a"
