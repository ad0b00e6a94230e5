"""``posttrain evaluate`` / ``recipes/evaluate.py``: the stage's parser and entry point.

posttrain evaluate --config recipes/configs/smollm2-135m/evaluate.yaml [--max_samples 20 ...]
"""

from __future__ import annotations

from pathlib import Path

from posttrain.evaluation.config import EvalArguments
from posttrain.evaluation.report import load_results
from posttrain.evaluation.runner import evaluate
from posttrain.log import get_logger
from posttrain.manifest import write_manifest

logger = get_logger(__name__)


def make_parser():
    from trl import TrlParser

    return TrlParser((EvalArguments,))


def main(eval_args: EvalArguments):
    """Validate → generate (cached) → score → results.json, report.md, report.html; logs the headline table."""
    path = evaluate(eval_args)
    results = load_results(path)
    labels = [m["label"] for m in results["models"]]
    logger.info(f"\n{'suite':<14}{'score':<16}" + "".join(f"{label:>14}" for label in labels))
    for suite in results["suites"]:
        row = f"{suite['name']:<14}{suite['primary']:<16}"
        percent = next(s["percent"] for s in suite["scores"] if s["name"] == suite["primary"])
        for label in labels:
            mean = results["summary"].get(suite["name"], {}).get(label, {}).get(suite["primary"], {}).get("mean")
            row += f"{'–' if mean is None else f'{100 * mean:.1f}%' if percent else f'{mean:.2f}':>14}"
        logger.info(row)
    counts = results["counts"]
    logger.info(f"\n{counts['generated']} replies generated, {counts['cached']} from the cache")
    logger.info(f"wrote {path}, {Path(path).with_name('report.md')}, {Path(path).with_name('report.html')}")
    if results.get("status") == "complete":  # written last: the pipeline's proof that this stage finished
        write_manifest(
            Path(path).parent,
            stage="evaluate",
            configs=(eval_args,),
            models=results["models"],
            summary=results["summary"],
            counts=counts,
        )
    return path
