"""Run an evaluation: validate everything, generate (through the cache), score, summarise, write results.json.

1. Suites, models, the judge, the reward model and the embedding model are resolved and validated before any model
   is loaded or the output directory exists (errors name the file, key or path).
2. Each model answers every suite's prompts, one model in memory at a time (:mod:`posttrain.evaluation.generation`).
   Replies are cached on disk as they arrive (:mod:`posttrain.evaluation.cache`), so re-scoring (new checks, another
   judge, a report) never regenerates, and a run that fails keeps what it had.
3. Scores (:mod:`posttrain.evaluation.scoring`): rule checks, embedding similarity, reward-model scores, judge
   ratings and pairwise comparisons. Every scorer sees the answer only: a thinking model's reasoning is split off
   first and kept beside it, with its length, in the record and the summary.
4. ``results.json`` (:mod:`posttrain.evaluation.results`) holds every sample (prompt, reply, every score, judge
   rationale), per-suite means with bootstrap CIs and the deltas between stages (:mod:`posttrain.evaluation.summary`);
   :mod:`posttrain.evaluation.report` turns it into report.md and report.html.

If an endpoint (model or judge) fails after its retries, the results gathered so far are written with
``"status": "partial"`` and the :class:`~posttrain.evaluation.backends.EndpointError` says where they are.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from posttrain.evaluation.backends import BackendError
from posttrain.evaluation.cache import GenerationCache
from posttrain.evaluation.config import EvalArguments
from posttrain.evaluation.generation import check_template_kwargs, generate_suite, make_backend, reasoning_format
from posttrain.evaluation.overlap import warn_overlap
from posttrain.evaluation.report import write_reports
from posttrain.evaluation.results import new_results, write_results
from posttrain.evaluation.scoring import check_scorer_inputs, score_rules, score_with_models
from posttrain.evaluation.suites import Suite, SuiteError, load_suite
from posttrain.evaluation.summary import summarize

__all__ = ["evaluate", "prepare"]

STALE_FILES = ("run_manifest.json", "report.md", "report.html")  # an earlier run's: never mixed with this one's


def prepare(args: EvalArguments) -> tuple[list[Suite], list]:
    """Load the suites and check every model, judge and scorer input, without loading any model."""
    suites = [load_suite(s, identity=args.identity, max_samples=args.max_samples) for s in args.suites]
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise SuiteError(f"suites: two suites share a name ({', '.join(names)})")
    check_scorer_inputs(suites, args)
    backends = [make_backend(spec, args) for spec in args.models]
    if args.judge is not None and any(s.needs("judge") or s.needs("pairwise") for s in suites):
        make_backend(args.judge, args)  # checks the judge's path / API key variable now
    return suites, backends


def evaluate(args: EvalArguments) -> Path:
    """Run the evaluation described by ``args``; returns the path of results.json (report files beside it)."""
    started = time.time()
    suites, backends = prepare(args)
    check_template_kwargs(args, backends)
    formats = [reasoning_format(b, args.template_kwargs(m)) for m, b in zip(args.models, backends)]
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in STALE_FILES:
        (output_dir / stale).unlink(missing_ok=True)
    cache = GenerationCache(Path(args.cache_dir or output_dir / "cache") / "generations.jsonl")
    results = new_results(args, suites, backends, formats)
    warn_overlap(results["overlap"])
    # records[(label, suite)][sample id] -> per-sample result
    records: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)

    def finish(status: str, error: str | None = None) -> Path:
        for suite in suites:  # rule checks are cheap and need no model: always (re)computed, partial runs too
            for spec in args.models:
                score_rules(suite, records[(spec.label, suite.name)])
        results["status"], results["error"] = status, error
        results["samples"] = [r for rs in records.values() for r in rs.values()]
        results["elapsed_s"] = round(time.time() - started, 1)
        summarize(results, n_resamples=args.bootstrap_samples, seed=args.seed)
        path = write_results(results, output_dir)
        write_reports(results, output_dir)
        return path

    try:
        for spec, backend, fmt in zip(args.models, backends, formats):
            for suite in suites:
                generated, requested = generate_suite(
                    spec, backend, fmt, suite, args, cache, records[(spec.label, suite.name)]
                )
                results["counts"]["generated"] += generated
                results["counts"]["cached"] += requested - generated
            backend.close()
        score_with_models(args, suites, records, cache)
    except BackendError as err:
        path = finish("partial", str(err))
        raise type(err)(
            f"{err}\n  partial results kept in {path} (re-run the same command to resume: finished replies are cached)"
        ) from None
    return finish("complete")
