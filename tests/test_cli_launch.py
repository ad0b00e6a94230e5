"""`posttrain <stage>`: one stage table behind the CLI; training stages start under `accelerate launch` after their
config has been checked in the calling process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from posttrain import cli
from posttrain.stages import STAGES, get

from tiny import write_sft_config


def test_usage_lists_every_stage_of_the_table(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, stage in STAGES.items():
        assert f"  {name} " in out and stage.summary in out
    assert get("eval") is STAGES["evaluate"]


def test_launch_command_runs_the_stage_module_under_accelerate(tmp_path):
    config = tmp_path / "accelerate.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\n")
    command = cli.launch_command("sft", ["--config", "x.yaml"], str(config))
    assert command[:3] == [sys.executable, "-m", "posttrain.launcher"]
    assert command[3:5] == ["--config_file", str(config)]
    assert command[5:] == ["-m", "posttrain.stages", "sft", "--config", "x.yaml"]


def test_a_bad_config_is_refused_before_accelerate_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(cli.LAUNCHER_ENV, raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("accelerate was started"))
    config = tmp_path / "run.yaml"
    config.write_text("lora_r: 0\n")
    with pytest.raises(SystemExit) as info:
        cli.main(["sft", "--config", str(config)])
    assert info.value.code == 2 and "lora_r must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sft", "--config", str(config), "--accelerate_config", str(tmp_path / "missing.yaml")])
    assert "--accelerate_config: file not found" in capsys.readouterr().err


def test_posttrain_sft_trains_under_accelerate(tmp_path, tiny_base_model, monkeypatch):
    monkeypatch.delenv(cli.LAUNCHER_ENV, raising=False)
    launched = []
    real_run = subprocess.run

    def run(command, **kwargs):
        launched.append(command)
        return real_run(command, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    config = write_sft_config(tmp_path, tiny_base_model, max_steps=2, load_in_4bit=False)
    assert cli.main(["sft", "--config", str(config)]) == 0
    assert launched and launched[0][1:3] == ["-m", "posttrain.launcher"]
    manifest = json.loads((tmp_path / "out" / "run_manifest.json").read_text())
    assert len(manifest["loss_curve"]) == 2


def test_a_stage_error_after_launch_exits_2_with_one_line_and_no_traceback(tmp_path, tiny_base_model):
    """An input refused inside the launched stage (here: a fast path asked for by name that cannot run on padded
    batches) is one ``posttrain: error:`` line and exit status 2 through the real command, as in-process."""
    config = write_sft_config(tmp_path, tiny_base_model, max_steps=1, load_in_4bit=False, packing=False,
                              fast_paths="varlen_attention")  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != cli.LAUNCHER_ENV}
    proc = subprocess.run([sys.executable, "-m", "posttrain.cli", "sft", "--config", str(config)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "posttrain: error: fast_paths: varlen_attention was asked for but cannot run" in proc.stderr
    assert "Traceback" not in proc.stderr
