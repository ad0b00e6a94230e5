"""Safe by default: no remote code, safetensors only, endpoints on localhost unless configured, and API keys that
are used but never written anywhere."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from posttrain.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "evaluation"))
from fake_chat_server import FakeChatServer

EVIL = """from pathlib import Path
Path(__file__).with_name("EXECUTED").write_text("remote code ran")
"""


def test_a_model_folders_own_code_is_never_imported(tmp_path, tiny_chat_model):
    model = tmp_path / "model-with-code"
    shutil.copytree(tiny_chat_model, model)
    (model / "modeling_evil.py").write_text(EVIL)
    (model / "configuration_evil.py").write_text(EVIL)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
    }
    (model / "config.json").write_text(json.dumps(config))
    run = tmp_path / "run.yaml"
    run.write_text(
        json.dumps(
            {
                "model_name_or_path": str(model),
                "datasets": [{"path": "builtin:identity", "num_samples": 4}],
                "output_dir": str(tmp_path / "out"),
                "max_steps": 1,
                "per_device_train_batch_size": 2,
                "load_in_4bit": False,
                "use_peft": True,
                "lora_r": 4,
                "report_to": "none",
                "save_strategy": "no",
                "max_length": 256,
            }
        )
    )
    assert main(["sft", "--config", str(run)]) == 0
    assert (tmp_path / "out" / "run_manifest.json").is_file()
    assert not (model / "EXECUTED").exists(), "the model folder's Python code was imported"
    manifest = json.loads((tmp_path / "out" / "run_manifest.json").read_text())
    assert manifest["config"]["SFTConfig"]["trust_remote_code"] is False


def test_every_stage_defaults_trust_remote_code_off():
    import dataclasses

    from posttrain.stages import STAGES

    checked = 0
    for stage, spec in STAGES.items():
        parser = spec.load().make_parser()
        for config_class in getattr(parser, "dataclass_types", ()):
            for f in dataclasses.fields(config_class):
                if f.name == "trust_remote_code":
                    assert f.default is False, (stage, config_class.__name__)
                    checked += 1
    assert checked >= 6  # every training stage's config has the switch


def test_pickle_weights_load_only_when_allowed(tmp_path, tiny_chat_model, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from posttrain.models.resolve import resolve_model
    from posttrain.models.weights import WeightsError

    model = tmp_path / "pickled"
    shutil.copytree(tiny_chat_model, model, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(Path(tiny_chat_model) / "model.safetensors"), model / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="pytorch_model.bin"):
        resolve_model(str(model))
    monkeypatch.setenv("POSTTRAIN_ALLOW_PICKLE", "1")
    assert resolve_model(str(model)) == str(model)


def test_endpoints_default_to_localhost():
    from posttrain.evaluation.backends import OpenAIBackend

    assert OpenAIBackend(model="m").base_url.startswith("http://localhost:")


def test_api_keys_are_sent_but_never_written(tmp_path, capsys, caplog, monkeypatch):
    secret = "sk-posttrain-test-0123456789abcdef"
    monkeypatch.setenv("POSTTRAIN_TEST_KEY", secret)
    server = FakeChatServer()
    server.reply = lambda messages: "[[7]]" if "judge" in messages[0]["content"] else "Paris."
    try:
        suite = tmp_path / "suite.yaml"
        suite.write_text(
            "name: s\ndata:\n  - samples:\n      - {id: q1, prompt: 'Capital of France?', reference: Paris}"
            "\nscoring: [judge, stopped]\n"
        )
        config = tmp_path / "eval.yaml"
        config.write_text(
            json.dumps(
                {
                    "models": [
                        {"label": "m", "model": "m", "endpoint": server.url, "api_key_env": "POSTTRAIN_TEST_KEY"}
                    ],
                    "judge": {"model": "judge", "endpoint": server.url, "api_key_env": "POSTTRAIN_TEST_KEY"},
                    "suites": [str(suite)],
                    "output_dir": str(tmp_path / "eval"),
                    "progress": False,
                    "bootstrap_samples": 50,
                }
            )
        )
        assert main(["eval", "--config", str(config)]) == 0
    finally:
        server.close()
    assert server.requests and all(r["headers"].get("Authorization") == f"Bearer {secret}" for r in server.requests)
    written = [p for p in (tmp_path / "eval").rglob("*") if p.is_file()]
    assert any(p.name == "run_manifest.json" for p in written) and any(p.name == "report.html" for p in written)
    for path in written:
        assert secret not in path.read_text(errors="replace"), path
    out = capsys.readouterr()
    assert secret not in out.out + out.err + caplog.text
