"""The pass-rate prompt filter (``prompt_filter_samples``): RL trains only on prompts whose sampled replies score
differently under the rule rewards; bad settings are refused by name."""

import json
from types import SimpleNamespace

import pytest
from test_rl_bad_input import run

from posttrain.errors import ConfigError
from posttrain.models.generation import Completion
from posttrain.rl import difficulty
from posttrain.rl.rewards import build_rewards
from posttrain.stages import run_stage

from helpers import PPO_SETTINGS
from tiny import write_stage_config

MODEL = SimpleNamespace(eval=lambda: None)  # generation is faked: the model is only put in eval mode


def _rows(n):
    return [{"prompt": [{"role": "user", "content": f"q{i}"}], "task": "numeric_match", "answer": "4", "meta": "{}"}
            for i in range(n)]  # fmt: skip


def test_keeps_only_prompts_whose_replies_score_differently(monkeypatch):
    """q0 always solved (in different words: the hackable length reward differs, the rule score does not), q1 mixed,
    q2 never solved; only q1 is kept, and the counts say why."""
    from datasets import Dataset

    replies = {"q0": ["4", "It is 4, surely."], "q1": ["4", "5"], "q2": ["5", "seven"]}

    def fake_generate(model, tokenizer, conversations, *, num_return_sequences, do_sample, **kwargs):
        assert do_sample and num_return_sequences == 2
        return [[Completion(t, [1, 2], True) for t in replies[c[-1]["content"]]] for c in conversations]

    monkeypatch.setattr(difficulty.generation, "generate", fake_generate)
    rewards = build_rewards(["task", {"name": "verbosity", "max_chars": 20, "weight": 5.0}])
    kept, summary = difficulty.filter_prompts(MODEL, None, rewards, Dataset.from_list(_rows(3)), samples=2,
                                              temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)  # fmt: skip
    assert [r["prompt"][-1]["content"] for r in kept] == ["q1"]
    assert summary == {"samples": 2, "prompts": 3, "kept": 1, "solved": 1, "unsolved": 1, "mean_score": 0.5}

    replies.update(q1=["5", "5"])
    with pytest.raises(ConfigError, match="prompt_filter_samples: no training prompt is left: of 3, 1 were always"):
        difficulty.filter_prompts(MODEL, None, rewards, Dataset.from_list(_rows(3)), samples=2, temperature=1.0,
                                  top_p=1.0, max_new_tokens=8, seed=0)  # fmt: skip


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"prompt_filter_samples": 1}, "prompt_filter_samples must be 0 (off) or at least 2"),
        ({"prompt_filter_samples": True}, "prompt_filter_samples must be 0 (off) or at least 2"),
        (
            {"prompt_filter_samples": 4, "rewards": [{"name": "verbosity", "max_chars": 50}]},
            "prompt_filter_samples: the prompt filter scores replies with rule rewards",
        ),
    ],
)
def test_bad_filter_settings_are_refused(tmp_path, capsys, tiny_chat_model, settings, message):
    err = run(tmp_path, capsys, "grpo", {"model_name_or_path": str(tiny_chat_model), **settings})
    assert message in err


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_rl_stage_trains_on_the_filtered_prompts(tmp_path, tiny_chat_model, stage):
    """The tiny random model states a number in some sampled replies and not in others: the stage trains on the mixed
    prompts only, and its manifest says how many were kept."""
    settings = {**PPO_SETTINGS, "max_steps": 1, "prompt_filter_samples": 4, "test_split_size": 0}
    if stage == "grpo":
        settings = {
            key: settings[key]
            for key in (
                "datasets",
                "rewards",
                "load_in_4bit",
                "bf16",
                "max_completion_length",
                "learning_rate",
                "temperature",
                "max_steps",
                "prompt_filter_samples",
            )
        }
        settings.update(per_device_train_batch_size=8, num_generations=4)  # fmt: skip
    config = write_stage_config(tmp_path, stage, {"model_name_or_path": str(tiny_chat_model), **settings})
    trainer, _ = run_stage(stage, ["--config", str(config)])
    manifest = json.loads((tmp_path / stage / "run_manifest.json").read_text())
    metrics = manifest["metrics"]
    kept, total = metrics["prompt_filter_kept"], metrics["prompt_filter_prompts"]
    assert total == 64 and 0 < kept < total, metrics
    assert kept + metrics["prompt_filter_solved"] + metrics["prompt_filter_unsolved"] == total
    assert len(trainer.train_dataset) == kept
    assert f"kept {kept} of 64 prompts" in (tmp_path / stage / "README.md").read_text()


@pytest.mark.parametrize("engine", ["zero3", "fsdp"])
def test_filter_is_refused_where_parameters_are_sharded(monkeypatch, engine):
    """ZeRO-3/FSDP: no process holds the whole model before training, so the stage stops with the key named."""
    from posttrain.training import rl_common

    if engine == "zero3":
        monkeypatch.setattr(rl_common, "sharded_reason", lambda: "DeepSpeed ZeRO-3 shards the parameters")
    else:
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    args = SimpleNamespace(prompt_filter_samples=2, temperature=1.0, top_p=1.0, max_completion_length=8, seed=0)
    with pytest.raises(ConfigError, match="prompt_filter_samples: .* shards the parameters"):
        rl_common.filter_rl_prompts(args, MODEL, None, build_rewards(["task"]), {"train": _rows(2)})
