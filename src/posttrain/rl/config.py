"""Configs of the online-RL stages: :class:`PPOConfig` (posttrain's PPO), :class:`GRPOConfig` and :class:`RLOOConfig`
(TRL's trainers), each with a ``rewards:`` list (see :mod:`posttrain.rl.rewards`) and hardware-dependent defaults
(:class:`~posttrain.configs.HardwareDefaultsMixin`), parsed by :func:`posttrain.configs.parse_args` like every stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trl
from trl.trainer.base_config import _BaseConfig

from posttrain.configs import HardwareDefaultsMixin
from posttrain.errors import ConfigError
from posttrain.rl.rewards import is_rule_reward, parse_reward_specs


def _rewards_field():
    return field(
        default_factory=lambda: ["task"],
        metadata={
            "help": "Reward functions: names or mappings {name, weight, **params}. Rule rewards are the evaluation "
            "checks (`task`: the prompt's own check, `exact_match`, `numeric_match`, `has_number`, `stopped`, "
            "`word_count`, `length`...); `reward_model` takes `path` (a sequence-classification model folder); "
            "`verbosity` (`max_chars`) and `repetition` pay for long or repetitive replies: hackable proxies for "
            "demonstrating hacking_guard only."
        },
    )


@dataclass
class RewardsMixin:
    """``rewards`` (validated at parse time) and greedy held-out evaluation settings, shared by the RL stages."""

    rewards: list[Any] = _rewards_field()
    eval_max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Token budget of the greedy replies scored on held-out prompts (default: the training one)."},
    )
    hacking_guard: str = field(
        default="warn",
        metadata={
            "help": "Reward-hacking guard (posttrain.rl.guard): `warn` when the proxy reward (reward model) rises "
            "while the rule checks' pass rate falls (a one-sided exact test on the pass and reply counts), or "
            "replies run away in length or turn repetitive (a significant fall of the distinct-bigram ratio below "
            "70% of where it started); `stop` also ends training there and keeps the adapter with the best held-out "
            "task score (the best training rule pass rate without held-out prompts); `off`.",
            "choices": ["off", "warn", "stop"],
        },
    )
    hacking_guard_window: int = field(
        default=3, metadata={"help": "Steps pooled at the start and at the end when the guard compares them."}
    )
    hacking_guard_alpha: float = field(
        default=0.05,
        metadata={
            "help": "The guard's false-stop rate: the chance that a run whose pass rate and repetition do not "
            "change gets a finding, split between the two tests and over the run's looks (Bonferroni over "
            "max_steps - 2 x hacking_guard_window + 1); GRPO/RLOO's replies to one prompt count as fewer "
            "independent ones (their design effect); between 0 and 0.5."
        },
    )

    prompt_filter_samples: int = field(
        default=0,
        metadata={
            "help": "Before training, sample this many replies to each training prompt from the starting policy "
            "(training temperature and reply budget) and train only on the prompts whose rule-reward scores differ "
            "between them (posttrain.rl.difficulty): a prompt always or never solved gives GRPO/RLOO groups no "
            "signal. At least 2; 0: off (every prompt). Needs a rule reward (`task`, ...)."
        },
    )

    def __post_init__(self) -> None:
        if self.prompt_filter_samples != 0 and (
            isinstance(self.prompt_filter_samples, bool)
            or not isinstance(self.prompt_filter_samples, int)
            or self.prompt_filter_samples < 2
        ):
            raise ConfigError(
                f"prompt_filter_samples must be 0 (off) or at least 2 replies per prompt "
                f"(got {self.prompt_filter_samples!r})"
            )
        if self.hacking_guard not in ("off", "warn", "stop"):
            raise ConfigError(f"hacking_guard must be off, warn or stop (got {self.hacking_guard!r})")
        if self.hacking_guard_window < 1:
            raise ConfigError(f"hacking_guard_window must be at least 1 (got {self.hacking_guard_window})")
        if not isinstance(self.hacking_guard_alpha, int | float) or not 0 < self.hacking_guard_alpha < 0.5:
            raise ConfigError(
                f"hacking_guard_alpha must be between 0 and 0.5, both excluded (got {self.hacking_guard_alpha!r})"
            )

        self.rewards = parse_reward_specs(self.rewards)  # unknown names fail here, before any model is loaded
        if self.prompt_filter_samples and not any(is_rule_reward(spec["name"]) for spec in self.rewards):
            raise ConfigError(
                "prompt_filter_samples: the prompt filter scores replies with rule rewards; add one to rewards "
                "(`task`: each prompt's own check)"
            )
        super().__post_init__()


@dataclass
class PPOConfig(RewardsMixin, HardwareDefaultsMixin, _BaseConfig):
    r"""posttrain's PPO (see :mod:`posttrain.rl.ppo`). ``max_steps`` counts PPO iterations (rollout + update);
    ``per_device_train_batch_size`` is the micro-batch of the update; ``learning_rate``, ``lr_scheduler_type``,
    ``warmup_steps``, ``max_grad_norm``, ``save_steps``, ``save_total_limit``, ``logging_steps``, ``seed`` and
    ``resume_from_checkpoint`` keep their TrainingArguments meaning."""

    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate of the policy's LoRA adapter."})
    value_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the value head, its own AdamW parameter group (default: 10 x "
            "learning_rate: a fresh linear layer learns faster than the adapter should move)."
        },
    )
    reward_normalization: str = field(
        default="running",
        metadata={
            "help": "Standardize each reward component before weighting: `running` (mean and std over every "
            "rollout so far), `batch` (this rollout's), or `none` (raw scores).",
            "choices": ["running", "batch", "none"],
        },
    )
    detach_value_features: bool = field(
        default=True,
        metadata={
            "help": "The value head reads detached hidden states, so value-loss gradients never steer the "
            "policy adapter."
        },
    )
    value_init: str = field(
        default="first_batch",
        metadata={
            "help": "`first_batch`: the value head's bias starts at the first rollout's mean score (so the "
            "first advantages carry reply quality, not the reward's offset); `zero`.",
            "choices": ["first_batch", "zero"],
        },
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in the update."})
    logging_steps: float = field(default=1, metadata={"help": "Print metrics every this many PPO steps."})
    max_steps: int = field(default=20, metadata={"help": "PPO iterations (rollout + several epochs of updates)."})
    rollout_batch_size: int = field(default=16, metadata={"help": "Prompts sampled per PPO step on each process."})
    generation_batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call in a rollout."})
    forward_batch_size: int = field(default=16, metadata={"help": "Sequences per no-grad scoring forward pass."})
    max_completion_length: int = field(default=48, metadata={"help": "Token budget of a sampled reply."})
    max_prompt_length: int = field(default=512, metadata={"help": "Longer prompts are refused (DataError)."})
    temperature: float = field(
        default=0.7,
        metadata={"help": "Sampling temperature (logits are divided by it, in rollouts and updates alike)."},
    )
    top_p: float = field(
        default=1.0,
        metadata={
            "help": "Nucleus sampling. Below 1 the PPO ratio uses the log-probs of the truncated distribution that "
            "sampled, the KL penalty those of the full temperature-scaled distributions (finite when the policy "
            "samples outside the reference's nucleus), and the logged entropy is over the kept tokens."
        },
    )
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    num_mini_batches: int = field(default=2, metadata={"help": "Optimizer steps per PPO epoch."})
    kl_coef: float = field(default=0.05, metadata={"help": "Initial coefficient of the per-token KL penalty."})
    adaptive_kl: bool = field(default=False, metadata={"help": "Adapt kl_coef towards target_kl (Ziegler 2019)."})
    target_kl: float = field(default=6.0, metadata={"help": "Adaptive KL: target KL per sequence (nats)."})
    kl_horizon: int = field(default=10000, metadata={"help": "Adaptive KL: horizon in episodes."})
    kl_estimator: str = field(default="k1", metadata={"help": "Per-token KL estimator.", "choices": ["k1", "k3"]})
    gamma: float = field(default=1.0, metadata={"help": "GAE discount."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    cliprange: float = field(default=0.2, metadata={"help": "PPO policy ratio clip."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip around the rollout values."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten per-token rewards (mean kept)."})
    missing_eos_penalty: float | None = field(
        default=1.0, metadata={"help": "Subtracted from the score of a reply that did not end with the stop token."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Never needed for the supported models."})
    model_init_kwargs: dict[str, Any] | None = field(default=None, metadata={"help": "Extra from_pretrained kwargs."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rollout_batch_size % self.num_mini_batches:
            raise ConfigError(
                f"rollout_batch_size ({self.rollout_batch_size}) must be divisible by num_mini_batches "
                f"({self.num_mini_batches})"
            )
        mini = self.rollout_batch_size // self.num_mini_batches
        if mini % self.per_device_train_batch_size:
            raise ConfigError(
                f"the mini-batch (rollout_batch_size / num_mini_batches = {mini}) must be divisible by "
                f"per_device_train_batch_size ({self.per_device_train_batch_size})"
            )
        if self.reward_normalization not in ("running", "batch", "none"):
            raise ConfigError(
                f"reward_normalization must be running, batch or none (got {self.reward_normalization!r})"
            )
        if self.value_init not in ("first_batch", "zero"):
            raise ConfigError(f"value_init must be first_batch or zero (got {self.value_init!r})")
        if not 0 < self.top_p <= 1 or not self.temperature > 0:
            raise ConfigError(f"top_p must be in (0, 1] and temperature > 0 (got {self.top_p}, {self.temperature})")
        if self.kl_estimator not in ("k1", "k3"):
            raise ConfigError(f"kl_estimator must be k1 or k3 (got {self.kl_estimator!r})")


#: TRL 1.16's GRPO loss variants (``GRPOConfig.loss_type``; docs/rl.md#grpo-loss-variants). TRL itself only finds an
#: unknown name in the first loss computation, after the model is loaded and the first replies are sampled.
GRPO_LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")
#: ``importance_sampling_level``: ``token`` (GRPO/DAPO) or ``sequence`` (GSPO: one length-normalized ratio per reply).
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
#: ``scale_rewards`` (TRL maps ``true``/``false`` to ``group``/``none``) and ``multi_objective_aggregation``.
SCALE_REWARDS = ("group", "batch", "none")
MULTI_OBJECTIVE_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
#: ``epsilon_high`` with ``loss_type: cispo`` when the config sets none (TRL's docstring, after the ScaleRL paper).
CISPO_EPSILON_HIGH = 5.0


def check_choice(key: str, value: Any, valid: tuple) -> None:
    """:class:`ConfigError` naming ``key`` and listing ``valid`` unless ``value`` is one of them (the message starts with
    the key, so :func:`posttrain.configs.parse_args` prefixes the config file or the command line)."""
    if value not in valid:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, valid))} (got {value!r})")


@dataclass
class GRPOConfig(RewardsMixin, HardwareDefaultsMixin, trl.GRPOConfig):
    __doc__ = trl.GRPOConfig.__doc__

    def __post_init__(self) -> None:
        check_choice("loss_type", self.loss_type, GRPO_LOSS_TYPES)
        check_choice("importance_sampling_level", self.importance_sampling_level, IMPORTANCE_SAMPLING_LEVELS)
        scale = {True: "group", False: "none", "true": "group", "false": "none"}.get(self.scale_rewards)
        check_choice("scale_rewards", scale or self.scale_rewards, SCALE_REWARDS)
        check_choice("multi_objective_aggregation", self.multi_objective_aggregation, MULTI_OBJECTIVE_AGGREGATIONS)
        if self.loss_type == "cispo":
            # CISPO's epsilon_high is the cap of the importance weight itself (ScaleRL's epsilon_max, recommended 5.0),
            # not 1 + epsilon_high: TRL's fallback to epsilon (0.2) would cap every on-policy weight (1.0) at 0.2.
            if self.epsilon_high is None:
                self.epsilon_high = CISPO_EPSILON_HIGH
            elif self.epsilon_high <= 1:
                raise ConfigError(
                    f"epsilon_high is the cap of CISPO's importance weights and must be above 1 with loss_type: cispo "
                    f"(got {self.epsilon_high}; the ScaleRL paper uses {CISPO_EPSILON_HIGH})"
                )
        super().__post_init__()
        self.scale_rewards = scale or self.scale_rewards


@dataclass
class RLOOConfig(RewardsMixin, HardwareDefaultsMixin, trl.RLOOConfig):
    __doc__ = trl.RLOOConfig.__doc__

    def __post_init__(self) -> None:
        # RLOO has no loss variants in TRL 1.16 (a clipped sequence-level ratio times the leave-one-out advantage);
        # its options are normalize_advantages (a bool, checked by the parser), reward_clip_range, beta and epsilon.
        clip = self.reward_clip_range
        if clip is not None:
            if (
                not isinstance(clip, list | tuple)
                or len(clip) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in clip)
                or not clip[0] < clip[1]
            ):
                raise ConfigError(f"reward_clip_range must be two numbers [min, max] with min < max (got {clip!r})")
            self.reward_clip_range = (float(clip[0]), float(clip[1]))
        super().__post_init__()
