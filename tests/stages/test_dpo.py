"""DPO in 4-bit on CPU from an SFT adapter: the chosen-minus-rejected margin grows; reference = adapter disabled."""

import json

import pytest

from posttrain.stages import run_stage

from tiny import write_sft_config, write_stage_config

PAIRS = [{"path": "builtin:decimal_compare", "num_samples": 32}, {"path": "builtin:unknown_entity", "num_samples": 32}]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, tiny_base_model, precision):
    tmp_path = tmp_path_factory.mktemp("dpo")
    run_stage("sft", ["--config", str(write_sft_config(tmp_path, tiny_base_model, max_steps=4))])
    config = write_stage_config(
        tmp_path,
        "dpo",
        {
            "model_name_or_path": str(tmp_path / "out"),  # the SFT adapter folder
            "datasets": PAIRS,
            "max_steps": 20,
            "per_device_train_batch_size": 8,
            "learning_rate": 5e-3,
            "beta": 0.1,
            "max_length": 128,
            # a third of these pairs are longer than 128 tokens with the tiny byte-level tokenizer
            "overlong_samples": "truncate",
        },
    )
    trainer, metrics = run_stage("dpo", ["--config", str(config)])
    return tmp_path / "dpo", trainer, metrics


def test_margin_increases(dpo_run):
    _, trainer, metrics = dpo_run
    assert any(type(m).__name__ == "Linear4bit" for m in trainer.model.modules())
    assert metrics["margin_policy"] > metrics["margin_reference"] + 1.0, metrics


def test_truncate_trains_no_chosen_reply_cut_before_its_end_of_turn(dpo_run):
    """With overlong_samples: truncate, DPOTrainer cuts prompt + chosen at max_length (keep_start): every chosen
    reply it trains on still holds its <|im_end|> after that cut (the pairs where it would not were dropped)."""
    _, trainer, _ = dpo_run
    end = trainer.processing_class.convert_tokens_to_ids("<|im_end|>")
    rows = trainer.train_dataset
    assert 0 < len(rows) < 64  # some pairs were dropped, the rest trained
    assert any(len(r["prompt_ids"]) + len(r["rejected_ids"]) > 128 for r in rows)  # a rejected side is still cut
    for row in rows:
        assert end in (row["prompt_ids"] + row["chosen_ids"])[:128][len(row["prompt_ids"]) :]


def test_overlong_pairs_stop_dpo_naming_file_and_line(tmp_path, tiny_chat_model, capsys):
    pairs = tmp_path / "pairs.jsonl"
    short = {"prompt": "Which is larger, 9.11 or 9.9?", "chosen": "9.9", "rejected": "9.11"}
    long = {**short, "chosen": "9.9 is larger. " + "The quick brown fox jumps over the lazy dog. " * 8}
    pairs.write_text("".join(json.dumps(row) + "\n" for row in (short, short, long, short)))
    settings = {"model_name_or_path": str(tiny_chat_model), "load_in_4bit": False, "datasets": [{"path": str(pairs)}]}
    config = write_stage_config(tmp_path, "dpo", {**settings, "max_length": 64, "max_steps": 1})
    with pytest.raises(SystemExit) as info:
        run_stage("dpo", ["--config", str(config)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"{pairs} line 3: preference pair longer than max_length 64: prompt + chosen" in err
    assert "1 of 4 train pairs are longer" in err and "overlong_samples: drop" in err
    assert not (tmp_path / "dpo").exists() and not list(tmp_path.glob(".dpo*"))


def test_reference_is_the_policy_with_adapter_disabled(dpo_run):
    _, trainer, _ = dpo_run
    assert trainer.ref_model is None  # no second copy of the model in memory
    assert list(trainer.model.peft_config) == ["default"]  # and no frozen copy of an adapter either


def test_adapter_chain_is_recorded(dpo_run):
    out, _, _ = dpo_run
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert "merged" in adapter["base_model_name_or_path"]  # trained on the merged SFT model
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["base_model"].endswith("out") and manifest["stage"] == "dpo"


def test_dpo_refuses_a_base_model_without_chat_tokens(tmp_path, tiny_base_model):
    config = write_stage_config(tmp_path, "dpo", {"model_name_or_path": str(tiny_base_model), "datasets": PAIRS})
    with pytest.raises(SystemExit):
        run_stage("dpo", ["--config", str(config)])
