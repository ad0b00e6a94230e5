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

Length (:func:`check_pair_lengths`): the DPO and reward stages measure every pair the way TRL's trainers will
tokenize it (prompt + chosen and prompt + rejected, rendered with the chat template) against the trainer's
``max_length`` and apply ``overlong_samples`` as SFT does: ``error`` (the default) names the first overlong pair by
file and row/line with its token lengths, ``drop`` skips overlong pairs, ``truncate`` lets the trainer cut them --
except that a pair whose *chosen* reply would lose its end-of-turn token is dropped (and counted): a chosen reply
cut short is never trained as a finished one. RewardTrainer cannot cut a pair (it silently filters overlong ones),
so for reward models ``truncate`` drops them too, with a count.

Unpaired rows (KTO, :func:`load_unpaired`): ``prompt`` (a string or messages ending with a user turn),
``completion`` (a string or a list with one assistant message) and ``label`` (a boolean: true for a desirable reply,
false for an undesirable one), validated row by row like pairs. :func:`pairs_to_unpaired` turns pairs into such rows
(each pair: its chosen reply desirable, its rejected reply undesirable); the KTO stage does that only when
``kto_from_pairs: true``, and refuses pairs otherwise, as the pair loaders refuse unpaired rows, naming the source.
:func:`check_unpaired_lengths` applies ``overlong_samples`` to them as KTOTrainer tokenizes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from posttrain.tasks import BASE_MODEL_IDENTITY, task_to_preference
from posttrain.tasks.base import SELECTION_POOL, Pool

from .files import RawRow
from .formats import FORMAT_COLUMNS, with_system_prompt
from .loading import SourceTable, as_specs, build_mixture, builtin_examples, fingerprint, normalize_rows, source_tables
from .spec import BUILTIN_PREFIX, CHITCHAT, DatasetSpec, Identity
from .validation import ALLOWED_ROLES, DataError, ProblemCollector, validate_messages

if TYPE_CHECKING:
    import datasets

