"""TRL's command-line conventions: `--dataset_name` (with `--dataset_config`, `--dataset_train_split`) is a one-source
shorthand for `datasets`, `--datasets` takes paths and JSON/YAML mappings, a source on the command line replaces the
config file's, and both forms at once are refused."""

import json
from pathlib import Path

import pytest

from posttrain.configs import DatasetSpec, parse_args
from posttrain.errors import ConfigError
from posttrain.stages import STAGES

from tiny import CONVERSATIONS

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SFT = ROOT / "recipes" / "configs" / "smollm2-135m" / "sft.yaml"
TRAINING_STAGES = [name for name, stage in STAGES.items() if stage.trains]


def parser_for(stage):
    return STAGES[stage].load().make_parser()


def sources(stage, argv, **kwargs):
    pt_args, *_ = parse_args(parser_for(stage), argv, **kwargs)
    return pt_args


def write(tmp_path, settings, name="run.yaml"):
    path = tmp_path / name
    path.write_text(json.dumps({"output_dir": str(tmp_path / "out"), **settings}))  # JSON is valid YAML
    return str(path)


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_every_training_parser_has_one_set_of_trl_dataset_flags(stage):
    options = [opt for action in parser_for(stage)._actions for opt in action.option_strings]
    for flag in ("--dataset_name", "--dataset_config", "--dataset_train_split", "--datasets"):
        assert options.count(flag) == 1, (stage, flag)


@pytest.mark.parametrize("stage", ["sft", "dpo", "reward"])
def test_dataset_name_is_one_source(stage, tmp_path):
    argv = [
        "--model_name_or_path",
        "M",
        "--output_dir",
        str(tmp_path),
        "--dataset_name",
        "org/data",
        "--dataset_config",
        "subset",
        "--dataset_train_split",
        "train_sft",
    ]
    pt_args = sources(stage, argv)
    assert pt_args.datasets == [DatasetSpec(path="org/data", name="subset", split="train_sft")]
    # folded into `datasets`, which alone says where the data comes from (and re-parses the same)
    assert (pt_args.dataset_name, pt_args.dataset_config, pt_args.dataset_train_split) == (None, None, "train")


def test_dataset_name_defaults_match_trl(tmp_path):
    pt_args = sources("sft", ["--output_dir", str(tmp_path), "--dataset-name", "data/train.jsonl"])
    assert pt_args.datasets == [DatasetSpec(path="data/train.jsonl", name=None, split="train")]


def test_dataset_name_replaces_the_default_configs_sources(tmp_path):
    assert len(sources("sft", [], default_config=DEFAULT_SFT).datasets) > 1  # the built-in tasks and chitchat
    argv = ["--model_name_or_path", "M", "--dataset_name", "org/data", "--output_dir", str(tmp_path)]
    pt_args, training_args, model_args = parse_args(parser_for("sft"), argv, default_config=DEFAULT_SFT)
    assert pt_args.datasets == [DatasetSpec(path="org/data")]
    assert model_args.model_name_or_path == "M"
    assert training_args.max_steps == 40 and pt_args.system_prompt  # the rest of the default config still applies


@pytest.mark.parametrize("stage", ["sft", "dpo", "reward"])
def test_datasets_flag_takes_paths_and_mappings(stage, tmp_path):
    argv = [
        "--output_dir",
        str(tmp_path),
        "--datasets",
        "builtin:identity",
        "data/train.jsonl",
        '{"path": "builtin:identity", "num_samples": 8}',
        "{path: org/data, name: subset, split: test}",
    ]
    assert sources(stage, argv).datasets == [
        DatasetSpec(path="builtin:identity"),
        DatasetSpec(path="data/train.jsonl"),
        DatasetSpec(path="builtin:identity", num_samples=8),
        DatasetSpec(path="org/data", name="subset", split="test"),
    ]


def test_datasets_flag_replaces_the_config_files_dataset_name(tmp_path):
    config = write(tmp_path, {"dataset_name": "org/data", "dataset_config": "subset"})
    pt_args = sources("sft", ["--config", config, "--datasets", "builtin:arithmetic"])
    assert pt_args.datasets == [DatasetSpec(path="builtin:arithmetic")]


