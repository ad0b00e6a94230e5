"""A bare recipe (no --config) trains the embedded default model with its default config (slow). The README's
commands on the default model: tests/e2e/test_readme_walkthrough.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def launch(*args, cwd):
    command = [sys.executable, "-m", "accelerate.commands.launch", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_bare_recipe_runs_the_default_config(tmp_path):
    # `accelerate launch recipes/sft.py` with no --config: the default config (here shortened to two steps)
    out = tmp_path / "bare"
    launch(str(ROOT / "recipes" / "sft.py"), "--max_steps", "2", "--output_dir", str(out), cwd=tmp_path)
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["base_model"] == "smollm2-135m-instruct" and manifest["metrics"]["train_steps_per_second"] > 0
