"""Rewards for online RL, as TRL-style reward functions: ``reward(prompts, completions, completion_ids, **columns)``.

One implementation, two uses: the rule rewards *are* the evaluation checks of :mod:`posttrain.checks` (the same
functions score evaluation suites), wrapped to return 1.0 (pass) / 0.0 (fail) per completion. The same objects are
passed to TRL's ``GRPOTrainer``/``RLOOTrainer`` as ``reward_funcs`` and called by posttrain's PPO.

Rewards by name (``rewards:`` in a PPO/GRPO config, a list of names or mappings ``{name, weight, **params}``):

* ``task`` -- the prompt's own check: its ``task`` column (a builtin task such as ``arithmetic`` or any check name)
  with its ``answer`` and ``meta``; rows without a task get no reward from it (``None``: not applicable).
* every name in :data:`posttrain.tasks.CHECKS` -- ``exact_match``, ``numeric_match``, ``strict_match``,
  ``contains``, ``regex``, ``json_format``, ``word_count`` (``max_words``...), ``stopped`` (ended with the stop token
  within the budget), the builtin tasks' checks...; ``params`` of the mapping are passed to the check, the row's
  ``answer`` and ``meta`` too.
* ``has_number`` -- the reply states a number (:func:`posttrain.checks.extract_number`).
* ``length`` -- 1.0 up to ``max_words`` words (:func:`posttrain.checks.count_words`), then ``max_words / words``.
* ``reward_model`` -- a sequence-classification model with one output (``path``: what ``recipes/reward.py`` writes,
  or any such HF folder), scoring ``prompt + reply`` rendered with its own chat template. Its tokenizer must be the
  policy's (vocabulary compared), else :class:`~posttrain.models.reward.RewardModelError`. The first batch of two or
  more different completions it scores is checked: one constant score on all of them (an untrained reward model, such
  as a freshly initialised score head) is warned about once (:class:`UntrainedRewardModelWarning`), since its term
  carries no signal.
* ``verbosity`` and ``repetition`` -- *hackable* proxy rewards, meant only for demonstrating the reward-hacking guard
  (:mod:`posttrain.rl.guard`, ``benchmarks/guard_live.py``), never as a training objective: ``verbosity`` pays for
  reply length (``min(1, characters / max_chars)``, ``max_chars`` required), ``repetition`` for repeating tokens (the
  share of the reply's tokens that repeat an earlier one). Neither is a rule check, so the guard counts them as the proxy reward, against
  which the rule checks (``task``...) are monitored; give a rule check weight 0 to monitor it without training on it.

Prompt rows carry ``task``, ``answer`` and ``meta`` (a JSON string, so rows of different tasks share one column type).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from posttrain.checks import count_words, extract_number
from posttrain.errors import ConfigError
from posttrain.models.reward import RewardModel, RewardModelError, warn_if_at_chance
from posttrain.tasks import CHECKS, NEEDS_NO_ANSWER, check_task

REWARD_MODEL = "reward_model"
EXTRA_RULES = ("task", "has_number", "length")
HACKABLE = ("verbosity", "repetition")  # proxies that are easy to game: for demonstrating the hacking guard only


def available_rewards() -> list[str]:
    return [*EXTRA_RULES, *CHECKS, *HACKABLE, REWARD_MODEL]


def is_rule_reward(name: str) -> bool:
    """Whether the reward ``name`` is a rule check (:class:`RuleReward`), not a proxy (reward model, hackable)."""
    return name in (*EXTRA_RULES, *CHECKS)


def completion_text(completion: Any) -> str:
    """The reply text of a completion: a string, or a list of messages (TRL's conversational form)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        return str(completion[-1].get("content") or "")
    return str(completion)


def _meta(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        return json.loads(value)
    return dict(value)


def _column(columns: Mapping[str, Any], key: str, n: int) -> list[Any]:
    value = columns.get(key)
    return [None] * n if value is None else list(value)


class RuleReward:
    """A rule check as a reward function: 1.0 if the reply passes, 0.0 if not, ``None`` where the check does not
    apply (no task for ``task``; no answer for a check that needs one).

    Args:
        name: ``task``, ``has_number``, ``length`` or a name in :data:`posttrain.tasks.CHECKS`.
        params: Fixed arguments for the check (``max_words=30`` for ``word_count``, ``pattern=...`` for ``regex``).
        stop_token_ids: Ids ending a reply; a completion whose last id is one of them counts as ``finished`` (for
            ``stopped``). Set by the trainer from the policy's tokenizer.
    """

    def __init__(self, name: str, stop_token_ids: Sequence[int] = (), **params: Any) -> None:
        if name not in EXTRA_RULES and name not in CHECKS:
            raise ConfigError(f"unknown reward {name!r}; available: {', '.join(available_rewards())}")
        if name == "length" and not isinstance(params.get("max_words"), int | float):
            raise ConfigError("reward 'length' needs max_words: <number>")
        self.name, self.params, self.stop_token_ids = name, params, set(stop_token_ids)
        self.__name__ = name

    def _finished(self, ids: Sequence[int] | None) -> bool:
        return bool(ids) and int(ids[-1]) in self.stop_token_ids

    def score_one(self, text: str, task: str | None, answer: str | None, meta: dict, finished: bool) -> float | None:
        if self.name == "has_number":
            return float(extract_number(text) is not None)
        if self.name == "length":
            words, limit = count_words(text), self.params["max_words"]
            return 1.0 if words <= limit else limit / words
        name = task if self.name == "task" else self.name
        if not name:
            return None
        facts = {**meta, **self.params}
        if name == "stopped":
            facts["finished"] = finished
        if not answer and name not in NEEDS_NO_ANSWER:
            return None
        try:
            return float(check_task(name, text, answer or None, **facts))
        except KeyError:
            raise ConfigError(f"prompt task {name!r} has no check; available: {', '.join(CHECKS)}") from None

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float | None]:
        n = len(completions)
        ids = completion_ids if completion_ids is not None else [None] * n
        tasks, answers, metas = (_column(columns, k, n) for k in ("task", "answer", "meta"))
        return [
            self.score_one(completion_text(c), t, a, _meta(m), self._finished(i))
            for c, i, t, a, m in zip(completions, ids, tasks, answers, metas, strict=True)
        ]


class HackableReward:
    """A hand-made proxy reward that a policy games easily, for demonstrating the reward-hacking guard; never a real
    objective. ``verbosity``: ``min(1, characters / max_chars)`` of the reply text, paying for length; ``repetition``:
    the share of the reply's tokens (its ``completion_ids``; whitespace words without them) that repeat an earlier one
    (1 - distinct tokens / tokens; 0 for an empty reply), paying for repeating tokens. Not a rule check, so the guard
    counts it as the proxy reward."""

    def __init__(self, name: str, max_chars: int | None = None) -> None:
        if name not in HACKABLE:
            raise ConfigError(f"unknown hackable reward {name!r}; available: {', '.join(HACKABLE)}")
        if name == "verbosity" and not (isinstance(max_chars, int | float) and max_chars > 0):
            raise ConfigError("reward 'verbosity' needs max_chars: <positive number>")
        self.name, self.max_chars = name, max_chars
        self.__name__ = name

    def score_one(self, text: str, ids: Sequence[int] | None) -> float:
        if self.name == "verbosity":
            return min(1.0, len(text) / self.max_chars)
        tokens = list(ids) if ids is not None else text.split()
        return 1.0 - len(set(tokens)) / len(tokens) if tokens else 0.0

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float]:
        ids = completion_ids if completion_ids is not None else [None] * len(completions)
        return [self.score_one(completion_text(c), i) for c, i in zip(completions, ids, strict=True)]


