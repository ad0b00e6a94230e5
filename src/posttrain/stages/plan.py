"""``posttrain plan --config FILE [--stage NAME]``: the memory and time of a training stage's config, before anything
loads (no weights, no torch model).

The config is parsed by the stage's own parser (:func:`posttrain.configs.parse_args` over
``posttrain.stages.get(stage).load().make_parser()``), so every key and default is the stage's; the model's shape
comes from its ``config.json`` (:mod:`posttrain.planning.model_shape`). The table lists each memory term, the
largest with the setting that shrinks it, the time of an optimizer step from FLOPs and this machine's measured
matmul peak, and whether the peak fits ``--memory-gb`` (default: this machine's available memory) or a GPU's
``--device-memory-gb``. Formulas and their measured check: docs/plan.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from posttrain.errors import ConfigError
from posttrain.planning.estimate import STAGE_KINDS, Plan, estimate, render


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posttrain plan", description="Estimate a training stage's peak memory and step time before it runs."
    )
    parser.add_argument("--config", required=True, help="the stage's YAML config")
    parser.add_argument(
        "--stage",
        choices=trainable(),
        default=None,
        help="the stage (default: from the file name, e.g. dpo.yaml)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="plan with this model instead of the config's model_name_or_path (e.g. the base model, when the config "
        "names an earlier stage's output that does not exist yet: an adapter plans as its base)",
    )
    parser.add_argument("--memory-gb", type=float, default=None, help="memory to fit in (default: available RAM)")
    parser.add_argument("--device-memory-gb", type=float, default=None, help="a GPU's memory to fit in instead")
    parser.add_argument(
        "--prompt-length",
        type=int,
        default=None,
        help="PPO/GRPO/RLOO prompt tokens (default: max_prompt_length or 256)",
    )
    return parser


def trainable() -> list[str]:
    """The stages a plan can be made for: posttrain's training stages the estimate knows."""
    from posttrain.stages import STAGES

    return [name for name in STAGE_KINDS if name in STAGES and STAGES[name].trains]


def stage_of(config: str | Path, stage: str | None) -> str:
    """``stage``, or the stage the config file's name says (``dpo.yaml``, ``grpo-long.yaml``); ConfigError otherwise."""
    if stage:
        return stage
    stem = Path(config).stem.lower()
    for part in [stem, *stem.replace("_", "-").split("-")]:
        if part in STAGE_KINDS:
            return part
    raise ConfigError(
        f"{config}: the file name does not say which stage it configures; give --stage ({', '.join(STAGE_KINDS)})"
    )


def make_plan(
    config: str | Path,
    stage: str | None = None,
    *,
    memory_gb: float | None = None,
    device_memory_gb: float | None = None,
    prompt_length: int | None = None,
    model: str | None = None,
    models: dict[str, str] | None = None,
    overrides: Sequence[str] = (),
    overhead: bool = True,
) -> Plan:
    """Parse ``config`` (plus ``overrides``, ``--key value`` as on a stage's command line) with the stage's parser and
    estimate it (UserError naming the file/key on bad input)."""
    from posttrain.configs import parse_args
    from posttrain.planning.hardware import available_memory_bytes, runtime_overhead_bytes
    from posttrain.stages import STAGES, get

    stage = stage_of(config, stage)
    if stage not in STAGES:  # a stage kind the estimate knows (kto, orpo, simpo) before posttrain has the stage
        raise ConfigError(
            f"--stage {stage}: posttrain has no such stage yet (training stages: {', '.join(trainable())})"
        )
    if not Path(config).is_file():
        raise ConfigError(f"config file not found: {config}")
    argv = ["--config", str(config), *overrides, *(["--model_name_or_path", model] if model else [])]
    parsed = parse_args(get(stage).load().make_parser(), argv)
    pt_args, training_args, model_args = parsed
    plan = estimate(
        stage,
        pt_args,
        training_args,
        model_args,
        prompt_length=prompt_length,
        models=models,
        overhead_bytes=runtime_overhead_bytes() if overhead else None,
    )
    if device_memory_gb is not None:
        plan.budget_bytes, plan.budget_source = device_memory_gb * 2**30, "--device-memory-gb"
    elif memory_gb is not None:
        plan.budget_bytes, plan.budget_source = memory_gb * 2**30, "--memory-gb"
    else:
        plan.budget_bytes, plan.budget_source = float(available_memory_bytes()), "this machine's available memory"
    return plan


def main(args: argparse.Namespace) -> Plan:
    plan = make_plan(
        args.config,
        args.stage,
        memory_gb=args.memory_gb,
        device_memory_gb=args.device_memory_gb,
        prompt_length=args.prompt_length,
        model=args.model,
    )
    print(render(plan), flush=True)
    return plan


def plan_pipeline(pipeline, **budget) -> list[Plan]:
    """The plans of a pipeline's training stages (``posttrain pipeline --plan``), with each stage's overrides; a stage
    whose model is an earlier stage's output (not written yet) plans with the model that stage trains (an adapter
    has its base's shape). ``budget``: ``memory_gb``/``device_memory_gb``/``prompt_length`` of :func:`make_plan`."""
    import yaml

    models: dict[str, str] = {}  # an earlier stage's output_dir -> the model it starts from
    plans = []
    for stage in pipeline.stages:
        if stage.stage not in trainable():
            continue
        model = stage.overrides.get("model_name_or_path")
        if model is None:
            data = yaml.safe_load(Path(stage.config).read_text(encoding="utf-8")) or {}
            model = data.get("model_name_or_path") if isinstance(data, dict) else None
        upstream = models.get(str(Path(str(model)))) if model is not None else None
        plan = make_plan(stage.config, stage.stage, overrides=stage.argv()[2:], model=upstream, models=models, **budget)
        models[str(stage.output_dir)] = upstream or plan.model
        plans.append(plan)
    return plans
