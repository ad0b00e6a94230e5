"""What a recipe says about its data: :class:`DatasetSpec` (one source of a mixture) and :class:`Identity`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml
from trl.scripts.utils import DatasetConfig

from posttrain.tasks.base import Identity
from posttrain.tasks.working import REPLY_KINDS, WORKED_TASKS

from .formats import FORMATS
from .validation import DataError

__all__ = [
    "BUILTIN_DEFAULT_SAMPLES",
    "BUILTIN_PREFIX",
    "CHITCHAT",
    "DatasetSpec",
    "Identity",
    "spec_from_text",
]

BUILTIN_PREFIX = "builtin:"
"""``path: builtin:<task>`` generates examples of a built-in task (see :mod:`posttrain.tasks`)."""

CHITCHAT = "chitchat"
"""``path: chitchat`` loads the real human conversations shipped in the ``chitchat-dataset`` package."""

BUILTIN_DEFAULT_SAMPLES = 200
"""How many examples a builtin task generates when ``num_samples`` is not set."""


@dataclass
class DatasetSpec(DatasetConfig):
    """One data source of a training mixture.

    Extends TRL's :class:`~trl.scripts.utils.DatasetConfig` (``path``, ``name``, ``data_dir``, ``data_files``,
    ``split``, ``columns``, ``fraction``), so TRL's YAML layout works unchanged. ``path`` may be:

    * a Hugging Face Hub dataset name (``org/name``; ``name``, ``data_dir``, ``data_files`` and ``split`` are passed
      to :func:`datasets.load_dataset`);
    * a local ``.json``/``.jsonl``/``.parquet``/``.csv`` file, or a folder of such files (loaded in sorted order);
      ``split`` is ignored for local data;
    * ``json``/``csv``/``parquet`` with ``data_files`` naming local files (the :func:`datasets.load_dataset` idiom);
    * ``builtin:<task>`` -- generated examples of a built-in task, or ``builtin:all`` for all of them mixed;
    * ``chitchat`` -- real human chit-chat conversations from the ``chitchat-dataset`` package.

    ``reply`` (builtin tasks): what the assistant turns say -- ``response`` (the ideal short reply), ``working``
    (think-then-answer: the worked solution, then ``Answer: X``) or ``answer`` (``Answer: X`` alone); see
    :mod:`posttrain.tasks.working`.

    ``fraction`` keeps TRL's meaning: the target share of this source in the final mixture. Fractions are
    normalised to sum to one, must be set for all sources or none, and the mixture is sized so that no source is
    oversampled (the first ``round(share * N)`` rows of each source are kept).
    """

    format: str = field(
        default="auto",
        metadata={
            "help": "Layout of the rows: 'auto' (detect from the columns), 'messages', 'sharegpt', 'alpaca' or "
            "'prompt_completion'."
        },
    )
    num_samples: int | None = field(
        default=None,
        metadata={
            "help": "Use at most this many rows (the first ones) of the source. For builtin tasks: how many examples "
            f"to generate (default {BUILTIN_DEFAULT_SAMPLES}); for chitchat: how many conversations."
        },
    )
    reply: str = field(
        default="response",
        metadata={
            "help": "Builtin tasks only: what the assistant turns say. 'response' (the task's ideal short reply), "
            "'working' (think-then-answer: the worked solution, then a final line 'Answer: X'; letter_count, "
            "arithmetic and decimal_compare) or 'answer' (the line 'Answer: X' alone)."
        },
    )

    def __post_init__(self) -> None:
        post_init = getattr(super(), "__post_init__", None)
        if post_init is not None:
            post_init()
        if not isinstance(self.path, str) or not self.path.strip():
            raise DataError(str(self.path), "dataset 'path' must be a non-empty string")
        if self.format not in FORMATS:
            raise DataError(self.path, f"unknown format {self.format!r}; expected one of {', '.join(FORMATS)}")
        samples = self.num_samples
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
            raise DataError(self.path, f"num_samples must be a positive integer (got {self.num_samples!r})")
        if self.reply not in REPLY_KINDS:
            raise DataError(self.path, f"reply must be one of {', '.join(REPLY_KINDS)} (got {self.reply!r})")
        if self.reply != "response":
            task = self.path[len(BUILTIN_PREFIX) :] if self.path.startswith(BUILTIN_PREFIX) else None
            if task not in WORKED_TASKS:
                raise DataError(
                    self.path,
                    f"reply: {self.reply} needs a builtin task with a worked solution "
                    f"({', '.join(BUILTIN_PREFIX + t for t in WORKED_TASKS)})",
                )
        if self.fraction is not None and not self.fraction >= 0:
            raise DataError(self.path, f"fraction must be a number >= 0 (got {self.fraction!r})")


def spec_from_text(text: str, factory: Callable[..., DatasetSpec] = DatasetSpec) -> DatasetSpec:
    """One data source written as a single string (a ``--datasets`` value, or a string item of ``datasets:``).

    Either a path -- ``builtin:identity``, ``chitchat``, ``data/train.jsonl``, a folder, ``org/name`` on the Hub --
    or a JSON/YAML mapping of :class:`DatasetSpec` fields, which starts with ``{``:
    ``{"path": "builtin:identity", "num_samples": 8}`` or ``{path: org/name, name: subset, split: train}``.

    Raises:
        DataError: naming ``text``, when the mapping is not valid JSON/YAML, has unknown keys or no ``path``, or a
            field has a bad value.
    """
    if not isinstance(text, str):
        raise DataError(repr(text), f"a data source must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return factory(path=text)  # DatasetSpec refuses an empty path
    if stripped.startswith("["):
        raise DataError(text, "give one source per value (a path or a {...} mapping), not a list")
    try:
        mapping = yaml.safe_load(stripped)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        why = getattr(err, "problem", None) or " ".join(str(err).split())
        where = f" at character {mark.index + 1}" if mark is not None else ""
        raise DataError(text, f"not a valid JSON/YAML mapping: {why}{where}") from None
    if not isinstance(mapping, dict):
        raise DataError(text, f"must be a mapping of data source fields, got {type(mapping).__name__}")
    fields = [f.name for f in dataclasses.fields(factory) if f.init] if dataclasses.is_dataclass(factory) else []
    unknown = [key for key in mapping if fields and key not in fields]
    if unknown:
        raise DataError(text, f"unknown key {unknown[0]!r}; a data source has {', '.join(fields)}")
    if "path" not in mapping:
        raise DataError(text, "the mapping needs a 'path'")
    try:
        return factory(**mapping)
    except TypeError as err:  # a value of the wrong type (fraction: many)
        raise DataError(text, str(err)) from None
