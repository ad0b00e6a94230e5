"""Scoring generated replies: rule checks, embedding similarity, reward-model scores, LLM-judge ratings and pairwise
comparisons, written into each record's ``scores`` and ``details``.

Rule checks come from :mod:`posttrain.checks` / :mod:`posttrain.tasks` (the same functions RL uses as rewards); they
need no model and run on partial results too. The model-based scorers (:class:`Scoring`) are loaded lazily, once per
run; judge replies go through the generation cache like the models' own. Every scorer sees the answer only (the
reasoning is split off when the reply is recorded, :func:`posttrain.evaluation.generation.add_reasoning`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posttrain import checks, tasks
from posttrain.evaluation.backends import BackendError, GenerationSettings
from posttrain.evaluation.cache import GenerationCache, cached_generate
from posttrain.evaluation.config import EvalArguments
from posttrain.evaluation.embedding import Embedder, resolve_embedding_model
from posttrain.evaluation.generation import make_backend, reasoning_format
from posttrain.evaluation.judges import combine_pairwise, pairwise_prompt, parse_pairwise, parse_rating, single_prompt
from posttrain.evaluation.reasoning import split_reasoning
from posttrain.evaluation.suites import TASK, Suite, SuiteError
from posttrain.models.registry import ModelNotFoundError

__all__ = ["Scoring", "check_scorer_inputs", "score_kind_info", "score_rules", "score_with_models"]


def score_kind_info(kind: str) -> dict[str, Any]:
    """How reports show a score: as a percentage (0-1 rates) or a number, and its natural range."""
    if kind == "check":
        return {"kind": "check", "percent": True, "range": [0, 1]}
    return {
        "judge": {"kind": "judge", "percent": False, "range": [1, 10]},
        "pairwise": {"kind": "pairwise", "percent": True, "range": [0, 1]},
        "embedding": {"kind": "embedding", "percent": False, "range": [-1, 1]},
        "reward_model": {"kind": "reward_model", "percent": False, "range": None},
    }[kind]


def check_scorer_inputs(suites: list[Suite], args: EvalArguments) -> None:
    """Every suite's scorers have what they need (a judge, two models for pairwise comparisons, a reward model, the
    embedding model), checked before any model is loaded."""
    for suite in suites:
        if (suite.needs("judge") or suite.needs("pairwise")) and args.judge is None:
            raise SuiteError(
                f"{suite.path}: suite '{suite.name}' is scored by an LLM judge: set `judge` in the config "
                "({path: <local model>} or {model: <name>, endpoint: <url>})"
            )
        if suite.needs("pairwise") and len(args.models) < 2:
            raise SuiteError(f"{suite.path}: the pairwise scorer needs at least two models (one is the baseline)")
        if suite.needs("reward_model"):
            if not args.reward_model:
                raise SuiteError(f"{suite.path}: suite '{suite.name}' uses a reward model: set `reward_model`")
            if not Path(args.reward_model).expanduser().exists():
                raise ModelNotFoundError(f"reward model {args.reward_model} does not exist")
        if suite.needs("embedding"):
            resolve_embedding_model(args.embedding_model)


# ------------------------------------------------------------------------------------------------------ rules


def _rule_score(sample, record: dict, scorer) -> tuple[float | None, dict]:
    name = sample.check if scorer.check == TASK else scorer.check
    meta = {
        **sample.meta,
        **scorer.kwargs,
        "finished": record["finished"],
        "num_tokens": record["num_tokens"],
        "max_new_tokens": record["max_new_tokens"],
        **({"replies": record["replies"]} if "replies" in record else {}),  # a tool loop's replies
    }
    check = tasks.CHECKS[name]
    response = record["output"]
    details: dict[str, Any] = {"check": name}
    try:
        if sample.answer is None:
            passed = check(response, **meta)
        else:
            answers = sample.answer if isinstance(sample.answer, list) else [sample.answer]
            passed = any(check(response, a, **meta) for a in answers)
        if name == "instructions":
            details["instructions"] = checks.instruction_results(response, meta["instructions"])
    except (ValueError, KeyError, TypeError) as err:
        return None, {**details, "error": f"{type(err).__name__}: {err}"}
    return float(bool(passed)), details


def score_rules(suite: Suite, records: dict) -> None:
    """The suite's rule checks on every record (sample id -> record) of one model."""
    for scorer in suite.scorers:
        if scorer.kind != "check":
            continue
        for sample in suite.samples:
            record = records.get(sample.id)
            if record is not None:
                value, details = _rule_score(sample, record, scorer)
                record["scores"][scorer.name] = value
                record["details"][scorer.name] = details


# ------------------------------------------------------------------------------------------------- model-based


