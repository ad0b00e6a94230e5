"""Reward model in 4-bit on CPU: held-out pairwise accuracy rises above chance; the saved model loads directly."""

import json

import pytest

from posttrain.models.reward import RewardModel, RewardModelError
from posttrain.stages import run_stage

from tiny import write_stage_config

PAIRS = [
    {"path": "builtin:unknown_entity", "num_samples": 64},
    {"path": "builtin:decimal_compare", "num_samples": 64},
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
    # held-out pairs come from the tasks' validation pool (new phrasings and entities): 17 of 24 right happens by
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


# ------------------------------------------------------------------------- held-out (validation) pairs, at chance


def _pair(question, good, bad, task="decimal_compare", scores=(1.0, 0.0)):
    return {"prompt": [{"role": "user", "content": question}], "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}], "chosen_score": scores[0],
            "rejected_score": scores[1], "task": task}  # fmt: skip


def test_wilson_interval_and_chance_verdicts():
    from posttrain.models.reward_accuracy import accuracy_record
    from posttrain.stats import wilson_interval

    low, high = wilson_interval(30, 40)
    assert low == pytest.approx(0.5981, abs=1e-3) and high == pytest.approx(0.8581, abs=1e-3)
    assert wilson_interval(3, 3)[0] < 0.5 < wilson_interval(5, 5)[0]  # 3 of 3 can be luck, 5 of 5 hardly
    assert accuracy_record([True] * 30 + [False] * 10)["above_chance"]
    even = accuracy_record([True, False] * 10)
    assert even["at_chance"] and not even["above_chance"] and even["accuracy"] == 0.5
    worse = accuracy_record([False] * 20)
    assert not worse["at_chance"] and not worse["above_chance"]  # below chance: not above it either


def test_reward_model_at_chance_on_validation_pairs_is_warned_about_here_and_in_ppo(tmp_path, tiny_chat_model, capsys):
    """Validation pairs that hold every pair in both orders: any reward model ranks exactly half of them right (or
    none, on ties), so its interval holds 0.5; the stage warns and records it, and PPO's rewards warn naming the key."""
    import warnings

    from transformers import AutoTokenizer

    from posttrain.models.reward import RewardModelAtChanceWarning
    from posttrain.rl.rewards import build_rewards

    train = [_pair("Which is larger, 9.11 or 9.9?", "9.9", "9.11"), _pair("Which is larger, 3.5 or 3.45?", "3.5", "3.45"),
             _pair("Which is larger, 2.7 or 2.15?", "2.7", "2.15"), _pair("What is 12 plus 30?", "42", "41", "arithmetic")]  # fmt: skip
    forward = [
        _pair("Which is larger, 7.3 or 7.25?", "7.3", "7.25"),
        _pair("What is 20 plus 5?", "25", "26", "arithmetic"),
    ]
    mirrored = [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in forward]
    tie = _pair("Which is larger, 1.2 or 1.15?", "1.2", "1.15", scores=(0.0, 0.0))
    trained = train[0]  # a training prompt: not held out
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    validation = tmp_path / "validation"
    validation.mkdir()
    (validation / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*forward, *mirrored, tie, trained]))
    # as `posttrain pairs --output_dir` leaves it, but drawn from the train pool: said too
    (validation / "run_manifest.json").write_text(json.dumps({"config": {"PairsArguments": {"pool": "train"}}}))
    settings = {
        "model_name_or_path": str(tiny_chat_model),
        "load_in_4bit": False,
        "datasets": [{"path": str(tmp_path / "train.jsonl")}],
        "validation_pairs": str(validation),
        "max_length": 64,
        "max_steps": 1,
        "per_device_train_batch_size": 2,
    }
    _, metrics = run_stage("reward", ["--config", str(write_stage_config(tmp_path, "reward", settings))])
    out = capsys.readouterr().out
    assert "posttrain: warning: validation_pairs: the reward model ranks 4 held-out pairs at chance" in out, out
    assert "validation_pairs were sampled from the tasks' train pool" in out, out
    record = json.loads((tmp_path / "reward" / "run_manifest.json").read_text())["validation_pairwise"]
    assert record["pool"] == "train" and record["source"] == f"validation_pairs {validation}"
    assert record["n"] == 4 and record["ties_dropped"] == 1 and record["trained_prompts_dropped"] == 1
    assert record["accuracy"] in (0.0, 0.5) and not record["above_chance"] and record["low"] <= 0.5
    assert set(record["by_task"]) == {"decimal_compare", "arithmetic"} and record["by_task"]["arithmetic"]["n"] == 2
    assert metrics["validation_pairwise_accuracy"] == record["accuracy"]
    assert metrics["validation_pairwise_accuracy_high"] == record["high"] and metrics["validation_pairwise_pairs"] == 4

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    with pytest.warns(RewardModelAtChanceWarning) as caught:
        build_rewards(["has_number", {"name": "reward_model", "path": str(tmp_path / "reward")}],
                      policy_tokenizer=tokenizer)  # fmt: skip
    message = str(caught[0].message)
    assert message.startswith("rewards[1].path: reward model") and "at chance" in message, message
    assert f"[95% CI {record['low']:.3f}, {record['high']:.3f}] on 4 pairs" in message, message
    # the same model without a measured verdict (no manifest, as any HF folder): nothing to say
    import shutil

    plain = shutil.copytree(tmp_path / "reward", tmp_path / "rm-plain")
    (plain / "run_manifest.json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RewardModelAtChanceWarning)
        build_rewards([{"name": "reward_model", "path": str(plain)}], policy_tokenizer=tokenizer)


def test_validation_pairs_must_be_a_jsonl_file(tmp_path, tiny_chat_model):
    settings = {"model_name_or_path": str(tiny_chat_model), "load_in_4bit": False, "max_steps": 1,
                "datasets": [{"path": "builtin:decimal_compare", "num_samples": 4}],
                "validation_pairs": str(tmp_path / "missing.jsonl")}  # fmt: skip
    with pytest.raises(SystemExit) as info:
        run_stage("reward", ["--config", str(write_stage_config(tmp_path, "reward", settings))])
    assert info.value.code == 2
    assert not (tmp_path / "reward").exists()


def test_pairs_pool_refuses_the_sealed_test_pool():
    from posttrain.errors import ConfigError
    from posttrain.stages.pairs import PairsArguments

    with pytest.raises(ConfigError, match="pool must be train or validation"):
        PairsArguments(output_dir="x", pool="test")
    assert PairsArguments(output_dir="x", pool="validation").pool == "validation"
