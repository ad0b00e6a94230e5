"""What the online-RL stages (PPO, GRPO, RLOO) share: prompts, the policy model, rewards, held-out reward; and the
reward-hacking guard on TRL's GRPO/RLOO trainers (:class:`GuardTally`, :class:`GuardCallback`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import TrainerCallback

from posttrain.chat_templates import ChatTemplateError
from posttrain.errors import ConfigError
from posttrain.models.generation import stop_token_ids
from posttrain.rl.guard import GROUP_KEYS, distinct_bigram_ratio, group_stats
from posttrain.rl.guard_stop import GuardStop
from posttrain.rl.prompts import load_prompts
from posttrain.rl.rewards import build_rewards
from posttrain.training.common import load_model_and_tokenizer
from posttrain.training.fast_paths import sharded_reason


def load_rl_prompts(pt_args, training_args):
    """Prompt tables (``train`` and, with ``test_split_size``, held-out ``test``) with the system prompt added."""

    return load_prompts(
        pt_args.datasets,
        test_split_size=pt_args.test_split_size,
        seed=training_args.seed,
        identity=pt_args.identity,
        system_prompt=pt_args.system_prompt,
    )


def load_policy(pt_args, training_args, model_args):
    """The starting policy (an earlier stage's adapter is merged first) and its tokenizer; it must already have its
    chat template tokens (RL samples replies in the chat format, so start from the SFT or DPO result)."""

    model, tokenizer, new_token_ids = load_model_and_tokenizer(pt_args, training_args, model_args)
    if new_token_ids:
        raise ChatTemplateError(
            f"{model_args.model_name_or_path} has no chat template tokens yet "
            f"({tokenizer.convert_ids_to_tokens(new_token_ids)} would be new): run SFT first and start RL from the "
            "SFT (or DPO) output as model_name_or_path"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_rewards(training_args, model, tokenizer):
    """The configured reward functions; a reward model must share the policy's tokenizer."""

    return build_rewards(
        training_args.rewards, policy_tokenizer=tokenizer, stop_token_ids=stop_token_ids(model, tokenizer)
    )


def filter_rl_prompts(training_args, model, tokenizer, rewards, data) -> dict | None:
    """With ``prompt_filter_samples``, replace ``data["train"]`` by the prompts whose sampled replies score differently
    (:mod:`posttrain.rl.difficulty`); the filter's summary, or None when it is off."""
    if not training_args.prompt_filter_samples:
        return None
    from posttrain.rl.difficulty import KEY, filter_prompts

    reason = sharded_reason() or (  # before the trainer exists, accelerate's FSDP launch shows in its variable
        "FSDP shards the parameters" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true") else None
    )
    if reason:
        raise ConfigError(
            f"{KEY}: {reason}, and the prompt filter samples with the whole model on each process before training: "
            f"filter under DDP or on one process, or set {KEY}: 0"
        )
    data["train"], summary = filter_prompts(
        model,
        tokenizer,
        rewards,
        data["train"],
        samples=training_args.prompt_filter_samples,
        temperature=training_args.temperature,
        top_p=training_args.top_p,
        max_new_tokens=training_args.max_completion_length,
        seed=training_args.seed,
    )
    return summary


def filter_metrics(summary: dict | None) -> dict:
    """The prompt filter's counts as run metrics (``prompt_filter_kept``...; empty when it is off)."""
    return {f"prompt_filter_{key}": value for key, value in (summary or {}).items()}


def filter_summary(summary: dict | None) -> dict:
    """The model card's line for the prompt filter (empty when it is off)."""
    if summary is None:
        return {}
    return {
        "prompt filter": f"kept {summary['kept']} of {summary['prompts']} prompts ({summary['solved']} always and "
        f"{summary['unsolved']} never solved in {summary['samples']} samples)"
    }


def reward_summary(metrics: dict) -> dict:
    keys = ("eval_reward_reference", "eval_reward_policy")
    if all(k in metrics for k in keys):
        return {"held-out reward (reference → policy)": f"{metrics[keys[0]]:.3f} → {metrics[keys[1]]:.3f}"}
    return {}


class GuardTally:
    """What the guard needs of each GRPO/RLOO generation batch, recorded where TRL computes the rewards (the reward
    functions it is given are :meth:`wrap`'s): the replies scored, each rule check's scored replies (its non-``None``
    scores) and the replies' distinct-bigram ratios (from the ``completion_ids`` TRL passes). Each batch's figures also
    go to TRL's ``log_metric`` (``guard/replies``, ``guard/distinct_2_sum``, ``guard/scored/<name>``), which averages
    them over the processes and the batches of a logging step, so every process sees the same totals.

    GRPO/RLOO sample ``num_generations`` replies a prompt, and replies to one prompt pass or repeat alike: so each rule
    check's scores and the distinct-bigram ratios are also summed by prompt (``guard/<key>/<name>`` for the keys of
    :data:`posttrain.rl.guard.GROUP_KEYS`, ``distinct_2`` for the ratios), from which the guard estimates the design
    effect that turns the replies into independent ones in its tests (:func:`posttrain.rl.guard.design_effect`)."""

    def __init__(self, rewards) -> None:
        self.rewards = rewards
        self.rule_names = rewards.rule_names
        self.batches = 0  # this process's generation batches since the last log
        self.replies = 0
        self.distinct_sum = 0.0
        self.scored: dict[str, int] = {}
        self.groups: dict[str, dict[str, float]] = {}  # name -> group sums (GROUP_KEYS), this process's

    def _add_groups(self, name: str, scores, prompts, log_metric) -> None:
        keys = [p if isinstance(p, str) else json.dumps(p, sort_keys=True, default=str) for p in prompts]
        stats = group_stats(list(scores), keys)
        total = self.groups.setdefault(name, dict.fromkeys(GROUP_KEYS, 0.0))
        for key, value in stats.items():
            total[key] += value
            if log_metric is not None:
                log_metric(f"guard/{key}/{name}", float(value))

    def wrap(self) -> list:
        """The reward functions to hand TRL: each records its scores here before returning them."""
        pairs = zip(self.rewards.funcs, self.rewards.names, strict=True)
        return [_RecordedReward(func, name, self, first=i == 0) for i, (func, name) in enumerate(pairs)]

    def record(self, name: str, scores, completions, completion_ids, log_metric, *, first: bool,
               prompts=None) -> None:  # fmt: skip
        prompts = list(prompts) if prompts is not None else None
        if prompts is not None and len(prompts) != len(completions):
            prompts = None
        if first:
            ratios = [distinct_bigram_ratio(list(ids)) for ids in completion_ids] if completion_ids is not None else []
            self.batches += 1
            self.replies += len(completions)
            self.distinct_sum += sum(ratios)
            if log_metric is not None:
                log_metric("guard/replies", float(len(completions)))
                if completion_ids is not None:
                    log_metric("guard/distinct_2_sum", float(sum(ratios)))
            if prompts is not None and completion_ids is not None:
                self._add_groups("distinct_2", ratios, prompts, log_metric)
        if name in self.rule_names:
            scored = sum(s is not None and s == s for s in scores)
            self.scored[name] = self.scored.get(name, 0) + scored
            if log_metric is not None:
                log_metric(f"guard/scored/{name}", float(scored))
            if prompts is not None:
                self._add_groups(name, scores, prompts, log_metric)

    def take(self, logs: dict, world_size: int = 1) -> dict[str, float]:
        """The guard's count metrics of the logging step that ``logs`` reports (``replies``, ``distinct_2``,
        ``scored/<name>`` and the group sums ``<key>/<name>``), totals over every process: from TRL's averaged
        ``guard/`` metrics where present (times processes times batches), else this process's own tally; then the
        tally starts again."""
        batches, replies, distinct_sum, scored = self.batches, self.replies, self.distinct_sum, dict(self.scored)
        groups = self.groups
        self.batches, self.replies, self.distinct_sum, self.scored, self.groups = 0, 0, 0.0, {}, {}
        metrics: dict[str, float] = {}
        if batches == 0:
            return metrics
        scale = batches * max(int(world_size), 1)
        if logs.get("guard/replies"):
            metrics["replies"] = logs["guard/replies"] * scale
            if logs.get("guard/distinct_2_sum") is not None:
                metrics["distinct_2"] = logs["guard/distinct_2_sum"] / logs["guard/replies"]
            for name in self.rule_names:
                if logs.get(f"guard/scored/{name}") is not None:
                    metrics[f"scored/{name}"] = logs[f"guard/scored/{name}"] * scale
            for name in (*self.rule_names, "distinct_2"):
                if all(logs.get(f"guard/{key}/{name}") is not None for key in GROUP_KEYS):
                    metrics.update({f"{key}/{name}": logs[f"guard/{key}/{name}"] * scale for key in GROUP_KEYS})
        elif replies:
            processes = max(int(world_size), 1)
            metrics["replies"] = float(replies * processes)
            metrics["distinct_2"] = distinct_sum / replies
            metrics.update({f"scored/{name}": float(n * processes) for name, n in scored.items()})
            if processes == 1:  # other processes' group sums are unknown without log_metric
                for name, stats in groups.items():
                    metrics.update({f"{key}/{name}": value for key, value in stats.items()})
        return metrics


class _RecordedReward:
    """A reward function that also tells a :class:`GuardTally` what it scored (TRL names it by ``__name__``)."""

    def __init__(self, func, name: str, tally: GuardTally, *, first: bool) -> None:
        self.func, self.tally, self.first = func, tally, first
        self.__name__ = name

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        scores = self.func(prompts, completions, completion_ids=completion_ids, **kwargs)
        self.tally.record(self.__name__, scores, completions, completion_ids, kwargs.get("log_metric"),
                          first=self.first, prompts=prompts)  # fmt: skip
        return scores


class GuardCallback(TrainerCallback):
    """The reward-hacking guard on TRL's GRPO/RLOO logs (``rewards/<name>/mean``, ``completions/mean_length``,
    ``kl``) and the reply counts and distinct-bigram ratio a :class:`GuardTally` recorded where the rewards were
    computed: each logged step goes to ``guard_stop`` (a :class:`~posttrain.rl.guard_stop.GuardStop`), and with
    ``stop`` training ends at the step the guard fires; :func:`keep_best_adapter` then keeps the best candidate."""

    def __init__(self, guard_stop: GuardStop, tally: GuardTally | None = None) -> None:
        self.guard_stop = guard_stop
        self.tally = tally

    def on_train_begin(self, args, state, control, **kwargs):
        guard = self.guard_stop.guard
        if guard.max_steps is None and (state.max_steps or 0) > 0:
            guard.max_steps = state.max_steps  # the looks the run makes (TRL derives it from the epochs)
        self.guard_stop.start(state.global_step)

    def metrics(self, args, logs: dict) -> dict[str, float] | None:
        """The guard's metrics dict of one TRL log (None where it reports no rewards)."""
        rewards = {k.split("/")[1]: v for k, v in logs.items() if k.startswith("rewards/") and k.endswith("/mean")}
        if not rewards:
            return None
        metrics = {f"reward/{name}": value for name, value in rewards.items()}
        metrics["response_length"] = logs.get("completions/mean_length", float("nan"))
        metrics["kl"] = logs.get("kl", float("nan"))
        if self.tally is not None:
            metrics.update(self.tally.take(logs, getattr(args, "world_size", 1)))
        return metrics

    def on_log(self, args, state, control, logs=None, **kwargs):
        metrics = self.metrics(args, logs or {})
        if metrics is None:
            return
        self.guard_stop.observe(state.global_step, metrics)
        if self.guard_stop.should_stop:
            control.should_training_stop = True


def keep_best_adapter(guard_stop: GuardStop, step: int, policy, tokenizer, rewards, dataset, *, max_new_tokens: int,
                      work_dir: str | Path) -> None:  # fmt: skip
    """After ``hacking_guard: stop`` ended a GRPO/RLOO run: keep the candidate adapter with the best held-out task
    score (:meth:`GuardStop.keep_best`, as PPO does). TRL's Trainer has already written the stop step's checkpoint
    (``<work_dir>/checkpoint-<step>``, the run's work folder) by then: its adapter is replaced by the kept one, so that
    a run continued from it starts where this one ended (PPO restores before it checkpoints)."""
    kept = guard_stop.keep_best(step, policy, tokenizer, rewards, dataset, max_new_tokens=max_new_tokens)
    if kept is None:
        return
    from accelerate import PartialState

    checkpoint = Path(work_dir) / f"checkpoint-{step}"
    if checkpoint.is_dir() and PartialState().is_main_process:
        policy.save_pretrained(checkpoint)
