"""The reward-hacking guard on a real PPO run, not a hand-written metric stream: the tiny chat model trained only by a
hackable proxy (``repetition``: pays for repeating tokens) while the rule check ``has_number`` is monitored at weight
0. The policy learns to repeat, the guard fires and stops the run, and the adapter left in the model and saved is
the candidate with the best held-out (validation) task score."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from posttrain.stages import run_stage

from helpers import ppo_config

HACKED = {
    "rewards": [{"name": "repetition", "weight": 1.0}, {"name": "has_number", "weight": 0.0}],
    "hacking_guard": "stop",
    "hacking_guard_window": 2,
    "max_steps": 16,
    "test_split_size": 8,
    "max_completion_length": 16,
    "learning_rate": 0.03,  # far above the honest runs' 5e-3: the policy finds the hack within a few steps
    "kl_coef": 0.01,
}


def test_a_hackable_reward_fires_the_guard_and_ppo_keeps_the_best_heldout_adapter(tmp_path, tiny_chat_model,
                                                                                  monkeypatch):  # fmt: skip
    from posttrain.rl.heldout import BestAdapter

    at_stop = {}  # the adapter at the stop step (the "last step" candidate), as keep_best finds it
    keep_best = BestAdapter.keep_best

    def recording(self, step_now, *args, **kwargs):
        at_stop[step_now] = self._weights()
        return keep_best(self, step_now, *args, **kwargs)

    monkeypatch.setattr(BestAdapter, "keep_best", recording)
    trainer, _ = run_stage("ppo", ["--config", str(ppo_config(tmp_path, tiny_chat_model, **HACKED))])
    guard = trainer.guard
    assert guard.proxy == ("repetition",) and guard.rules == ("has_number",)
    [finding] = guard.findings
    step = finding["step"]
    # the proxy was gamed: the replies turned repetitive, or (which of the two fires first differs between CPU
    # kernels) the proxy rose while the monitored rule check's pass rate fell with a significant one-sided test
    assert finding["kind"] in ("repetition", "proxy_up_rules_down"), finding
    assert 2 * 2 <= step < 16 and trainer.state.global_step == step  # stopped at the finding, well before max_steps
    curves = guard.history
    assert len(curves) == step
    first, last = curves[:2], curves[-2:]
    assert sum(c["proxy"] for c in last) > sum(c["proxy"] for c in first) + 0.5  # the proxy reward was gamed
    if finding["kind"] == "repetition":
        assert sum(c["distinct"] for c in last) / 2 < 0.7 * sum(c["distinct"] for c in first) / 2
    else:
        assert sum(c["rule"] for c in last) < sum(c["rule"] for c in first), curves
    assert all(c["replies"] == 32 and c["rule_n"] == 32 for c in curves)  # the monitored rule check scored every reply
    # the kept adapter is the candidate with the best held-out task score (ties: the earlier step)
    scores = finding["heldout_task_scores"]
    steps = {label: int(label.rsplit("step ", 1)[1].rstrip(")")) for label in scores}
    assert len(scores) == 3 and steps["start (step 0)"] == 0 and steps[f"last step (step {step})"] == step
    best = max(scores.values())
    assert finding["restored_step"] == min(steps[k] for k, v in scores.items() if v == best)
    assert finding["restored_by"].startswith(f"held-out task score {best:.3f} on ")
    assert list(at_stop) == [step]
    candidates = [(s, w) for s, _, w in trainer.guard_stop.best.candidates.values()] + [(step, at_stop[step])]
    kept = [w for s, w in candidates if s == finding["restored_step"]]
    assert kept, (finding, [s for s, _ in candidates])
    current = {n: p.detach().cpu() for n, p in trainer.unwrapped.named_parameters() if p.requires_grad}
    assert all(torch.equal(current[n], w) for n, w in kept[0].items())
    # ... and the adapter saved is that one
    saved = load_file(tmp_path / "ppo" / "adapter_model.safetensors")
    policy = {n: w for n, w in kept[0].items() if "lora_" in n}
    assert policy and len(saved) == len(policy)
    for name, weight in policy.items():  # policy.base_model...lora_A.default.weight -> base_model...lora_A.weight
        assert torch.equal(saved[name.removeprefix("policy.").replace(".default.", ".")], weight), name
    manifest = json.loads((tmp_path / "ppo" / "run_manifest.json").read_text())
    assert manifest["hacking_guard"]["findings"][0]["restored_step"] == finding["restored_step"]
    assert manifest["hacking_guard"]["findings"][0]["heldout_task_scores"] == scores
