"""Both training precisions on every machine: every stage runs in 4-bit QLoRA under ``POSTTRAIN_PRECISION=bf16`` and
``=fp32`` (a CPU without AVX512-BF16 trains in fp32, one with it in bf16), the trainable weights live in the compute
dtype, and the switch and the ``bf16`` key behave as documented."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from posttrain import precision as precision_module
from posttrain.configs import parse_args
from posttrain.errors import ConfigError
from posttrain.stages import STAGES, run_stage

from tiny import write_sft_config, write_stage_config

PAIRS = [{"path": "builtin:unknown_entity", "num_samples": 16}, {"path": "builtin:decimal_compare", "num_samples": 16}]
PROMPTS = [{"path": "builtin:arithmetic", "num_samples": 24}]
RL = {"datasets": PROMPTS, "test_split_size": 4, "max_steps": 2, "learning_rate": 3e-3}
GRPO = {
    **RL,
    "rewards": ["has_number", "task"],
    "per_device_train_batch_size": 4,
    "num_generations": 2,
    "max_completion_length": 8,
    "beta": 0.05,
}


def parser_for(stage):

    from posttrain.stages import STAGES

    return STAGES[stage].load().make_parser()


def expected_dtype(name: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


def assert_trained_in(trainer, dtype, *, trainable_dtype=None) -> None:
    """4-bit base computing in ``dtype``; every trainable weight in ``trainable_dtype`` (default: ``dtype``)."""
    import bitsandbytes as bnb

    model = getattr(trainer, "unwrapped", None) or trainer.model
    linear4bit = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4bit, "QLoRA: the base model must be loaded in 4-bit"
    assert {m.compute_dtype for m in linear4bit} == {dtype}
    trainable = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and set(trainable.values()) == {trainable_dtype or dtype}, trainable


def assert_adapter_changed(folder) -> None:
    weights = load_file(folder / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero: nonzero means trained


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_chat_model, precision):
    """SFT -> reward model -> DPO, each in 4-bit under ``precision``; (folder, {stage: trainer})."""
    tmp = tmp_path_factory.mktemp(f"chain-{precision}")
    trainers = {
        "sft": run_stage(
            "sft", ["--config", str(write_sft_config(tmp, tiny_chat_model, max_steps=4, output_dir=str(tmp / "sft")))]
        )
    }
    trainers["reward"], _ = run_stage(
        "reward",
        [
            "--config",
            str(
                write_stage_config(
                    tmp,
                    "reward",
                    {
                        "model_name_or_path": str(tiny_chat_model),
                        "datasets": PAIRS,
                        "max_steps": 3,
                        "per_device_train_batch_size": 8,
                        "learning_rate": 1e-2,
                        "max_length": 128,
                        "overlong_samples": "drop",  # some built-in pairs are longer with the tiny tokenizer
                    },
                )
            ),
        ],
    )
    trainers["dpo"], _ = run_stage(
        "dpo",
        [
            "--config",
            str(
                write_stage_config(
                    tmp,
                    "dpo",
                    {
                        "model_name_or_path": str(tmp / "sft"),
                        "datasets": PAIRS,
                        "max_steps": 3,
                        "per_device_train_batch_size": 8,
                        "learning_rate": 5e-3,
                        "max_length": 128,
                        "overlong_samples": "truncate",  # some built-in pairs are longer with the tiny tokenizer
                    },
                )
            ),
        ],
    )
    return tmp, trainers


@pytest.mark.parametrize("stage", ["sft", "reward", "dpo"])
def test_supervised_and_preference_stages_train_in_the_chosen_precision(chain, precision, stage):
    tmp, trainers = chain
    assert trainers[stage].args.bf16 is (precision == "bf16")
    assert_trained_in(trainers[stage], expected_dtype(precision))
    assert_adapter_changed(tmp / stage / "adapter" if stage == "reward" else tmp / stage)
    manifest = json.loads((tmp / stage / "run_manifest.json").read_text())
    assert manifest["hardware"]["precision_switch"] == precision


def test_ppo_trains_from_sft_with_the_reward_model(chain, precision):
    """posttrain's PPO keeps its adapter and value head in fp32 (peft's kbit preparation) in both precisions; the
    4-bit matmuls compute in the chosen dtype and the reward model scores in its own."""
    tmp, _ = chain
    config = write_stage_config(
        tmp,
        "ppo",
        {
            "model_name_or_path": str(tmp / "sft"),
            **RL,
            "rewards": ["task", {"name": "reward_model", "path": str(tmp / "reward")}],
            "rollout_batch_size": 8,
            "num_mini_batches": 1,
            "per_device_train_batch_size": 8,
            "max_completion_length": 8,
            "missing_eos_penalty": None,
        },
    )
    trainer, metrics = run_stage("ppo", ["--config", str(config)])
    assert_trained_in(trainer, expected_dtype(precision), trainable_dtype=torch.float32)
    assert_adapter_changed(tmp / "ppo")
    assert len(trainer.state.log_history) == 2 and "eval_reward_policy" in metrics


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_grpo_and_rloo_train_in_the_chosen_precision(chain, precision, stage):
    tmp, _ = chain
    config = write_stage_config(tmp, stage, {"model_name_or_path": str(tmp / "sft"), **GRPO})
    trainer, metrics = run_stage(stage, ["--config", str(config)])
    assert_trained_in(trainer, expected_dtype(precision))
    assert_adapter_changed(tmp / stage)
    assert "eval_reward_policy" in metrics


def test_merge_pairs_and_evaluate_take_the_chain(chain, precision):
    """The adapter chain trained in either precision merges in fp32 (drift checked by the stage), yields on-policy
    pairs scored by the reward model, and evaluates with ``dtype: auto`` resolving to the chosen precision."""
    from posttrain.evaluation.backends import resolve_dtype

    tmp, _ = chain
    merge = tmp / "merge.yaml"
    merge.write_text(json.dumps({"model_name_or_path": str(tmp / "dpo"), "output_dir": str(tmp / "merged")}))
    report = run_stage("merge", ["--config", str(merge)])
    assert report.max_drift < 1e-3 and len(report.adapters) == 2  # SFT then DPO
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("Who are you?", "What is 2 plus 3?")))
    assert (
        run_stage(
            "pairs",
            [
                "--model",
                str(tmp / "sft"),
                "--prompts",
                str(prompts),
                "--reward_model",
                str(tmp / "reward"),
                "--n",
                "2",
                "--max_new_tokens",
                "6",
                "--require_finished",  # the tiny model's 6-token replies rarely finish
                "false",
                "--output",
                str(tmp / "pairs.jsonl"),
            ],
        )
        == 0
    )
    assert resolve_dtype("auto") == {"bf16": "bfloat16", "fp32": "float32"}[precision]
    evaluate = tmp / "evaluate.yaml"
    evaluate.write_text(
        json.dumps(
            {
                "models": [{"label": "merged", "path": str(tmp / "merged")}],
                "suites": ["builtin"],
                "max_samples": 2,
                "max_new_tokens": 8,
                "output_dir": str(tmp / "eval"),
                "progress": False,
                "bootstrap_samples": 50,
            }
        )
    )
    results = json.loads((run_stage("evaluate", ["--config", str(evaluate)])).read_text())
    assert results["models"][0]["fingerprint"].endswith(f"dtype={resolve_dtype('auto')}")
    assert results["counts"]["generated"] == 2


@pytest.mark.slow
def test_export_of_the_chain(chain, precision):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    tmp, _ = chain
    config = tmp / "export.yaml"
    config.write_text(
        json.dumps(
            {
                "model_name_or_path": str(tmp / "dpo"),
                "output_dir": str(tmp / "export"),
                "gguf_types": ["f16"],
                "threads": 2,
                "verify_prompts": 4,
                "verify_max_new_tokens": 8,
                "serve": False,
                "min_agreement_f16": 0.5,
            }
        )
    )
    report = run_stage("export", ["--config", str(config)])
    assert report["passed"] and (tmp / "export" / "model.f16.gguf").is_file()


# ------------------------------------------------------------------------------------------------ the switch


def write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("value", "bf16"), [("bf16", True), ("fp32", False), ("float32", False), ("BF16", True)])
def test_switch_decides_unset_bf16(tmp_path, monkeypatch, value, bf16):
    monkeypatch.setenv("POSTTRAIN_PRECISION", value)
    for stage in (name for name, spec in STAGES.items() if spec.trains):
        assert parse_args(parser_for(stage), ["--config", write(tmp_path, "output_dir: out\n")])[1].bf16 is bf16


def test_explicit_bf16_key_wins_over_the_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_PRECISION", "bf16")
    assert (
        parse_args(parser_for("sft"), ["--config", write(tmp_path, "output_dir: out\nbf16: false\n")])[1].bf16 is False
    )


def test_auto_follows_the_hardware(tmp_path, monkeypatch):
    monkeypatch.delenv("POSTTRAIN_PRECISION", raising=False)
    for has_bf16 in (True, False):
        monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda value=has_bf16: value)
        assert parse_args(parser_for("sft"), ["--config", write(tmp_path, "output_dir: out\n")])[1].bf16 is has_bf16


def test_unknown_switch_value_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POSTTRAIN_PRECISION", "fp8")
    with pytest.raises(ConfigError, match="POSTTRAIN_PRECISION='fp8': must be one of auto, bf16, fp32"):
        parse_args(parser_for("sft"), ["--config", write(tmp_path, "output_dir: out\n")])
    with pytest.raises(SystemExit) as info:
        run_stage("sft", ["--config", write(tmp_path, f"output_dir: {tmp_path / 'out'}\n")])
    assert info.value.code == 2 and "POSTTRAIN_PRECISION" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("source", ["key", "switch"])
def test_bf16_on_a_cpu_without_it_warns_that_it_is_emulated(tmp_path, monkeypatch, capsys, source):
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(precision_module, "_warned", set())
    if source == "switch":
        monkeypatch.setenv("POSTTRAIN_PRECISION", "bf16")
        text = "output_dir: out\n"
    else:
        monkeypatch.delenv("POSTTRAIN_PRECISION", raising=False)
        text = "output_dir: out\nbf16: true\n"
    assert parse_args(parser_for("sft"), ["--config", write(tmp_path, text)])[1].bf16 is True
    out = capsys.readouterr().out  # posttrain's logger writes to stdout
    assert "posttrain: warning: " in out and "without AVX512-BF16/AMX: bf16 is emulated" in out
    assert ("bf16: true" if source == "key" else "POSTTRAIN_PRECISION=bf16") in out


def test_no_warning_where_bf16_is_native(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(precision_module, "_warned", set())
    parse_args(parser_for("sft"), ["--config", write(tmp_path, "output_dir: out\nbf16: true\n")])
    assert "emulated" not in capsys.readouterr().out


def test_match_trainable_dtype_casts_only_what_trains():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)).to(torch.bfloat16)
    model[0].requires_grad_(False)
    assert precision_module.match_trainable_dtype(model, torch.float32) == 2  # the head's weight and bias
    assert model[1].weight.dtype == torch.float32 and model[0].weight.dtype == torch.bfloat16
    assert precision_module.match_trainable_dtype(model, torch.float32) == 0  # idempotent
