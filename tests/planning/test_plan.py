"""``posttrain plan``: bad inputs are one-line errors naming the file/key (exit status 2), and the largest term and
its advice follow the config (gradient checkpointing shrinks the activations, 4-bit the weights)."""

from __future__ import annotations

import json

import pytest

from posttrain.errors import UserError
from posttrain.planning.estimate import STAGE_KINDS
from posttrain.planning.model_shape import ShapeError, read_shape
from posttrain.stages import plan as plan_command

from tiny import write_stage_config

PROMPTS = [{"path": "builtin:arithmetic", "num_samples": 8}]


def run_main(argv):
    from posttrain.errors import exit_on_user_error

    with exit_on_user_error():
        return plan_command.main(plan_command.make_parser().parse_args(argv))


def fake_model(folder, **overrides):
    """A config.json only (no weights): the plan never loads any."""
    config = {
        "model_type": "llama", "vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632,
        "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 4, "tie_word_embeddings": False,
    }  # fmt: skip
    config.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return folder


def test_shape_from_config_and_adapter_folder(tmp_path):
    base = fake_model(tmp_path / "base")
    shape = read_shape(str(base))
    assert (shape.num_layers, shape.hidden_size, shape.num_kv_heads, shape.head_dim) == (16, 2048, 4, 128)
    # embeddings + head + 16 x (q,o 2048^2; k,v 2048x512; 3 MLP 2048x5632) + norms
    assert shape.params == 2 * 32000 * 2048 + 16 * (2 * 2048**2 + 2 * 2048 * 512 + 3 * 2048 * 5632) + 33 * 2048
    adapter = tmp_path / "sft"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    assert read_shape(str(adapter)) == shape  # an adapter folder plans as its base


