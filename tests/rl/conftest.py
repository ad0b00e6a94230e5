"""RL test helpers: the RL stages registered with the CLI (a no-op once ``posttrain.cli.STAGES`` lists them) and a
stage config writer with fast settings for the tiny models."""

from __future__ import annotations

import pytest

RL_STAGES = {"ppo": "posttrain.training.ppo", "grpo": "posttrain.training.grpo", "rloo": "posttrain.training.rloo"}


@pytest.fixture(autouse=True, scope="session")
def rl_stages():
    from posttrain import cli

    for name, module in RL_STAGES.items():
        cli.STAGES.setdefault(name, module)
    yield
