"""Pure rule checks on model replies, shared by evaluation and RL rewards.

Everything here is a plain function of strings (standard library only: no torch, no datasets), so reward functions
can call it on every sampled completion. Modules: :mod:`.text` (numbers, normalized answers, words, sentences),
:mod:`.answers` (exact, numeric, regex, JSON, "I don't know", identity, stopped), :mod:`.choice` (multiple choice),
:mod:`.instructions` (IFEval-style verifiable instructions). The built-in tasks' own checks live with each task
(:mod:`posttrain.tasks`), whose :data:`~posttrain.tasks.CHECKS` joins them with :data:`GENERIC_CHECKS`.

Adding a check: a function ``check(response, answer, **meta) -> bool`` in the module of its kind, named in
:data:`GENERIC_CHECKS`, with a test in ``tests/checks/test_checks.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from posttrain.checks.answers import (
    as_number,
    check_exact,
    check_json,
    check_numeric,
    check_regex,
    check_stopped,
    contains_answer,
    exact_match,
    is_json,
    mentions_identity,
    numeric_match,
    parse_json_reply,
    says_i_dont_know,
    strict_match,
)
from posttrain.checks.choice import check_multiple_choice, extract_choice, parse_options
from posttrain.checks.instructions import (
    INSTRUCTIONS,
    check_instructions,
    instruction_check,
    instruction_results,
    validate_instruction,
)
from posttrain.checks.text import (
    count_sentences,
    count_words,
    extract_number,
    extract_numbers,
    normalize_answer,
    split_paragraphs,
    split_sentences,
    words,
)
from posttrain.checks.tool_calls import check_tool_arguments, check_tool_call, check_tool_name

__all__ = [
    "GENERIC_CHECKS",
    "INSTRUCTIONS",
    "Check",
    "as_number",
    "check_exact",
    "check_instructions",
    "check_json",
    "check_multiple_choice",
    "check_numeric",
    "check_regex",
    "check_stopped",
    "contains_answer",
    "count_sentences",
    "count_words",
    "exact_match",
    "extract_choice",
    "extract_number",
    "extract_numbers",
    "instruction_results",
    "is_json",
    "mentions_identity",
    "normalize_answer",
    "numeric_match",
    "parse_json_reply",
    "parse_options",
    "says_i_dont_know",
    "split_paragraphs",
    "split_sentences",
    "strict_match",
    "validate_instruction",
    "words",
]

Check = Callable[..., bool]

GENERIC_CHECKS: dict[str, Check] = {
    "exact_match": check_exact,
    "numeric_match": check_numeric,
    "strict_match": strict_match,
    "contains": contains_answer,
    "regex": check_regex,
    "json_format": check_json,
    "multiple_choice": check_multiple_choice,
    "instructions": check_instructions,
    "stopped": check_stopped,
    "tool_call": check_tool_call,
    "tool_name": check_tool_name,
    "tool_arguments": check_tool_arguments,
    **{name: instruction_check(name) for name in INSTRUCTIONS if name != "json_format"},
}
"""Generic checks by name (the built-in tasks add theirs in :data:`posttrain.tasks.CHECKS`), each ``check(response, answer, **meta) -> bool``, shared by evaluation suites and RL rewards:

* answers: ``exact_match`` (normalized; ``normalize=False`` for raw), ``strict_match`` (character for character),
  ``contains``, ``numeric_match`` (``tol``), ``regex`` (``pattern``), ``json_format`` (``kind``, ``keys``),
  ``multiple_choice`` (``options``);
* ``instructions`` (every IFEval-style instruction in ``instructions`` followed) and each instruction of
  :data:`INSTRUCTIONS` on its own (its arguments in ``meta``: ``word_count`` with ``max_words=50``...);
* ``stopped``: the generation ended with EOS within its budget (``finished`` in ``meta``);
* ``tool_call``, ``tool_name``, ``tool_arguments``: the first reply of a tool loop calls a tool, the expected one,
  with the expected arguments (:mod:`.tool_calls`; ``replies`` and ``call`` in ``meta``).
"""