def test_shape_of_embedded_alias_without_materializing(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path))
    shape = read_shape("smollm2-135m-instruct")
    assert shape.source == "embedded:smollm2-135m-instruct" and 130e6 < shape.params < 140e6
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    "overrides, key",
    [({"hidden_size": None}, "hidden_size"), ({"num_hidden_layers": "four"}, "num_hidden_layers")],
)
def test_unknown_architecture_fields_name_file_and_key(tmp_path, overrides, key, capsys):
    model = fake_model(tmp_path / "odd", **overrides)
    with pytest.raises(ShapeError, match=f"config.json: key '{key}'"):
        read_shape(str(model))
    config = write_stage_config(tmp_path, "sft", {"model_name_or_path": str(model), "datasets": PROMPTS})
    with pytest.raises(SystemExit) as exit_info:
        run_main(["--config", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"key '{key}'" in err and str(model / "config.json") in err


def test_bad_inputs_are_user_errors(tmp_path, capsys):
    empty = tmp_path / "nomodel"
    empty.mkdir()
    with pytest.raises(ShapeError, match="nomodel/config.json: not found"):
        read_shape(str(empty))
    with pytest.raises(ShapeError, match="does not download"):
        read_shape("someone/some-model")
    # a config key no stage parser knows: the stage's own parser refuses it, naming the key and file
    bad = write_stage_config(tmp_path, "dpo", {"model_name_or_path": str(fake_model(tmp_path / "m")), "lora_rank": 4})
    with pytest.raises(SystemExit) as exit_info:
        run_main(["--config", str(bad)])
    assert exit_info.value.code == 2 and "unknown config key 'lora_rank'" in capsys.readouterr().err
    # a file name that does not say its stage, without --stage
    unnamed = tmp_path / "mine.yaml"
    unnamed.write_text(bad.read_text())
    with pytest.raises(UserError, match="give --stage"):
        plan_command.make_plan(unnamed)
    with pytest.raises(UserError, match="config file not found"):
        plan_command.make_plan(tmp_path / "missing.yaml", "sft")


def plan_for(tmp_path, stage, **settings):
    model = fake_model(tmp_path / "model")
    base = {"model_name_or_path": str(model), "datasets": PROMPTS, "per_device_train_batch_size": 8}
    if STAGE_KINDS[stage] in ("sft", "reward", "pairs"):
        base["max_length"] = 1024
    if stage in ("ppo", "grpo", "rloo"):
        base["rewards"] = ["has_number"]
    if stage in ("grpo", "rloo"):
        base["num_generations"] = 4
    config = write_stage_config(tmp_path, f"{stage}-{len(list(tmp_path.iterdir()))}", {**base, **settings})
    return plan_command.make_plan(config, stage, overhead=False, memory_gb=1000)


def term(plan, name):
    return next(t for t in plan.terms if t.name == name)


def test_largest_term_and_advice_follow_the_config(tmp_path):
    plain = plan_for(tmp_path, "sft", load_in_4bit=False, gradient_checkpointing=False, fast_paths="none")
    assert plain.largest.name == "activations"
    assert plain.largest.advice[0] == "gradient_checkpointing: true"
    checkpointed = plan_for(tmp_path, "sft", load_in_4bit=False, gradient_checkpointing=True, fast_paths="none")
    assert term(checkpointed, "activations").bytes < term(plain, "activations").bytes / 3
    assert "gradient_checkpointing: true" not in term(checkpointed, "activations").advice
    assert term(checkpointed, "weights").bytes == term(plain, "weights").bytes
    # with activations checkpointed and a small batch the full-precision weights are largest: 4-bit is the advice
    small = plan_for(
        tmp_path, "sft", load_in_4bit=False, gradient_checkpointing=True, per_device_train_batch_size=1, max_length=256
    )
    assert small.largest.name == "weights" and small.largest.advice[0] == "load_in_4bit: true"
    four_bit = plan_for(tmp_path, "sft", load_in_4bit=True, gradient_checkpointing=True, fast_paths="none")
    assert term(four_bit, "weights").bytes < term(checkpointed, "weights").bytes / 2  # embeddings and head stay 16-bit
    # halving the batch halves the activations and the logits
    half = plan_for(
        tmp_path,
        "sft",
        load_in_4bit=False,
        gradient_checkpointing=False,
        fast_paths="none",
        per_device_train_batch_size=4,
    )
    assert term(half, "activations").bytes == pytest.approx(term(plain, "activations").bytes / 2)
    assert term(half, "logits").bytes == pytest.approx(term(plain, "logits").bytes / 2)
    # posttrain's compact_lm_head scores the labelled positions only
    compact = plan_for(tmp_path, "sft", load_in_4bit=False, fast_paths="compact_lm_head")
    assert term(compact, "logits").bytes < term(plain, "logits").bytes


@pytest.mark.parametrize("stage", plan_command.trainable())
def test_every_training_stage_plans(tmp_path, stage):
    plan = plan_for(tmp_path, stage)
    assert plan.estimated_bytes > term(plan, "weights").bytes > 0 and plan.step_seconds > 0
    if stage in ("ppo", "grpo", "rloo"):
        assert term(plan, "generation").bytes > 0
    if stage == "reward":
        assert term(plan, "logits").bytes == 0


def test_does_not_fit_is_said_clearly(tmp_path, capsys):
    model = fake_model(tmp_path / "model")
    config = write_stage_config(
        tmp_path, "sft", {"model_name_or_path": str(model), "datasets": PROMPTS, "load_in_4bit": False}
    )
    run_main(["--config", str(config), "--device-memory-gb", "1"])
    out = capsys.readouterr().out
    assert "WILL NOT FIT" in out and "--device-memory-gb" in out and "largest term:" in out
    run_main(["--config", str(config), "--memory-gb", "10000"])
    out = capsys.readouterr().out
    assert "fits:" in out and "time per optimizer step" in out
    # a config naming an earlier stage's output that does not exist yet plans with --model (its base)
    later = write_stage_config(
        tmp_path, "dpo", {"model_name_or_path": str(tmp_path / "sft-out"), "datasets": PROMPTS, "beta": 0.1}
    )
    with pytest.raises(ShapeError, match="--model BASE"):
        plan_command.make_plan(later, overhead=False)
    plan = plan_command.make_plan(later, model=str(model), overhead=False)
    assert plan.shape.source == str(model / "config.json")


def test_pipeline_plans_each_training_stage_from_the_models_upstream(tmp_path):
    from posttrain.pipeline.config import load_pipeline

    model = fake_model(tmp_path / "base")
    sft = write_stage_config(tmp_path, "sft", {"model_name_or_path": str(model), "datasets": PROMPTS})
    dpo = write_stage_config(
        tmp_path, "dpo", {"model_name_or_path": str(tmp_path / "sft"), "datasets": PROMPTS, "beta": 0.1}
    )
    (tmp_path / "pipeline.yaml").write_text(
        json.dumps(
            {
                "output_dir": str(tmp_path / "out"),
                "stages": [
                    {"name": "sft", "config": str(sft)},
                    {"name": "dpo", "config": str(dpo), "overrides": {"per_device_train_batch_size": 2}},
                ],
            }
        )
    )
    plans = plan_command.plan_pipeline(load_pipeline(tmp_path / "pipeline.yaml"), memory_gb=1000)
    assert [p.stage for p in plans] == ["sft", "dpo"]
    assert plans[1].shape == plans[0].shape  # the SFT output (not written yet) planned as its base
    assert "4096 tokens" in term(plans[1], "activations").formula  # the override: 2 pairs x 2 x max_length 1024


def test_shipped_pipeline_plan_runs_nothing_and_plans_every_training_stage(capsys):
    """`posttrain pipeline --plan` on the shipped pipeline: each training stage planned (PPO's reward model is the
    reward stage's output, not written yet: planned as the model that stage trains), nothing run."""
    from pathlib import Path

    from posttrain.stages import run_stage

    config = Path(__file__).resolve().parents[2] / "recipes/configs/smollm2-135m/pipeline.yaml"
    assert run_stage("pipeline", ["--config", str(config), "--plan"]) == 0
    out = capsys.readouterr().out
    for stage in ("sft", "reward", "dpo", "ppo"):
        assert f"plan: {stage} on smollm2-135m-instruct" in out, stage
    assert "reward model outputs/smollm2-135m/reward" in out and "largest term:" in out
