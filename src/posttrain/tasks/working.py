"""Think-then-answer replies for the tasks where working helps, and how much working a reply shows.

Three built-in tasks have a *worked solution* (each module's ``working(example)``, a deterministic function of the
example, always correct): ``letter_count`` spells the word out and marks the matching letters, ``arithmetic`` works
column by column with carries and borrows (partial products for ``×``), ``decimal_compare`` pads both numbers to the
same number of decimal places and compares them digit by digit. A worked reply is that working as plain text, then a
final line ``Answer: X`` -- a format any chat template carries (SmolLM2's ChatML has no thinking tags), whose final
answer comes last, so the tasks' checks (the last number, the final statement) read it and nothing in the working.

What a training source's assistant turns say (``DatasetSpec.reply``, see ``docs/data-formats.md``):

* ``response`` -- the task's ideal short reply (:attr:`TaskExample.response`, the default);
* ``working`` -- :func:`worked_response`: the working, then ``Answer: X``;
* ``answer`` -- :func:`answer_response`: ``Answer: X`` alone (the answer-only control of the same format).

Measuring a reply: :func:`split_final_answer` cuts it at its final answer line (the last ``Answer:`` line, else its
last line), :func:`reasoning_length` counts what comes before (tokens with a tokenizer's counter, else words) and
:func:`shows_working` says whether that part holds the task's working (a spelled-out word, a column or partial-product
equation, a digit-by-digit comparison).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from posttrain.tasks import arithmetic, decimal_compare, letter_count
from posttrain.tasks.base import TaskExample

__all__ = [
    "ANSWER_PREFIX",
    "REPLY_KINDS",
    "WORKED_TASKS",
    "WorkingStats",
    "answer_response",
    "reply_for",
    "reasoning_length",
    "shows_working",
    "split_final_answer",
    "working_stats",
    "worked_response",
]

ANSWER_PREFIX = "Answer:"
"""What the final line of a worked (or answer-only) reply starts with."""

WORKED_TASKS: dict[str, Callable[[TaskExample], str]] = {
    "letter_count": letter_count.working,
    "arithmetic": arithmetic.working,
    "decimal_compare": decimal_compare.working,
}
"""The tasks with a worked solution: name -> ``working(example)`` (the text before the answer line)."""

REPLY_KINDS = ("response", "working", "answer")
"""What a builtin source's assistant turns may say (``DatasetSpec.reply``)."""


def _worked_task(example: TaskExample) -> Callable[[TaskExample], str]:
    if example.task not in WORKED_TASKS:
        raise ValueError(
            f"builtin task {example.task!r} has no worked solution; tasks with one: {', '.join(WORKED_TASKS)}"
        )
    return WORKED_TASKS[example.task]


def answer_response(example: TaskExample) -> str:
    """The answer-only reply: ``"Answer: X"`` (``X`` the example's canonical ``answer``)."""
    _worked_task(example)
    return f"{ANSWER_PREFIX} {example.answer}"


def worked_response(example: TaskExample) -> str:
    """The think-then-answer reply: the task's working, then a final line ``"Answer: X"``.

    Raises:
        ValueError: For a task without a worked solution (see :data:`WORKED_TASKS`).
    """
    return f"{_worked_task(example)(example)}\n{answer_response(example)}"


def reply_for(example: TaskExample, kind: str) -> str:
    """The assistant turn ``kind`` (one of :data:`REPLY_KINDS`) gives ``example``."""
    if kind == "response":
        return example.response
    if kind == "working":
        return worked_response(example)
    if kind == "answer":
        return answer_response(example)
    raise ValueError(f"reply must be one of {', '.join(REPLY_KINDS)} (got {kind!r})")


# ---------------------------------------------------------------------------------------------- measuring


_ANSWER_LINE_RE = re.compile(rf"^[ \t*#>_-]*{re.escape(ANSWER_PREFIX[:-1])}\s*[:：]", re.IGNORECASE | re.MULTILINE)


