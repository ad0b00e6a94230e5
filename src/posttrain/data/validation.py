"""Errors and conversation validation for training data.

Location convention (used by every error in :mod:`posttrain.data`):

* ``row N`` -- the 1-based position of the example inside its source (the N-th object of a JSON list, the N-th data
  row of a CSV/Parquet file or hub split, the N-th generated example).
* ``line N`` -- the 1-based line number inside a JSONL file (blank lines count, so it is what an editor shows).
  JSONL errors always give the line instead of the row.
* Messages inside a conversation are numbered from 1 as well: ``message 2`` is the second turn.

Validation runs over the whole dataset before any model is loaded; :class:`ProblemCollector` gathers every problem
(up to :data:`MAX_REPORTED_PROBLEMS` shown) and raises them together as a :class:`DataValidationError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from posttrain.errors import UserError

__all__ = [
    "ALLOWED_ROLES",
    "TOOL_ROLE",
    "MAX_REPORTED_PROBLEMS",
    "DataError",
    "DataValidationError",
    "ProblemCollector",
    "validate_messages",
]

ALLOWED_ROLES: tuple[str, ...] = ("system", "user", "assistant")
"""Roles a conversation may contain (SFT conversations with ``tool_use`` may hold :data:`TOOL_ROLE` messages too)."""

TOOL_ROLE = "tool"
"""The role of a tool's result, answering an assistant message's ``tool_calls`` (SFT data only)."""

MAX_REPORTED_PROBLEMS = 20
"""How many individual problems a :class:`DataValidationError` lists before summarising the rest."""


class DataError(UserError, ValueError):
    """One problem with the training data, located as precisely as possible.

    Attributes:
        source: The file, folder, hub dataset or builtin task the problem comes from, as the user named it.
        row: 1-based row number inside ``source`` (``None`` when the problem concerns the whole source).
        line: 1-based line number inside a JSONL file; when set, the message says ``line N`` instead of ``row N``.
        problem: What is wrong, in plain words.

    ``str(error)`` reads like ``data/train.jsonl line 3: message 2 has empty content``.
    """

    def __init__(self, source: str, problem: str, *, row: int | None = None, line: int | None = None) -> None:
        self.source = str(source)
        self.problem = problem
        self.row = row
        self.line = line
        super().__init__(self._render())

    @property
    def location(self) -> str:
        """``"line N"``, ``"row N"`` or ``""`` when the problem is not tied to one example."""
        if self.line is not None:
            return f"line {self.line}"
        if self.row is not None:
            return f"row {self.row}"
        return ""

    def _render(self) -> str:
        where = f"{self.source} {self.location}" if self.location else self.source
        return f"{where}: {self.problem}"

    def __reduce__(self) -> tuple[Any, ...]:  # keep the keyword-only fields when pickled (e.g. by multiprocessing)
        return (_rebuild_data_error, (self.source, self.problem, self.row, self.line))


def _rebuild_data_error(source: str, problem: str, row: int | None, line: int | None) -> DataError:
    return DataError(source, problem, row=row, line=line)


class DataValidationError(UserError, ValueError):
    """Many :class:`DataError` problems found in one pass over the data.

    Attributes:
        errors: The problems kept (at most :data:`MAX_REPORTED_PROBLEMS`).
        total: How many problems were found in all.

    The message starts with the count, e.g. ``"3 problems found in the training data:"``, then lists one problem
    per line and ends with ``"... and K more"`` when some were left out.
    """

    def __init__(self, errors: list[DataError], total: int | None = None) -> None:
        self.errors = list(errors)
        self.total = len(self.errors) if total is None else total
        noun = "problem" if self.total == 1 else "problems"
        lines = [f"{self.total} {noun} found in the training data:"]
        lines += [f"  - {error}" for error in self.errors]
        if self.total > len(self.errors):
            lines.append(f"  ... and {self.total - len(self.errors)} more")
        super().__init__("\n".join(lines))

    def __iter__(self) -> Iterator[DataError]:
        return iter(self.errors)

    def __reduce__(self) -> tuple[Any, ...]:
        return (DataValidationError, (self.errors, self.total))


class ProblemCollector:
    """Accumulates :class:`DataError` problems so that all of them can be reported at once."""

    def __init__(self, limit: int = MAX_REPORTED_PROBLEMS) -> None:
        self.limit = limit
        self.errors: list[DataError] = []
        self.total = 0

    def add(self, error: DataError) -> None:
        """Record one problem (only the first ``limit`` are kept, all are counted)."""
        self.total += 1
        if len(self.errors) < self.limit:
            self.errors.append(error)

    def __bool__(self) -> bool:
        return self.total > 0

    def raise_if_any(self) -> None:
        """Raise a :class:`DataValidationError` listing the problems collected so far, if there are any."""
        if self.total:
            raise DataValidationError(self.errors, self.total)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _message_problem(index: int, message: object, tool_use: bool = False) -> str | None:
    """The problem with one message (1-based ``index``), or ``None`` when it is well formed.

    With ``tool_use``, ``tool`` messages are allowed (their content may be empty) and an assistant message that
    calls tools (``tool_calls``) may have empty or no content."""
    if not isinstance(message, dict):
        return f"message {index} is not an object with 'role' and 'content' (got {_type_name(message)})"
    role = message.get("role")
    calls = tool_use and role == "assistant" and bool(message.get("tool_calls"))
    for key in ("role", "content"):
        if key not in message and not (key == "content" and calls):
            return f"message {index} is missing '{key}'"
    content = message.get("content")
    roles = (*ALLOWED_ROLES, TOOL_ROLE) if tool_use else ALLOWED_ROLES
    if not isinstance(role, str):
        return f"message {index} has the wrong type: role is {_type_name(role)}"
    if role not in roles:
        return f"message {index} has unknown role {role!r} (allowed: {', '.join(roles)})"
    if calls and content is None:
        return None
    if not isinstance(content, str):
        return f"message {index} has the wrong type: content is {_type_name(content)}"
    if not content.strip() and not calls and role != TOOL_ROLE:
        return f"message {index} has empty content"
    return None


def _order_problem(messages: list[dict], tool_use: bool = False) -> str | None:
    """The problem with the role sequence: optional leading system, then user/assistant alternating from user.

    With ``tool_use`` an assistant message with ``tool_calls`` is followed by one or more ``tool`` messages (its
    results), and they by the assistant message that goes on."""
    roles = [m["role"] for m in messages]
    start = 1 if roles[0] == "system" else 0
    previous: dict | None = None
    for position, message in enumerate(messages[start:], start=start):
        role = message["role"]
        calls = (
            tool_use and previous is not None and previous["role"] == "assistant" and bool(previous.get("tool_calls"))
        )
        if previous is None or (previous["role"] == "assistant" and not calls):
            expected = "user"
        elif previous["role"] == "user":
            expected = "assistant"
        elif calls:
            expected = TOOL_ROLE
        else:  # after a tool result: more results, or the assistant goes on
            expected = "assistant" if role != TOOL_ROLE else TOOL_ROLE
        if role != expected:
            if role == "system":
                return f"message {position + 1} is a system message; only the first message may be one"
            if role == TOOL_ROLE:
                return (
                    f"message {position + 1} is a tool result with no preceding tool call (a 'tool' message follows "
                    "an assistant message with 'tool_calls', or another tool result)"
                )
            if expected == TOOL_ROLE:
                return (
                    f"message {position + 1} has role {role!r} but 'tool' was expected (message {position} calls "
                    "tools: its results come next)"
                )
            return (
                f"message {position + 1} has role {role!r} but {expected!r} was expected "
                "(after an optional first system message, turns must alternate user/assistant starting with user)"
            )
        previous = message
    if "assistant" not in roles:
        return "conversation has no assistant turn to learn from"
    if roles[-1] == TOOL_ROLE:
        return "conversation ends with a tool result (no assistant reply to learn from)"
    if roles[-1] != "assistant":
        return "conversation ends with a user turn (no assistant reply to learn from)"
    return None


def validate_messages(
    messages: Any, *, source: str, row: int | None, line: int | None = None, tool_use: bool = False
) -> None:
    """Check that ``messages`` is a trainable conversation; raise :class:`DataError` on the first problem.

    Args:
        messages: The conversation, a list of ``{"role": ..., "content": ...}`` dicts.
        source: Where it comes from (file or dataset name), used in the error message.
        row: Its 1-based row number in ``source`` (see the module docstring).
        line: Its 1-based line number when ``source`` is a JSONL file.
        tool_use: Allow tool calling (SFT data, see :mod:`posttrain.data.tools`): ``tool`` messages after an
            assistant message with ``tool_calls``, whose content may then be empty. The calls themselves are
            checked by :func:`posttrain.data.tools.normalize_conversation`.

    Raises:
        DataError: If ``messages`` is not a non-empty list; a message is not a dict, lacks ``role`` or ``content``,
            has a non-string or whitespace-only content or an unknown role; the roles are out of order (optional
            single system message first, then user/assistant strictly alternating starting with user); or there is
            no assistant turn or the conversation ends on a user turn.
    """
    problem: str | None
    if not isinstance(messages, list):
        problem = f"messages must be a list of {{role, content}} objects (got {_type_name(messages)})"
    elif not messages:
        problem = "conversation is empty (no messages)"
    else:
        problems = (_message_problem(i, m, tool_use) for i, m in enumerate(messages, start=1))
        problem = next(filter(None, problems), None)
        if problem is None:
            problem = _order_problem(messages, tool_use)
    if problem is not None:
        raise DataError(source, problem, row=row, line=line)
