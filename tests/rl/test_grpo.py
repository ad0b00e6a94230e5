"""GRPO and RLOO (TRL's trainers) with posttrain's rewards as reward_funcs, on the tiny chat model."""

import json

import pytest

from posttrain.stages import run_stage

from helpers import PROMPTS
from tiny import write_stage_config

SETTINGS = {
    "datasets": PROMPTS,
    "test_split_size": 8,
    "rewards": [{"name": "has_number", "weight": 1.0}, {"name": "task", "weight": 0.5}],
    "load_in_4bit": False,
    "max_steps": 3,
    "per_device_train_batch_size": 8,
    "num_generations": 4,
    "max_completion_length": 8,
    "learning_rate": 3e-3,
    "beta": 0.05,
}


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_trl_trainer_with_posttrain_rewards(tmp_path, tiny_chat_model, precision, stage):
    config = write_stage_config(tmp_path, stage, {"model_name_or_path": str(tiny_chat_model), **SETTINGS})
    trainer, metrics = run_stage(stage, ["--config", str(config)])
    assert trainer.reward_func_names == ["has_number", "task"]
    assert trainer.reward_weights.tolist() == [1.0, 0.5]
    logged = [h for h in trainer.state.log_history if "rewards/has_number/mean" in h]
    assert len(logged) == 3  # the rule reward was called on every step's completions
    assert "eval_reward_reference" in metrics and "eval_reward_policy" in metrics
    out = tmp_path / stage
    assert (out / "adapter_model.safetensors").is_file()
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["stage"] == stage and manifest["ranks"][0]["steps"] == 3


# GRPO learns on the tiny model within 24 steps at this learning rate (fp32 LoRA; TRL's default 1e-6 barely moves it):
# 4 prompts x 8 replies a step, the has_number rate goes from ~0.2 to ~1.0 (rewarded) or ~0.0 (penalized).
LEARNING = {
    "datasets": PROMPTS,
    "test_split_size": 16,
    "load_in_4bit": False,
    "bf16": False,
    "max_steps": 24,
    "per_device_train_batch_size": 32,
    "num_generations": 8,
    "max_completion_length": 8,
    "learning_rate": 2e-2,
    "lr_scheduler_type": "constant",
    "temperature": 1.0,
    "beta": 0.0,
}


def _sampled_number_rate(model, tokenizer, *, reference: bool) -> float:
    """Share of sampled replies (8 each, fixed seed) to 16 unseen arithmetic prompts that state a number, under the
    start policy (``reference``: the adapter disabled) or the trained one."""
    from contextlib import nullcontext

    from posttrain.models import generation
    from posttrain.rl.rewards import RuleReward
    from posttrain.tasks import generate_task

    prompts = [
        [{"role": "user", "content": ex.prompt}] for ex in generate_task("arithmetic", 16, seed=1, pool="validation")
    ]
    model.eval()
    with model.disable_adapter() if reference else nullcontext():
        samples = generation.generate(
            model, tokenizer, prompts, max_new_tokens=8, do_sample=True, num_return_sequences=8, seed=0, progress=False
        )
    scores = RuleReward("has_number")(prompts, [s.text for replies in samples for s in replies])
    return sum(scores) / len(scores)


@pytest.mark.parametrize("weight", [1.0, -1.0], ids=["rewarded", "penalized"])
def test_grpo_moves_the_policy_in_the_reward_direction(tmp_path, tiny_chat_model, monkeypatch, weight):
    """A learning signal, not only finite losses: with ``has_number`` rewarded the policy states numbers far more
    often, with it penalized (weight -1) far less, in the training log, in fresh samples and in held-out greedy replies.
    The penalized run is the control: drift or a sign error in the advantages would fail one of the two."""
    monkeypatch.setenv("POSTTRAIN_PRECISION", "fp32")
    settings = {"model_name_or_path": str(tiny_chat_model), **LEARNING}
    settings["rewards"] = [{"name": "has_number", "weight": weight}]
    trainer, metrics = run_stage("grpo", ["--config", str(write_stage_config(tmp_path, "grpo", settings))])
    curve = [h["rewards/has_number/mean"] for h in trainer.state.log_history if "rewards/has_number/mean" in h]
    assert len(curve) == 24
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5  # mean training reward of the first and last 5 steps
    model = trainer.accelerator.unwrap_model(trainer.model)
    start = _sampled_number_rate(model, trainer.processing_class, reference=True)
    trained = _sampled_number_rate(model, trainer.processing_class, reference=False)
    reference, policy = metrics["eval_has_number_reference"], metrics["eval_has_number_policy"]  # held-out, greedy
    if weight > 0:  # from ~0.2 up to ~1.0
        assert last > first + 0.3, curve
        assert trained > start + 0.4, (start, trained)
        assert policy > reference, (reference, policy)
    else:  # from ~0.2 down to ~0.0 (less room: relative margins)
        assert last < 0.7 * first, curve
        assert trained < 0.25 * start, (start, trained)
        assert policy < reference, (reference, policy)
