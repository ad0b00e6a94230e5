"""``posttrain pipeline``: every stage in order, each in its own process, skipping what is already done.

    posttrain pipeline --config recipes/configs/smollm2-135m/pipeline.yaml [--profile full] [--force dpo] [--dry_run]

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

Each stage runs as ``<launcher> recipes/<stage>.py --config <file> --key value ...`` (training stages) or ``python
-m posttrain.cli <stage> ...`` (the others), so a stage's memory is returned before the next starts and a crash in
one stage cannot corrupt another's output. A stage is *done* when its output folder holds its ``run_manifest.json``
(written last, see :mod:`posttrain.manifest`) and the pipeline state records the same inputs fingerprint (config
file bytes + overrides + the recorded runs of the earlier stages whose output folders its config names); done stages
are skipped, a stage that reads the output of a stage that runs again runs again too, ``--force STAGE`` reruns one (``--force all``: everything). The
first stage that fails stops the pipeline with its exit status; earlier stages' outputs are left as they are and a
rerun continues from the failed stage.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from posttrain.configs import ConfigError
from posttrain.precision import ENV as PRECISION_ENV
from posttrain.precision import requested as requested_precision

__all__ = ["Pipeline", "PipelineStage", "StageFailed", "load_pipeline", "main", "run_pipeline"]

STATE_NAME = "pipeline_state.json"
#: stages started through the training launcher (accelerate); the others run as plain processes
TRAINING_STAGES = ("sft", "reward", "dpo", "ppo", "grpo")
#: the file a stage writes last into its output folder: proof that it finished
DONE_MARKER = "run_manifest.json"


class StageFailed(RuntimeError):
    """A stage exited non-zero; ``returncode`` is its exit status."""

    def __init__(self, stage: str, returncode: int, message: str):
        super().__init__(message)
        self.stage = stage
        self.returncode = returncode


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
            raise ConfigError(f"{self.config}: stage '{self.name}' needs an output_dir (the pipeline checks it for "
                              f"{DONE_MARKER} to know the stage is done)")
        return Path(str(data["output_dir"]))

    def fingerprint(self) -> str:
        payload = json.dumps({"stage": self.stage, "config": self.config.read_text(encoding="utf-8"),
                              "overrides": self.overrides}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def argv(self) -> list[str]:
        args = ["--config", str(self.config)]
        for key, value in self.overrides.items():
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, (list, dict)) for v in values):
                raise ConfigError(f"override {self.name}.{key}: only scalars and lists of scalars can be overridden "
                                  "on the command line; put nested values in the stage's own config file")
            args += [f"--{key}", *("null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                                   for v in values)]
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


def _stage_commands() -> set[str]:
    from posttrain.cli import STAGES

    return set(STAGES)


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
    commands = _stage_commands()
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
            why = (f"{PRECISION_ENV}=fp32" if requested_precision() == "fp32" else
                   "this CPU has no AVX512-BF16 (bf16 would be emulated)")
            print(f"posttrain: {why}: training runs in fp32, about 3x slower per step than bf16 on an AVX512-BF16 "
                  f"CPU, so profile '{profile}' is reduced by '{variant}' (fewer steps and samples)", flush=True)

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

    from posttrain.precision import use_bf16

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
    import shutil

    if os.sep in name:
        return name
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{source}: launcher '{name}' is neither next to {sys.executable} nor on PATH")
    return found


def _read_state(pipeline: Pipeline) -> dict[str, Any]:
    path = pipeline.output_dir / STATE_NAME
    if not path.is_file():
        return {"stages": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def _write_state(pipeline: Pipeline, state: dict[str, Any]) -> None:
    pipeline.output_dir.mkdir(parents=True, exist_ok=True)
    path = pipeline.output_dir / STATE_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def reads_output_of(stage: PipelineStage, earlier: PipelineStage) -> bool:
    """Whether ``stage`` reads what ``earlier`` writes: its config or overrides name ``earlier``'s output folder."""
    text = stage.config.read_text(encoding="utf-8") + "\n" + json.dumps(stage.overrides, default=str)
    return re.search(re.escape(str(earlier.output_dir)) + r"(?![\w.-])", text) is not None