__all__ = [
    "ORIGIN_COLUMN",
    "PREFERENCE_COLUMNS",
    "PREFERENCE_FORMATS",
    "PREFERENCE_FORMS",
    "PreferenceSpec",
    "UNPAIRED_COLUMNS",
    "add_system_prompt",
    "check_pair_lengths",
    "check_unpaired_lengths",
    "load_unpaired",
    "pairs_to_unpaired",
    "to_unpaired",
    "unpaired_features",
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

UNPAIRED_COLUMNS: tuple[str, str, str] = ("prompt", "completion", "label")
"""The columns of every dataset :func:`load_unpaired` returns (KTO's unpaired rows)."""

ORIGIN_COLUMN = "origin"
"""The extra column of ``load_preferences(..., with_origin=True)``: ``{source, row, line}`` of each pair, so that a
check after loading (:func:`check_pair_lengths`) can name the file and row a pair came from."""

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


def preference_features(*, with_origin: bool = False) -> datasets.Features:
    """The Arrow schema of the returned datasets: ``prompt``, ``chosen``, ``rejected``, each a list of
    ``{role: string, content: string}`` (and, ``with_origin``, :data:`ORIGIN_COLUMN`)."""
    import datasets

    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    features = {column: datasets.List(message) for column in PREFERENCE_COLUMNS}
    if with_origin:
        features[ORIGIN_COLUMN] = {
            "source": datasets.Value("string"),
            "row": datasets.Value("int64"),
            "line": datasets.Value("int64"),
        }
    return datasets.Features(features)


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
    if all(column in present for column in UNPAIRED_COLUMNS):
        hint = (
            " (these are unpaired rows, 'prompt' + 'completion' + 'label', which only KTO trains: `posttrain kto`, "
            "with kto_from_pairs: false)"
        )
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


# tool-calling and reasoning fields SFT data carries (posttrain.data.tools); preference pairs are role/content only
UNSUPPORTED_MESSAGE_KEYS = ("tool_calls", "tool_call_id", "reasoning_content", "thinking", "reasoning")


def _role_content(messages: list[Any], at: _Row, what: str) -> list[Any]:
    """``role``/``content`` of each message; a tool-calling or reasoning field is refused by name, never dropped."""
    for i, m in enumerate(messages, start=1):
        found = [k for k in UNSUPPORTED_MESSAGE_KEYS if isinstance(m, dict) and m.get(k) is not None]
        if found:
            raise at.error(
                f"{what} message {i} has {', '.join(repr(k) for k in found)}: preference pairs are role/content "
                "turns (tool calls and reasoning are supported in SFT data only)"
            )
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
    return _role_content(value, at, "prompt")


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
        _role_content([message], at, side)  # a tool call or reasoning in the reply is refused by name
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
        messages = _role_content(value, at, side)
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
    if spec.reply != "response":  # pairs are the ideal reply against the classic mistake: nothing else to pair
        raise DataError(spec.path, f"reply: {spec.reply} is for SFT conversations, not preference pairs; remove it")
    examples = builtin_examples(spec, seed, identity, pool, n)
    try:
        return [RawRow(task_to_preference(ex, base_identity), i) for i, ex in enumerate(examples, start=1)]
    except ValueError as error:  # a task with tools: conversations, not pairs
        raise DataError(spec.path, str(error)) from None


def add_system_prompt(pairs: datasets.Dataset, system_prompt: str | None) -> datasets.Dataset:
    """``pairs`` with ``system_prompt`` added to every prompt that has no system message (unchanged without one)."""
    if not system_prompt:
        return pairs
    return pairs.map(lambda row: {"prompt": with_system_prompt(row["prompt"], system_prompt)}, desc="System prompt")


def _pair_row(data: Mapping[str, Any], form: str, source: str, raw: RawRow) -> dict[str, Any]:
    # The form is a property of each row (a file may mix them): a row with a prompt is explicit.
    form = "explicit" if isinstance(data, Mapping) and "prompt" in data else "implicit"
    pair = to_preference(data, form, source=source, row_index=raw.row - 1, line=raw.line)
    # where the pair came from (a column only when asked for: build_mixture keeps just the features' columns)
    return {**pair, ORIGIN_COLUMN: {"source": source, "row": raw.row, "line": raw.line}}


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
    with_origin: bool = False,
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
        with_origin: Add the :data:`ORIGIN_COLUMN` (``{source, row, line}`` of each pair) for checks that run after
            loading (:func:`check_pair_lengths` removes it again).

    Returns:
        A ``DatasetDict`` with ``"train"`` (and ``"test"``), each with the columns ``prompt``, ``chosen`` and
        ``rejected`` (see the module docstring), and ``origin`` when ``with_origin``.

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
        rows = _builtin_pairs(spec, seed, identity, base_identity, pool=SELECTION_POOL, n=n)
        problems = ProblemCollector()
        pairs = list(
            normalize_rows(SourceTable(spec.path, rows, "preference"), problems, detect=_pair_form, convert=_pair_row)
        )
        problems.raise_if_any()
        return pairs

    return build_mixture(
        as_specs(specs, PreferenceSpec),
        lambda spec, problems: _load_pairs(spec, problems, seed=seed, identity=identity, base_identity=base_identity),
        preference_features(with_origin=with_origin),
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


# ---------------------------------------------------------------------------------------------------- lengths

#: the trainers whose tokenization :func:`check_pair_lengths` mirrors (ORPO and CPO/SimPO cut the reply, keeping the
#: start, as DPOTrainer's ``keep_start``)
PAIR_TRAINERS = {"dpo": "DPOTrainer", "reward": "RewardTrainer", "orpo": "ORPOTrainer", "simpo": "CPOTrainer"}
#: pairs measured per call of the tokenizer's chat template
_LENGTH_BATCH = 256


@dataclass
class _Measured:
    prompt: int  # tokens before the completion (where prompt and prompt + reply stop agreeing, as TRL's DPO cuts)
    chosen: int  # prompt + chosen, rendered with the chat template
    rejected: int  # prompt + rejected
    chosen_end: int  # index in prompt + chosen of the chosen reply's last end-of-turn token (its last token if none)


def _token_ids(tokenizer, conversations: list[list[dict]], **kwargs: Any) -> list[list[int]]:
    encoded = tokenizer.apply_chat_template(conversations, tokenize=True, return_dict=True, **kwargs)["input_ids"]
    return [list(ids) for ids in encoded]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _measure(tokenizer, rows: list[dict[str, Any]], stop_ids: set[int]) -> list[_Measured]:
    """Token counts of each pair as TRL's DPOTrainer/RewardTrainer tokenize conversational pairs: the prompt with
    the generation prompt, prompt + chosen and prompt + rejected, each through the tokenizer's chat template."""
    out = []
    for start in range(0, len(rows), _LENGTH_BATCH):
        batch = rows[start : start + _LENGTH_BATCH]
        prompts = _token_ids(tokenizer, [r["prompt"] for r in batch], add_generation_prompt=True)
        chosen = _token_ids(tokenizer, [r["prompt"] + r["chosen"] for r in batch])
        rejected = _token_ids(tokenizer, [r["prompt"] + r["rejected"] for r in batch])
        for p, c, r in zip(prompts, chosen, rejected, strict=True):
            prompt = min(_common_prefix(p, c), _common_prefix(p, r))
            ends = [i for i in range(prompt, len(c)) if c[i] in stop_ids]
            out.append(_Measured(prompt, len(c), len(r), ends[-1] if ends else len(c) - 1))
    return out


def _located(origin: Mapping[str, Any] | None, index: int, name: str) -> tuple[str, int | None, int | None]:
    """``(source, row, line)`` of pair ``index`` of a split: its origin, else its position in the split."""
    if origin is None:
        return f"{name} pairs", index + 1, None
    return origin["source"], origin["row"], origin["line"]


def _split_origins(dataset: datasets.Dataset, policy: str) -> tuple[datasets.Dataset, list | None]:
    """Check ``overlong_samples``; the rows without the :data:`ORIGIN_COLUMN`, and that column (None without it)."""
    if policy not in ("error", "drop", "truncate"):
        raise ValueError(f"overlong_samples must be error, drop or truncate (got {policy!r})")
    if ORIGIN_COLUMN not in dataset.column_names:
        return dataset, None
    return dataset.remove_columns(ORIGIN_COLUMN), dataset[ORIGIN_COLUMN]


def check_pair_lengths(
    dataset: datasets.Dataset,
    tokenizer: Any,
    max_length: int | None,
    policy: str,
    *,
    trainer: str = "dpo",
    truncation_mode: str = "keep_start",
    stop_token_ids: Sequence[int] = (),
    name: str = "train",
) -> tuple[datasets.Dataset, str | None]:
    """Apply ``overlong_samples`` to preference pairs longer than the trainer's ``max_length``.

    Each pair is measured as TRL's trainer tokenizes it (:func:`_measure`): it is *overlong* when prompt + chosen or
    prompt + rejected has more than ``max_length`` tokens.

    Args:
        dataset: Pairs from :func:`load_preferences` (with the :data:`ORIGIN_COLUMN` where errors should name the
            file and row; it is removed from the result).
        tokenizer: The tokenizer the trainer gets, chat template set up.
        max_length: The trainer config's ``max_length``; ``None`` checks nothing (the trainer cuts nothing).
        policy: ``error`` (raise naming the first overlong pair and how many there are), ``drop`` (skip every
            overlong pair), ``truncate`` (``dpo``: leave them to DPOTrainer, which cuts each sequence to
            ``max_length``, but drop each pair whose chosen reply would lose its end-of-turn token -- with
            ``keep_start`` its last stop token lies past ``max_length``, with ``keep_end`` the start of the reply
            would go -- so that no chosen reply is trained as finished when it was cut; ``reward``: drop them,
            since RewardTrainer only filters overlong pairs out).
        trainer: a key of :data:`PAIR_TRAINERS` (``"dpo"``, ``"orpo"`` and ``"simpo"`` cut alike).
        truncation_mode: DPOConfig's ``truncation_mode``.
        stop_token_ids: The ids that end a reply (:func:`posttrain.models.generation.stop_token_ids`).
        name: The split, for messages.

    Returns:
        The pairs to train on (without the origin column) and a one-line note of what was dropped or will be cut,
        or ``None`` when every pair fits.

    Raises:
        DataError: ``error`` and an overlong pair (located at the first one: file and row/line, its token counts,
            ``max_length``, how many more), or no pair left to train on.
    """
    if trainer not in PAIR_TRAINERS:
        raise ValueError(f"unknown trainer {trainer!r}; expected one of {', '.join(PAIR_TRAINERS)}")
    dataset, origins = _split_origins(dataset, policy)
    if max_length is None or len(dataset) == 0:
        return dataset, None
    measured = _measure(tokenizer, dataset.to_list(), set(stop_token_ids))
    over = [i for i, m in enumerate(measured) if max(m.chosen, m.rejected) > max_length]
    if not over:
        return dataset, None
    total, how = len(measured), PAIR_TRAINERS[trainer]

    def where(i: int) -> tuple[str, int | None, int | None]:
        return _located(origins[i] if origins is not None else None, i, name)

    def lengths(i: int) -> str:
        m = measured[i]
        return f"prompt + chosen {m.chosen} tokens, prompt + rejected {m.rejected} (prompt {m.prompt})"

    def describe(i: int) -> str:
        source, row, line = where(i)
        return f"{source} {f'line {line}' if line is not None else f'row {row}'} ({lengths(i)})"

    def refuse(problem: str, first: int) -> DataError:
        source, row, line = where(first)
        return DataError(source, problem, row=row, line=line)

    if policy == "error":
        others = over[1:6]
        listed = "; ".join(describe(i) for i in others) + (f"; and {len(over) - 6} more" if len(over) > 6 else "")
        problem = (
            f"preference pair longer than max_length {max_length}: {lengths(over[0])}, counted with the chat "
            f"template as {how} tokenizes it. {len(over)} of {total} {name} pairs are longer"
            + (f" (also {listed})" if listed else "")
            + ". Raise max_length, shorten the replies (posttrain pairs: a smaller max_new_tokens), or set "
            "overlong_samples: drop (skip them) or truncate (cut them; a pair whose chosen reply would lose its "
            "end-of-turn token is dropped)"
        )
        raise refuse(problem, over[0])

    if policy == "truncate" and trainer != "reward":

        def cut_short(m: _Measured) -> bool:
            if truncation_mode == "keep_end":  # the sequence keeps its last max_length tokens
                return m.chosen - max_length > m.prompt
            return m.chosen_end >= max_length

        dropped = [i for i in over if cut_short(measured[i])]
        note = (
            f"{name} data: {len(over)} of {total} pairs are longer than max_length {max_length} tokens: {how} cuts "
            f"them ({truncation_mode}); {len(dropped)} of them dropped, whose chosen reply would lose its end-of-turn "
            "token (a chosen reply cut short is never trained as finished)"
        )
    else:
        dropped = over
        why = "" if policy == "drop" else f" ({how} cannot cut a pair: overlong_samples: truncate drops them)"
        note = f"{name} data: dropped {len(dropped)} of {total} pairs longer than max_length {max_length} tokens{why}"
    if len(dropped) == total:
        cut = " and would lose its chosen reply's end-of-turn token" if dropped is not over else ""
        raise refuse(
            f"overlong_samples: {policy} would leave no {name} pair to train on: all {total} are longer than "
            f"max_length {max_length} tokens{cut} (this one: {lengths(over[0])}). Raise max_length or shorten the "
            "replies (posttrain pairs: a smaller max_new_tokens)",
            over[0],
        )
    if dropped:
        keep = set(range(total)) - set(dropped)
        dataset = dataset.select(sorted(keep))
    return dataset, note


# ------------------------------------------------------------------------------------------ unpaired rows (KTO)

_UNPAIRED_FORM = (
    "accepted form: 'prompt' (a string, or messages ending with a user turn), 'completion' (a string, or a list "
    "with one assistant message) and 'label' (true: a desirable reply, false: an undesirable one)"
)


def unpaired_features(*, with_origin: bool = False) -> datasets.Features:
    """The Arrow schema of :func:`load_unpaired`: ``prompt`` and ``completion`` message lists, ``label`` a bool (and,
    ``with_origin``, :data:`ORIGIN_COLUMN`)."""
    import datasets

    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    features = {"prompt": datasets.List(message), "completion": datasets.List(message), "label": datasets.Value("bool")}
    if with_origin:
        features[ORIGIN_COLUMN] = preference_features(with_origin=True)[ORIGIN_COLUMN]
    return datasets.Features(features)


def _unpaired_form(present: list[str], fmt: str, source: str) -> str:
    if fmt not in PREFERENCE_FORMATS:
        raise DataError(source, f"format {fmt!r} is not a format of unpaired rows (use auto)")
    if "chosen" in present and "rejected" in present:
        raise DataError(
            source,
            "has preference pairs ('chosen' + 'rejected'), not unpaired rows: set kto_from_pairs: true to train each "
            "pair as a desirable (chosen) and an undesirable (rejected) row",
        )
    missing = [c for c in UNPAIRED_COLUMNS if c not in present]
    if missing:
        found = ", ".join(repr(c) for c in present) or "none"
        raise DataError(
            source,
            f"missing column(s) {', '.join(map(repr, missing))} for unpaired rows; found: {found}; {_UNPAIRED_FORM}",
        )
    return "unpaired"


def to_unpaired(row: Mapping[str, Any], *, source: str, row_index: int, line: int | None = None) -> dict[str, Any]:
    """Normalise and validate one unpaired row: ``{"prompt": [...], "completion": [assistant message], "label":
    bool}``; a :class:`DataError` located at ``source`` row ``row_index + 1`` (or ``line``) otherwise."""
    at = _Row(source, row_index + 1, line)
    if not isinstance(row, Mapping):
        raise at.error(f"expected an object with named fields, got {_type_name(row)}")
    for column in UNPAIRED_COLUMNS:
        if column not in row:
            keys = ", ".join(repr(k) for k in row) or "none"
            raise at.error(f"unpaired row has no {column!r} field (fields: {keys}); {_UNPAIRED_FORM}")
    label = row["label"]
    if not isinstance(label, bool):
        raise at.error(f"label must be true (desirable) or false (undesirable), got {_type_name(label)} {label!r}")
    prompt = _prompt(row["prompt"], at)
    completion = _completion(row["completion"], "completion", at, prompt_is_list=isinstance(row["prompt"], list))
    _check_prompt(prompt, completion, at)
    messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    return {"prompt": messages, "completion": [completion], "label": label}


def _unpaired_row(data: Mapping[str, Any], form: str, source: str, raw: RawRow) -> dict[str, Any]:
    row = to_unpaired(data, source=source, row_index=raw.row - 1, line=raw.line)
    return {**row, ORIGIN_COLUMN: {"source": source, "row": raw.row, "line": raw.line}}


def load_unpaired(
    specs: Sequence[DatasetSpec | Mapping[str, Any]],
    *,
    test_split_size: float | int | None = None,
    seed: int = 42,
    with_origin: bool = False,
) -> datasets.DatasetDict:
    """Load, validate and mix sources of unpaired rows (``prompt``/``completion``/``label``, see the module
    docstring), as :func:`load_preferences` does pairs. Built-in tasks, ``chitchat`` and sources of preference pairs
    are refused naming the source (pairs: :func:`pairs_to_unpaired`, the KTO stage's ``kto_from_pairs: true``).

    Raises:
        DataError: A source cannot be used (missing columns, pairs, a built-in task), or the mixture is empty.
        DataValidationError: Some rows are malformed (each named by file and row/line).
    """

    def load(spec: DatasetSpec, problems: ProblemCollector) -> list[dict[str, Any]]:
        def generated(spec: DatasetSpec) -> SourceTable:
            what = "single conversations" if spec.path == CHITCHAT else "preference pairs"
            raise DataError(
                spec.path,
                f"gives {what}, not unpaired rows"
                + (
                    ": set kto_from_pairs: true to train each pair as a desirable and an undesirable row"
                    if spec.path != CHITCHAT
                    else ""
                ),
            )

        return [
            row
            for table in source_tables(spec, problems, generated=generated)
            for row in normalize_rows(table, problems, detect=_unpaired_form, convert=_unpaired_row)
        ]

    data = build_mixture(
        as_specs(specs, PreferenceSpec),
        load,
        unpaired_features(with_origin=True),
        test_split_size=test_split_size,
        seed=seed,
    )
    if not with_origin:
        data = type(data)({split: ds.remove_columns(ORIGIN_COLUMN) for split, ds in data.items()})
    return data


def pairs_to_unpaired(pairs: datasets.Dataset) -> datasets.Dataset:
    """Each pair as two unpaired rows, in pair order: ``(prompt, chosen, True)`` then ``(prompt, rejected, False)``
    (the :data:`ORIGIN_COLUMN`, when there, is the pair's for both)."""

    def split(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {column: [] for column in (*UNPAIRED_COLUMNS, *batch.keys() - set(PREFERENCE_COLUMNS))}
        for i, prompt in enumerate(batch["prompt"]):
            for side, label in (("chosen", True), ("rejected", False)):
                out["prompt"].append(prompt)
                out["completion"].append(batch[side][i])
                out["label"].append(label)
                for key in out.keys() - set(UNPAIRED_COLUMNS):
                    out[key].append(batch[key][i])
        return out

    with_origin = ORIGIN_COLUMN in pairs.column_names
    return pairs.map(
        split,
        batched=True,
        remove_columns=pairs.column_names,
        features=unpaired_features(with_origin=with_origin),
        desc="Pairs to unpaired rows",
    )


def check_unpaired_lengths(
    dataset: datasets.Dataset,
    tokenizer: Any,
    max_length: int | None,
    policy: str,
    *,
    stop_token_ids: Sequence[int] = (),
    name: str = "train",
) -> tuple[datasets.Dataset, str | None]:
    """``overlong_samples`` for unpaired rows, measured as KTOTrainer tokenizes them (prompt with the generation
    prompt, prompt + completion, chat template) against ``max_length``; KTOTrainer cuts a longer row's end and drops
    a row whose prompt alone fills ``max_length``. ``error`` names the first overlong row (file and row/line),
    ``drop`` skips them, ``truncate`` leaves them to the trainer but drops each *desirable* row whose end-of-turn
    token would be cut (a desirable reply cut short is never trained as finished) and each row whose prompt fills
    ``max_length``. Returns the rows (without the origin column) and a note, or None when all fit."""
    dataset, origins = _split_origins(dataset, policy)
    if max_length is None or len(dataset) == 0:
        return dataset, None
    rows = dataset.to_list()
    stops = set(stop_token_ids)
    measured = []  # (prompt, prompt + completion, index of the completion's last stop token)
    for start in range(0, len(rows), _LENGTH_BATCH):
        batch = rows[start : start + _LENGTH_BATCH]
        prompts = _token_ids(tokenizer, [r["prompt"] for r in batch], add_generation_prompt=True)
        full = _token_ids(tokenizer, [r["prompt"] + r["completion"] for r in batch])
        for p, f in zip(prompts, full, strict=True):
            prompt = _common_prefix(p, f)
            ends = [i for i in range(prompt, len(f)) if f[i] in stops]
            measured.append((prompt, len(f), ends[-1] if ends else len(f) - 1))
    over = [i for i, m in enumerate(measured) if m[1] > max_length]
    if not over:
        return dataset, None
    total = len(rows)

    def lengths(i: int) -> str:
        return f"prompt + completion {measured[i][1]} tokens (prompt {measured[i][0]})"

    def refuse(problem: str, i: int) -> DataError:
        source, row, line = _located(origins[i] if origins is not None else None, i, name)
        return DataError(source, problem, row=row, line=line)

    if policy == "error":
        raise refuse(
            f"unpaired row longer than max_length {max_length}: {lengths(over[0])}, counted with the chat template as "
            f"KTOTrainer tokenizes it. {len(over)} of {total} {name} rows are longer. Raise max_length, shorten the "
            "replies, or set overlong_samples: drop (skip them) or truncate (cut them; a desirable row whose reply "
            "would lose its end-of-turn token is dropped)",
            over[0],
        )
    if policy == "truncate":
        dropped = [
            i for i in over if measured[i][0] >= max_length or (rows[i]["label"] and measured[i][2] >= max_length)
        ]
        note = (
            f"{name} data: {len(over)} of {total} rows are longer than max_length {max_length} tokens: KTOTrainer cuts "
            f"their end; {len(dropped)} of them dropped (a desirable reply that would lose its end-of-turn token, or a "
            "prompt that fills max_length)"
        )
    else:
        dropped = over
        note = f"{name} data: dropped {len(dropped)} of {total} rows longer than max_length {max_length} tokens"
    if len(dropped) == total:
        raise refuse(
            f"overlong_samples: {policy} would leave no {name} row to train on: all {total} are longer than "
            f"max_length {max_length} tokens (this one: {lengths(over[0])}). Raise max_length or shorten the replies",
            over[0],
        )
    if dropped:
        dataset = dataset.select(sorted(set(range(total)) - set(dropped)))
    return dataset, note
