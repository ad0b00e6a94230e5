"""posttrain's one logger: what a run tells its user, written once per run instead of once per process.

``get_logger(__name__)`` returns a child of the ``posttrain`` logger. Its records go to standard output (looked up
when each record is written, so pytest's ``capsys`` and redirections see them) as the bare message, on the main
process only: under ``accelerate launch`` a record from rank ``RANK != 0`` is dropped unless it is logged with
``extra={"all_ranks": True}``. Warnings are prefixed ``posttrain: warning:`` so they stand out in a training log.

``POSTTRAIN_LOG_LEVEL`` (``DEBUG``, ``INFO``, ``WARNING``, ...) sets the level; the default is ``INFO``.

Plain commands that print their result (``posttrain model``, a file path, usage text) keep ``print``: that output
is the command's answer, not a log line.
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "posttrain"
LEVEL_ENV = "POSTTRAIN_LOG_LEVEL"
ALL_RANKS = {"all_ranks": True}  # ``extra=`` for a record every process must write


def process_rank() -> int:
    """This process's global rank under torchrun/accelerate (``RANK``), 0 in a plain process."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class _MainProcessOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return bool(getattr(record, "all_ranks", False)) or process_rank() == 0


class _Stdout(logging.StreamHandler):
    """A handler on whatever ``sys.stdout`` is when a record is written (pytest swaps it per test)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        self.flush()


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING and not message.startswith("posttrain"):
            return f"posttrain: {record.levelname.lower()}: {message}"
        return message


def _configure(root: logging.Logger) -> None:
    if any(isinstance(h, _Stdout) for h in root.handlers):
        return
    handler = _Stdout()
    handler.setFormatter(_Format("%(message)s"))
    handler.addFilter(_MainProcessOnly())
    root.addHandler(handler)
    level = os.environ.get(LEVEL_ENV, "INFO").upper()
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    root.propagate = False


def get_logger(name: str = ROOT) -> logging.Logger:
    """The logger for module ``name`` (``__name__``), under the ``posttrain`` logger, configured on first use."""
    _configure(logging.getLogger(ROOT))
    if name != ROOT and not name.startswith(f"{ROOT}."):
        name = f"{ROOT}.{name}"
    return logging.getLogger(name)
