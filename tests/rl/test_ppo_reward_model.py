"""PPO against a (tiny) trained reward model: the reward-model stage's output is the reward, and it rises."""

import json

import pytest

from posttrain.stages import run_stage

from helpers import ppo_config
from tiny import write_stage_config


def write_pairs(path, model_path, n=96):
    """Pairs on the tiny policy's own kind of text (random tokens): the same reply with a number inserted is
    preferred over the reply without one, so the reward model scores what PPO can change."""
    import random

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    plain = [
        i
        for i in range(len(tokenizer))
        if not any(c.isdigit() for c in tokenizer.decode([i])) and i not in tokenizer.all_special_ids
    ]
    rng = random.Random(0)
    rows = []
    for i in range(n):
        ids = rng.choices(plain, k=8)
        reply = tokenizer.decode(ids)
        cut = rng.randrange(len(reply) + 1)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"What is {i} plus {2 * i + 1}?"}],
                "chosen": [{"role": "assistant", "content": f"{reply[:cut]} {3 * i + 1} {reply[cut:]}"}],
                "rejected": [{"role": "assistant", "content": reply}],
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory, tiny_chat_model):
    tmp_path = tmp_path_factory.mktemp("rm")
    config = write_stage_config(
        tmp_path,
        "reward",
        {
            "model_name_or_path": str(tiny_chat_model),
            "datasets": [{"path": str(write_pairs(tmp_path / "pairs.jsonl", tiny_chat_model))}],
            "load_in_4bit": False,
            "bf16": False,
            "max_steps": 40,
            "per_device_train_batch_size": 8,
            "test_split_size": 16,
            "learning_rate": 1e-2,
            "max_length": 64,
        },
    )
    run_stage("reward", ["--config", str(config)])
    return tmp_path / "reward"


@pytest.mark.slow  # ~2-4 minutes on 2 shared CPU cores
def test_ppo_raises_reward_model_score(tmp_path, tiny_chat_model, reward_model):
    config = ppo_config(
        tmp_path,
        tiny_chat_model,
        rewards=[{"name": "reward_model", "path": str(reward_model)}],
        max_steps=20,
        # with the policy's and the value head's gradients clipped each on their own norm, the reward rose within 20
        # steps for seeds 42, 1 and 2 at 1e-2 (1 of the 3 at 5e-3; 2 of 3 with the former joint clipping)
        learning_rate=1e-2,
    )
    trainer, metrics = run_stage("ppo", ["--config", str(config)])
    history = trainer.state.log_history
    first = sum(h["reward"] for h in history[:3]) / 3
    last = sum(h["reward"] for h in history[-3:]) / 3
    spread = max(h["reward"] for h in history) - min(h["reward"] for h in history)
    assert last > first + 0.25 * spread, (first, last)
    assert metrics["kl_max"] < 20, metrics
