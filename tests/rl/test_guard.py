"""The reward-hacking guard: a reward that pays for length (replies grow, the task check falls) makes it fire, and
with `stop` end training keeping the best adapter; an honest reward (task check and proxy rising together) leaves it
quiet, also on a real PPO run. Its rule test is calibrated: simulated runs with no real change stop at most
``alpha`` of the time (the old fixed 0.05-drop rule stopped about half), and a real fall is caught most of the time;
GRPO/RLOO's callback gets the reply counts and distinct-bigram ratio PPO gets."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from posttrain.errors import ConfigError
from posttrain.rl.guard import HackingGuard, distinct_bigram_ratio, drop_p_value, simulate_false_stops
from posttrain.stages import run_stage

from helpers import ppo_config


def stream(guard, steps, replies=64):
    messages = []
    for step, (proxy, rule, length, distinct) in enumerate(steps, 1):
        metrics = {"reward/length_model": proxy, "reward/task": rule, "response_length": length, "distinct_2": distinct,
                   "kl": 0.1 * step, "replies": replies}  # fmt: skip
        messages += guard.observe(step, metrics)
    return messages


def fire_at(monkeypatch, at_step: int) -> None:
    """Make the guard report a (forced) finding at ``at_step``, whatever the reward does."""
    observe = HackingGuard.observe

    def forced(self, step, metrics):
        messages = observe(self, step, metrics)
        if step == at_step and not self.findings:
            self.findings.append({"step": step, "kind": "test", "message": "forced"})
            messages.append("forced")
        return messages

    monkeypatch.setattr(HackingGuard, "observe", forced)


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


def test_a_small_fall_in_few_replies_is_noise_and_missing_counts_never_fire():
    # the old rule fired on any 0.05 fall between the window means; 0.6 -> 0.5 over 2 x 16 replies is noise
    noisy = [(0.1, 0.6, 20, 0.9), (0.2, 0.6, 20, 0.9), (0.3, 0.5, 20, 0.9), (0.4, 0.5, 20, 0.9)]
    g = guard()
    assert stream(g, noisy, replies=16) == [] and g.history[-1]["rule_n"] == 16
    # without reply counts the rule and repetition checks cannot be tested: they stay quiet (the length rule does not)
    hacked = [(0.1, 0.9, 20, 0.9), (0.2, 0.9, 20, 0.9), (0.8, 0.0, 48, 0.1), (0.9, 0.0, 48, 0.1)]
    g = guard()
    stream(g, hacked, replies=None)
    assert [f["kind"] for f in g.findings] == ["length"]


def test_drop_p_value_is_fishers_one_sided_exact_test():
    assert drop_p_value(3, 3, 0, 3) == pytest.approx(1 / 20)  # all 3 passes in the first 3 of 6: 1 / C(6, 3)
    assert drop_p_value(2, 3, 0, 3) == pytest.approx(4 / 20)  # both of 2 passes in the first 3: C(4, 1) / C(6, 3)
    assert drop_p_value(0, 3, 3, 3) == pytest.approx(1.0)  # a rise is no evidence of a fall
    # hypergeometric tail by brute force
    n1, n2, x1, x2 = 10, 12, 7, 2
    total = math.comb(n1 + n2, n1)
    tail = sum(math.comb(x1 + x2, k) * math.comb(n1 + n2 - x1 - x2, n1 - k) for k in range(x1, n1 + 1)) / total
    assert drop_p_value(x1, n1, x2, n2) == pytest.approx(tail)


def test_runs_with_no_real_change_stop_at_most_alpha_of_the_time():
    # the worst case: the proxy rises every step, so the rule test alone decides; 16 replies a step, window 3
    alpha, runs = 0.05, 2000
    margin = 3 * math.sqrt(alpha * (1 - alpha) / runs)  # Monte Carlo: 3 standard errors of a rate at alpha
    for p, steps in ((0.5, 20), (0.2, 8), (0.8, 8)):
        rates = simulate_false_stops(p, steps=steps, runs=runs if steps == 20 else 1000, proxy_rising=True, seed=1)
        assert rates["new_rule"] <= alpha + margin, (p, steps, rates)
        assert rates["old_rule"] > 0.3, (p, steps, rates)  # the simulation does find the old rule's false stops
    # a tighter alpha stops less often still
    strict = simulate_false_stops(0.5, steps=8, runs=1000, proxy_rising=True, alpha=0.001, seed=1)
    assert strict["new_rule"] <= 0.005


def test_a_real_fall_is_caught_most_of_the_time():
    for steps in (8, 20):
        rates = simulate_false_stops(0.6, steps=steps, drop_to=0.3, runs=400, proxy_rising=True, seed=2)
        assert rates["new_rule"] >= 0.6, (steps, rates)


def test_alpha_outside_zero_to_a_half_is_refused():
    for bad in (0, 0.5, 1.2, -0.1):
        with pytest.raises(ValueError, match="hacking_guard_alpha"):
            HackingGuard(alpha=bad)
    from posttrain.rl.config import PPOConfig

    with pytest.raises(ConfigError, match="hacking_guard_alpha"):
        PPOConfig(output_dir="unused", hacking_guard_alpha=0.5, rewards=["task"])
    # Bonferroni over the run's looks, the alpha split between the rule and repetition tests
    g = HackingGuard(proxy=("rm",), rules=("task",), window=3, alpha=0.05, max_steps=20)
    assert g.look_alpha(1) == pytest.approx(0.05 / 2 / 15) == g.look_alpha(15)
    spending = HackingGuard(window=3, alpha=0.05)  # no max_steps: 6 / (pi^2 k^2) of alpha at look k, summing to alpha
    assert sum(spending.look_alpha(k) for k in range(1, 2000)) < 0.05


def test_grpo_callback_gets_reply_counts_and_repetition_like_ppo():
    from posttrain.rl.guard_stop import GuardStop, make_guard
    from posttrain.rl.rewards import build_rewards
    from posttrain.training.rl_common import GuardCallback, GuardTally

    rewards = build_rewards(["has_number", "task"])
    args = SimpleNamespace(hacking_guard="warn", hacking_guard_window=1, max_completion_length=8,
                           hacking_guard_alpha=0.05, max_steps=4, world_size=2)  # fmt: skip
    tally = GuardTally(rewards)
    callback = GuardCallback(GuardStop(make_guard(args, rewards), None, stage="grpo"), tally=tally)
    funcs = tally.wrap()
    assert [f.__name__ for f in funcs] == ["has_number", "task"]
    completions = [[{"role": "assistant", "content": t}] for t in ("7", "seven", "8 8 8", "a, b")]
    ids = [[1, 2, 3, 4], [5, 5, 5, 5, 5], [6], [1, 2, 1, 2]]
    columns = {"task": [None, None, "no_commas", "no_commas"], "answer": [None] * 4, "meta": [None] * 4}
    pending: dict[str, list[float]] = {}  # TRL's log_metric: values averaged over the processes and batches
    scores = [f([None] * 4, completions, completion_ids=ids, **columns,
                log_metric=lambda name, value: pending.setdefault(name, []).append(value)) for f in funcs]  # fmt: skip
    assert scores == [[1.0, 0.0, 1.0, 0.0], [None, None, 1.0, 0.0]]
    logs = {"rewards/has_number/mean": 0.5, "rewards/task/mean": 0.5, "completions/mean_length": 3.5, "kl": 0.01,
            **{k: sum(v) / len(v) for k, v in pending.items()}}  # fmt: skip
    metrics = callback.metrics(args, logs)
    distinct = (1.0 + 0.25 + 1.0 + 2 / 3) / 4
    assert metrics["replies"] == 8 and metrics["scored/has_number"] == 8 and metrics["scored/task"] == 4
    assert metrics["distinct_2"] == pytest.approx(distinct) and metrics["response_length"] == 3.5
    # without TRL's log_metric (one process): this process's own tally
    callback.tally.take({})
    for f in funcs:
        f([None] * 4, completions, completion_ids=ids, **columns)
    metrics = callback.metrics(SimpleNamespace(world_size=1), {"rewards/task/mean": 0.5})
    assert metrics["replies"] == 4 and metrics["scored/task"] == 2 and metrics["distinct_2"] == pytest.approx(distinct)
    # on_log feeds the guard: its curve holds the counts the rule test uses; max_steps comes from the trainer state
    state = SimpleNamespace(global_step=1, is_world_process_zero=True, max_steps=4)
    control = SimpleNamespace(should_training_stop=False)
    for f in funcs:
        f([None] * 4, completions, completion_ids=ids, **columns)
    callback.on_log(SimpleNamespace(world_size=1), state, control, logs={"rewards/task/mean": 0.5,
                                                                          "rewards/has_number/mean": 0.5})  # fmt: skip
    point = callback.guard_stop.guard.history[-1]
    assert point["replies"] == 4 and point["rule_n"] == 2 and point["distinct"] == pytest.approx(distinct)


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
    assert all(c["replies"] == 32 and c["rule_n"] == 32 for c in curves)  # the rule test's sample sizes
    assert manifest["hacking_guard"]["alpha"] == 0.05 and manifest["hacking_guard"]["max_steps"] == 6


def test_ppo_stop_keeps_the_candidate_with_the_best_heldout_task_score(tmp_path, tiny_chat_model, monkeypatch):
    # make the guard fire at step 3, whatever the reward does; then check which adapter PPO keeps and why
    fire_at(monkeypatch, 3)
    config = ppo_config(tmp_path, tiny_chat_model, max_steps=6, hacking_guard="stop", test_split_size=8)
    trainer, _ = run_stage("ppo", ["--config", str(config)])
    assert trainer.state.global_step == 3  # stopped at the finding
    [finding] = trainer.guard.findings
    scores = finding["heldout_task_scores"]  # "label (step N)" -> held-out task score
    steps = {label: int(label.rsplit("step ", 1)[1].rstrip(")")) for label in scores}
    assert len(scores) == 3 and steps["start (step 0)"] == 0 and steps["last step (step 3)"] == 3
    best = max(scores.values())
    assert finding["restored_step"] == min(steps[k] for k, v in scores.items() if v == best)
    assert finding["restored_by"].startswith(f"held-out task score {best:.3f} on 8 prompts")
    # the adapter left in the model is the kept candidate's
    import torch

    current = {n: p.detach().cpu() for n, p in trainer.unwrapped.named_parameters() if p.requires_grad}
    for step, _, weights in trainer.guard_stop.best.candidates.values():
        if step == finding["restored_step"]:
            assert all(torch.equal(current[n], w) for n, w in weights.items())
    manifest = json.loads((tmp_path / "ppo" / "run_manifest.json").read_text())
    assert manifest["hacking_guard"]["findings"][0]["restored_step"] == finding["restored_step"]


def test_grpo_stop_keeps_the_candidate_with_the_best_heldout_task_score(tmp_path, tiny_chat_model, monkeypatch):
    # GRPO/RLOO share PPO's choice (BestAdapter through the guard callback): fire at step 2, stop there, keep the best
    from helpers import PROMPTS
    from tiny import write_stage_config

    fire_at(monkeypatch, 2)
    settings = {"model_name_or_path": str(tiny_chat_model), "datasets": PROMPTS, "test_split_size": 8,
                "rewards": ["has_number"], "load_in_4bit": False, "bf16": False, "max_steps": 5,
                "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 8,
                "learning_rate": 3e-3, "logging_steps": 1, "hacking_guard": "stop", "save_strategy": "steps",
                "save_steps": 1}  # fmt: skip
    trainer, _ = run_stage("grpo", ["--config", str(write_stage_config(tmp_path, "grpo", settings))])
    assert trainer.state.global_step == 2
    # the guard got PPO's signals through TRL's log_metric: 8 replies a step, all scored, and their repetition
    curves = json.loads((tmp_path / "grpo" / "run_manifest.json").read_text())["hacking_guard"]["curves"]
    assert [(c["replies"], c["rule_n"]) for c in curves] == [(8, 8), (8, 8)], curves
    assert all(0 < c["distinct"] <= 1 and c["length"] > 0 for c in curves), curves
    # the stop step's checkpoint holds the kept adapter, the one published (TRL wrote it before the restore)
    published = load_file(tmp_path / "grpo" / "adapter_model.safetensors")
    checkpoint = load_file(tmp_path / "grpo" / "checkpoint-2" / "adapter_model.safetensors")
    assert published.keys() == checkpoint.keys()
    assert all(torch.equal(published[k], checkpoint[k]) for k in published)


def test_grpo_stop_checkpoint_holds_the_kept_start_adapter(tmp_path, tiny_chat_model, monkeypatch):
    import posttrain.rl.heldout as heldout

    from helpers import PROMPTS
    from tiny import write_stage_config

    fire_at(monkeypatch, 2)
    scores = iter([1.0, 0.0, 0.0, 0.0])  # held-out scores of the candidates: the start adapter (step 0) wins
    monkeypatch.setattr(heldout, "heldout_rewards", lambda *args, **kwargs: {"policy": {}})
    monkeypatch.setattr(heldout, "heldout_task_score", lambda result, rule_names: next(scores))
    settings = {"model_name_or_path": str(tiny_chat_model), "datasets": PROMPTS, "test_split_size": 8,
                "rewards": ["has_number"], "load_in_4bit": False, "bf16": False, "max_steps": 5,
                "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 8,
                "learning_rate": 3e-3, "logging_steps": 1, "hacking_guard": "stop", "save_strategy": "steps",
                "save_steps": 1}  # fmt: skip
    run_stage("grpo", ["--config", str(write_stage_config(tmp_path, "grpo", settings))])
    manifest = json.loads((tmp_path / "grpo" / "run_manifest.json").read_text())
    assert manifest["hacking_guard"]["findings"][0]["restored_step"] == 0
    adapter = load_file(tmp_path / "grpo" / "checkpoint-2" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all((v == 0).all() for v in lora_b)  # the start adapter (LoRA B is zero), not step 2's
    manifest = json.loads((tmp_path / "grpo" / "run_manifest.json").read_text())
    [finding] = manifest["hacking_guard"]["findings"]
    scores = finding["heldout_task_scores"]
    assert sorted(scores) == ["best training rule score (step 1)", "last step (step 2)", "start (step 0)"] or (
        sorted(scores) == ["best training rule score (step 2)", "last step (step 2)", "start (step 0)"]
    ), scores
    best = max(scores.values())
    assert finding["restored_by"].startswith(f"held-out task score {best:.3f} on 8 prompts")


def grouped_stream(guard, groups_per_step, *, grouped: bool):
    """Feed ``guard`` steps of grouped replies: each step a list of groups, each group a list of 0/1 scores (the
    replies to one prompt, as GRPO samples them); ``grouped``: with the group sums GuardTally records."""
    from posttrain.rl.guard import group_stats

    for step, groups in enumerate(groups_per_step, 1):
        scores = [s for g in groups for s in g]
        keys = [i for i, g in enumerate(groups) for _ in g]
        metrics = {"reward/rm": float(step), "reward/task": sum(scores) / len(scores), "replies": len(scores),
                   "scored/task": len(scores), "response_length": 10.0, "distinct_2": 0.9}  # fmt: skip
        if grouped:
            metrics.update({f"{k}/task": v for k, v in group_stats(scores, keys).items()})
        guard.observe(step, metrics)
    return guard


def test_grouped_replies_count_as_fewer_independent_ones():
    from posttrain.rl.guard import design_effect, group_stats

    def make():
        return HackingGuard(mode="stop", proxy=("rm",), rules=("task",), window=2, alpha=0.05, max_steps=4)

    # 4 prompts x 8 replies a step; each prompt's replies all pass or all fail (hard and easy prompts): the pass rate
    # falls from 16/32 to 4/32 a step, a clear fall over 64 independent replies a window, but only 8 prompts a window
    alike = [[[1] * 8, [1] * 8, [0] * 8, [0] * 8]] * 2 + [[[1] * 8, [0] * 8, [0] * 8, [0] * 8]] * 2
    assert make().findings == []
    assert [f["kind"] for f in grouped_stream(make(), alike, grouped=False).findings] == ["proxy_up_rules_down"]
    assert grouped_stream(make(), alike, grouped=True).findings == []  # 4 of 8 prompts -> 1 of 8: p = 0.14
    # the same pass counts spread evenly over the prompts (replies to one prompt no more alike than any): the
    # correction leaves the finding
    spread = [[[1, 1, 1, 1, 0, 0, 0, 0]] * 4] * 2 + [[[1, 0, 0, 0, 0, 0, 0, 0]] * 4] * 2
    found = grouped_stream(make(), spread, grouped=True)
    assert [f["kind"] for f in found.findings] == ["proxy_up_rules_down"]
    assert "design effect" not in found.findings[0]["message"]
    # the design effect itself: 1 ungrouped, the group size when a group's replies are alike
    ones = group_stats([1, 0, 1, 0], [0, 1, 2, 3])
    assert ones["groups"] == 4 and ones["group_between"] == 2
    row = lambda stats, n: (stats["groups"], n, stats["group_sum"], stats["group_sq"], stats["group_between"])
    assert design_effect([row(ones, 4), row(ones, 4)]) == 1.0
    same = group_stats([1] * 8 + [0] * 8, [0] * 8 + [1] * 8)
    assert design_effect([row(same, 16), row(same, 16)]) == pytest.approx(8.0)
    assert design_effect([row(group_stats([1, 0] * 8, [0] * 8 + [1] * 8), 16)] * 2) == 1.0  # alike groups: ICC < 0


def test_grouped_runs_with_no_real_change_stop_at_most_alpha_of_the_time():
    # GRPO-like: 4 prompts of heterogeneous difficulty (Beta pass rates, ICC 0.5) x 8 replies a step; counting the
    # replies as independent stops far more often than alpha, the design-effect correction does not
    rates = simulate_false_stops(0.5, steps=12, replies=32, group_size=8, concentration=1.0, runs=300,
                                 proxy_rising=True, seed=3)  # fmt: skip
    assert rates["new_rule_ungrouped"] > 0.15, rates
    assert rates["new_rule"] <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 300), rates
    # and a real fall is still caught often
    power = simulate_false_stops(0.6, steps=12, replies=64, group_size=4, concentration=4.0, runs=200,
                                 drop_to=0.2, proxy_rising=True, seed=4)  # fmt: skip
    assert power["new_rule"] >= 0.5, power


def test_grpo_tally_records_group_sums_by_prompt():
    from posttrain.rl.guard_stop import GuardStop, make_guard
    from posttrain.rl.rewards import build_rewards
    from posttrain.training.rl_common import GuardCallback, GuardTally

    rewards = build_rewards([{"name": "repetition"}, "has_number"])
    args = SimpleNamespace(hacking_guard="warn", hacking_guard_window=1, max_completion_length=8,
                           hacking_guard_alpha=0.05, max_steps=4, world_size=1)  # fmt: skip
    tally = GuardTally(rewards)
    callback = GuardCallback(GuardStop(make_guard(args, rewards), None, stage="grpo"), tally=tally)
    assert callback.guard_stop.guard.proxy == ("repetition",) and callback.guard_stop.guard.rules == ("has_number",)
    prompts = ["a", "a", "b", "b"]  # 2 prompts x 2 replies, as GRPO passes them
    completions = [[{"role": "assistant", "content": t}] for t in ("7", "8", "x", "y")]
    ids = [[1, 2, 3], [1, 1, 1, 1], [4, 5, 6], [7, 8, 9]]
    pending: dict[str, list[float]] = {}
    for f in tally.wrap():
        f(prompts, completions, completion_ids=ids,
          log_metric=lambda name, value: pending.setdefault(name, []).append(value))  # fmt: skip
    logs = {"rewards/repetition/mean": 0.1, "rewards/has_number/mean": 0.5,
            **{k: sum(v) / len(v) for k, v in pending.items()}}  # fmt: skip
    metrics = callback.metrics(args, logs)
    # has_number: prompt a passes twice, prompt b never: sums 2 and 0 over groups of 2
    assert metrics["groups/has_number"] == 2 and metrics["group_sum/has_number"] == 2
    assert metrics["group_between/has_number"] == 2 and metrics["group_sq/has_number"] == 2
    assert metrics["groups/distinct_2"] == 2
    callback.guard_stop.guard.observe(1, metrics)
    assert callback.guard_stop.guard.history[-1]["groups"]["has_number"] == [2, 4, 2, 2, 2]


def test_hackable_rewards_pay_for_length_and_repetition_and_count_as_proxies():
    from posttrain.rl.rewards import HackableReward, build_rewards

    completions = [[{"role": "assistant", "content": t}] for t in ("ab", "abcd" * 10)]
    assert HackableReward("verbosity", max_chars=8)([None] * 2, completions) == [0.25, 1.0]
    repetition = HackableReward("repetition")
    assert repetition([None] * 2, completions, completion_ids=[[1, 2, 3, 4], [5, 5, 5, 6]]) == [0.0, 0.5]
    rewards = build_rewards([{"name": "verbosity", "max_chars": 100}, {"name": "task", "weight": 0}])
    assert rewards.rule_names == frozenset({"task"})  # the hackable one is the proxy the guard watches
    with pytest.raises(ConfigError, match="max_chars"):
        build_rewards(["verbosity"])
