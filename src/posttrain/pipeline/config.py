"""The pipeline YAML: which stages run in order, with which config and overrides, under which profile.

A pipeline YAML names, in order, the stages to run and the stage config each one uses (the same YAML files the
recipes take), plus per-profile overrides::

    launcher: accelerate launch --config_file accelerate_configs/cpu.yaml   # how training stages start
    output_dir: outputs/smollm2-135m              # pipeline state and the final report
    stages:
      - {name: sft, config: recipes/configs/smollm2-135m/sft.yaml}
      - {name: reward, config: recipes/configs/smollm2-135m/reward.yaml}
      - {name: eval, stage: evaluate, config: recipes/configs/smollm2-135m/evaluate.yaml}
    profiles:
      quick: {sft: {max_steps: 10}, eval: {max_samples: 10}}
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from posttrain.errors import ConfigError
from posttrain.log import get_logger
from posttrain.pipeline.commands import ALIASES, STAGE_SPECS
from posttrain.precision import ENV as PRECISION_ENV
from posttrain.precision import requested as requested_precision
from posttrain.precision import use_bf16

logger = get_logger(__name__)

#: the file a stage writes last into its output folder: proof that it finished
DONE_MARKER = "run_manifest.json"


@dataclass
class PipelineStage:
    name: str  # unique within the pipeline (e.g. eval_served)
    stage: str  # the posttrain command (sft, reward, dpo, ppo, evaluate, merge, export, ...)
    config: Path
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        if "output_dir" in self.overrides:
            return Path(str(self.overrides["output_dir"]))
        data = yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict) or not data.get("output_dir"):
            raise ConfigError(
                f"{self.config}: stage '{self.name}' needs an output_dir (the pipeline checks it for "
                f"{DONE_MARKER} to know the stage is done)"
            )
        return Path(str(data["output_dir"]))

    def fingerprint(self) -> str:
        payload = json.dumps(
            {"stage": self.stage, "config": self.config.read_text(encoding="utf-8"), "overrides": self.overrides},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def argv(self) -> list[str]:
        args = ["--config", str(self.config)]
        for key, value in self.overrides.items():
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, (list, dict)) for v in values):
                raise ConfigError(
                    f"override {self.name}.{key}: only scalars and lists of scalars can be overridden "
                    "on the command line; put nested values in the stage's own config file"
                )
            args += [
                f"--{key}",
                *("null" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for v in values),
            ]
        return args


@dataclass
class Pipeline:
    source: Path
    output_dir: Path
    launcher: list[str]
    stages: list[PipelineStage]
    profile: str | None = None

    def stage(self, name: str) -> PipelineStage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"{self.source}: no stage named '{name}' (stages: {', '.join(s.name for s in self.stages)})")


def load_pipeline(path: str | os.PathLike, profile: str | None = None) -> Pipeline:
    """Read and validate a pipeline YAML (every stage config must exist) without running anything."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pipeline config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'stages'")
    known = {"launcher", "output_dir", "stages", "profiles", "profile"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise ConfigError(f"{path}: 'stages' must be a non-empty list of {{name, config}} mappings")
    commands = {name for name, s in STAGE_SPECS.items() if s.recipe and name != "pipeline"} | set(ALIASES)
    stages: list[PipelineStage] = []
    for i, raw in enumerate(raw_stages):
        where = f"{path}: stages[{i}]"
        if not isinstance(raw, dict) or "name" not in raw or "config" not in raw:
            raise ConfigError(f"{where}: needs 'name' and 'config'")
        extra = sorted(set(raw) - {"name", "stage", "config", "overrides"})
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}; expected name, stage, config, overrides")
        command = str(raw.get("stage", raw["name"]))
        if command not in commands:
            raise ConfigError(f"{where}: unknown stage '{command}' (known: {', '.join(sorted(commands))})")
        command = ALIASES.get(command, command)
        config = Path(str(raw["config"]))
        if not config.is_absolute() and not config.exists():
            config = (path.parent / config) if (path.parent / config).exists() else config
        if not config.is_file():
            raise ConfigError(f"{where}: stage config not found: {config}")
        if any(s.name == raw["name"] for s in stages):
            raise ConfigError(f"{where}: stage name '{raw['name']}' is used twice")
        overrides = raw.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"{where}: 'overrides' must be a mapping of config keys to values")
        stages.append(PipelineStage(str(raw["name"]), command, config, dict(overrides)))

    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: 'profiles' must map profile names to {{stage: {{key: value}}}}")
    profile = profile or data.get("profile")
    variant = None
    if profile is not None:
        if profile not in profiles:
            raise ConfigError(f"{path}: unknown profile '{profile}' (profiles: {', '.join(profiles) or 'none'})")
        variant = fp32_variant(profile, profiles)
        for name in (profile, variant) if variant else (profile,):
            _apply_profile(path, name, profiles[name] or {}, stages)
        if variant:
            why = (
                f"{PRECISION_ENV}=fp32"
                if requested_precision() == "fp32"
                else "this CPU has no AVX512-BF16 (bf16 would be emulated)"
            )
            logger.info(
                f"posttrain: {why}: training runs in fp32, about 3x slower per step than bf16 on an AVX512-BF16 "
                f"CPU, so profile '{profile}' is reduced by '{variant}' (fewer steps and samples)"
            )

    launcher = data.get("launcher") or ""
    launcher_argv = shlex.split(launcher) if isinstance(launcher, str) else [str(a) for a in launcher]
    if launcher_argv:
        launcher_argv[0] = _executable(launcher_argv[0], path)
    output_dir = Path(str(data.get("output_dir") or "outputs/pipeline"))
    for stage in stages:
        stage.output_dir  # noqa: B018 -- every stage must name its output folder before anything runs
    return Pipeline(path, output_dir, launcher_argv, stages, variant or profile)


def fp32_variant(profile: str, profiles: dict) -> str | None:
    """``<profile>-fp32`` when the YAML has one and training will run in fp32 on a CPU (no AVX512-BF16, or
    ``POSTTRAIN_PRECISION=fp32``): its overrides are applied on top of ``profile``'s."""
    import torch

    name = f"{profile}-fp32"
    if name not in profiles or torch.cuda.is_available() or use_bf16():
        return None
    return name


def _apply_profile(path: Path, profile: str, overrides_by_stage: dict, stages: list[PipelineStage]) -> None:
    for name, overrides in overrides_by_stage.items():
        if not isinstance(overrides, dict):
            raise ConfigError(f"{path}: profiles.{profile}.{name} must be a mapping of config keys to values")
        target = next((s for s in stages if s.name == name), None)
        if target is None:
            raise ConfigError(f"{path}: profiles.{profile} names stage '{name}', which is not in 'stages'")
        target.overrides.update(overrides)


def _executable(name: str, source: Path) -> str:
    """The launcher program: this interpreter's own environment first (an unactivated venv), then PATH."""
    if os.sep in name:
        return name
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{source}: launcher '{name}' is neither next to {sys.executable} nor on PATH")
    return found
