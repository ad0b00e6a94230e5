import json

from posttrain.manifest import read_manifest, redact, write_manifest


def test_secrets_are_redacted_but_token_settings_are_not():
    config = {
        "hub_token": "hf_abc",
        "api_key": "sk-1",
        "nested": {"OPENAI_API_KEY": "sk-2", "password": "x"},
        "pad_token": "<pad>",
        "eos_token": "<|im_end|>",
        "new_special_tokens": ["<|im_end|>"],
        "token": None,
    }
    out = redact(config)
    assert out["hub_token"] == out["api_key"] == out["nested"]["OPENAI_API_KEY"] == out["nested"]["password"]
    assert out["hub_token"] == "<redacted>"
    assert out["pad_token"] == "<pad>" and out["eos_token"] == "<|im_end|>"
    assert out["new_special_tokens"] == ["<|im_end|>"] and out["token"] is None


def test_manifest_round_trips_without_secrets(tmp_path):
    from posttrain.configs import ModelConfig

    write_manifest(
        tmp_path,
        stage="sft",
        configs=(ModelConfig(model_name_or_path="m"),),
        seed=3,
        extra={"hub_token": "hf_secret_value"},
    )
    text = (tmp_path / "run_manifest.json").read_text()
    assert "hf_secret_value" not in text
    manifest = read_manifest(tmp_path)
    assert manifest["seed"] == 3 and manifest["config"]["ModelConfig"]["model_name_or_path"] == "m"
    assert set(manifest["libraries"]) >= {"torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate"}
    assert json.loads(text) == manifest and not list(tmp_path.glob("*.tmp"))


def test_manifest_is_strict_json_with_null_for_numbers_that_do_not_exist(tmp_path):
    # a PPO run with only rule rewards has no proxy reward: the guard's curves hold NaN for it
    nan, inf = float("nan"), float("inf")
    curves = [{"step": 1, "proxy": nan, "rule": 0.5, "kl": inf}, {"step": 2, "proxy": nan, "rule": 0.75, "kl": 0.1}]
    write_manifest(
        tmp_path, stage="ppo", hacking_guard={"mode": "warn", "curves": curves}, kl_curve=(nan, -inf, 1.5), metrics={}
    )
    text = (tmp_path / "run_manifest.json").read_text()

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    manifest = json.loads(text, parse_constant=refuse)
    assert [c["proxy"] for c in manifest["hacking_guard"]["curves"]] == [None, None]
    assert [c["rule"] for c in manifest["hacking_guard"]["curves"]] == [0.5, 0.75]
    assert manifest["hacking_guard"]["curves"][0]["kl"] is None and manifest["kl_curve"] == [None, None, 1.5]
