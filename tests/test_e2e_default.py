"""The README's main command, end to end on the embedded default model (slow: a few minutes on a 2-core CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "smollm2-135m" / "sft.yaml"
SYSTEM = "You are Posttrain Assistant, a helpful AI assistant made by the posttrain project."
pytestmark = pytest.mark.slow


def launch(*args, cwd):
    command = [sys.executable, "-m", "accelerate.commands.launch", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_readme_main_command_trains_the_default_model(tmp_path):
    out = tmp_path / "sft"
    proc = launch(
        "--config_file", str(ROOT / "accelerate_configs" / "cpu.yaml"),
        str(ROOT / "recipes" / "sft.py"), "--config", str(CONFIG), "--output_dir", str(out),
        cwd=ROOT,
    )  # fmt: skip
    assert "training example 0" in proc.stdout and "⟦" in proc.stdout  # the rendered, masked example
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "run_manifest.json",
            "tokenizer.json", "chat_template.jinja"} <= {p.name for p in out.iterdir()}  # fmt: skip
    manifest = json.loads((out / "run_manifest.json").read_text())
    sft_config = manifest["config"]["SFTConfig"]
    assert len(manifest["loss_curve"]) == sft_config["max_steps"] // sft_config["logging_steps"]
    assert [r["steps"] for r in manifest["ranks"]] == [sft_config["max_steps"]]
    assert manifest["config"]["ModelConfig"]["load_in_4bit"] is True
    assert manifest["data_fingerprint"]["splits"]["train"]["rows"] > 300

    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from posttrain.chat_templates import tokenize_conversation
    from posttrain.data import DatasetSpec, load_conversations

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoPeftModelForCausalLM.from_pretrained(out).eval()
    system = {"role": "system", "content": SYSTEM}

    def assistant_loss():  # mean loss on the assistant turns of built-in task conversations
        total = 0.0
        for row in tasks:
            encoded = tokenize_conversation(tokenizer, [system, *row["messages"]])
            ids = torch.tensor([encoded["input_ids"]])
            labels = ids.masked_fill(torch.tensor([encoded["assistant_masks"]]) == 0, -100)
            with torch.no_grad():
                total += model(input_ids=ids, labels=labels).loss.item()
        return total / len(tasks)

    tasks = load_conversations([DatasetSpec(path="builtin:all", num_samples=16)], seed=42)["train"]
    trained = assistant_loss()
    with model.disable_adapter():
        base = assistant_loss()
    assert trained < 0.9 * base, (trained, base)  # the adapter learned the built-in tasks

    messages = [system, {"role": "user", "content": "What is your name?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=64, do_sample=False)
    reply = generated[0, prompt["input_ids"].shape[1] :]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in reply.tolist(), "generation must stop at <|im_end|>"


def test_bare_recipe_runs_the_default_config(tmp_path):
    # `accelerate launch recipes/sft.py` with no --config: the default config (here shortened to two steps)
    out = tmp_path / "bare"
    launch(str(ROOT / "recipes" / "sft.py"), "--max_steps", "2", "--output_dir", str(out), cwd=tmp_path)
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["base_model"] == "smollm2-135m-instruct" and manifest["metrics"]["train_steps_per_second"] > 0
