"""Run an evaluation: validate everything, generate (through the cache), score, summarise, write results.json.

1. Suites, models, the judge, the reward model and the embedding model are resolved and validated before any model
   is loaded or the output directory exists (errors name the file, key or path).
2. Each model answers every suite's prompts, one model in memory at a time. Replies are cached on disk as they
   arrive, keyed by the model's fingerprint, the exact prompt and the generation settings, so re-scoring (new
   checks, another judge, a report) never regenerates, and a run that fails keeps what it had.
3. Scores: rule checks from :mod:`posttrain.checks` (the same functions RL uses as rewards), embedding similarity,
   reward-model scores, judge ratings and pairwise comparisons (judge replies are cached the same way). Every scorer
   sees the answer only: a thinking model's reasoning is split off first (:mod:`posttrain.evaluation.reasoning`, the
   format read from its chat template) and kept beside it, with its length, in the record and the summary.
4. ``results.json`` holds every sample (prompt, reply, every score, judge rationale), per-suite means with bootstrap
   CIs and the deltas between stages; :mod:`posttrain.evaluation.report` turns it into report.md and report.html.

If an endpoint (model or judge) fails after its retries, the results gathered so far are written with
``"status": "partial"`` and the :class:`~posttrain.evaluation.backends.EndpointError` says where they are.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from posttrain import __version__ as posttrain_version
from posttrain import checks, tasks
from posttrain.chat_templates import unreferenced_template_kwargs
from posttrain.data.formats import with_system_prompt
from posttrain.evaluation.backends import (
    BackendError,
    GenerationSettings,
    GGUFBackend,
    HFBackend,
    OpenAIBackend,
    Output,
)
from posttrain.evaluation.config import EvalArguments, ModelSpec
from posttrain.evaluation.embedding import Embedder, resolve_embedding_model
from posttrain.evaluation.judges import combine_pairwise, pairwise_prompt, parse_pairwise, parse_rating, single_prompt
from posttrain.evaluation.overlap import suite_overlap
from posttrain.evaluation.reasoning import PLAIN, ReasoningFormat, split_reasoning
from posttrain.evaluation.report import write_reports
from posttrain.stats import delta_ci, mean_ci
from posttrain.evaluation.suites import TASK, Suite, SuiteError, load_suite
from posttrain.evaluation.tool_loop import LoopResult, prepare_backend, run_tool_loop, suite_items, uses_tools
from posttrain.models.registry import ModelNotFoundError
from posttrain.storage import atomic_write_text

__all__ = ["GenerationCache", "evaluate", "make_backend", "score_kind_info", "summarize"]

RESULTS_FILE = "results.json"
DEFAULT_MAX_NEW_TOKENS = 256


# ---------------------------------------------------------------------------------------------------- cache


class GenerationCache:
    """Replies on disk, one JSON line each, keyed by sha256(fingerprint, prompt, settings). Appended as they arrive."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry
                except (ValueError, KeyError):
                    continue  # a line cut by a crash: that reply is generated again

    @staticmethod
    def key(
        fingerprint: str,
        messages: list[dict],
        settings: dict,
        *,
        tools: list[dict] | None = None,
        template_kwargs: Mapping | None = None,
    ) -> str:
        """The cache key of one reply; tools and template variables count only when given, so replies cached
        without them keep their keys."""
        parts: list[Any] = [fingerprint, messages, settings]
        if tools or template_kwargs:
            parts.append({"tools": tools or None, "template_kwargs": dict(template_kwargs or {})})
        payload = json.dumps(parts, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str) -> Output | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        return Output(entry["text"], entry["finished"], entry["num_tokens"], entry.get("reasoning"))

    def put(self, key: str, output: Output) -> None:
        entry = {"key": key, **asdict(output)}
        self._entries[key] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def __len__(self) -> int:
        return len(self._entries)


