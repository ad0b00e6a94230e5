"""Two CPU ranks (DDP over gloo, started by torchrun) through the real recipe: both train, the result is saved once."""

import json
from pathlib import Path

from tiny import run_torchrun, write_sft_config

ROOT = Path(__file__).resolve().parents[2]


def test_two_cpu_ranks_train_and_save_once(tmp_path, tiny_base_model):
    config = write_sft_config(tmp_path, tiny_base_model, max_steps=4, per_device_train_batch_size=4)
    proc = run_torchrun(ROOT / "recipes" / "sft.py", "--config", config, cwd=tmp_path)

    out = tmp_path / "out"
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["world_size"] == 2
    ranks = manifest["ranks"]  # gathered from every rank after training
    assert [r["rank"] for r in ranks] == [0, 1] and [r["steps"] for r in ranks] == [4, 4]
    # DDP all-reduced the gradients: both ranks end with the same (changed) LoRA weights
    assert abs(ranks[0]["trainable_checksum"] - ranks[1]["trainable_checksum"]) < 1e-6
    assert len(list(out.glob("adapter_model*.safetensors"))) == 1
    assert not list(out.glob("*.tmp")) and not list(out.glob("checkpoint-*"))
    # the "saved to" line is printed by the main process only
    assert (proc.stdout + proc.stderr).count("SFT adapter, tokenizer, README.md and run_manifest.json saved") == 1
