"""The bad-input battery: every case is refused with one clear ``posttrain: error:`` line naming the culprit, a
non-zero exit, and no output directory (neither ``output_dir`` nor a ``.partial``/temporary folder next to it).

Each case is a row of ``CASES`` (id, command, how to build its input, the words the message must contain) and a row
of the "Bad input" table in docs/bad-inputs.md (checked below), so the docs list exactly what is tested.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from posttrain.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "rl"))
from helpers import PPO_SETTINGS, save_seq_cls
from tiny import CONVERSATIONS, train_tokenizer

DOCS = Path(__file__).parents[2] / "docs" / "bad-inputs.md"
GOOD_ROW = {"messages": CONVERSATIONS[0]}
PAIR = {
    "prompt": [{"role": "user", "content": "Which is larger, 9.11 or 9.9?"}],
    "chosen": [{"role": "assistant", "content": "9.9"}],
    "rejected": [{"role": "assistant", "content": "9.11"}],
}


@dataclass
class Case:
    id: str
    command: str
    settings: Callable  # (Inputs) -> config dict, or (config dict, extra argv)
    names: tuple[str, ...]  # words the error line must contain ("{tmp}" is the case's folder)
    subprocess: dict = field(default_factory=dict)  # run as a process with these resource limits


class Inputs:
    """Files a case builds in its own folder; ``out`` is where its output would go."""

    def __init__(self, tmp: Path, chat_model: Path, base_model: Path):
        self.tmp, self.chat_model, self.base_model = tmp, chat_model, base_model
        self.out = tmp / "outputs" / "out"

    def file(self, name: str, text: str | bytes) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    def jsonl(self, name: str, rows: list) -> str:
        return self.file(name, "".join(json.dumps(r) + "\n" for r in rows))

    def sft(self, **settings) -> dict:
        if "datasets" not in settings:
            settings["datasets"] = [{"path": self.jsonl("ok.jsonl", [GOOD_ROW] * 4)}]
        base = {
            "model_name_or_path": str(self.chat_model),
            "max_steps": 1,
            "per_device_train_batch_size": 2,
            "load_in_4bit": False,
            "use_peft": True,
            "lora_r": 4,
            "lora_alpha": 8,
            "report_to": "none",
            "save_strategy": "no",
            "max_length": 128,
        }
        return {**base, **settings}

    def pairs(self, **settings) -> dict:
        if "datasets" not in settings:
            settings["datasets"] = [{"path": self.jsonl("good-pairs.jsonl", [PAIR] * 4)}]
        return self.sft(**settings)

    def model_copy(self, name: str, drop: tuple[str, ...] = ()) -> Path:
        target = self.tmp / name
        shutil.copytree(self.chat_model, target, ignore=shutil.ignore_patterns(*drop))
        return target

    def adapter(self) -> Path:
        """A real (tiny) LoRA adapter folder over the chat model, with its tokenizer."""
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(self.chat_model), LoraConfig(r=2, target_modules=["q_proj"])
        )
        model.save_pretrained(self.tmp / "adapter")
        AutoTokenizer.from_pretrained(self.chat_model).save_pretrained(self.tmp / "adapter")
        return self.tmp / "adapter"

    def eval(self, **settings) -> dict:
        return {
            "models": [{"label": "m", "path": str(self.chat_model)}],
            "suites": ["builtin"],
            "max_samples": 2,
            "progress": False,
            **settings,
        }


def _pickle_only(i: Inputs):
    import torch
    from safetensors.torch import load_file

    model = i.model_copy("pickled", drop=("*.safetensors",))
    torch.save(load_file(i.chat_model / "model.safetensors"), model / "pytorch_model.bin")
    return i.sft(model_name_or_path=str(model))


def _corrupt_safetensors(i: Inputs):
    model = i.model_copy("corrupt")
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])  # a download cut in half
    return i.sft(model_name_or_path=str(model))


def _adapter_without_weights(i: Inputs):
    adapter = i.adapter()
    (adapter / "adapter_model.safetensors").unlink()
    return i.pairs(model_name_or_path=str(adapter))


def _adapter_missing_base(i: Inputs):
    adapter = i.adapter()
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(i.tmp / "deleted-base")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    return i.sft(model_name_or_path=str(adapter))


def _reward_model_other_tokenizer(i: Inputs):
    from transformers import AutoTokenizer

    other = train_tokenizer(vocab_size=300)
    other.chat_template = AutoTokenizer.from_pretrained(i.chat_model).chat_template
    other.pad_token = other.eos_token
    rm = save_seq_cls(i.tmp / "rm", other)
    return _ppo(i, rewards=[{"name": "reward_model", "path": str(rm)}])


def _ppo(i: Inputs, **settings):
    return {
        **PPO_SETTINGS,
        "model_name_or_path": str(i.chat_model),
        "use_peft": True,
        "report_to": "none",
        "test_split_size": None,
        **settings,
    }


def _unwritable_output(i: Inputs):
    blocker = i.file("outputs/not-a-folder", "a file where a folder is needed")
    return i.sft(), ["--output_dir", str(Path(blocker) / "out")]


def _truncated_gguf(i: Inputs):
    gguf = i.file("model.gguf", b"GGUF\x03\x00\x00\x00" + b"\x00" * 12)  # header cut short
    return i.eval(models=[{"label": "q4", "path": gguf}])


def _pipeline_unknown_stage(i: Inputs):
    return {
        "output_dir": str(i.out),
        "stages": [
            {"name": "sft", "config": i.file("sft.yaml", json.dumps(i.sft()))},
            {"name": "distill", "config": "distill.yaml"},
        ],
    }


def _merge_full_disk(i: Inputs):
    return {"model_name_or_path": str(i.adapter()), "output_dir": str(i.out)}


# fmt: off
CASES = [
    # configs and the command line
    Case("config-missing", "sft", lambda i: ({}, ["--config", str(i.tmp / "nope.yaml")]), ("nope.yaml",)),
    Case("config-malformed-yaml", "sft", lambda i: ("learning_rate: [1e-4\n",), ("run.yaml", "line")),
    Case("config-not-a-mapping", "sft", lambda i: ("- learning_rate\n- 1e-4\n",), ("run.yaml", "mapping")),
    Case("unknown-config-key", "sft", lambda i: i.sft(lerning_rate=0.1), ("lerning_rate", "learning_rate", "run.yaml")),
    Case("unknown-cli-flag", "sft", lambda i: (i.sft(), ["--lerning_rate", "0.1"]), ("--lerning_rate",)),
    Case("datasets-and-dataset-name", "sft", lambda i: i.sft(dataset_name="org/chats"), ("datasets", "dataset_name")),
    Case("wrong-type", "sft", lambda i: i.sft(learning_rate="fast"), ("learning_rate", "fast")),
    Case("lora-r-zero", "sft", lambda i: i.sft(lora_r=0), ("lora_r", "run.yaml")),
    Case("negative-learning-rate", "sft", lambda i: i.sft(learning_rate=-1e-4), ("learning_rate", "run.yaml")),
    Case("zero-batch-size", "sft", lambda i: i.sft(per_device_train_batch_size=0), ("per_device_train_batch_size",)),
    Case("bad-choice", "sft", lambda i: i.sft(overlong_samples="shorten"), ("overlong_samples", "shorten")),
    Case("fast-path-unknown", "sft", lambda i: i.sft(fast_paths="turbo"), ("fast_paths", "turbo")),
    # data
    Case("data-file-missing", "sft", lambda i: i.sft(datasets=[{"path": str(i.tmp / "gone.jsonl")}]), ("gone.jsonl",)),
    Case("data-malformed-jsonl", "sft", lambda i: i.sft(datasets=[{"path": i.file("bad.jsonl", '{"messages": [\n')}]),
         ("bad.jsonl", "line 1")),
    Case("data-empty", "sft", lambda i: i.sft(datasets=[{"path": i.file("empty.jsonl", "")}]), ("empty.jsonl",)),
    Case("data-wrong-type", "sft", lambda i: i.sft(datasets=[{"path": i.jsonl("typed.jsonl", [
         {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 42}]}])}]),
         ("typed.jsonl", "content")),
    Case("data-ends-on-user-turn", "sft", lambda i: i.sft(datasets=[{"path": i.jsonl("user.jsonl", [
         {"messages": [{"role": "user", "content": "hi"}]}])}]), ("user.jsonl", "user")),
    Case("data-unknown-role", "sft", lambda i: i.sft(datasets=[{"path": i.jsonl("role.jsonl", [
         {"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "ok"}]}])}]),
         ("role.jsonl", "wizard")),
    Case("data-overlong-sample", "sft", lambda i: i.sft(max_length=32), ("max_length 32", "row 0", "overlong_samples")),
    Case("data-pickle-file", "sft", lambda i: i.sft(datasets=[{"path": i.file("rows.pkl", b"\x80\x04N.")}]),
         ("rows.pkl",)),
    Case("data-unknown-builtin-task", "sft", lambda i: i.sft(datasets=[{"path": "builtin:sudoku"}]), ("sudoku",)),
    Case("pairs-missing-rejected", "dpo", lambda i: i.pairs(datasets=[{"path": i.jsonl("pairs.jsonl", [
         {k: v for k, v in PAIR.items() if k != "rejected"}])}]), ("pairs.jsonl",)),
    Case("pairs-identical", "reward", lambda i: i.pairs(datasets=[{"path": i.jsonl("same.jsonl", [
         {**PAIR, "rejected": PAIR["chosen"]}])}]), ("same.jsonl", "identical")),
    Case("pairs-overlong", "dpo", lambda i: i.pairs(datasets=[{"path": i.jsonl("long.jsonl", [PAIR, PAIR, {**PAIR,
         "chosen": [{"role": "assistant", "content": "9.9 is larger. " * 40}]}])}]),
         ("long.jsonl", "line 3", "max_length 128", "overlong_samples")),
    # models, adapters and weights
    Case("model-path-missing", "sft", lambda i: i.sft(model_name_or_path=str(i.tmp / "no-model")), ("no-model",)),
    Case("model-without-weights", "sft",
         lambda i: i.sft(model_name_or_path=str(i.model_copy("hollow", drop=("*.safetensors",)))),
         ("hollow", "no weights")),
    Case("corrupt-safetensors", "sft", _corrupt_safetensors, ("model.safetensors", "not a valid safetensors")),
    Case("pickle-checkpoint", "sft", _pickle_only, ("pytorch_model.bin", "POSTTRAIN_ALLOW_PICKLE")),
    Case("adapter-without-weights", "dpo", _adapter_without_weights, ("adapter", "adapter_model.safetensors")),
    Case("adapter-base-missing", "sft", _adapter_missing_base, ("adapter", "deleted-base")),
    Case("unknown-chat-template", "sft", lambda i: i.sft(chat_template="vicuna-ish"), ("vicuna-ish",)),
    Case("fast-path-cannot-run", "sft", lambda i: i.sft(packing=False, fast_paths="varlen_attention"),
         ("fast_paths: varlen_attention", "cannot run", "padded")),
    # online RL
    Case("rl-unknown-reward", "ppo", lambda i: _ppo(i, rewards=["exact_mach"]), ("exact_mach", "exact_match")),
    Case("rl-all-reward-weights-zero", "ppo", lambda i: _ppo(i, rewards=[{"name": "has_number", "weight": 0}]),
         ("rewards", "every weight is 0")),
    Case("rl-mismatched-tokenizers", "ppo", _reward_model_other_tokenizer, ("tokenizer does not match", "rm")),
    Case("rl-causal-lm-as-reward-model", "ppo",
         lambda i: _ppo(i, rewards=[{"name": "reward_model", "path": str(i.chat_model)}]),
         ("not a sequence-classification model",)),
    Case("rl-model-without-chat-template", "ppo", lambda i: _ppo(i, model_name_or_path=str(i.base_model)),
         ("chat template",)),
    # evaluation, merge, export, pipeline
    Case("eval-unknown-suite", "eval", lambda i: i.eval(suites=["mmluu"]), ("mmluu",)),
    Case("eval-truncated-gguf", "eval", _truncated_gguf, ("model.gguf",)),
    Case("eval-endpoint-not-a-url", "eval", lambda i: i.eval(models=[{"label": "m", "model": "x",
         "endpoint": "localhost:11434"}]), ("endpoint", "http")),
    Case("export-unknown-gguf-type", "export", lambda i: {"model_name_or_path": str(i.chat_model),
         "gguf_types": ["q9_9"]}, ("q9_9",)),
    Case("pipeline-unknown-stage", "pipeline", _pipeline_unknown_stage, ("distill",)),
    # where the output goes
    Case("output-dir-unwritable", "sft", _unwritable_output, ("not-a-folder is a file",)),
    Case("disk-full", "merge", _merge_full_disk, ("outputs", "File too large"),
         subprocess={"fsize": 64 * 1024}),
]
# fmt: on


def write_config(i: Inputs, built) -> list[str]:
    """The case's config file (JSON is YAML) + extra argv; a 1-tuple holds raw config text."""
    config, extra = built if isinstance(built, tuple) and len(built) == 2 else (built, [])
    if isinstance(config, tuple):
        config = config[0]
    path = i.tmp / "run.yaml"
    if isinstance(config, str):
        path.write_text(config)
    else:
        config = {"output_dir": str(i.out), **config} if config is not None else {}
        path.write_text(json.dumps(config))
    if extra and extra[0] == "--config":
        return extra
    return ["--config", str(path), *extra]


