"""``posttrain pipeline``: every stage in order, each in its own process, skipping what is already done.

    posttrain pipeline --config recipes/configs/smollm2-135m/pipeline.yaml [--profile full] [--force dpo] [--dry_run]

The pipeline YAML is described in :mod:`posttrain.pipeline.config`.

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

import datetime as _dt
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posttrain.log import get_logger
from posttrain.pipeline.commands import STAGE_SPECS
from posttrain.pipeline.config import DONE_MARKER, Pipeline, PipelineStage
from posttrain.pipeline.state import inputs_fingerprint, is_done, read_state, reads_output_of, write_state

logger = get_logger(__name__)

__all__ = ["StageFailed", "run_pipeline", "stage_command"]


class StageFailed(RuntimeError):
    """A stage exited non-zero; ``returncode`` is its exit status."""

    def __init__(self, stage: str, returncode: int, message: str):
        super().__init__(message)
        self.stage = stage
        self.returncode = returncode


def stage_command(pipeline: Pipeline, stage: PipelineStage) -> list[str]:
    """How a stage starts: a training stage under the pipeline's launcher (``recipes/<stage>.py`` where the
    recipes are at hand, else ``-m posttrain.stages <stage>``), any other as ``python -m posttrain.cli <stage>``."""
    if STAGE_SPECS[stage.stage].trains:
        recipe = Path("recipes") / f"{stage.stage}.py"
        target = [str(recipe)] if recipe.is_file() else ["-m", "posttrain.stages", stage.stage]
        return [*(pipeline.launcher or [sys.executable]), *target, *stage.argv()]
    return [sys.executable, "-m", "posttrain.cli", stage.stage, *stage.argv()]


def run_pipeline(
    pipeline: Pipeline, *, force: Sequence[str] = (), dry_run: bool = False, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run every stage not yet done; returns the pipeline state. Raises :class:`StageFailed` on the first failure."""
    for name in force:
        if name != "all":
            pipeline.stage(name)  # unknown names are errors before anything runs
    state = read_state(pipeline)
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
            logger.info(f"{prefix}: done, skipped ({stage.output_dir / DONE_MARKER}; --force {stage.name} reruns it)")
            continue
        running.add(stage.name)
        why = f" (reads the output of {', '.join(stale)}, which runs again)" if stale and not forced else ""
        logger.info(f"{prefix}: {shlex.join(command)}{why}")
        if dry_run:
            continue
        started = time.time()
        result = subprocess.run(command, env={**os.environ, **(env or {})}, check=False)
        elapsed = round(time.time() - started, 1)
        if result.returncode != 0:
            state["stages"].pop(stage.name, None)
            state["failed"] = {"stage": stage.name, "returncode": result.returncode, "command": command}
            write_state(pipeline, state)
            raise StageFailed(
                stage.name,
                result.returncode,
                f"stage '{stage.name}' failed (exit status {result.returncode}) after {elapsed} s; earlier stages' "
                f"outputs are intact and a rerun of the same command continues from '{stage.name}'",
            )
        if not (stage.output_dir / DONE_MARKER).is_file():
            raise StageFailed(
                stage.name, 1, f"stage '{stage.name}' exited 0 but wrote no {DONE_MARKER} in {stage.output_dir}"
            )
        state["stages"][stage.name] = {
            "stage": stage.stage,
            "output_dir": str(stage.output_dir),
            "fingerprint": inputs_fingerprint(stage, upstream, state),
            "upstream": [u.name for u in upstream],
            "wall_time_s": elapsed,
            "command": command,
            "finished_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        state.pop("failed", None)
        write_state(pipeline, state)
        logger.info(f"{prefix}: finished in {elapsed} s")
    return state
