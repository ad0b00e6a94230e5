"""Two CPU ranks (DDP over gloo, started by torchrun) through the real recipe: both train, the result is saved once."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tiny import write_sft_config

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_train_and_save_once(tmp_path, tiny_base_model):
    config = write_sft_config(tmp_path, tiny_base_model, max_steps=4, per_device_train_batch_size=4)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(ROOT / "recipes" / "sft.py"), "--config", str(config),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

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