def cached_generate(
    backend,
    conversations: list[list[dict]],
    settings: GenerationSettings,
    cache: GenerationCache,
    *,
    progress: bool = True,
    tools: Sequence[list[dict] | None] | None = None,
    template_kwargs: Mapping | None = None,
) -> tuple[list[Output | None], int]:
    """Replies for every conversation, from the cache when possible; returns them and how many were generated.

    ``tools`` (one list or None per conversation) and ``template_kwargs`` go to the backend's chat template and
    into the cache key."""
    fingerprint, key_settings = backend.fingerprint(), settings.key()
    per_conversation = list(tools) if tools is not None else [None] * len(conversations)
    keys = [
        GenerationCache.key(fingerprint, c, key_settings, tools=t, template_kwargs=template_kwargs)
        for c, t in zip(conversations, per_conversation, strict=True)
    ]
    outputs: list[Output | None] = [cache.get(k) for k in keys]
    missing = [i for i, o in enumerate(outputs) if o is None]
    if missing:

        def on_result(j: int, output: Output) -> None:
            outputs[missing[j]] = output
            cache.put(keys[missing[j]], output)

        extra: dict[str, Any] = {}
        if tools is not None:
            extra["tools"] = [per_conversation[i] for i in missing]
        if template_kwargs:
            extra["template_kwargs"] = dict(template_kwargs)
        backend.generate([conversations[i] for i in missing], settings, progress=progress, on_result=on_result, **extra)
    return outputs, len(missing)


def generate_per_budget(
    backend,
    conversations: list[list[dict]],
    settings: GenerationSettings,
    budgets: Sequence[int],
    cache: GenerationCache,
    *,
    progress: bool = True,
    template_kwargs: Mapping | None = None,
) -> tuple[list[Output | None], int]:
    """:func:`cached_generate` with each conversation's own ``max_new_tokens`` (``budgets``): one call per budget,
    so a batch of short-answer prompts never waits for a long budget."""
    outputs: list[Output | None] = [None] * len(conversations)
    generated = 0
    for cap in sorted(set(budgets)):
        indices = [i for i, b in enumerate(budgets) if b == cap]
        part, count = cached_generate(
            backend,
            [conversations[i] for i in indices],
            replace(settings, max_new_tokens=cap),
            cache,
            progress=progress,
            template_kwargs=template_kwargs,
        )
        generated += count
        for i, output in zip(indices, part, strict=True):
            outputs[i] = output
    return outputs, generated


def _budget_per_group(suite: Suite, budgets: Sequence[int]) -> dict[str, int] | None:
    """``{group: budget}`` when the suite's budget differs between its samples' groups (builtin tasks), else None."""
    per_group = {(sample.group or ""): cap for sample, cap in zip(suite.samples, budgets)}
    return per_group if len(set(budgets)) > 1 else None


# -------------------------------------------------------------------------------------------------- backends


def make_backend(spec: ModelSpec, args: EvalArguments):
    """The backend for a model spec; paths are checked here (ModelNotFoundError) but nothing is loaded."""
    if spec.kind == "endpoint":
        return OpenAIBackend(
            spec.endpoint,
            spec.model,
            api_key_env=spec.api_key_env,
            timeout=args.request_timeout,
            max_retries=args.max_retries,
            backoff=args.retry_backoff,
            concurrency=args.concurrency,
            label=spec.label,
        )
    if spec.kind == "gguf":
        return GGUFBackend(spec.path, label=spec.label)
    return HFBackend(
        spec.path, batch_size=args.batch_size, chat_template=spec.chat_template, label=spec.label, dtype=args.dtype
    )


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


# ---------------------------------------------------------------------------------------------------- scoring


def tool_loop_outputs(
    backend,
    suite: Suite,
    prompts,
    settings: GenerationSettings,
    cache,
    *,
    progress: bool = True,
    template_kwargs: Mapping | None = None,
):
    """A tool suite's replies through :func:`~posttrain.evaluation.tool_loop.run_tool_loop`, every round through the
    cache: ``(final outputs, generated, requested, loop results)``."""
    prepare_backend(backend)
    counts = {"generated": 0, "requested": 0}

    def generate(conversations, tools):
        outputs, generated = cached_generate(
            backend, conversations, settings, cache, progress=progress, tools=tools, template_kwargs=template_kwargs
        )
        counts["generated"] += generated
        counts["requested"] += len(conversations)
        return outputs

    loops = run_tool_loop(generate, suite_items(suite.samples, prompts))
    return [loop.output for loop in loops], counts["generated"], counts["requested"], loops


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


def _score_rules(suite: Suite, records: dict) -> None:
    for scorer in suite.scorers:
        if scorer.kind != "check":
            continue
        for sample in suite.samples:
            record = records.get(sample.id)
            if record is not None:
                value, details = _rule_score(sample, record, scorer)
                record["scores"][scorer.name] = value
                record["details"][scorer.name] = details


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

        if self._embedder is None:
            self._embedder = Embedder(self.args.embedding_model)
        todo = [(s, records[s.id]) for s in suite.samples if s.id in records]
        scores = self._embedder.similarity([r["output"] for _, r in todo], [s.references for s, _ in todo])
        for (_, record), score in zip(todo, scores):
            record["scores"][scorer.name] = score

    def reward(self, suite: Suite, records: dict, scorer) -> None:
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


