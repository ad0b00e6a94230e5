"""PPO on two CPU ranks (DDP over gloo, torchrun) through the recipe: both ranks train in sync, the result is saved
once, and the 4-bit (QLoRA) policy path runs."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from helpers import ppo_config

ROOT = Path(__file__).resolve().parents[2]
# The recipe itself, with the RL stages registered in case posttrain.cli.STAGES does not list them yet.
LAUNCHER = """
import runpy, sys
from posttrain import cli
cli.STAGES.setdefault("ppo", "posttrain.training.ppo")
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_train_in_sync_and_save_once(tmp_path, tiny_chat_model):
    config = ppo_config(tmp_path, tiny_chat_model, max_steps=2, rollout_batch_size=8, per_device_train_batch_size=4,
                        load_in_4bit=True, test_split_size=4)  # fmt: skip
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(launcher), str(ROOT / "recipes" / "ppo.py"), "--config", str(config),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    out = tmp_path / "ppo"
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["world_size"] == 2
    ranks = manifest["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and [r["steps"] for r in ranks] == [2, 2]
    assert abs(ranks[0]["trainable_checksum"] - ranks[1]["trainable_checksum"]) < 1e-6  # DDP kept them equal
    assert len(list(out.glob("adapter_model*.safetensors"))) == 1 and (out / "value_head.safetensors").is_file()
    assert manifest["config"]["ModelConfig"]["load_in_4bit"] is True  # QLoRA policy
    assert (proc.stdout + proc.stderr).count("PPO adapter, value head, tokenizer") == 1
