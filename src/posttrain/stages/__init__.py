"""The commands: one module per stage, one table naming them all.

Every stage module (``posttrain.stages.<name>``) has the same small contract:

* ``make_parser()`` -- its parser: a :class:`trl.TrlParser` over its config dataclasses (``--config FILE.yaml`` plus
  ``--key value`` overrides), or an ``argparse`` parser for the commands without a config schema;
* ``main(*parsed)`` -- run it on what the parser returned.

:data:`STAGES` is the one list of them: the CLI (``posttrain <stage>`` and its usage text), the config reference,
the pipeline and the tests read it, and ``recipes/<name>.py`` are generated from it (:func:`recipe_text`).
``launch`` says how a stage starts: ``accelerate`` (it trains: ``posttrain <stage>`` starts ``accelerate launch``
itself, as ``trl <command>`` does) or ``python`` (a plain process).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

from posttrain.errors import exit_on_user_error

#: the embedded default model's recipe configs, relative to ``recipes/``
DEFAULT_CONFIGS = Path("configs") / "smollm2-135m"


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    launch: Literal["accelerate", "python"]
    #: ``recipes/<name>.py`` exists (generated) and runs ``recipes/configs/smollm2-135m/<name>.yaml`` by default
    recipe: bool = True
    aliases: tuple[str, ...] = ()
    #: one line for the config reference (how the stage relates to its library)
    reference: str = ""

    @property
    def module(self) -> str:
        return f"{__name__}.{self.name}"

    @property
    def trains(self) -> bool:
        return self.launch == "accelerate"

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "sft",
            "supervised fine-tuning with (Q)LoRA and chat templates",
            "accelerate",
            reference="QLoRA SFT with chat templates (TRL `SFTTrainer`)",
        ),
        Stage(
            "reward",
            "reward model (sequence classification) on preference pairs",
            "accelerate",
            reference="reward model on preference pairs (TRL `RewardTrainer`)",
        ),
        Stage(
            "dpo",
            "direct preference optimization on top of the SFT result",
            "accelerate",
            reference="DPO on preference pairs (TRL `DPOTrainer`)",
        ),
        Stage(
            "ppo",
            "PPO (posttrain's trainer) on a LoRA adapter: reward model and/or rule rewards, KL to the start model",
            "accelerate",
            reference="PPO against a reward model and/or rule rewards (posttrain's trainer)",
        ),
        Stage(
            "grpo",
            "GRPO (TRL) with posttrain's rewards as reward_funcs",
            "accelerate",
            reference="GRPO (TRL `GRPOTrainer`) with posttrain's rewards",
        ),
        Stage(
            "rloo",
            "RLOO (TRL) with posttrain's rewards as reward_funcs",
            "accelerate",
            reference="RLOO (TRL `RLOOTrainer`) with posttrain's rewards",
        ),
        Stage(
            "pairs",
            "on-policy preference pairs: sample n replies, score (rule checks or a reward model), keep best vs worst",
            "python",
            reference="on-policy preference pairs from a model, scored by rule checks or a reward model",
        ),
        Stage(
            "evaluate",
            "rule-based and model-based suites on models, adapters, GGUF files or endpoints",
            "python",
            aliases=("eval",),
            reference="rule-based and model-based evaluation, reports",
        ),
        Stage(
            "merge",
            "merge the adapter chain (SFT -> DPO/PPO) into full-precision weights, report logit drift",
            "python",
            reference="adapter chain merged into full-precision weights",
        ),
        Stage(
            "export",
            "GGUF (llama.cpp) + quantized types + Ollama Modelfile, verified; non-zero exit on failure",
            "python",
            reference="GGUF conversion, quantization, Ollama Modelfile, verification",
        ),
        Stage(
            "pipeline",
            "every stage in order (SFT, reward, DPO, PPO, evaluate, merge, export), skipping finished ones",
            "python",
            reference="every stage in order",
        ),
        Stage("model", "materialize an embedded model alias and print its local folder", "python", recipe=False),
    )
}

ALIASES = {alias: stage.name for stage in STAGES.values() for alias in stage.aliases}


def get(name: str) -> Stage:
    """The stage called ``name`` (or one of its aliases); KeyError for an unknown name."""
    return STAGES[ALIASES.get(name, name)]


def run_stage(name: str, argv: Sequence[str] | None = None, default_config=None):
    """Parse ``argv`` with the stage's parser and run it in this process; what a recipe and ``python -m
    posttrain.stages <name>`` do. Errors a user can fix exit with status 2 and one line; an unfinished run's work
    folder is removed (a checkpoint to resume from stays)."""

    # trl and transformers (heavy): loaded when a stage runs, not for `posttrain --help`
    from posttrain.configs import parse_args
    from posttrain.training.common import discard_unfinished_runs

    module = get(name).load()
    parser = module.make_parser()
    with exit_on_user_error():
        if hasattr(parser, "dataclass_types"):  # a TrlParser over the stage's config dataclasses
            parsed = parse_args(parser, argv, default_config=default_config)
        else:  # a command without a config schema (pipeline, model): plain argparse
            argv = list(sys.argv[1:] if argv is None else argv)
            if default_config is not None and "--config" not in argv:
                argv = ["--config", str(default_config), *argv]
            parsed = (parser.parse_args(argv),)
    output_dir = next((getattr(p, "output_dir", None) for p in parsed if getattr(p, "output_dir", None)), None)
    try:
        with exit_on_user_error(output_dir):
            return module.main(*parsed)
    except BaseException:
        discard_unfinished_runs()  # nothing half-written stays behind (a checkpoint to resume from does)
        raise


def recipe_text(stage: Stage) -> str:
    """The generated ``recipes/<name>.py`` (a test keeps the files equal to this: ``python -m posttrain.stages
    --write-recipes`` rewrites them)."""
    launch = "accelerate launch --config_file accelerate_configs/cpu.yaml" if stage.trains else "python"
    return f'''#!/usr/bin/env python
"""`posttrain {stage.name}`: {stage.summary}.

    {launch} recipes/{stage.name}.py --config recipes/{DEFAULT_CONFIGS.as_posix()}/{stage.name}.yaml [--key value ...]

Without --config it runs recipes/{DEFAULT_CONFIGS.as_posix()}/{stage.name}.yaml (the embedded default model). The stage
is posttrain.stages.{stage.name}; this file is generated by `python -m posttrain.stages --write-recipes`.
"""

from pathlib import Path

if __name__ == "__main__":
    from posttrain.stages import run_stage

    run_stage("{stage.name}", default_config=Path(__file__).resolve().parent / "{DEFAULT_CONFIGS.as_posix()}" / "{stage.name}.yaml")
'''


def write_recipes(folder: str | Path = "recipes") -> list[Path]:
    written = []
    for stage in STAGES.values():
        if stage.recipe:
            path = Path(folder) / f"{stage.name}.py"
            path.write_text(recipe_text(stage), encoding="utf-8")
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m posttrain.stages <name> [args]``: run a stage in this process (what ``accelerate launch`` starts);
    ``--write-recipes`` regenerates ``recipes/*.py``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--write-recipes"]:
        for path in write_recipes(argv[1] if len(argv) > 1 else "recipes"):
            print(path)
        return 0
    if not argv or argv[0] not in STAGES and argv[0] not in ALIASES:
        print(f"usage: python -m posttrain.stages <{'|'.join(STAGES)}> [args] | --write-recipes", file=sys.stderr)
        return 2
    run_stage(argv[0], argv[1:])
    return 0
