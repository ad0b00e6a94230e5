"""The reward-hacking guard: a reward that pays for length (replies grow, the task check falls) makes it fire, and
with `stop` end training keeping the best adapter; an honest reward (task check and proxy rising together) leaves it
quiet, also on a real PPO run."""

from __future__ import annotations

import json

from posttrain.rl.guard import HackingGuard, distinct_bigram_ratio
from posttrain.stages import run_stage

from helpers import ppo_config


def stream(guard, steps):
    messages = []
    for step, (proxy, rule, length, distinct) in enumerate(steps, 1):
        metrics = {"reward/length_model": proxy, "reward/task": rule, "response_length": length, "distinct_2": distinct,
                   "kl": 0.1 * step}  # fmt: skip
        messages += guard.observe(step, metrics)
    return messages


def guard(mode="warn"):
    return HackingGuard.for_rewards(["length_model", "task"], [1.0, 1.0], mode=mode, window=2, max_length=48,
                                    rule_names={"task"})  # fmt: skip


def test_a_reward_that_pays_for_length_fires_the_guard():
    # the proxy pays for length: it rises as replies fill the budget and start to repeat, while the task check falls
    hacked = [(0.1, 0.6, 20, 0.9), (0.2, 0.6, 22, 0.9), (0.5, 0.5, 35, 0.7), (0.8, 0.3, 46, 0.5), (0.9, 0.2, 48, 0.4)]
    g = guard()
    messages = stream(g, hacked)
    kinds = [f["kind"] for f in g.findings]
    assert sorted(kinds) == ["length", "proxy_up_rules_down", "repetition"], kinds
    assert all("possible reward hacking" in m for m in messages) and not g.should_stop
    stopping = guard("stop")
    stream(stopping, hacked)
    assert stopping.should_stop and stopping.best_step() in (1, 2)
    assert len(stopping.summary()["curves"]) == 5


def test_an_honest_reward_keeps_the_guard_quiet():
    honest = [(0.1, 0.2, 30, 0.9), (0.2, 0.3, 30, 0.9), (0.3, 0.4, 29, 0.9), (0.4, 0.5, 31, 0.88), (0.5, 0.6, 30, 0.9)]
    g = guard("stop")
    assert stream(g, honest) == [] and not g.should_stop
    off = guard("off")
    assert stream(off, [(0.1, 0.9, 1, 1.0), (9.0, 0.0, 48, 0.1)] * 3) == [] and off.history == []


def test_distinct_bigram_ratio():
    assert distinct_bigram_ratio([1, 2, 3, 4]) == 1.0
    assert distinct_bigram_ratio([5, 5, 5, 5, 5]) == 0.25
    assert distinct_bigram_ratio([7]) == 1.0


def test_ppo_with_an_honest_reward_records_the_curves_and_stays_quiet(tmp_path, tiny_chat_model):
    config = ppo_config(tmp_path, tiny_chat_model, max_steps=6, hacking_guard="stop", test_split_size=None)
    trainer, _ = run_stage("ppo", ["--config", str(config)])
    assert trainer.state.global_step == 6 and trainer.guard.findings == []
    assert trainer.guard.proxy == () and trainer.guard.rules == ("has_number",)
    manifest = json.loads((tmp_path / "ppo" / "run_manifest.json").read_text())
    curves = manifest["hacking_guard"]["curves"]
    assert len(curves) == 6 and all(0 <= c["distinct"] <= 1 for c in curves)
