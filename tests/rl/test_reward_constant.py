"""A reward model that gives every completion of its first batch one score (an untrained score head) is warned about
once, naming the reward; a reward model whose scores vary is not."""

import warnings

import pytest

from posttrain.rl.rewards import UntrainedRewardModelWarning, build_rewards
from posttrain.stages import run_stage

from helpers import PROMPTS, save_seq_cls
from tiny import write_stage_config

PROMPT = [{"role": "user", "content": "What is 12 plus 30?"}]
REPLIES = ["42", "hello there", "The answer is 7.", "I don't know."]


def _constant_reward_model(path, tokenizer):
    """:func:`save_seq_cls` with its score head zeroed: every conversation scores exactly 0.0."""
    import torch
    from transformers import AutoModelForSequenceClassification

    save_seq_cls(path, tokenizer)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    with torch.no_grad():
        model.score.weight.zero_()
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def policy_tokenizer(tiny_chat_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_chat_model)


def test_constant_reward_model_is_warned_about_once(tmp_path, policy_tokenizer):
    path = _constant_reward_model(tmp_path / "rm-zero", policy_tokenizer)
    rewards = build_rewards(
        ["has_number", {"name": "reward_model", "path": str(path)}], policy_tokenizer=policy_tokenizer
    )
    with warnings.catch_warnings():  # identical completions: nothing to compare, no verdict yet
        warnings.simplefilter("error", UntrainedRewardModelWarning)
        rewards([PROMPT] * 3, ["42"] * 3)
    with pytest.warns(UntrainedRewardModelWarning) as caught:
        total, per_func = rewards([PROMPT] * 4, REPLIES)
    assert per_func["reward_model"] == [0.0] * 4 and total == [1.0, 0.0, 1.0, 0.0]
    (warning,) = caught
    message = str(warning.message)
    assert f"rewards[1] (reward_model, path: {path})" in message, message
    assert "looks untrained: constant score 0.000 on 4 completions" in message, message
    assert "carries no signal" in message, message
    with warnings.catch_warnings():  # once per reward object
        warnings.simplefilter("error", UntrainedRewardModelWarning)
        rewards([PROMPT] * 4, REPLIES)


def test_varying_reward_model_is_not_warned_about(tmp_path, policy_tokenizer):
    path = save_seq_cls(tmp_path / "rm", policy_tokenizer)  # random (untrained) head, but its scores vary
    rewards = build_rewards([{"name": "reward_model", "path": str(path)}], policy_tokenizer=policy_tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedRewardModelWarning)
        _, per_func = rewards([PROMPT] * 4, REPLIES)
    assert max(per_func["reward_model"]) - min(per_func["reward_model"]) > 1e-4
    assert rewards.funcs[0].checked_spread


def test_grpo_warns_about_a_constant_reward_model(tmp_path, tiny_chat_model, policy_tokenizer):
    """TRL's GRPOTrainer calls the same reward object, so the warning reaches GRPO (and RLOO, PPO) runs."""
    path = _constant_reward_model(tmp_path / "rm-zero", policy_tokenizer)
    settings = {
        "model_name_or_path": str(tiny_chat_model),
        "datasets": PROMPTS,
        "rewards": ["has_number", {"name": "reward_model", "path": str(path)}],
        "load_in_4bit": False,
        "bf16": False,
        "max_steps": 1,
        "per_device_train_batch_size": 8,
        "num_generations": 4,
        "max_completion_length": 8,
    }
    config = write_stage_config(tmp_path, "grpo", settings)
    with pytest.warns(UntrainedRewardModelWarning, match=r"rewards\[1\] \(reward_model, path: .*constant score"):
        run_stage("grpo", ["--config", str(config)])
