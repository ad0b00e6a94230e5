"""Config flow: every YAML under recipes/ parses with its recipe's parser; unknown keys are named; overrides win."""

from pathlib import Path

import pytest

from posttrain.configs import DatasetSpec, parse_args
from posttrain.errors import ConfigError
from posttrain.precision import use_bf16
from posttrain.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
# pipeline.yaml files are pipelines, not stage configs (tests/pipeline/test_pipeline.py loads them); a stage config is named
# after its stage, optionally with a suffix: evaluate.yaml, evaluate-served.yaml
RECIPE_CONFIGS = sorted(p for p in (ROOT / "recipes" / "configs").rglob("*.yaml") if p.name != "pipeline.yaml")


def parser_for(stage):
    return STAGES[stage].load().make_parser()


def test_every_recipe_is_generated_from_the_stage_table_and_its_default_config_exists():
    from posttrain.stages import DEFAULT_CONFIGS, recipe_text

    recipes = {p.stem for p in (ROOT / "recipes").glob("*.py")}
    assert recipes == {name for name, stage in STAGES.items() if stage.recipe}
    for name in recipes:
        text = (ROOT / "recipes" / f"{name}.py").read_text()
        assert text == recipe_text(STAGES[name]), (
            f"recipes/{name}.py is stale: python -m posttrain.stages --write-recipes"
        )
        assert (ROOT / "recipes" / DEFAULT_CONFIGS / f"{name}.yaml").is_file(), name


def test_there_are_recipe_configs():
    assert RECIPE_CONFIGS, "no YAML under recipes/configs"


@pytest.mark.parametrize("config", RECIPE_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_yaml_parses_with_its_recipe_parser(config):
    stage = config.stem.split("-")[0]
    assert stage in STAGES, f"{config.name}: no recipe parser for stage '{stage}'"
    assert (ROOT / "recipes" / f"{stage}.py").is_file()
    parsed = parse_args(parser_for(stage), ["--config", str(config)])
    pt_args = parsed[0]
    if STAGES[stage].trains:  # training stages; evaluation takes suites instead
        assert pt_args.datasets and all(isinstance(d, DatasetSpec) for d in pt_args.datasets)


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = write(tmp_path, "model_name_or_path: x\nlora_rank: 8\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown config key 'lora_rank' \(did you mean .*'lora_r'"):
        parse_args(parser_for("sft"), ["--config", path])


def test_unknown_cli_flag_is_named(tmp_path):
    path = write(tmp_path, "output_dir: out\n")
    with pytest.raises(ConfigError, match="unknown command-line arguments.*--no_such_flag"):
        parse_args(parser_for("sft"), ["--config", path, "--no_such_flag", "1"])


def test_cli_overrides_yaml(tmp_path):
    path = write(tmp_path, "output_dir: out\nlearning_rate: 0.001\nlora_r: 4\n")
    pt_args, training_args, model_args = parse_args(
        parser_for("sft"), ["--config", path, "--learning_rate", "0.5", "--lora_r", "2"]
    )
    assert training_args.learning_rate == 0.5 and model_args.lora_r == 2


def test_default_config_used_without_config_flag():
    default = ROOT / "recipes" / "configs" / "smollm2-135m" / "sft.yaml"
    _, training_args, model_args = parse_args(parser_for("sft"), ["--max_steps", "3"], default_config=default)
    assert model_args.model_name_or_path == "smollm2-135m-instruct"
    assert training_args.max_steps == 3


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        parse_args(parser_for("sft"), ["--config", str(tmp_path / "nope.yaml")])


def test_config_that_is_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        parse_args(parser_for("sft"), ["--config", write(tmp_path, "- a\n- b\n")])


def test_precision_follows_hardware_unless_set(tmp_path):
    _, auto, _ = parse_args(parser_for("sft"), ["--config", write(tmp_path, "output_dir: out\n")])
    assert auto.bf16 is use_bf16()
    assert auto.use_cpu is True  # no CUDA on CI
    _, explicit, _ = parse_args(parser_for("sft"), ["--config", write(tmp_path, "output_dir: out\nbf16: false\n")])
    assert explicit.bf16 is False


def test_dataset_entries_become_specs_and_bad_fields_are_named(tmp_path):
    path = write(tmp_path, "output_dir: out\ndatasets:\n  - path: builtin:arithmetic\n    num_samples: 5\n")
    pt_args, *_ = parse_args(parser_for("sft"), ["--config", path])
    assert pt_args.datasets[0].path == "builtin:arithmetic" and pt_args.datasets[0].num_samples == 5
    bad = write(tmp_path, "output_dir: out\ndatasets:\n  - path: x.jsonl\n    nmu_samples: 5\n")
    with pytest.raises(ConfigError, match=r"datasets\[0\].*nmu_samples"):
        parse_args(parser_for("sft"), ["--config", bad])


def test_model_dtype_follows_training_precision(tmp_path):
    import torch

    from posttrain.models.loading import compute_dtype, quantization_config

    _, training_args, model_args = parse_args(
        parser_for("sft"), ["--config", write(tmp_path, "output_dir: out\nload_in_4bit: true\n")]
    )
    assert model_args.dtype == "auto"
    expected = torch.bfloat16 if training_args.bf16 else torch.float32
    assert compute_dtype(training_args) == expected
    assert quantization_config(model_args, compute_dtype(training_args)).bnb_4bit_compute_dtype == expected


def test_beta_zero_turns_grpo_kl_off_but_is_refused_for_dpo(tmp_path):
    path = write(tmp_path, "output_dir: out\nbeta: 0.0\n")
    assert parse_args(parser_for("grpo"), ["--config", path])[1].beta == 0.0
    with pytest.raises(ConfigError, match="beta must be positive"):
        parse_args(parser_for("dpo"), ["--config", path])