def split_final_answer(reply: str) -> tuple[str, str]:
    """``(reasoning, final)``: ``reply`` cut at its final answer line.

    The final answer line is the last line starting with ``Answer:`` (any case, after markdown marks such as ``**``),
    and everything after it; a reply without one ends with its last non-empty line. ``reasoning`` is what comes
    before (stripped; ``""`` for a one-line reply)."""
    text = reply.strip()
    starts = [m.start() for m in _ANSWER_LINE_RE.finditer(text)]
    if starts:
        cut = starts[-1]
    else:
        cut = text.rfind("\n") + 1  # 0 for a single line
    return text[:cut].strip(), text[cut:].strip()


def reasoning_length(reply: str, count_tokens: Callable[[Sequence[str]], Sequence[int]] | None = None) -> int:
    """How long the reasoning before ``reply``'s final answer line is: tokens by ``count_tokens(texts) -> counts``
    (e.g. a tokenizer's), else whitespace-separated words; 0 when there is none."""
    reasoning, _ = split_final_answer(reply)
    if not reasoning:
        return 0
    if count_tokens is None:
        return len(reasoning.split())
    return int(count_tokens([reasoning])[0])


_SPELLED_RE = re.compile(r"(?<![A-Za-z])[A-Za-z](?:[\s,\-–.·()\[\]*]+[A-Za-z](?![A-Za-z])){2,}")
_EQUATION_RE = re.compile(r"\d[\d,]*\s*[-+−×*xX]\s*\d[\d,]*\s*=\s*[-−]?\d")
_DIGIT_COMPARISON_RE = re.compile(
    r"\b(?:tenths?|hundredths?|thousandths?|decimal places?|whole parts?|digit by digit)\b|\d\s*[<>]\s*\d",
    re.IGNORECASE,
)

_EVIDENCE: dict[str, re.Pattern[str]] = {
    "letter_count": _SPELLED_RE,
    "arithmetic": _EQUATION_RE,
    "decimal_compare": _DIGIT_COMPARISON_RE,
}


def shows_working(task: str, reply: str) -> bool:
    """Whether ``reply`` shows the working of ``task`` before its final answer line (:func:`split_final_answer`):
    ``letter_count`` a word spelled out (3+ single letters apart, ``s t r a w``, ``s-t-r``), ``arithmetic`` an
    equation with an operator (``7 + 8 = 15``), ``decimal_compare`` a digit-level comparison (a decimal place named,
    ``decimal places``, ``whole parts``, or ``9 > 1``). A reply whose only line is its answer shows none.

    Raises:
        ValueError: For a task without a worked solution.
    """
    if task not in _EVIDENCE:
        raise ValueError(f"task {task!r} has no worked solution; tasks with one: {', '.join(_EVIDENCE)}")
    reasoning, _ = split_final_answer(reply)
    return bool(reasoning) and _EVIDENCE[task].search(reasoning) is not None


@dataclass(frozen=True)
class WorkingStats:
    """How much working a set of replies shows."""

    n: int
    #: share of replies showing the task's working (:func:`shows_working`)
    shows_working: float
    #: mean reasoning length over all replies (0 for those without), tokens or words (:func:`reasoning_length`)
    mean_reasoning_length: float
    #: share of replies with an ``Answer:`` line
    answer_line: float


def working_stats(
    replies: Sequence[tuple[str, str]], count_tokens: Callable[[Sequence[str]], Sequence[int]] | None = None
) -> WorkingStats:
    """:class:`WorkingStats` of ``(task, reply)`` pairs."""
    n = len(replies)
    if not n:
        return WorkingStats(0, 0.0, 0.0, 0.0)
    return WorkingStats(
        n=n,
        shows_working=sum(shows_working(task, reply) for task, reply in replies) / n,
        mean_reasoning_length=sum(reasoning_length(reply, count_tokens) for _, reply in replies) / n,
        answer_line=sum(bool(_ANSWER_LINE_RE.search(reply.strip())) for _, reply in replies) / n,
    )
