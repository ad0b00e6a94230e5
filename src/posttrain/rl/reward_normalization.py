"""PPO's ``reward_normalization``: each reward component standardized before the weighted sum (``running``: by the
statistics of every rollout so far, ``batch``: of this rollout, ``none``), so that a reward model's offset and a 0/1
task check weigh what their weights say. The statistics are gathered over every process, so they are the same on each
and the one copy a checkpoint keeps is every process's."""

from __future__ import annotations

import math

from posttrain.rl.ppo_core import RunningMoments


class RewardNormalizer:
    """The weighted, standardized total of the reward components ``names`` (weights ``weights``) in ``mode``, with
    the running statistics of each component (``moments``, checkpointed)."""

    def __init__(self, names, weights, mode: str) -> None:
        self.names, self.weights, self.mode = list(names), list(weights), mode
        self.moments = {name: RunningMoments() for name in self.names}

    def total(self, per_func: dict[str, list]) -> list[float]:
        """The weighted sum of the components' scores of one rollout, each standardized first. ``None`` scores
        count 0."""
        n = len(next(iter(per_func.values()))) if per_func else 0
        total = [0.0] * n
        values_by_name = {
            name: [float(v) if v is not None and not math.isnan(v) else None for v in per_func[name]]
            for name in self.names
        }
        if self.mode in ("running", "batch"):
            batch_moments = global_moments({k: [v for v in vs if v is not None] for k, vs in values_by_name.items()})
        for name, weight in zip(self.names, self.weights, strict=True):
            if self.mode == "running":
                self.moments[name].merge(batch_moments[name])
                mean, std = self.moments[name].mean, self.moments[name].std
            elif self.mode == "batch" and batch_moments[name].count > 1:
                mean, std = batch_moments[name].mean, (batch_moments[name].m2 / batch_moments[name].count) ** 0.5
            else:
                mean, std = 0.0, 1.0
            std = std if std > 1e-6 else 1.0
            for i, v in enumerate(values_by_name[name]):
                if v is not None:
                    total[i] += weight * (v - mean) / std
        return total

    def state(self) -> dict[str, dict]:
        return {name: moments.state() for name, moments in self.moments.items()}

    def load(self, state: dict[str, dict]) -> None:
        for name, moments in state.items():
            if name in self.moments:
                self.moments[name].load(moments)


def global_moments(present: dict[str, list[float]]) -> dict[str, RunningMoments]:
    """Count, mean and sum of squared deviations of each component's scores over every process's rollout (gathered,
    then combined in rank order). With one process these are the local batch's."""
    from accelerate.utils import gather_object

    local = {}
    for name, values in present.items():
        moments = RunningMoments()
        moments.update(values)
        local[name] = moments.state()
    out = {name: RunningMoments() for name in present}
    for rank in gather_object([local]):
        for name, state in rank.items():
            out[name].merge(RunningMoments.of(state["count"], state["mean"], state["m2"]))
    return out
