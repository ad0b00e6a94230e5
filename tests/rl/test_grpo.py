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
