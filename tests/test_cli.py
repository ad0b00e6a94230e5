"""Bad input through the CLI: one clear error naming the culprit, exit status 2, no output directory."""

import json

import pytest

from posttrain.cli import main


def run(tmp_path, capsys, settings, *extra):
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"output_dir": str(tmp_path / "out"), **settings}))
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--config", str(config), *extra])
    assert exit_info.value.code == 2
    assert not (tmp_path / "out").exists(), "a failed run must not leave an output directory"
    err = capsys.readouterr().err
    assert err.startswith("posttrain: error: ") and "Traceback" not in err
    return err


def good_data(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    return str(path)


def test_unknown_config_key(tmp_path, capsys, tiny_chat_model):
    err = run(tmp_path, capsys, {"model_name_or_path": str(tiny_chat_model), "lerning_rate": 0.1})
    assert "unknown config key 'lerning_rate'" in err and "learning_rate" in err


def test_malformed_jsonl_line(tmp_path, capsys, tiny_chat_model):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) + "\n{not json\n")
    err = run(tmp_path, capsys, {"model_name_or_path": str(tiny_chat_model), "datasets": [{"path": str(data)}]})
    assert "bad.jsonl" in err and "line 2" in err


def test_missing_data_file(tmp_path, capsys, tiny_chat_model):
    err = run(tmp_path, capsys, {"model_name_or_path": str(tiny_chat_model), "datasets": [{"path": str(tmp_path / "nope.jsonl")}]})
    assert "nope.jsonl" in err


def test_unsupported_format(tmp_path, capsys, tiny_chat_model):
    data = tmp_path / "data.txt"
    data.write_text("hello\n")
    err = run(tmp_path, capsys, {"model_name_or_path": str(tiny_chat_model), "datasets": [{"path": str(data)}]})
    assert "data.txt" in err and ".jsonl" in err


def test_conversation_ending_on_user_turn(tmp_path, capsys, tiny_chat_model):
    data = tmp_path / "d.jsonl"
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = run(tmp_path, capsys, {"model_name_or_path": str(tiny_chat_model), "datasets": [{"path": str(data)}]})
    assert "d.jsonl line 2" in err and "user" in err


def test_missing_model_path(tmp_path, capsys):
    err = run(tmp_path, capsys, {"model_name_or_path": str(tmp_path / "no-model"), "datasets": [{"path": good_data(tmp_path)}]})
    assert "no-model" in err and "does not exist" in err


def test_unknown_chat_template(tmp_path, capsys, tiny_base_model):
    err = run(tmp_path, capsys, {"model_name_or_path": str(tiny_base_model), "datasets": [{"path": good_data(tmp_path)}],
                                 "chat_template": "klingon"})
    assert "klingon" in err and "chatml" in err


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
