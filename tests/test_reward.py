"""Reward model in 4-bit on CPU: held-out pairwise accuracy rises above chance; the saved model loads directly."""

import json

import pytest

from posttrain.models.reward import RewardModel, RewardModelError
from posttrain.stages import run_stage

from tiny import write_stage_config

PAIRS = [
    {"path": "builtin:unknown_entity", "num_samples": 48},
    {"path": "builtin:decimal_compare", "num_samples": 48},
]


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, tiny_chat_model, precision):
    tmp_path = tmp_path_factory.mktemp("reward")
    config = write_stage_config(
        tmp_path,
        "reward",
        {
            "model_name_or_path": str(tiny_chat_model),
            "datasets": PAIRS,
            "test_split_size": 0.25,
            "max_steps": 30,
            "per_device_train_batch_size": 8,
            "learning_rate": 1e-2,
            "max_length": 128,
            # some unknown_entity pairs are longer than 128 tiny-tokenizer tokens: skip them (RewardTrainer never
            # cuts a pair; by default they stop the run)
            "overlong_samples": "drop",
        },
    )
    trainer, metrics = run_stage("reward", ["--config", str(config)])
    return tmp_path / "reward", trainer, metrics


def test_heldout_pairwise_accuracy_above_chance(reward_run):
    out, trainer, metrics = reward_run
    assert any(type(m).__name__ == "Linear4bit" for m in trainer.model.modules())  # trained in 4-bit
    # held-out pairs come from the tasks' evaluation pool (new phrasings and entities): 17 of 24 right happens by
    # chance with p = 0.03
    assert metrics["test_pairwise_accuracy"] >= 0.7, metrics
    assert metrics["test_pairwise_mean_margin"] > 0


def test_saved_reward_model_loads_and_agrees(reward_run, tiny_chat_model):
    out, _, metrics = reward_run
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "config.json").is_file()
    from posttrain.tasks import generate_task

    model = RewardModel.load(str(out))
    fresh = generate_task("unknown_entity", 8, seed=12345)  # questions the reward model never saw
    prompts = [[{"role": "user", "content": ex.prompt}] for ex in fresh]
    honest = model.score_replies(prompts, [ex.response for ex in fresh])
    made_up = model.score_replies(prompts, [ex.wrong_response for ex in fresh])
    assert sum(h > m for h, m in zip(honest, made_up)) >= 6
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert (
        manifest["stage"] == "reward"
        and manifest["metrics"]["test_pairwise_accuracy"] == metrics["test_pairwise_accuracy"]
    )


def test_causal_lm_is_not_a_reward_model(tiny_chat_model):
    with pytest.raises(RewardModelError, match="not a sequence-classification model"):
        RewardModel.load(str(tiny_chat_model))


def test_overlong_pairs_stop_the_reward_stage_or_are_dropped_with_a_count(tmp_path, tiny_chat_model, capsys):
    pairs = tmp_path / "pairs.jsonl"
    short = {"prompt": "Which is larger, 9.11 or 9.9?", "chosen": "9.9", "rejected": "9.11"}
    long = {**short, "rejected": "9.11 is larger. " + "The quick brown fox jumps over the lazy dog. " * 8}
    pairs.write_text("".join(json.dumps(row) + "\n" for row in (short, long, short, short)))
    settings = {
        "model_name_or_path": str(tiny_chat_model),
        "load_in_4bit": False,
        "datasets": [{"path": str(pairs)}],
        "max_length": 64,
        "max_steps": 1,
        "per_device_train_batch_size": 2,
    }
    with pytest.raises(SystemExit) as info:
        run_stage("reward", ["--config", str(write_stage_config(tmp_path, "reward", settings))])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"{pairs} line 2: preference pair longer than max_length 64" in err and "prompt + rejected" in err
    assert not (tmp_path / "reward").exists()
    config = write_stage_config(tmp_path, "reward", {**settings, "overlong_samples": "truncate"})
    trainer, _ = run_stage("reward", ["--config", str(config)])
    assert "RewardTrainer cannot cut a pair" in capsys.readouterr().out and len(trainer.train_dataset) == 3
