"""The reward-hacking guard: a reward that pays for length (replies grow, the task check falls) makes it fire, and
with `stop` end training keeping the best adapter; an honest reward (task check and proxy rising together) leaves it
quiet, also on a real PPO run."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

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
    for step, _, weights in trainer.best_adapter.candidates.values():
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