def test_yaml_keys(tmp_path):
    config = write(tmp_path, {"dataset_name": "org/data", "dataset_config": "subset", "dataset_train_split": "sft"})
    assert sources("sft", ["--config", config]).datasets == [DatasetSpec(path="org/data", name="subset", split="sft")]
    # a config file's dataset_config can be overridden like any key
    assert sources("sft", ["--config", config, "--dataset_config", "other"]).datasets[0].name == "other"
    # plain strings in the `datasets` list are paths or mappings, as on the command line
    config = write(tmp_path, {"datasets": ["builtin:identity", '{"path": "chitchat", "num_samples": 3}']})
    assert sources("dpo", ["--config", config]).datasets == [
        DatasetSpec(path="builtin:identity"),
        DatasetSpec(path="chitchat", num_samples=3),
    ]


def test_datasets_and_dataset_name_together_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^command line: --datasets and --dataset_name both name"):
        sources("sft", ["--datasets", "builtin:identity", "--dataset_name", "org/data"], default_config=DEFAULT_SFT)
    config = write(tmp_path, {"datasets": [{"path": "builtin:identity"}], "dataset_name": "org/data"})
    with pytest.raises(ConfigError, match=r"run.yaml: 'datasets' and 'dataset_name' both name the training data"):
        sources("dpo", ["--config", config])
    from posttrain.configs import PosttrainArguments

    with pytest.raises(ConfigError, match="'datasets' and 'dataset_name'"):
        PosttrainArguments(datasets=[{"path": "builtin:identity"}], dataset_name="org/data")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('{"path": "x.jsonl", "nmu_samples": 5}', "unknown key 'nmu_samples'"),
        ('{"num_samples": 5}', "needs a 'path'"),
        ('{"path": "x.jsonl", "num_samples": 0}', "num_samples must be a positive integer"),
        ('{"path": "x.jsonl", "format": "csv"}', "unknown format 'csv'"),
        ('{"path": "x.jsonl"', "not a valid JSON/YAML mapping"),
        ('[{"path": "x.jsonl"}]', "one source per value"),
        ("", "non-empty string"),
    ],
)
def test_bad_datasets_value_names_the_flag_and_value(value, problem, tmp_path):
    with pytest.raises(ConfigError) as error:
        sources("sft", ["--datasets", value], default_config=DEFAULT_SFT)
    message = str(error.value)
    assert message.startswith("command line: --datasets: ")
    assert repr(value) in message and problem in message


def test_split_or_config_without_dataset_name_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^command line: dataset_config \('subset'\) applies to dataset_name only"):
        sources("sft", ["--dataset_config", "subset"], default_config=DEFAULT_SFT)
    config = write(tmp_path, {"datasets": [{"path": "builtin:identity"}], "dataset_train_split": "test"})
    with pytest.raises(ConfigError, match=r"run.yaml: dataset_train_split .*set 'split' on the entry"):
        sources("sft", ["--config", config])


def test_sft_runs_from_trl_style_flags_alone(tmp_path, tiny_chat_model):
    from posttrain.manifest import read_manifest
    from posttrain.stages import run_stage

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVERSATIONS * 2))
    out = tmp_path / "out"
    run_stage(
        "sft",
        [
            "--model_name_or_path",
            str(tiny_chat_model),
            "--dataset_name",
            str(data),
            "--output_dir",
            str(out),
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "2",
            "--max_length",
            "128",
            "--logging_steps",
            "1",
            "--save_strategy",
            "no",
            "--report_to",
            "none",
            "--gradient_checkpointing",
            "false",
            "--seed",
            "0",
            "--show_example",
            "false",
        ],
    )
    assert (out / "run_manifest.json").is_file()
    manifest = read_manifest(out)
    assert manifest["stage"] == "sft"
    assert [s["path"] for s in manifest["config"]["PosttrainArguments"]["datasets"]] == [str(data)]
    (source,) = manifest["data_fingerprint"]["sources"]
    assert source["path"] == str(data) and source["kind"] == "local"
    assert manifest["data_fingerprint"]["splits"]["train"]["rows"] == len(CONVERSATIONS) * 2