def limited(fsize: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return apply


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_clearly(case, tmp_path, capsys, tiny_chat_model, tiny_base_model):
    i = Inputs(tmp_path, tiny_chat_model, tiny_base_model)
    argv = [case.command, *write_config(i, case.settings(i))]
    capsys.readouterr()
    if case.subprocess:
        result = subprocess.run(
            [sys.executable, "-m", "posttrain.cli", *argv],
            capture_output=True,
            text=True,
            preexec_fn=limited(case.subprocess["fsize"]),
            timeout=600,
        )
        code, err = result.returncode, result.stderr
    else:
        with pytest.raises(SystemExit) as exit_info:
            code = main(argv)
            raise SystemExit(code)
        code, err = exit_info.value.code, capsys.readouterr().err
    assert code not in (0, None), err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    lines = err.replace("\r", "\n").splitlines()
    message = next((line for line in lines if line.startswith("posttrain: error: ")), None)
    assert message is not None, err[-2000:]
    tail = "\n".join(lines[lines.index(message) :])  # a data error lists its rows on the following lines
    print(f"{case.id}: exit {code}: {tail}")  # shown with pytest -rP
    for word in case.names:
        assert word.replace("{tmp}", str(tmp_path)) in tail, (word, tail)
    outputs = i.out.parent
    leftovers = sorted(p.name for p in outputs.iterdir()) if outputs.is_dir() else []
    assert not [n for n in leftovers if n != "not-a-folder"], f"left behind in {outputs}: {leftovers}"


def test_the_docs_table_lists_every_case():
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", DOCS.read_text(), flags=re.M)
    assert documented == [c.id for c in CASES]
    assert len(CASES) >= 30


# SFTConfig loss settings posttrain's SFT loss cannot honour: refused by name before anything loads (issue item 4).
SFT_LOSS_CASES = [
    ({"completion_only_loss": False}, ("SFTConfig.completion_only_loss=False", "assistant turns only")),
    ({"loss_type": "focal"}, ("SFTConfig.loss_type='focal'", "nll or dft")),
]


@pytest.mark.parametrize("settings, names", SFT_LOSS_CASES, ids=["completion-only-loss-false", "loss-type-unknown"])
def test_sft_loss_setting_is_refused_by_name(settings, names, tmp_path, capsys, tiny_chat_model, tiny_base_model):
    i = Inputs(tmp_path, tiny_chat_model, tiny_base_model)
    argv = ["sft", *write_config(i, i.sft(**settings))]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code not in (0, None) and "Traceback" not in err, err[-2000:]
    message = next(line for line in err.splitlines() if line.startswith("posttrain: error: "))
    assert all(name in message for name in names), message
    assert not i.out.parent.exists() or not list(i.out.parent.iterdir())
