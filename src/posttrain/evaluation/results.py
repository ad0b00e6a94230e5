"""``results.json``: what a run records about itself (models, judge, generation settings, suites, held-out overlap)
before any reply, and writing the file (non-finite numbers as null, atomically).

The samples, summary and deltas are filled in by the runner (:mod:`posttrain.evaluation.runner`) and
:mod:`posttrain.evaluation.summary`; :mod:`posttrain.evaluation.report` reads the file back.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from posttrain import __version__ as posttrain_version
from posttrain.evaluation.config import EvalArguments
from posttrain.evaluation.generation import budget_per_group, sample_budgets, suite_budget
from posttrain.evaluation.overlap import suite_overlap
from posttrain.evaluation.reasoning import ReasoningFormat
from posttrain.evaluation.scoring import score_kind_info
from posttrain.evaluation.suites import Suite
from posttrain.storage import atomic_write_text

__all__ = ["RESULTS_FILE", "new_results", "write_results"]

RESULTS_FILE = "results.json"


def new_results(args: EvalArguments, suites: list[Suite], backends: list, formats: list[ReasoningFormat]) -> dict:
    """The results of a run that has not generated anything yet (``"status": "running"``)."""
    return {
        "posttrain_version": posttrain_version,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "status": "running",
        "error": None,
        "models": [
            {
                **m.describe(),
                "fingerprint": b.fingerprint(),
                "chat_template_kwargs": args.template_kwargs(m) or None,
                "reasoning_format": f.describe(),
            }
            for m, b, f in zip(args.models, backends, formats)
        ],
        "baseline": args.baseline_label,
        "judge": args.judge.describe() if args.judge else None,
        "generation": {
            "max_new_tokens": args.max_new_tokens,
            "do_sample": args.do_sample,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "seed": args.seed,
            "batch_size": args.batch_size,
            "dtype": args.dtype,
        },
        "run": {
            "suites": list(args.suites),
            "max_samples": args.max_samples,
            "system_prompt": args.system_prompt,
            "assistant_name": args.assistant_name,
            "assistant_creator": args.assistant_creator,
            "reward_model": args.reward_model,
            "embedding_model": args.embedding_model,
        },
        "suites": [_suite_info(s, args) for s in suites],
        "samples": [],
        "counts": {"generated": 0, "cached": 0},
        "overlap": suite_overlap([m.path for m in args.models if m.path], suites),
    }


def _suite_info(suite: Suite, args: EvalArguments) -> dict[str, Any]:
    """What results.json says about a suite: where it came from, its budget and how reports show each score."""
    return {
        "name": suite.name,
        "description": suite.description,
        "path": suite.path,
        "primary": suite.primary,
        "num_samples": len(suite.samples),
        "fingerprint": suite.fingerprint(),
        "sources": suite.sources,
        "notes": suite.notes,
        "max_new_tokens": suite_budget(suite, args),
        "max_new_tokens_per_group": budget_per_group(suite, sample_budgets(suite, args)),
        "scores": [{"name": sc.name, **score_kind_info(sc.kind)} for sc in suite.scorers],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_results(results: dict, output_dir: Path) -> Path:
    """Write ``output_dir/results.json`` atomically; NaN and infinities become null."""
    return atomic_write_text(output_dir / RESULTS_FILE, json.dumps(_jsonable(results), indent=1, ensure_ascii=False))
