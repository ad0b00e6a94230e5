"""KTO, ORPO and SimPO (posttrain.stages.kto/orpo/simpo) in 4-bit on CPU from an SFT adapter, one parametrized test
per behaviour: the held-out margin moves the right way, the run folder and manifest, and the data each method
refuses (pairs given to KTO without kto_from_pairs, unpaired rows given to the pair methods)."""

import json

import pytest

from posttrain.stages import run_stage

from tiny import write_sft_config, write_stage_config

METHODS = ("kto", "orpo", "simpo")
PAIRS = [{"path": "builtin:decimal_compare", "num_samples": 32}, {"path": "builtin:unknown_entity", "num_samples": 32}]
#: per method: what makes a few tiny steps move it (the stage defaults are for the embedded model)
SETTINGS = {
    "kto": {"kto_from_pairs": True, "beta": 0.1},
    "orpo": {"beta": 0.1},
    "simpo": {"beta": 2.0, "simpo_gamma": 0.5},
}


@pytest.fixture(scope="module")
def sft_out(tmp_path_factory, tiny_base_model, precision):
    tmp_path = tmp_path_factory.mktemp("sft")
    run_stage("sft", ["--config", str(write_sft_config(tmp_path, tiny_base_model, max_steps=4))])
    return tmp_path / "out"


@pytest.fixture(scope="module", params=METHODS)
def method_run(request, tmp_path_factory, sft_out):
    name = request.param
    tmp_path = tmp_path_factory.mktemp(name)
    config = write_stage_config(
        tmp_path,
        name,
        {
            "model_name_or_path": str(sft_out),
            "datasets": PAIRS,
            "test_split_size": 16,  # held-out pairs from the tasks' validation pools: the margin is measured there
            "max_steps": 20,
            "per_device_train_batch_size": 8,
            "learning_rate": 5e-3,
            "max_length": 128,
            "overlong_samples": "truncate",
            **SETTINGS[name],
        },
    )
    trainer, metrics = run_stage(name, ["--config", str(config)])
    return name, tmp_path / name, trainer, metrics


def test_heldout_margin_moves_the_right_way(method_run):
    """chosen - rejected log p (KTO: desirable - undesirable mean log p) on held-out rows, start model -> trained."""
    name, _, trainer, metrics = method_run
    assert any(type(m).__name__ == "Linear4bit" for m in trainer.model.modules())
    assert metrics["margin_split"] == "test" and metrics["margin_rows"] >= 8, metrics
    assert metrics["margin_policy"] > metrics["margin_reference"] + 1.0, (name, metrics)


def test_run_folder_adapter_chain_and_manifest(method_run):
    name, out, trainer, _ = method_run
    assert list(trainer.model.peft_config) == ["default"]  # one new adapter, no frozen copy
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert "merged" in adapter["base_model_name_or_path"]  # trained on the merged SFT model
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["stage"] == name and manifest["base_model"].endswith("out")
    assert [c["output_dir"] for c in manifest["config"].values() if "output_dir" in c] == [str(out)]
    assert not list(out.parent.glob(f".{name}*.partial"))


UNPAIRED = [
    {"prompt": "Which is larger, 9.11 or 9.9?", "completion": "9.9 is larger.", "label": True},
    {"prompt": "Which is larger, 9.11 or 9.9?", "completion": "9.11 is larger.", "label": False},
]
PAIR = {"prompt": "Which is larger, 9.11 or 9.9?", "chosen": "9.9 is larger.", "rejected": "9.11 is larger."}


@pytest.mark.parametrize(
    ("name", "rows", "settings", "expected"),
    [
        (
            "kto",
            [PAIR, PAIR],
            {},
            "has preference pairs ('chosen' + 'rejected'), not unpaired rows: set kto_from_pairs: true",
        ),
        (
            "kto",
            [*UNPAIRED, {**UNPAIRED[0], "label": "yes"}],
            {},
            "line 3: label must be true (desirable) or false (undesirable), got str 'yes'",
        ),
        (
            "kto",
            UNPAIRED,
            {"kto_from_pairs": True},
            "missing column(s) 'chosen', 'rejected' for preference pairs (these are unpaired rows",
        ),
        ("orpo", UNPAIRED, {}, "missing column(s) 'chosen', 'rejected' for preference pairs (these are unpaired rows"),
        ("simpo", UNPAIRED, {}, "missing column(s) 'chosen', 'rejected' for preference pairs (these are unpaired rows"),
        ("dpo", UNPAIRED, {}, "missing column(s) 'chosen', 'rejected' for preference pairs (these are unpaired rows"),
    ],
)
def test_wrong_data_shape_stops_naming_file_and_key(tmp_path, tiny_chat_model, capsys, name, rows, settings, expected):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = write_stage_config(
        tmp_path,
        name,
        {"model_name_or_path": str(tiny_chat_model), "datasets": [{"path": str(data)}], "max_steps": 1, **settings},
    )
    with pytest.raises(SystemExit) as info:
        run_stage(name, ["--config", str(config)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert str(data) in err and expected in err, err
    assert not (tmp_path / name).exists() and not list(tmp_path.glob(f".{name}*"))


@pytest.mark.parametrize(
    ("name", "settings", "expected"),
    [
        ("simpo", {"loss_type": "sigmoid"}, "loss_type"),
        ("simpo", {"cpo_alpha": 1.0}, "cpo_alpha must be 0"),
        ("kto", {"beta": 0}, "beta must be positive"),
        ("orpo", {"beta": 0}, "beta must be positive"),
    ],
)
def test_config_values_each_method_refuses(tmp_path, tiny_chat_model, capsys, name, settings, expected):
    config = write_stage_config(
        tmp_path, name, {"model_name_or_path": str(tiny_chat_model), "datasets": PAIRS, **settings}
    )
    with pytest.raises(SystemExit) as info:
        run_stage(name, ["--config", str(config)])
    assert info.value.code == 2 and expected in capsys.readouterr().err


@pytest.mark.parametrize("name", METHODS)
def test_fast_paths_keep_the_per_step_losses(tmp_path, tiny_chat_model, monkeypatch, name):
    """fast_paths auto (on a CPU: fused_lora for all three, compact_lm_head for KTO's fused LM head) trains exactly
    what fast_paths none trains: the same per-step losses, in fp32 where fused_lora runs."""
    monkeypatch.setenv("POSTTRAIN_PRECISION", "fp32")
    losses = {}
    for fast in ("none", "auto"):
        settings = {"model_name_or_path": str(tiny_chat_model), "load_in_4bit": False, "datasets": PAIRS[:1]}
        settings |= {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 5e-3, "max_length": 256}
        settings |= {"overlong_samples": "truncate", "fast_paths": fast, **SETTINGS[name]}
        (tmp_path / fast).mkdir()
        config = write_stage_config(tmp_path / fast, name, settings)
        trainer, _ = run_stage(name, ["--config", str(config)])
        losses[fast] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses["auto"]) == 2 and losses["auto"] == pytest.approx(losses["none"], rel=1e-6), losses