class UntrainedRewardModelWarning(UserWarning):
    """A reward model gave every completion of its first batch the same score (it looks untrained)."""


# Scores closer together than this (relative to their size, at least 1) count as one constant score: float32 rounding
# of the same logit is ~1e-7 relative, while a trained (or even randomly initialised) score head spreads scores of
# different replies far more.
CONSTANT_SCORE_TOLERANCE = 1e-6


class ModelReward:
    """A reward model (:class:`~posttrain.models.reward.RewardModel`) as a reward function.

    Args:
        path: The reward model folder (``path`` of the ``reward_model`` entry).
        policy_tokenizer: The policy's tokenizer; the reward model's must have the same vocabulary.
        batch_size, max_length: Scoring batch size and truncation length.
        label: How messages name this reward (default: ``rewards: reward_model`` with its path).
    """

    def __init__(
        self,
        path: str,
        *,
        policy_tokenizer=None,
        batch_size: int = 8,
        max_length: int = 1024,
        label: str | None = None,
    ) -> None:
        self.path = str(path)
        self.label = label or f"rewards: {REWARD_MODEL} (path: {self.path})"
        self.checked_spread = False  # the first batch of >= 2 different completions is checked for a constant score
        self.reward_model = RewardModel.load(path, batch_size=batch_size, max_length=max_length)
        warn_if_at_chance(path, self.label)  # its manifest says its validation pairwise accuracy is at chance
        if policy_tokenizer is not None and self.reward_model.tokenizer.get_vocab() != policy_tokenizer.get_vocab():
            raise RewardModelError(
                f"reward model {path}: its tokenizer does not match the policy's ({len(self.reward_model.tokenizer)} "
                f"vs {len(policy_tokenizer)} tokens, or different ids); train the reward model from the same base "
                "as the policy (recipes/reward.py on the SFT output)"
            )
        self.__name__ = REWARD_MODEL

    def to(self, device) -> ModelReward:
        self.reward_model.model.to(device)
        return self

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float]:
        texts = [completion_text(c) for c in completions]
        prompts = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]
        scores = self.reward_model.score_replies(prompts, texts)
        if not self.checked_spread:
            self._check_spread(prompts, texts, scores)
        return scores

    def _check_spread(self, prompts: Sequence[list], texts: Sequence[str], scores: Sequence[float]) -> None:
        """Warn (once) when the first batch of two or more different conversations all get one score: the reward
        model looks untrained and its term in ``rewards`` adds the same constant to every completion."""
        finite = [s for s in scores if math.isfinite(s)]
        distinct = {(json.dumps(p, sort_keys=True, default=str), t) for p, t in zip(prompts, texts, strict=True)}
        if len(finite) < 2 or len(distinct) < 2:
            return  # nothing to compare yet: wait for a batch with different completions
        self.checked_spread = True
        low, high = min(finite), max(finite)
        if high - low <= CONSTANT_SCORE_TOLERANCE * max(1.0, abs(low), abs(high)):
            warnings.warn(
                f"reward model {self.label} looks untrained: constant score {low:.3f} on {len(finite)} completions "
                f"(spread {high - low:.1e}), so its term in `rewards` carries no signal; train it first "
                "(recipes/reward.py) or check the path",
                UntrainedRewardModelWarning,
                stacklevel=2,
            )


