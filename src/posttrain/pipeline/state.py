"""Pipeline state (``pipeline_state.json``): what ran, with which inputs, and whether a stage is done.

A stage is *done* when its output folder holds its ``run_manifest.json`` (written last, see
:mod:`posttrain.manifest`) and the state records the same inputs fingerprint: config file bytes + overrides + the
recorded runs of the earlier stages whose output folders its config names.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from posttrain.pipeline.config import DONE_MARKER, Pipeline, PipelineStage
from posttrain.storage import atomic_write_text

STATE_NAME = "pipeline_state.json"


def read_state(pipeline: Pipeline) -> dict[str, Any]:
    path = pipeline.output_dir / STATE_NAME
    if not path.is_file():
        return {"stages": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def write_state(pipeline: Pipeline, state: dict[str, Any]) -> None:
    atomic_write_text(pipeline.output_dir / STATE_NAME, json.dumps(state, indent=2) + "\n")


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