# -------------------------------------------------------------------------------------------------- reasoning


def reasoning_format(backend, template_kwargs: Mapping | None = None) -> ReasoningFormat:
    """How ``backend``'s replies mark reasoning (read from its chat template); plain for backends that cannot say."""
    detect = getattr(backend, "reasoning_format", None)
    return detect(template_kwargs) if detect is not None else PLAIN


def check_template_kwargs(args: EvalArguments, backends, warn=print) -> None:
    """One warning per model and ``chat_template_kwargs`` key its chat template never mentions (it changes nothing,
    e.g. ``enable_thinking`` for a model without a thinking switch): the check training does
    (:func:`posttrain.chat_templates.unreferenced_template_kwargs`). Endpoints' templates are not visible: unchecked.
    """
    for i, (spec, backend) in enumerate(zip(args.models, backends)):
        kwargs = args.template_kwargs(spec)
        source_of = getattr(backend, "template_source", None)
        source = source_of() if kwargs and source_of is not None else None
        if source is None:
            continue
        for key in unreferenced_template_kwargs(source, kwargs):
            warn(
                f"posttrain: warning: models[{i}] ({spec.label}): chat_template_kwargs key {key!r} is never "
                f"referenced by the chat template of {spec.path}: it changes nothing"
            )


def add_reasoning(record: dict, output: Output, fmt: ReasoningFormat, count_tokens=None) -> None:
    """Split ``record["output"]`` into the answer (what every scorer sees, kept as ``output``) and ``reasoning``
    (None: the reply has none), with its length in characters and, where the backend can count them, tokens;
    ``reasoning_closed`` is False when the reply ended inside its reasoning (an empty answer)."""
    split = split_reasoning(output.text, fmt)
    reasoning = output.reasoning if output.reasoning is not None else split.reasoning
    record["output"] = split.answer
    record["reasoning"] = reasoning
    record["reasoning_closed"] = split.closed
    record["reasoning_chars"] = len(reasoning or "")
    tokens = count_tokens([reasoning]) if count_tokens is not None and reasoning else None
    record["reasoning_tokens"] = tokens[0] if tokens else (0 if not reasoning else None)


def _reasoning_summary(records: list[dict]) -> dict[str, Any] | None:
    """Reasoning length of a model's replies: the share with reasoning, mean characters and tokens over all replies
    (0 for replies without: comparable between thinking on and off) and the share cut inside their reasoning."""
    if not any("reasoning" in r for r in records):
        return None
    n = len(records)
    tokens = [r.get("reasoning_tokens") for r in records]
    return {
        "with_reasoning": sum(bool(r.get("reasoning")) for r in records) / n,
        "mean_chars": sum(r.get("reasoning_chars", 0) for r in records) / n,
        "mean_tokens": sum(tokens) / n if all(t is not None for t in tokens) else None,
        "unclosed": sum(r.get("reasoning_closed") is False for r in records) / n,
    }


# ---------------------------------------------------------------------------------------------------- summary


def summarize(results: dict, *, n_resamples: int = 2000, seed: int = 0) -> None:
    """Fill ``results["summary"]``, ``["groups"]`` and ``["deltas"]`` from ``results["samples"]``."""
    labels = [m["label"] for m in results["models"]]
    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in results["samples"]:
        by_key[(record["suite"], record["model"])].append(record)
    summary: dict[str, dict] = {}
    groups: dict[str, dict] = {}
    deltas: list[dict] = []
    for suite in results["suites"]:
        name = suite["name"]
        summary[name], groups[name] = {}, {}
        for label in labels:
            records = by_key.get((name, label), [])
            stats = {}
            for score in suite["scores"]:
                values = [r["scores"].get(score["name"]) for r in records if score["name"] in r["scores"]]
                if not values:
                    continue
                ci = mean_ci(values, n_resamples=n_resamples, seed=seed)
                invalid = sum(1 for v in values if v is None or (isinstance(v, float) and math.isnan(v)))
                stats[score["name"]] = {**ci, "total": len(values), "invalid": invalid}
            if records:
                stats["_generation"] = {
                    "samples": len(records),
                    "mean_tokens": sum(r["num_tokens"] for r in records) / len(records),
                    "stop_rate": sum(bool(r["finished"]) for r in records) / len(records),
                }
                reasoning = _reasoning_summary(records)
                if reasoning is not None:
                    stats["_reasoning"] = reasoning
                outcomes = [
                    r["details"].get(s["name"], {}).get("outcome")
                    for r in records
                    for s in suite["scores"]
                    if s["kind"] == "pairwise" and s["name"] in r["details"]
                ]
                if outcomes:
                    stats["_pairwise_outcomes"] = {o: outcomes.count(o) for o in ("win", "tie", "loss", "inconsistent")}
                    stats["_pairwise_outcomes"]["invalid"] = outcomes.count(None)
            summary[name][label] = stats
            per_group: dict[str, list] = defaultdict(list)
            for r in records:
                if r.get("group") is not None:
                    per_group[str(r["group"])].append(r["scores"].get(suite["primary"]))
            groups[name][label] = {g: mean_ci(v, n_resamples=200, seed=seed) for g, v in sorted(per_group.items())}
        pairs = [(labels[i - 1], labels[i]) for i in range(1, len(labels))]
        pairs += [(labels[0], labels[i]) for i in range(2, len(labels))]
        for before, after in pairs:
            for score in suite["scores"]:
                a = {r["id"]: r["scores"].get(score["name"]) for r in by_key.get((name, before), [])}
                b = {r["id"]: r["scores"].get(score["name"]) for r in by_key.get((name, after), [])}
                d = delta_ci(a, b, n_resamples=n_resamples, seed=seed)
                if d["n"]:
                    deltas.append({"suite": name, "score": score["name"], "from": before, "to": after, **d})
    results["summary"], results["groups"], results["deltas"] = summary, groups, deltas


