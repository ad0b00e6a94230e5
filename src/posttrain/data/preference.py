"""Preference pairs (for reward models and DPO): load, validate and mix ``prompt``/``chosen``/``rejected`` data.

Every dataset :func:`load_preferences` returns is *conversational*, with three columns:

* ``prompt`` -- a list of ``{"role", "content"}`` messages: an optional system message, then user/assistant turns
  alternating from user and ending with a user turn;
* ``chosen`` -- a list holding exactly one ``assistant`` message, the preferred reply;
* ``rejected`` -- the same for the dispreferred reply (never identical to ``chosen``).

Accepted row forms (a row with a ``prompt`` field is explicit, one without is implicit, so a file may mix them; a
source must have ``chosen`` and ``rejected`` columns, and ``format: preference`` only makes the intent explicit):

a. explicit prompt, conversational -- ``prompt`` a list of messages, ``chosen`` and ``rejected`` lists with one
   assistant message each (TRL's conversational preference layout);
b. explicit prompt, plain strings -- ``prompt``, ``chosen`` and ``rejected`` strings: the prompt becomes one user
   message, each completion one assistant message (a string prompt with list completions, or the reverse, works
   too);
c. implicit prompt -- only ``chosen`` and ``rejected``, each a full conversation: the prompt is their longest common
   prefix of messages, after which each side must continue with exactly one assistant message.

Sources are the same as for SFT data (:func:`posttrain.data.load_conversations`): local ``.jsonl``/``.json``/
``.parquet``/``.csv`` files or folders (CSV cells are plain strings, so CSV supports form b), Hub datasets and
``builtin:<task>``/``builtin:all``, whose pairs are the task's ideal ``response`` against its classic mistake
(:func:`~posttrain.tasks.task_to_preference`). Problems are located and collected exactly as for SFT data
(see :mod:`posttrain.data.validation`). :func:`posttrain.data.fingerprint` fingerprints the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from posttrain.tasks import BASE_MODEL_IDENTITY, generate_task, task_to_preference
from posttrain.tasks.base import Pool

from .files import RawRow
from .formats import FORMAT_COLUMNS
from .loading import SourceTable, as_specs, build_mixture, fingerprint, normalize_rows, source_tables
from .spec import BUILTIN_DEFAULT_SAMPLES, BUILTIN_PREFIX, CHITCHAT, DatasetSpec, Identity
from .validation import ALLOWED_ROLES, DataError, ProblemCollector, validate_messages

if TYPE_CHECKING:
    import datasets

__all__ = [
    "PREFERENCE_COLUMNS",
    "PREFERENCE_FORMATS",
    "PREFERENCE_FORMS",
    "PreferenceSpec",
    "detect_preference_form",
    "load_preferences",
    "preference_features",
    "preference_fingerprint",
    "to_preference",
    "validate_preference",
    "validate_prompt",
]

PREFERENCE_COLUMNS: tuple[str, str, str] = ("prompt", "chosen", "rejected")
"""The columns of every dataset :func:`load_preferences` returns."""

PREFERENCE_FORMATS: tuple[str, ...] = ("auto", "preference")
"""The ``format`` values a preference source accepts (both detect the row form from the columns)."""

PREFERENCE_FORMS: dict[str, tuple[str, ...]] = {
    "explicit": ("prompt", "chosen", "rejected"),
    "implicit": ("chosen", "rejected"),
}
"""Row forms by the columns that identify them: an explicit prompt, or one implied by two full conversations."""

_ACCEPTED_FORMS = (
    "accepted forms: 'prompt' + 'chosen' + 'rejected' (three strings, or a prompt list of messages ending with a "
    "user turn and chosen/rejected lists with one assistant message each), or 'chosen' + 'rejected' alone (two full "
    "conversations that are identical except for their final assistant reply)"
)

Pair = dict[str, list[dict[str, str]]]


@dataclass
class PreferenceSpec(DatasetSpec):
    """A :class:`~posttrain.data.spec.DatasetSpec` for preference data: the same fields, with ``format`` limited to
    :data:`PREFERENCE_FORMATS`. Plain dicts given to :func:`load_preferences` become these."""

    format: str = field(
        default="auto",
        metadata={"help": "Layout of the rows: 'auto' or 'preference' (both detect the pair form from the columns)."},
    )

    def __post_init__(self) -> None:
        fmt = self.format
        self.format = "auto"  # DatasetSpec only knows the SFT formats; the preference ones are checked here
        try:
            super().__post_init__()
        finally:
            self.format = fmt
        if fmt not in PREFERENCE_FORMATS:
            raise DataError(
                self.path, f"unknown preference format {fmt!r}; expected one of {', '.join(PREFERENCE_FORMATS)}"
            )


def preference_features() -> datasets.Features:
    """The Arrow schema of the returned datasets: ``prompt``, ``chosen``, ``rejected``, each a list of
    ``{role: string, content: string}``."""
    import datasets

    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    return datasets.Features({column: datasets.List(message) for column in PREFERENCE_COLUMNS})


# ------------------------------------------------------------------------------------------------ row forms


def detect_preference_form(columns: Sequence[str], *, source: str = "dataset", fmt: str = "auto") -> str:
    """The pair form of a dataset from its column names: ``"explicit"`` or ``"implicit"``.

    Args:
        columns: The column names (for JSON rows, the union of their keys).
        source: File or dataset name, for the error message.
        fmt: The spec's ``format``; anything but ``"auto"``/``"preference"`` is an error.

    Raises:
        DataError: For an SFT format, or when ``chosen`` or ``rejected`` is missing; the message names the missing
            columns, the columns found and the accepted forms.
    """
    if fmt not in PREFERENCE_FORMATS:
        raise DataError(source, f"format {fmt!r} is not a preference format (use {' or '.join(PREFERENCE_FORMATS)})")
    present = list(dict.fromkeys(columns))
    for form, required in PREFERENCE_FORMS.items():
        if all(column in present for column in required):
            return form
    missing = ", ".join(repr(c) for c in PREFERENCE_FORMS["implicit"] if c not in present)
    found = ", ".join(repr(c) for c in present) or "none"
    sft = next((name for name, cols in FORMAT_COLUMNS.items() if all(c in present for c in cols)), None)
    hint = f" (this looks like SFT data in the {sft!r} format, which has no rejected replies)" if sft else ""
    raise DataError(
        source, f"missing column(s) {missing} for preference pairs{hint}; found: {found}; {_ACCEPTED_FORMS}"
    )


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


class _Row:
    """Where a row is, to raise :class:`DataError` located at it."""

    def __init__(self, source: str, row: int | None, line: int | None) -> None:
        self.source, self.row, self.line = source, row, line

    def error(self, problem: str) -> DataError:
        return DataError(self.source, problem, row=self.row, line=self.line)

    def validate(self, messages: list[Any], what: str) -> None:
        """:func:`validate_messages`, with its problem prefixed by ``what`` (``"prompt message 2 has ..."``)."""
        try:
            validate_messages(messages, source=self.source, row=self.row, line=self.line)
        except DataError as error:
            raise self.error(f"{what} {error.problem}") from None


def _role_content(messages: list[Any]) -> list[Any]:
    return [{k: m[k] for k in ("role", "content") if k in m} if isinstance(m, dict) else m for m in messages]


def _prompt(value: Any, at: _Row) -> list[Any]:
    if isinstance(value, str):
        if not value.strip():
            raise at.error("prompt is empty")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise at.error(f"prompt has the wrong type: expected a string or a list of messages, got {_type_name(value)}")
    if not value:
        raise at.error("prompt is empty (no messages)")
    return _role_content(value)


def _completion(value: Any, side: str, at: _Row, *, prompt_is_list: bool) -> dict[str, str]:
    if isinstance(value, str):
        message: Any = {"role": "assistant", "content": value}
    elif isinstance(value, list):
        if len(value) != 1:
            hint = (
                " (for full conversations, leave out the 'prompt' field: the shared start becomes the prompt)"
                if len(value) > 1 and prompt_is_list
                else ""
            )
            raise at.error(f"{side} must hold exactly one assistant message (got {len(value)}){hint}")
        message = value[0]
        if not isinstance(message, dict):
            raise at.error(f"{side} message is not an object with 'role' and 'content' (got {_type_name(message)})")
        for key in ("role", "content"):
            if key not in message:
                raise at.error(f"{side} message is missing '{key}'")
        if message["role"] != "assistant":
            raise at.error(f"{side} message has role {message['role']!r}; it must be the 'assistant' reply")
    else:
        raise at.error(
            f"{side} has the wrong type: expected a string or a list with one assistant message, got "
            f"{_type_name(value)}"
        )
    content = message["content"]
    if not isinstance(content, str):
        raise at.error(f"{side} has the wrong type: content is {_type_name(content)}")
    if not content.strip():
        raise at.error(f"{side} has empty content")
    return {"role": "assistant", "content": content}


def _check_prompt(prompt: list[Any], reply: dict[str, str], at: _Row) -> None:
    last = prompt[-1]
    if isinstance(last, dict) and last.get("role") in ALLOWED_ROLES and last["role"] != "user":
        raise at.error(
            f"prompt must end with a user turn (its last message, message {len(prompt)}, has role {last['role']!r})"
        )
    at.validate(prompt + [reply], "prompt")  # the reply is valid, so any problem is the prompt's


def validate_prompt(
    prompt: Any, *, source: str = "prompt", row: int | None = None, line: int | None = None
) -> list[dict[str, str]]:
    """Check a prompt as the ``prompt`` side of a pair and return it as messages.

    Args:
        prompt: A string (one user message) or a list of ``{"role", "content"}`` messages.
        source, row, line: Where it is, for error messages.

    Returns:
        The messages, keeping only ``role`` and ``content``.

    Raises:
        DataError: If it is empty or of the wrong type, does not end with a user turn, or is not a valid start of a
            conversation (optional first system message, then user/assistant alternating from user).
    """
    at = _Row(source, row, line)
    messages = _prompt(prompt, at)
    _check_prompt(messages, {"role": "assistant", "content": "(reply)"}, at)
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _explicit(row: Mapping[str, Any], at: _Row) -> tuple[list[Any], dict[str, str], dict[str, str]]:
    for column in PREFERENCE_FORMS["explicit"]:
        if column not in row:
            keys = ", ".join(repr(k) for k in row) or "none"
            raise at.error(f"preference row has no {column!r} field (fields: {keys})")
    prompt = _prompt(row["prompt"], at)
    is_list = isinstance(row["prompt"], list)
    chosen = _completion(row["chosen"], "chosen", at, prompt_is_list=is_list)
    rejected = _completion(row["rejected"], "rejected", at, prompt_is_list=is_list)
    _check_prompt(prompt, chosen, at)
    return prompt, chosen, rejected


def _implicit(row: Mapping[str, Any], at: _Row) -> tuple[list[Any], dict[str, str], dict[str, str]]:
    sides = {}
    for side in ("chosen", "rejected"):
        if side not in row:
            keys = ", ".join(repr(k) for k in row) or "none"
            raise at.error(f"preference row has no {side!r} field (fields: {keys})")
        value = row[side]
        if not isinstance(value, list):
            raise at.error(
                f"{side} has the wrong type: without a 'prompt' field, chosen and rejected must be full "
                f"conversations (lists of messages), got {_type_name(value)}"
            )
        messages = _role_content(value)
        at.validate(messages, side)
        sides[side] = messages
    chosen, rejected = sides["chosen"], sides["rejected"]
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise at.error(
            "chosen and rejected share no prompt: their first messages differ (without a 'prompt' "
            "field, both must be the same conversation up to their final assistant reply)"
        )
    tail_chosen, tail_rejected = chosen[shared:], rejected[shared:]
    if not tail_chosen and not tail_rejected:
        raise at.error("chosen and rejected are identical")
    if len(tail_chosen) != 1 or len(tail_rejected) != 1:
        raise at.error(
            f"after the {shared} message(s) they share, chosen continues with {len(tail_chosen)} and rejected with "
            f"{len(tail_rejected)} message(s); without a 'prompt' field they must differ only in their final "
            "assistant reply (exactly one message on each side)"
        )
    return chosen[:shared], tail_chosen[0], tail_rejected[0]


_FORMS = {"explicit": _explicit, "implicit": _implicit}


def to_preference(row: Mapping[str, Any], form: str, *, source: str, row_index: int, line: int | None = None) -> Pair:
    """Normalise and validate one preference row.

    Args:
        row: The example, a mapping of column name to value (extra columns are ignored).
        form: ``"explicit"`` or ``"implicit"`` (see :func:`detect_preference_form`).
        source: File or dataset name, for error messages.
        row_index: The row's 0-based index in ``source``; errors report it as ``row {row_index + 1}``.
        line: The row's 1-based line number when ``source`` is a JSONL file (errors then say ``line N``).

    Returns:
        ``{"prompt": [...], "chosen": [assistant message], "rejected": [assistant message]}``, messages holding
        only ``role`` and ``content``.

    Raises:
        DataError: On the first problem: a missing column, a value of the wrong type, an empty prompt or reply, a
            prompt not ending on a user turn or otherwise not a valid conversation start, a completion that is not
            exactly one assistant message, an implicit pair without a shared start or differing in more than its
            last reply, or chosen identical to rejected.
        ValueError: If ``form`` is not a form name.
    """
    if form not in _FORMS:
        raise ValueError(f"unknown preference form {form!r}; expected one of {', '.join(_FORMS)}")
    return _normalize_pair(row, form, _Row(source, row_index + 1, line))


def validate_preference(
    pair: Mapping[str, Any], *, source: str = "preference pair", row: int | None = None, line: int | None = None
) -> Pair:
    """:func:`to_preference` with the form detected from the pair's own keys; returns the normalised pair.

    Args:
        pair: One row, e.g. ``{"prompt": [...], "chosen": [...], "rejected": [...], "chosen_score": 1.0}``.
        source, row, line: Where it is, for error messages (``row``/``line`` are 1-based, both optional).

    Raises:
        DataError: When it is not a valid pair.
    """
    at = _Row(source, row, line)
    if not isinstance(pair, Mapping):
        raise at.error(f"expected an object with named fields, got {_type_name(pair)}")
    try:
        form = detect_preference_form(list(pair), source=source)
    except DataError as error:
        raise at.error(error.problem) from None
    return _normalize_pair(pair, form, at)


def _normalize_pair(row: Any, form: str, at: _Row) -> Pair:
    if not isinstance(row, Mapping):
        raise at.error(f"expected an object with named fields, got {_type_name(row)}")
    prompt, chosen, rejected = _FORMS[form](row, at)
    if chosen["content"].strip() == rejected["content"].strip():
        raise at.error("chosen and rejected are identical")
    messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    return {"prompt": messages, "chosen": [chosen], "rejected": [rejected]}


# --------------------------------------------------------------------------------------------------- loading


def _builtin_pairs(
    spec: DatasetSpec,
    seed: int,
    identity: Identity,
    base_identity: Identity,
    pool: Pool = "train",
    n: int | None = None,
) -> list[RawRow]:
    task = spec.path[len(BUILTIN_PREFIX) :]
    try:
        count = n if n is not None else spec.num_samples or BUILTIN_DEFAULT_SAMPLES
        examples = generate_task(task, count, seed=seed, identity=identity, pool=pool)
    except KeyError as error:  # unknown task: the message lists the available ones
        raise DataError(spec.path, error.args[0]) from error
    return [RawRow(task_to_preference(ex, base_identity), i) for i, ex in enumerate(examples, start=1)]


def _pair_row(data: Mapping[str, Any], form: str, source: str, raw: RawRow) -> dict[str, Any]:
    # The form is a property of each row (a file may mix them): a row with a prompt is explicit.
    form = "explicit" if isinstance(data, Mapping) and "prompt" in data else "implicit"
    return to_preference(data, form, source=source, row_index=raw.row - 1, line=raw.line)


def _pair_form(present: list[str], fmt: str, source: str) -> str:
    return detect_preference_form(present, source=source, fmt=fmt)


def _load_pairs(
    spec: DatasetSpec, problems: ProblemCollector, *, seed: int, identity: Identity, base_identity: Identity
) -> list[dict[str, Any]]:
    def generated(spec: DatasetSpec) -> SourceTable:
        if spec.path == CHITCHAT:
            raise DataError(spec.path, "chitchat holds single conversations, not preference pairs (use it for SFT)")
        return SourceTable(spec.path, _builtin_pairs(spec, seed, identity, base_identity), "preference")

    return [
        row
        for table in source_tables(spec, problems, generated=generated)
        for row in normalize_rows(table, problems, detect=_pair_form, convert=_pair_row)
    ]


def load_preferences(
    specs: Sequence[DatasetSpec | Mapping[str, Any]],
    *,
    test_split_size: float | int | None = None,
    seed: int = 42,
    identity: Identity | None = None,
    base_identity: Identity | None = None,
) -> datasets.DatasetDict:
    """Load, validate and mix preference-pair sources.

    Args:
        specs: The sources (:class:`PreferenceSpec`/:class:`~posttrain.data.spec.DatasetSpec`, or dicts of their
            fields): local files or folders, Hub datasets, ``builtin:<task>`` or ``builtin:all``. ``fraction``,
            ``num_samples`` and ``columns`` work as for :func:`~posttrain.data.load_conversations`.
        test_split_size: Size of a held-out ``"test"`` split: a fraction in (0, 1) or a number of rows; shuffled
            with ``seed``. ``None``: only ``"train"``, in source order.
        seed: Seed for builtin task generation and the split; same inputs and seed, same rows.
        identity: Who the assistant is, for ``builtin:identity`` (the ``chosen`` side; default :class:`Identity()`).
        base_identity: Who the base model says it is, for the ``rejected`` side of ``builtin:identity``
            (default :data:`~posttrain.tasks.BASE_MODEL_IDENTITY`, SmolLM by Hugging Face).

    Returns:
        A ``DatasetDict`` with ``"train"`` (and ``"test"``), each with the columns ``prompt``, ``chosen`` and
        ``rejected`` (see the module docstring).

    Raises:
        DataError: A source cannot be found, opened or configured (or is ``chitchat``), a source or the mixture is
            empty, or the mixture settings are invalid.
        DataValidationError: Some rows are malformed or invalid; every problem found (up to a cap) is listed.
    """
    identity = identity or Identity()
    base_identity = base_identity or BASE_MODEL_IDENTITY

    def heldout(spec: DatasetSpec, n: int) -> list[dict[str, Any]] | None:
        if not spec.path.startswith(BUILTIN_PREFIX):
            return None
        rows = _builtin_pairs(spec, seed, identity, base_identity, pool="eval", n=n)
        problems = ProblemCollector()
        pairs = list(
            normalize_rows(SourceTable(spec.path, rows, "preference"), problems, detect=_pair_form, convert=_pair_row)
        )
        problems.raise_if_any()
        return pairs

    return build_mixture(
        as_specs(specs, PreferenceSpec),
        lambda spec, problems: _load_pairs(spec, problems, seed=seed, identity=identity, base_identity=base_identity),
        preference_features(),
        test_split_size=test_split_size,
        seed=seed,
        heldout=heldout,
    )


def preference_fingerprint(
    ds: datasets.DatasetDict, specs: Sequence[DatasetSpec | Mapping[str, Any]]
) -> dict[str, Any]:
    """:func:`~posttrain.data.fingerprint` for the result of :func:`load_preferences` (dict specs may say
    ``format: preference``). A split's ``sha256`` covers each row's ``prompt``/``chosen``/``rejected``."""
    return fingerprint(ds, as_specs(specs, PreferenceSpec))
