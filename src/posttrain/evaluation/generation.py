"""Each model's replies to each suite: backends, token budgets, prompts, tool loops, and the per-sample records.

A model answers a suite through the generation cache (:mod:`posttrain.evaluation.cache`); a tool suite through
:func:`~posttrain.evaluation.tool_loop.run_tool_loop`. Every reply becomes one record (prompt, reply, reference,
token counts, empty ``scores``/``details`` for :mod:`posttrain.evaluation.scoring`), split first into reasoning and
answer (:mod:`posttrain.evaluation.reasoning`, the format read from the model's chat template): scorers see the
answer only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
from posttrain.evaluation.cache import GenerationCache, cached_generate, cached_outputs, generate_per_budget
from posttrain.evaluation.config import EvalArguments, ModelSpec
from posttrain.evaluation.reasoning import PLAIN, ReasoningFormat, split_reasoning
from posttrain.evaluation.suites import Suite
from posttrain.evaluation.tool_loop import LoopResult, prepare_backend, run_tool_loop, suite_items, uses_tools
from posttrain.log import get_logger

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "add_reasoning",
    "budget_per_group",
    "check_template_kwargs",
    "generate_suite",
    "make_backend",
    "reasoning_format",
    "sample_budgets",
    "suite_budget",
    "tool_loop_outputs",
]

logger = get_logger(__name__)

DEFAULT_MAX_NEW_TOKENS = 256


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


def reasoning_format(backend, template_kwargs: Mapping | None = None) -> ReasoningFormat:
    """How ``backend``'s replies mark reasoning (read from its chat template); plain for backends that cannot say."""
    detect = getattr(backend, "reasoning_format", None)
    return detect(template_kwargs) if detect is not None else PLAIN


def check_template_kwargs(args: EvalArguments, backends, warn=logger.warning) -> None:
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
                f"models[{i}] ({spec.label}): chat_template_kwargs key {key!r} is never "
                f"referenced by the chat template of {spec.path}: it changes nothing"
            )


# -------------------------------------------------------------------------------------------------- budgets


def sample_budgets(suite: Suite, args: EvalArguments) -> list[int]:
    """Each sample's generation budget: the run's, else the suite's, else the sample's own (a builtin task's, fitted
    to its answers), else the default."""
    fixed = args.max_new_tokens or suite.max_new_tokens
    return [fixed or sample.max_new_tokens or DEFAULT_MAX_NEW_TOKENS for sample in suite.samples]


def suite_budget(suite: Suite, args: EvalArguments) -> int:
    """The largest budget of the suite's samples: a tool loop's budget per round, and the results' record of it."""
    return max(sample_budgets(suite, args), default=DEFAULT_MAX_NEW_TOKENS)


def budget_per_group(suite: Suite, budgets: Sequence[int]) -> dict[str, int] | None:
    """``{group: budget}`` when the suite's budget differs between its samples' groups (builtin tasks), else None."""
    per_group = {(sample.group or ""): cap for sample, cap in zip(suite.samples, budgets)}
    return per_group if len(set(budgets)) > 1 else None


# ------------------------------------------------------------------------------------------------- generation


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


def generate_suite(
    spec: ModelSpec,
    backend,
    fmt: ReasoningFormat,
    suite: Suite,
    args: EvalArguments,
    cache: GenerationCache,
    records: dict,
) -> tuple[int, int]:
    """The model's replies to every prompt of ``suite``, as records in ``records`` (sample id -> record); returns
    how many replies were generated and how many were asked for (the rest came from the cache).

    When the backend fails (:class:`~posttrain.evaluation.backends.BackendError`), the replies that arrived before
    (they are in the cache) are recorded and the error is raised again."""
    template_kwargs = args.template_kwargs(spec) or None
    settings = GenerationSettings(
        max_new_tokens=suite_budget(suite, args),
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    prompts = [with_system_prompt(s.messages, suite.system_prompt or args.system_prompt) for s in suite.samples]
    budgets = sample_budgets(suite, args)
    kwargs: dict[str, Any] = {"progress": args.progress, "template_kwargs": template_kwargs}
    loops = None
    try:
        if uses_tools(suite.samples):
            outputs, generated, requested, loops = tool_loop_outputs(backend, suite, prompts, settings, cache, **kwargs)
            budgets = [settings.max_new_tokens] * len(suite.samples)
        else:
            outputs, generated = generate_per_budget(backend, prompts, settings, budgets, cache, **kwargs)
            requested = len(prompts)
    except BackendError:
        outputs = cached_outputs(backend, prompts, settings, budgets, cache, template_kwargs=template_kwargs)
        record_outputs(records, spec.label, suite, prompts, outputs, budgets, fmt, backend)
        raise
    record_outputs(records, spec.label, suite, prompts, outputs, budgets, fmt, backend, loops)
    return generated, requested


def record_outputs(
    records: dict,
    label: str,
    suite: Suite,
    prompts: Sequence[list[dict]],
    outputs: Sequence[Output | None],
    budgets: Sequence[int],
    fmt: ReasoningFormat,
    backend,
    loops: list[LoopResult] | None = None,
) -> None:
    """One record per reply (None: no reply, no record), its reasoning split off; ``loops``: a tool suite's rounds."""
    count_tokens = getattr(backend, "count_tokens", None)
    for k, (sample, prompt, output) in enumerate(zip(suite.samples, prompts, outputs)):
        if output is None:
            continue
        record = {
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
            "max_new_tokens": budgets[k],
            "scores": {},
            "details": {},
        }
        if loops is not None:  # a tool suite: every reply and what the tools answered
            record.update(replies=loops[k].replies, transcript=loops[k].messages)
        add_reasoning(record, output, fmt, count_tokens)
        records[sample.id] = record


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