# -------------------------------------------------------------------------------------------------------- run


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_results(results: dict, output_dir: Path) -> Path:
    return atomic_write_text(output_dir / RESULTS_FILE, json.dumps(_jsonable(results), indent=1, ensure_ascii=False))


def prepare(args: EvalArguments) -> tuple[list[Suite], list]:
    """Load the suites and check every model, judge and scorer input, without loading any model."""
    suites = [load_suite(s, identity=args.identity, max_samples=args.max_samples) for s in args.suites]
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise SuiteError(f"suites: two suites share a name ({', '.join(names)})")
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
    backends = [make_backend(spec, args) for spec in args.models]
    if args.judge is not None and any(s.needs("judge") or s.needs("pairwise") for s in suites):
        make_backend(args.judge, args)  # checks the judge's path / API key variable now
    return suites, backends


def evaluate(args: EvalArguments) -> Path:
    """Run the evaluation described by ``args``; returns the path of results.json (report files beside it)."""

    started = time.time()
    suites, backends = prepare(args)
    check_template_kwargs(args, backends, warn=lambda message: print(message, flush=True))
    formats = [reasoning_format(b, args.template_kwargs(m)) for m, b in zip(args.models, backends)]

    def budgets(suite: Suite) -> list[int]:
        """Each sample's generation budget: the run's, else the suite's, else the sample's own (a builtin task's,
        fitted to its answers), else the default."""
        fixed = args.max_new_tokens or suite.max_new_tokens
        return [fixed or sample.max_new_tokens or DEFAULT_MAX_NEW_TOKENS for sample in suite.samples]

    def budget(suite: Suite) -> int:
        return max(budgets(suite), default=DEFAULT_MAX_NEW_TOKENS)

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("run_manifest.json", "report.md", "report.html"):  # an earlier run's: never mixed with this one's
        (output_dir / stale).unlink(missing_ok=True)
    cache = GenerationCache(Path(args.cache_dir or output_dir / "cache") / "generations.jsonl")
    baseline = args.baseline_label
    results: dict[str, Any] = {
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
        "baseline": baseline,
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
        "suites": [
            {
                "name": s.name,
                "description": s.description,
                "path": s.path,
                "primary": s.primary,
                "num_samples": len(s.samples),
                "fingerprint": s.fingerprint(),
                "sources": s.sources,
                "notes": s.notes,
                "max_new_tokens": budget(s),
                "max_new_tokens_per_group": _budget_per_group(s, budgets(s)),
                "scores": [{"name": sc.name, **score_kind_info(sc.kind)} for sc in s.scorers],
            }
            for s in suites
        ],
        "samples": [],
        "counts": {"generated": 0, "cached": 0},
        "overlap": suite_overlap([m.path for m in args.models if m.path], suites),
    }
    for name, found in results["overlap"]["suites"].items():
        if found["normalized"]:
            print(
                f"posttrain: warning: suites: {found['normalized']} prompts of suite '{name}' also occur in the "
                f"training prompts of {', '.join(results['overlap']['checked_against'])}; their scores measure "
                f"recall, not generalization (e.g. {found['examples'][0]!r})",
                flush=True,
            )
    # records[(label, suite)][sample id] -> per-sample result
    records: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    scoring = Scoring(args, cache)

    # each model's reasoning format and token counter: replies are split into reasoning and answer as they are recorded
    reasoning_of = {
        spec.label: (fmt, getattr(backend, "count_tokens", None))
        for spec, backend, fmt in zip(args.models, backends, formats)
    }

    def record_outputs(
        label: str, suite: Suite, prompts, outputs, settings: GenerationSettings, loops: list[LoopResult] | None = None
    ) -> None:
        caps = budgets(suite) if loops is None else [settings.max_new_tokens] * len(suite.samples)
        for k, (sample, prompt, output) in enumerate(zip(suite.samples, prompts, outputs)):
            if output is not None:
                records[(label, suite.name)][sample.id] = {
                    "model": label,
                    "suite": suite.name,
                    "id": sample.id,
                    "group": sample.group,
                    "prompt": prompt,
                    "answer": sample.answer,
                    "reference": sample.reference,
                    "output": output.text,
                    "finished": output.finished,
                    "num_tokens": output.num_tokens,
                    "max_new_tokens": caps[k],
                    "scores": {},
                    "details": {},
                }
                if loops is not None:  # a tool suite: every reply and what the tools answered
                    records[(label, suite.name)][sample.id].update(
                        replies=loops[k].replies, transcript=loops[k].messages
                    )
                add_reasoning(records[(label, suite.name)][sample.id], output, *reasoning_of[label])

    def finish(status: str, error: str | None = None) -> Path:
        for suite in suites:  # rule checks are cheap and need no model: always (re)computed, partial runs too
            for spec in args.models:
                _score_rules(suite, records[(spec.label, suite.name)])
        results["status"], results["error"] = status, error
        results["samples"] = [r for (label, _), rs in records.items() for r in rs.values()]
        results["elapsed_s"] = round(time.time() - started, 1)
        summarize(results, n_resamples=args.bootstrap_samples, seed=args.seed)
        path = write_results(results, output_dir)
        write_reports(results, output_dir)
        return path

    try:
        for spec, backend in zip(args.models, backends):
            template_kwargs = args.template_kwargs(spec) or None
            for suite in suites:
                settings = GenerationSettings(
                    max_new_tokens=budget(suite),
                    do_sample=args.do_sample,
                    temperature=args.temperature,
                    top_p=args.top_p,
                    seed=args.seed,
                )
                prompts = [
                    with_system_prompt(s.messages, suite.system_prompt or args.system_prompt) for s in suite.samples
                ]
                loops = None
                try:
                    if uses_tools(suite.samples):
                        outputs, generated, requested, loops = tool_loop_outputs(
                            backend,
                            suite,
                            prompts,
                            settings,
                            cache,
                            progress=args.progress,
                            template_kwargs=template_kwargs,
                        )
                    else:
                        outputs, generated = generate_per_budget(
                            backend,
                            prompts,
                            settings,
                            budgets(suite),
                            cache,
                            progress=args.progress,
                            template_kwargs=template_kwargs,
                        )
                        requested = len(prompts)
                except BackendError:
                    # keep every reply that arrived before the failure (they are in the cache)
                    fingerprint = backend.fingerprint()
                    outputs = [
                        cache.get(
                            GenerationCache.key(
                                fingerprint,
                                p,
                                replace(settings, max_new_tokens=cap).key(),
                                template_kwargs=template_kwargs,
                            )
                        )
                        for p, cap in zip(prompts, budgets(suite))
                    ]
                    record_outputs(spec.label, suite, prompts, outputs, settings)
                    raise
                results["counts"]["generated"] += generated
                results["counts"]["cached"] += requested - generated
                record_outputs(spec.label, suite, prompts, outputs, settings, loops)
            backend.close()

        for suite in suites:
            for spec in args.models:
                suite_records = records[(spec.label, suite.name)]
                for scorer in suite.scorers:
                    if scorer.kind == "embedding":
                        scoring.embedding(suite, suite_records, scorer)
                    elif scorer.kind == "reward_model":
                        scoring.reward(suite, suite_records, scorer)
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
        if single_jobs:
            scoring.single(single_jobs)
        if pair_jobs:
            scoring.pairwise(pair_jobs)
        scoring.close()
    except BackendError as err:
        path = finish("partial", str(err))
        raise type(err)(
            f"{err}\n  partial results kept in {path} (re-run the same command to resume: finished replies are cached)"
        ) from None
    return finish("complete")