def inputs_fingerprint(stage: PipelineStage, upstream: list[PipelineStage], state: dict[str, Any]) -> str:
    """The stage's own fingerprint (config bytes + overrides) combined with the recorded runs of the earlier stages
    whose outputs it reads: when one of those reruns, this stage is no longer done."""
    runs = {u.name: state.get("stages", {}).get(u.name, {}).get("finished_at") for u in upstream}
    payload = json.dumps({"own": stage.fingerprint(), "upstream": runs}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def is_done(stage: PipelineStage, state: dict[str, Any], fingerprint: str | None = None) -> bool:
    recorded = state.get("stages", {}).get(stage.name, {})
    expected = fingerprint or stage.fingerprint()
    return (stage.output_dir / DONE_MARKER).is_file() and recorded.get("fingerprint") == expected


def stage_command(pipeline: Pipeline, stage: PipelineStage) -> list[str]:
    recipe = Path("recipes") / f"{stage.stage}.py"
    if stage.stage in TRAINING_STAGES and recipe.is_file():
        launcher = pipeline.launcher or [sys.executable]
        return [*launcher, str(recipe), *stage.argv()]
    return [sys.executable, "-m", "posttrain.cli", stage.stage, *stage.argv()]


def run_pipeline(pipeline: Pipeline, *, force: Sequence[str] = (), dry_run: bool = False,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run every stage not yet done; returns the pipeline state. Raises :class:`StageFailed` on the first failure."""
    for name in force:
        if name != "all":
            pipeline.stage(name)  # unknown names are errors before anything runs
    state = _read_state(pipeline)
    state.update(config=str(pipeline.source), profile=pipeline.profile)
    total = len(pipeline.stages)
    running: set[str] = set()  # stages (re)run by this invocation: what reads their output runs again too
    for index, stage in enumerate(pipeline.stages, 1):
        command = stage_command(pipeline, stage)
        upstream = [u for u in pipeline.stages[: index - 1] if reads_output_of(stage, u)]
        stale = [u.name for u in upstream if u.name in running]
        forced = "all" in force or stage.name in force
        prefix = f"[{index}/{total}] {stage.name}"
        if not forced and not stale and is_done(stage, state, inputs_fingerprint(stage, upstream, state)):
            print(f"{prefix}: done, skipped ({stage.output_dir / DONE_MARKER}; --force {stage.name} reruns it)",
                  flush=True)
            continue
        running.add(stage.name)
        why = f" (reads the output of {', '.join(stale)}, which runs again)" if stale and not forced else ""
        print(f"{prefix}: {shlex.join(command)}{why}", flush=True)
        if dry_run:
            continue
        started = time.time()
        result = subprocess.run(command, env={**os.environ, **(env or {})}, check=False)
        elapsed = round(time.time() - started, 1)
        if result.returncode != 0:
            state["stages"].pop(stage.name, None)
            state["failed"] = {"stage": stage.name, "returncode": result.returncode, "command": command}
            _write_state(pipeline, state)
            raise StageFailed(
                stage.name, result.returncode,
                f"stage '{stage.name}' failed (exit status {result.returncode}) after {elapsed} s; earlier stages' "
                f"outputs are intact and a rerun of the same command continues from '{stage.name}'",
            )
        if not (stage.output_dir / DONE_MARKER).is_file():
            raise StageFailed(stage.name, 1, f"stage '{stage.name}' exited 0 but wrote no {DONE_MARKER} in "
                                             f"{stage.output_dir}")
        state["stages"][stage.name] = {
            "stage": stage.stage, "output_dir": str(stage.output_dir),
            "fingerprint": inputs_fingerprint(stage, upstream, state), "upstream": [u.name for u in upstream],
            "wall_time_s": elapsed, "command": command,
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        state.pop("failed", None)
        _write_state(pipeline, state)
        print(f"{prefix}: finished in {elapsed} s", flush=True)
    return state


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posttrain pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="pipeline YAML (e.g. recipes/configs/smollm2-135m/pipeline.yaml)")
    parser.add_argument("--profile", default=None, help="profile from the YAML's 'profiles' (default: its 'profile')")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE",
                        help="rerun this stage even if done (repeatable; 'all' reruns everything)")
    parser.add_argument("--dry_run", action="store_true", help="print what would run, run nothing")
    parser.add_argument("--no_report", action="store_true", help="do not write the final report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from posttrain.cli import exit_on_user_error

    args = make_parser().parse_args(argv)
    with exit_on_user_error():
        pipeline = load_pipeline(args.config, args.profile)
        started = time.time()
        try:
            run_pipeline(pipeline, force=args.force, dry_run=args.dry_run)
        except StageFailed as err:
            print(f"posttrain: error: {err}", file=sys.stderr, flush=True)
            return err.returncode or 1
        if args.dry_run or args.no_report:
            return 0
        from posttrain.pipeline_report import write_pipeline_report

        paths = write_pipeline_report(pipeline)
        print(f"pipeline finished in {time.time() - started:.0f} s; report: {', '.join(str(p) for p in paths)}")
    return 0
