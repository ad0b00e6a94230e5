"""Bad RL input through the CLI: one clear error line, exit status 2, no output directory."""

import json

import pytest

from posttrain.cli import main

from helpers import PPO_SETTINGS


def run(tmp_path, capsys, stage, settings):
    capsys.readouterr()  # drop what fixtures printed (progress bars of saving the tiny models)
    config = tmp_path / "run.yaml"
    base = PPO_SETTINGS if stage == "ppo" else {"datasets": PPO_SETTINGS["datasets"]}
    config.write_text(
        json.dumps({**base, "output_dir": str(tmp_path / "out"), "report_to": "none", "use_peft": True, **settings})
    )
    with pytest.raises(SystemExit) as exit_info:
        main([stage, "--config", str(config)])
    assert exit_info.value.code == 2
    assert not (tmp_path / "out").exists(), "a failed run must not leave an output directory"
    err = capsys.readouterr().err
    # model-loading progress bars may come first; then the error (a data error lists its rows on further lines)
    assert "\nposttrain: error: " in "\n" + err.replace("\r", "\n") and "Traceback" not in err
    return err[err.index("posttrain: error: ") :]


@pytest.mark.parametrize("stage", ["grpo"])  # ppo: tests/reliability/test_bad_inputs.py
def test_unknown_rule_reward(tmp_path, capsys, tiny_chat_model, stage):
    err = run(tmp_path, capsys, stage, {"model_name_or_path": str(tiny_chat_model), "rewards": ["exact_mach"]})
    assert "unknown reward 'exact_mach'" in err and "exact_match" in err


def test_dataset_without_prompts(tmp_path, capsys, tiny_chat_model):
    data = tmp_path / "texts.jsonl"
    data.write_text(json.dumps({"text": "just some text"}) + "\n")
    err = run(tmp_path, capsys, "ppo", {"model_name_or_path": str(tiny_chat_model), "datasets": [{"path": str(data)}]})
    assert "texts.jsonl" in err and "prompt" in err


def test_no_datasets(tmp_path, capsys, tiny_chat_model):
    err = run(tmp_path, capsys, "ppo", {"model_name_or_path": str(tiny_chat_model), "datasets": []})
    assert "no prompt sources" in err


def test_indivisible_batch(tmp_path, capsys, tiny_chat_model):
    err = run(
        tmp_path,
        capsys,
        "ppo",
        {"model_name_or_path": str(tiny_chat_model), "rollout_batch_size": 30, "num_mini_batches": 4},
    )
    assert "divisible" in err
