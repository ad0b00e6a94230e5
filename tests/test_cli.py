"""Bad input through the CLI: one clear error naming the culprit, exit status 2, no output directory (more cases in
tests/reliability/test_bad_inputs.py, the battery behind docs/bad-inputs.md)."""

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
    path.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n"
    )
    return str(path)


def test_malformed_jsonl_line(tmp_path, capsys, tiny_chat_model):
    data = tmp_path / "bad.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
        + "\n{not json\n"
    )
    err = run(tmp_path, capsys, {"model_name_or_path": str(tiny_chat_model), "datasets": [{"path": str(data)}]})
    assert "bad.jsonl" in err and "line 2" in err


def test_conversation_ending_on_user_turn(tmp_path, capsys, tiny_chat_model):
    data = tmp_path / "d.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
            ]
        },
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = run(tmp_path, capsys, {"model_name_or_path": str(tiny_chat_model), "datasets": [{"path": str(data)}]})
    assert "d.jsonl line 2" in err and "user" in err


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
