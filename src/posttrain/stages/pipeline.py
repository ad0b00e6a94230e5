"""``posttrain pipeline``: every stage in order, each in its own process, skipping what is already done.

    posttrain pipeline --config recipes/configs/smollm2-135m/pipeline.yaml [--profile full] [--force dpo] [--dry_run]

The YAML is described in :mod:`posttrain.pipeline.config`, what counts as done in :mod:`posttrain.pipeline.state`,
how stages start in :mod:`posttrain.pipeline.run`; the final report is :mod:`posttrain.pipeline.report`.
"""

from __future__ import annotations

import argparse
import sys
import time

from posttrain.pipeline.config import load_pipeline
from posttrain.pipeline.report import write_pipeline_report
from posttrain.pipeline.run import StageFailed, run_pipeline


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posttrain pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", required=True, help="pipeline YAML (e.g. recipes/configs/smollm2-135m/pipeline.yaml)"
    )
    parser.add_argument("--profile", default=None, help="profile from the YAML's 'profiles' (default: its 'profile')")
    parser.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="rerun this stage even if done (repeatable; 'all' reruns everything)",
    )
    parser.add_argument("--dry_run", action="store_true", help="print what would run, run nothing")
    parser.add_argument(
        "--plan", action="store_true", help="print each training stage's memory/time plan (posttrain plan), run nothing"
    )
    parser.add_argument("--no_report", action="store_true", help="do not write the final report")
    return parser


def main(args: argparse.Namespace) -> int:
    pipeline = load_pipeline(args.config, args.profile)
    if args.plan:
        from posttrain.planning.estimate import render
        from posttrain.stages.plan import plan_pipeline

        print("\n\n".join(render(plan) for plan in plan_pipeline(pipeline)))
        return 0
    started = time.time()
    try:
        run_pipeline(pipeline, force=args.force, dry_run=args.dry_run)
    except StageFailed as err:
        print(f"posttrain: error: {err}", file=sys.stderr, flush=True)
        return err.returncode or 1
    if args.dry_run or args.no_report:
        return 0
    paths = write_pipeline_report(pipeline)
    print(f"pipeline finished in {time.time() - started:.0f} s; report: {', '.join(str(p) for p in paths)}")
    return 0
