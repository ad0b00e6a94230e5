"""PPO on two CPU ranks (DDP over gloo, torchrun) through the recipe: both ranks train in sync, the result is saved
once, and the 4-bit (QLoRA) policy path runs."""

import json
from pathlib import Path

from helpers import ppo_config
from tiny import run_torchrun

ROOT = Path(__file__).resolve().parents[2]


def test_two_cpu_ranks_train_in_sync_and_save_once(tmp_path, tiny_chat_model):
    config = ppo_config(
        tmp_path,
        tiny_chat_model,
        max_steps=2,
        rollout_batch_size=8,
        per_device_train_batch_size=4,
        load_in_4bit=True,
        test_split_size=4,
    )
    proc = run_torchrun(ROOT / "recipes" / "ppo.py", "--config", config, cwd=tmp_path)

    out = tmp_path / "ppo"
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["world_size"] == 2
    ranks = manifest["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and [r["steps"] for r in ranks] == [2, 2]
    assert abs(ranks[0]["trainable_checksum"] - ranks[1]["trainable_checksum"]) < 1e-6  # DDP kept them equal
    assert len(list(out.glob("adapter_model*.safetensors"))) == 1 and (out / "value_head.safetensors").is_file()
    assert manifest["config"]["ModelConfig"]["load_in_4bit"] is True  # QLoRA policy
    assert (proc.stdout + proc.stderr).count("PPO adapter, value head, tokenizer") == 1