RewardFunc = Callable[..., list]


class RewardSet:
    """Named reward functions with weights; calling it gives the weighted sum per completion (``None`` counts 0)
    and each function's own scores."""

    def __init__(self, funcs: Sequence[RewardFunc], weights: Sequence[float], names: Sequence[str]) -> None:
        self.funcs, self.weights, self.names = list(funcs), [float(w) for w in weights], list(names)

    @property
    def rule_names(self) -> frozenset[str]:
        """The components that are rule checks (the others, a reward model, are proxies of quality)."""
        return frozenset(n for f, n in zip(self.funcs, self.names, strict=True) if isinstance(f, RuleReward))

    def to(self, device) -> RewardSet:
        for func in self.funcs:
            if hasattr(func, "to"):
                func.to(device)
        return self

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> tuple[list[float], dict[str, list]]:
        per_func: dict[str, list] = {}
        total = [0.0] * len(completions)
        for func, weight, name in zip(self.funcs, self.weights, self.names, strict=True):
            scores = func(prompts, completions, completion_ids=completion_ids, **columns)
            for i, score in enumerate(scores):
                if score is not None and not math.isnan(score):
                    total[i] += weight * float(score)
            per_func[name] = scores
        return total, per_func


def parse_reward_specs(specs: Sequence[Any]) -> list[dict[str, Any]]:
    """Normalize ``rewards:`` entries (names or mappings) to ``{"name", "weight", **params}``; ConfigError if bad."""
    if not specs:
        raise ConfigError(f"rewards: give at least one reward (available: {', '.join(available_rewards())})")
    normalized = []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"rewards[{i}]: must be a reward name or a mapping with 'name' (got {spec!r})")
        spec = dict(spec)
        if spec["name"] not in available_rewards():
            raise ConfigError(
                f"rewards[{i}]: unknown reward {spec['name']!r}; available: {', '.join(available_rewards())}"
            )
        try:
            spec["weight"] = float(spec.get("weight", 1.0))
        except (TypeError, ValueError):
            raise ConfigError(f"rewards[{i}]: weight must be a number (got {spec.get('weight')!r})") from None
        if spec["name"] == REWARD_MODEL and not spec.get("path"):
            raise ConfigError(f"rewards[{i}]: reward_model needs path: <reward model folder>")
        if spec["name"] == "verbosity" and not (
            isinstance(spec.get("max_chars"), int | float) and spec["max_chars"] > 0
        ):
            raise ConfigError(f"rewards[{i}]: verbosity needs max_chars: <positive number>")
        normalized.append(spec)
    if all(spec["weight"] == 0 for spec in normalized):
        raise ConfigError(
            "rewards: every weight is 0, so every reply scores the same and nothing is learned; give at "
            "least one reward a non-zero weight"
        )
    return normalized


def build_rewards(specs: Sequence[Any], *, policy_tokenizer=None, stop_token_ids: Sequence[int] = ()) -> RewardSet:
    """A :class:`RewardSet` from ``rewards:`` config entries (see the module docstring)."""
    funcs, weights, names = [], [], []
    for i, spec in enumerate(parse_reward_specs(specs)):
        params = {k: v for k, v in spec.items() if k not in ("name", "weight")}
        if spec["name"] == REWARD_MODEL:
            func = ModelReward(
                params["path"],
                policy_tokenizer=policy_tokenizer,
                label=f"rewards[{i}] ({REWARD_MODEL}, path: {params.pop('path')})",
                **{k: params[k] for k in params if k in ("batch_size", "max_length")},
            )
        elif spec["name"] in HACKABLE:
            func = HackableReward(spec["name"], **params)
        else:
            func = RuleReward(spec["name"], stop_token_ids=stop_token_ids, **params)
        name = spec["name"] if spec["name"] not in names else f"{spec['name']}_{len(names)}"
        funcs.append(func)
        weights.append(spec["weight"])
        names.append(name)
    return RewardSet(funcs, weights, names)
