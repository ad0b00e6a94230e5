"""The reward-hacking guard (:mod:`posttrain.rl.guard`) in a training loop, the same in PPO, GRPO and RLOO: each
step's metrics go to the guard and its findings are logged as warnings; under ``hacking_guard: stop`` every step's
adapter is offered to a :class:`~posttrain.rl.heldout.BestAdapter`, and after the guard stopped training the
candidate with the best held-out task score is loaded, recorded in the finding and named in the log. The guard's
signals of each step go to the run's tracker (:attr:`GuardStop.tracker`, :mod:`posttrain.tracking`) as ``guard/...``
series."""

from __future__ import annotations

from typing import Any

from posttrain.log import get_logger
from posttrain.rl.guard import HackingGuard
from posttrain.rl.heldout import BestAdapter
from posttrain.tracking import Tracker

logger = get_logger(__name__)


def make_guard(training_args, rewards) -> HackingGuard:
    """The guard an RL stage's config (``hacking_guard*``, ``max_completion_length``, ``max_steps``) asks for."""
    return HackingGuard.for_rewards(
        rewards.names, rewards.weights, mode=training_args.hacking_guard, window=training_args.hacking_guard_window,
        max_length=training_args.max_completion_length, rule_names=rewards.rule_names,
        alpha=training_args.hacking_guard_alpha, max_steps=training_args.max_steps,
    )  # fmt: skip


class GuardStop:
    """``guard`` on one run of stage ``stage`` (``ppo``, ``grpo``, ``rloo``), with ``stop``'s candidate adapters:
    ``module``'s trainable parameters (the adapter, and PPO's value head). Findings are logged as warnings, each
    after ``warning_prefix``; each step's signals go to ``tracker`` (:func:`guard_series`; set it when the run's
    tracker exists: PPO's own, a TRL stage's :class:`~posttrain.tracking.TrackerCallback`)."""

    def __init__(self, guard: HackingGuard, module, *, stage: str, warning_prefix: str = "",
                 tracker: Tracker | None = None) -> None:  # fmt: skip
        self.guard, self.stage, self.warning_prefix = guard, stage, warning_prefix
        self.best = BestAdapter(module) if guard.mode == "stop" else None
        self.tracker = tracker if tracker is not None else Tracker()

    @property
    def should_stop(self) -> bool:
        return self.guard.should_stop

    def start(self, step: int) -> None:
        """Training starts (or resumes) after ``step``: its adapter is the ``start`` candidate."""
        if self.best is not None:
            self.best.start(step)

    def observe(self, step: int, metrics: dict[str, float]) -> None:
        """Feed the guard one step's metrics; with ``stop`` also offer this step's adapter as a candidate to keep."""
        seen = len(self.guard.history)
        for message in self.guard.observe(step, metrics):
            logger.warning(f"{self.warning_prefix}{message}")
        if len(self.guard.history) > seen:
            self.tracker.log(guard_series(self.guard), step)
        if self.best is not None and self.guard.history:
            self.best.offer(step, self.guard.history[-1]["rule"])

    def keep_best(self, step: int, policy, tokenizer, rewards, dataset, *, max_new_tokens: int, batch_size: int = 8,
                  missing_eos_penalty: float | None = None) -> dict[str, Any] | None:  # fmt: skip
        """After the guard stopped training at ``step``: load the candidate with the best held-out task score (on
        ``dataset``, greedy replies of ``policy``), record it in the finding and say so. Returns
        :meth:`BestAdapter.keep_best`'s answer (None when the guard did not stop or there was nothing to choose)."""
        if self.best is None or not self.guard.should_stop:
            return None
        kept = self.best.keep_best(step, policy, tokenizer, rewards, dataset, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, missing_eos_penalty=missing_eos_penalty)  # fmt: skip
        if kept is None:
            return None
        self.guard.findings[-1].update(restored_step=kept["step"], restored_by=kept["by"],
                                       heldout_task_scores=kept["heldout_task_scores"])  # fmt: skip
        logger.info(f"posttrain {self.stage}: hacking_guard stop: training ended at step {step}; the adapter of step "
                    f"{kept['step']} ({kept['label']}: {kept['by']}) is kept")  # fmt: skip
        return kept


#: the guard's per-step point (:meth:`HackingGuard._point`) as tracker series ``guard/<name>``
GUARD_SERIES = {"proxy": "proxy_reward", "rule": "rule_pass_rate", "rule_n": "rule_replies", "length": "reply_length",
                "distinct": "distinct_2", "kl": "kl"}  # fmt: skip


def guard_series(guard: HackingGuard) -> dict[str, float]:
    """The guard's signals at its last observed step: the proxy reward, the rule checks' pass rate and the replies
    they scored, reply length, distinct-bigram ratio, KL (a NaN one, e.g. the proxy without a reward model, is left
    out by the tracker), the findings so far and whether it stops training."""
    point = guard.history[-1]
    series = {f"guard/{name}": point[key] for key, name in GUARD_SERIES.items() if key in point}
    series["guard/findings"] = float(len(guard.findings))
    series["guard/stop"] = float(guard.should_stop)
    return series
