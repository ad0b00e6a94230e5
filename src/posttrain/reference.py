"""The config-key reference (docs/config-reference.md), generated from the stages' own dataclasses so it cannot go
stale: ``python -m posttrain.reference > docs/config-reference.md`` (a test compares the file with this output).

Every key posttrain declares is listed with its type, default and help; keys inherited unchanged from TRL's configs
are counted and linked rather than copied.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import typing

#: command -> (recipe, one-line purpose); the order of the reference
COMMANDS = {
    "sft": ("recipes/sft.py", "QLoRA SFT with chat templates (TRL `SFTTrainer`)"),
    "reward": ("recipes/reward.py", "reward model on preference pairs (TRL `RewardTrainer`)"),
    "dpo": ("recipes/dpo.py", "DPO on preference pairs (TRL `DPOTrainer`)"),
    "ppo": ("recipes/ppo.py", "PPO against a reward model and/or rule rewards (posttrain's trainer)"),
    "grpo": ("recipes/grpo.py", "GRPO (TRL `GRPOTrainer`) with posttrain's rewards"),
    "rloo": ("recipes/rloo.py", "RLOO (TRL `RLOOTrainer`) with posttrain's rewards"),
    "evaluate": ("recipes/evaluate.py", "rule-based and model-based evaluation, reports"),
    "merge": ("recipes/merge.py", "adapter chain merged into full-precision weights"),
    "export": ("recipes/export.py", "GGUF conversion, quantization, Ollama Modelfile, verification"),
}

TRAINING = ("sft", "reward", "dpo", "ppo", "grpo", "rloo")  # started with accelerate; the others are plain processes
TRL_DOCS = "https://huggingface.co/docs/trl"

PIPELINE_KEYS = [
    ("launcher", "str", "`accelerate launch`", "How training stages start (e.g. `accelerate launch --config_file "
     "accelerate_configs/cpu.yaml`)."),
    ("output_dir", "str", "required", "Where `pipeline_state.json` and the final `report.md`/`report.html` go."),
    ("stages", "list", "required", "In order: `{name, config, stage?, overrides?}`; `stage` defaults to `name` "
     "(e.g. `{name: eval, stage: evaluate, config: evaluate-stages.yaml}`); `config` is relative to the pipeline "
     "file."),
    ("profiles", "dict", "{}", "`profile name -> {stage name -> overrides}`, applied on top of each stage's config. "
     "`<name>-fp32`, if present, is applied on top of `<name>` when training runs in fp32 on a CPU (no AVX512-BF16, "
     "or `POSTTRAIN_PRECISION=fp32`)."),
    ("profile", "str", "null", "The profile used when `--profile` is not given."),
]


def _type_name(tp) -> str:
    if isinstance(tp, str):
        return tp.replace("typing.", "")
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)) and not value:
        return str(value)
    return f"`{value}`"


def _owner(cls, name: str):
    """The class in ``cls``'s MRO that declares ``name`` last (the one whose default applies)."""
    for klass in cls.__mro__:
        if name in getattr(klass, "__dataclass_fields__", {}) and name in getattr(klass, "__annotations__", {}):
            return klass
    return cls


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def dataclass_section(cls) -> list[str]:
    fields = dataclasses.fields(cls)
    own = [f for f in fields if _owner(cls, f.name).__module__.startswith("posttrain")]
    inherited = len(fields) - len(own)
    base = next((k for k in cls.__mro__[1:] if k.__module__.split(".")[0] == "trl"), None)
    lines = [f"#### `{cls.__name__}`", ""]
    if base is not None:
        lines += [f"Every key of TRL's `{base.__name__}` ({inherited} more, same names and meaning; see {TRL_DOCS}), "
                  "plus or overriding:", ""]  # fmt: skip
    if any(k.__name__ == "HardwareDefaultsMixin" for k in cls.__mro__):
        lines += ["Left unset, `bf16` follows `POSTTRAIN_PRECISION` (`bf16`, `fp32`; default `auto`: the hardware, "
                  "bf16 on bf16 GPUs and AVX512-BF16/AMX CPUs, else fp32); an explicit `bf16: true` on a CPU that "
                  "only emulates bf16 runs with a warning. `use_cpu` is set where no CUDA device exists; impossible "
                  "values (`learning_rate` <= 0, `lora_r` 0, ...) are refused before anything loads.", ""]  # fmt: skip
    if not own:
        return lines
    lines += ["| key | type | default | what |", "|---|---|---|---|"]
    for f in own:
        lines.append(f"| `{f.name}` | {_cell(_type_name(f.type))} | {_cell(_default(f))} | "
                     f"{_cell(f.metadata.get('help', ''))} |")  # fmt: skip
    return [*lines, ""]


def render() -> str:
    from posttrain.cli import STAGES

    out = ["# Config reference", "",
           "Generated by `python -m posttrain.reference` from the stages' dataclasses (a test keeps this file in "
           "sync). A stage reads one YAML file (`--config`) whose keys are the union of its dataclasses; any key can "
           "be overridden on the command line as `--key value`. Unknown keys are errors.", ""]  # fmt: skip
    seen: set[type] = set()
    for command, (recipe, purpose) in COMMANDS.items():
        parser = importlib.import_module(STAGES[command]).make_parser()
        classes = list(parser.dataclass_types)
        out += [f"## `{command}`: {purpose}", "",
                f"`{'accelerate launch' if command in TRAINING else 'python'} {recipe} --config FILE.yaml` or "
                f"`posttrain {command} --config FILE.yaml`; "
                f"keys from {', '.join(f'`{c.__name__}`' for c in classes)}.", ""]  # fmt: skip
        for cls in classes:
            if cls in seen:
                out += [f"`{cls.__name__}`: as above.", ""]
                continue
            seen.add(cls)
            out += dataclass_section(cls)
    out += ["## `pipeline`: every stage in order", "",
            "`posttrain pipeline --config FILE.yaml [--profile NAME] [--force STAGE|all] [--dry_run] [--no_report]`.",
            "", "| key | type | default | what |", "|---|---|---|---|"]  # fmt: skip
    out += [f"| `{k}` | {t} | {d} | {w} |" for k, t, d, w in PIPELINE_KEYS]
    return "\n".join(out) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
