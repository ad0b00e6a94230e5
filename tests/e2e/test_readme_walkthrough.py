"""The README, run: its main command (the quick pipeline) and the commands of its sections and of the docs pages they
moved to (``docs/data-formats.md``: pairs; ``docs/rl.md``: GRPO; ``docs/evaluation.md``: evaluation;
``docs/export.md``: Ollama), on the embedded default model, in a scratch folder (slow: about 10 minutes on a 2-core
CPU).

``WALKTHROUGH`` holds the README and docs commands this test runs, in order; some get extra arguments appended (a
smaller budget: argparse and TrlParser take the last value given). ``tests/e2e/test_readme.py`` checks that every command
in the README and in ``docs/`` is here, run by the pipeline, or run by CI, and that every command here is shown there.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAIN = "posttrain pipeline --config recipes/configs/smollm2-135m/pipeline.yaml"  # what `make pipeline` runs
SYSTEM = "You are Posttrain Assistant, a helpful AI assistant made by the posttrain project."

#: (README command, arguments appended here)
WALKTHROUGH = [
    ("make pipeline", ""),  # runs MAIN (tests/e2e/test_readme.py checks the make target expands to it)
    ("accelerate launch recipes/sft.py --config recipes/configs/smollm2-135m/sft.yaml --max_steps 2 --lora_r 8", ""),
    (
        "posttrain pairs --model_name_or_path outputs/smollm2-135m/sft --tasks "
        "builtin:decimal_compare,builtin:unknown_entity --num_prompts 64 --n 4 --output_dir data/pairs",
        "--num_prompts 16 --max_new_tokens 32",
    ),
    (
        "posttrain pairs --model_name_or_path outputs/smollm2-135m/sft --prompts prompts.jsonl --reward_model "
        "outputs/smollm2-135m/reward --output_dir data/rm_pairs",
        "--max_new_tokens 32 --require_finished false",  # the 2-step SFT above rarely stops within 32 tokens
    ),
    (
        "accelerate launch --config_file accelerate_configs/cpu.yaml recipes/grpo.py --config "
        "recipes/configs/smollm2-135m/grpo.yaml",
        "--max_steps 1 --per_device_train_batch_size 4 --num_generations 2 --max_completion_length 16",
    ),
    (
        "accelerate launch --config_file accelerate_configs/cpu.yaml recipes/evaluate.py --config "
        "recipes/configs/smollm2-135m/evaluate.yaml",
        "--max_samples 2 --suites builtin",
    ),
    (
        "posttrain eval --config recipes/configs/smollm2-135m/evaluate.yaml --max_samples 20",
        "--max_samples 2 --suites builtin",
    ),
]
pytestmark = pytest.mark.slow
#: the pages whose Ollama commands the export must print
OLLAMA_PAGES = (ROOT / "README.md", ROOT / "docs" / "export.md")


def ollama_lines() -> list[str]:
    """The ``ollama ...`` command lines of the README and of ``docs/export.md``."""
    return [line for page in OLLAMA_PAGES for line in page.read_text().splitlines() if line.startswith("ollama ")]


def sh(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(shlex.split(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder that looks like a checkout (recipes/, accelerate_configs/) so outputs land here, not in the repo."""
    path = tmp_path_factory.mktemp("readme")
    for name in ("recipes", "accelerate_configs"):
        (path / name).symlink_to(ROOT / name)
    (path / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in ("Which is larger, 9.11 or 9.9?", "Who are you?"))
    )
    return path


def assert_sft_learned_and_stops(sft: Path) -> None:
    """The default SFT adapter lowers the loss on the built-in tasks and its replies end with <|im_end|>."""
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from posttrain.chat_templates import tokenize_conversation
    from posttrain.data import DatasetSpec, load_conversations

    tokenizer = AutoTokenizer.from_pretrained(sft)
    model = AutoPeftModelForCausalLM.from_pretrained(sft).eval()
    system = {"role": "system", "content": SYSTEM}
    tasks = load_conversations([DatasetSpec(path="builtin:all", num_samples=16)], seed=42)["train"]

    def assistant_loss():  # mean loss on the assistant turns of built-in task conversations
        total = 0.0
        for row in tasks:
            encoded = tokenize_conversation(tokenizer, [system, *row["messages"]])
            ids = torch.tensor([encoded["input_ids"]])
            labels = ids.masked_fill(torch.tensor([encoded["assistant_masks"]]) == 0, -100)
            with torch.no_grad():
                total += model(input_ids=ids, labels=labels).loss.item()
        return total / len(tasks)

    trained = assistant_loss()
    with model.disable_adapter():
        base = assistant_loss()
    assert trained < 0.9 * base, (trained, base)
    messages = [system, {"role": "user", "content": "What is your name?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=64, do_sample=False)
    reply = generated[0, prompt["input_ids"].shape[1] :]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in reply.tolist(), "generation must stop at <|im_end|>"


def test_readme_walkthrough(scratch):
    out = scratch / "outputs" / "smollm2-135m"
    proc = {}
    for command, extra in WALKTHROUGH:
        proc[command] = sh(f"{MAIN if command == 'make pipeline' else command} {extra}".strip(), scratch)
        if command == "make pipeline":  # the main job: every stage's output, the report and the shipped GGUF
            for stage in ("sft", "reward", "dpo", "ppo", "eval-stages", "merged", "export", "eval-gguf"):
                assert (out / stage / "run_manifest.json").is_file(), stage
            report = (out / "report.md").read_text()
            assert "ollama create posttrain -f" in report and "llama-cli -m" in report
            assert (out / "report.html").is_file()
            export = out / "export"
            assert {"model.f16.gguf", "model.Q4_K_M.gguf", "Modelfile"} <= {p.name for p in export.iterdir()}
            assert f'SYSTEM """{SYSTEM}"""' in (export / "Modelfile").read_text()
            verification = json.loads((export / "run_manifest.json").read_text())["verification"]
            assert verification["passed"] is True, verification
            ollama = ollama_lines()
            commands = json.loads((export / "run_manifest.json").read_text())["commands"]
            assert ollama and all(line in commands for line in ollama), (ollama, commands)  # the README's/docs' lines
            assert_sft_learned_and_stops(out / "sft")  # before the next command replaces it

    sft = out / "sft"  # the README's override example: 2 steps, LoRA rank 8, the rendered loss mask printed first
    sft_proc = proc[WALKTHROUGH[1][0]]
    assert "training example 0" in sft_proc.stdout and "⟦" in sft_proc.stdout
    manifest = json.loads((sft / "run_manifest.json").read_text())
    assert [r["steps"] for r in manifest["ranks"]] == [2] and manifest["config"]["ModelConfig"]["lora_r"] == 8
    assert manifest["config"]["ModelConfig"]["load_in_4bit"] is True
    assert {"adapter_model.safetensors", "README.md", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in sft.iterdir()
    }
    for name in ("pairs", "rm_pairs"):  # each --output_dir holds pairs.jsonl and its run_manifest.json
        rows = [json.loads(line) for line in (scratch / "data" / name / "pairs.jsonl").read_text().splitlines()]
        assert all({"prompt", "chosen", "rejected"} <= set(r) for r in rows), name
        assert json.loads((scratch / "data" / name / "run_manifest.json").read_text())["stage"] == "pairs", name
    assert (out / "grpo" / "run_manifest.json").is_file()
    results = json.loads((out / "eval" / "results.json").read_text())
    assert [m["label"] for m in results["models"]] == ["base", "sft"] and results["status"] == "complete"