class Scoring:
    """Model-based scorers, loaded lazily and once per run."""

    def __init__(self, args: EvalArguments, cache: GenerationCache):
        self.args = args
        self.cache = cache
        self._embedder = None
        self._reward_model = None
        self._judge = None

    @property
    def judge(self):
        if self._judge is None:
            self._judge = make_backend(self.args.judge, self.args)
        return self._judge

    def judge_settings(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.args.judge.max_new_tokens, do_sample=False, seed=self.args.seed)

    def embedding(self, suite: Suite, records: dict, scorer) -> None:
        """Each reply's similarity to its sample's references (the embedding model, loaded on first use)."""
        if self._embedder is None:
            self._embedder = Embedder(self.args.embedding_model)
        todo = [(s, records[s.id]) for s in suite.samples if s.id in records]
        scores = self._embedder.similarity([r["output"] for _, r in todo], [s.references for s, _ in todo])
        for (_, record), score in zip(todo, scores):
            record["scores"][scorer.name] = score

    def reward(self, suite: Suite, records: dict, scorer) -> None:
        """Each conversation's reward-model score (the reward model, loaded on first use)."""
        if self._reward_model is None:
            self._reward_model = load_reward_model(self.args.reward_model)
        todo = [records[s.id] for s in suite.samples if s.id in records]
        conversations = [[*r["prompt"], {"role": "assistant", "content": r["output"]}] for r in todo]
        for record, score in zip(todo, self._reward_model.score(conversations)):
            record["scores"][scorer.name] = float(score)

    def _judge_replies(self, conversations: list[list[dict]]) -> list[str]:
        """The judge's replies, less any reasoning (a thinking judge's scratchpad may name other verdicts)."""
        kwargs = self.args.judge.chat_template_kwargs or None
        outputs, _ = cached_generate(
            self.judge,
            conversations,
            self.judge_settings(),
            self.cache,
            progress=self.args.progress,
            template_kwargs=kwargs,
        )
        fmt = reasoning_format(self.judge, kwargs)
        return [split_reasoning(o.text, fmt).answer if o is not None else "" for o in outputs]

    def single(self, jobs: list[tuple[Any, dict, Any]]) -> None:
        """``jobs``: (sample, record, scorer) triples, judged in one batch."""
        prompts = [
            single_prompt(s.question, r["output"], s.references[0] if s.references else None) for s, r, _ in jobs
        ]
        for (_, record, scorer), reply in zip(jobs, self._judge_replies(prompts)):
            verdict = parse_rating(reply, exclude=[record["output"]])
            record["scores"][scorer.name] = verdict.value
            record["details"][scorer.name] = {
                "rating": verdict.value,
                "rationale": verdict.rationale,
                "error": verdict.error,
            }

    def pairwise(self, jobs: list[tuple[Any, dict, dict, Any]]) -> None:
        """``jobs``: (sample, model record, baseline record, scorer); each judged in both orders."""
        prompts = []
        for sample, record, base, _ in jobs:
            reference = sample.references[0] if sample.references else None
            prompts.append(pairwise_prompt(sample.question, record["output"], base["output"], reference))
            prompts.append(pairwise_prompt(sample.question, base["output"], record["output"], reference))
        replies = self._judge_replies(prompts)
        for k, (_, record, base, scorer) in enumerate(jobs):
            exclude = [record["output"], base["output"]]
            result = combine_pairwise(
                parse_pairwise(replies[2 * k], exclude=exclude), parse_pairwise(replies[2 * k + 1], exclude=exclude)
            )
            record["scores"][scorer.name] = result.score
            record["details"][scorer.name] = {
                "baseline": base["model"],
                "outcome": result.outcome,
                "error": result.error,
                "model_first": {
                    "verdict": result.first.value,
                    "rationale": result.first.rationale,
                    "error": result.first.error,
                },
                "baseline_first": {
                    "verdict": result.second.value,
                    "rationale": result.second.rationale,
                    "error": result.second.error,
                },
            }

    def close(self) -> None:
        if self._judge is not None:
            self._judge.close()
        self._embedder = self._reward_model = self._judge = None


def load_reward_model(path: str):
    """``posttrain.models.reward.RewardModel.load(path)`` (imported here: evaluation does not need it otherwise)."""
    try:
        from posttrain.models.reward import RewardModel
    except ImportError as err:
        raise BackendError(f"reward-model scoring needs posttrain.models.reward (the reward stage): {err}") from None
    return RewardModel.load(path)


def score_with_models(args: EvalArguments, suites: list[Suite], records: dict, cache: GenerationCache) -> None:
    """Embedding and reward-model scores, then every judge rating and pairwise comparison in one batch each;
    ``records[(label, suite name)][sample id]`` are the records of every model."""
    scoring = Scoring(args, cache)
    for suite in suites:
        for spec in args.models:
            suite_records = records[(spec.label, suite.name)]
            for scorer in suite.scorers:
                if scorer.kind == "embedding":
                    scoring.embedding(suite, suite_records, scorer)
                elif scorer.kind == "reward_model":
                    scoring.reward(suite, suite_records, scorer)
    single_jobs, pair_jobs = _judge_jobs(args, suites, records)
    if single_jobs:
        scoring.single(single_jobs)
    if pair_jobs:
        scoring.pairwise(pair_jobs)
    scoring.close()


def _judge_jobs(args: EvalArguments, suites: list[Suite], records: dict) -> tuple[list, list]:
    """What the judge rates: (sample, record, scorer) per judge score, and (sample, record, baseline record, scorer)
    per pairwise score of a model other than the baseline on a sample the baseline answered."""
    baseline = args.baseline_label
    single_jobs, pair_jobs = [], []
    for suite in suites:
        for scorer in suite.scorers:
            for spec in args.models:
                suite_records = records[(spec.label, suite.name)]
                base_records = records[(baseline, suite.name)]
                for sample in suite.samples:
                    record = suite_records.get(sample.id)
                    if record is None:
                        continue
                    if scorer.kind == "judge":
                        single_jobs.append((sample, record, scorer))
                    elif scorer.kind == "pairwise" and spec.label != baseline and sample.id in base_records:
                        pair_jobs.append((sample, record, base_records[sample.id], scorer))
    return single_jobs, pair_jobs
