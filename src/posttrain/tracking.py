"""Experiment tracking for ``report_to: trackio`` and ``report_to: tensorboard``: posttrain's own series (PPO's
per-step statistics, held-out scores with their CIs, the reward-hacking guard's signals) go to the tracker the
trainer's own metrics go to (see docs/tracking.md).

* :func:`open_tracker` gives a :class:`Tracker` (``log(metrics, step)``, ``finish()``) for the backends named in
  ``report_to``: trackio, TensorBoard, both, or none (a no-op). Other ``report_to`` values (wandb, ...) get TRL's
  metrics from transformers but not posttrain's series.
* :class:`TrackerCallback` is the same for a TRL trainer: it logs into the run transformers' ``TrackioCallback`` opened
  (the current trackio run, by project and run name) and into the folder its ``TensorBoardCallback`` writes, not a
  second run.
* :func:`configure` keeps trackio local before anything imports it: ``TRACKIO_DIR`` (default: ``trackio/`` beside the
  run's ``output_dir``, so the stages of one pipeline share one dashboard), no Space, bucket, dataset or server, no
  static Space after training; ``project`` ``posttrain``; a run name from the output folder and the start time.

A value that is not a finite number is left out of a step (a NaN guard signal before the guard has data).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from posttrain.log import get_logger

logger = get_logger(__name__)

BACKENDS = ("trackio", "tensorboard")
DEFAULT_PROJECT = "posttrain"
#: transformers' default ``project`` (TrainingArguments), replaced by :data:`DEFAULT_PROJECT`
TRANSFORMERS_PROJECT = "huggingface"
#: where trackio would send metrics off this machine: cleared, so a run never reaches the Hub or a server
REMOTE_VARIABLES = ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_BUCKET_ID", "TRACKIO_DATASET_ID")
#: the step of a point in the trackio run transformers logs to (its ``TrackioCallback`` lets trackio count steps)
STEP_KEY = "train/global_step"

_TRACKIO_DIR_SET: str | None = None  # the TRACKIO_DIR this module set (any other value is the user's)


def backends(report_to) -> list[str]:
    """The backends of ``report_to`` (a name, a list, ``none``, ``all``) that posttrain's series go to."""
    if report_to is None:
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if "all" in names:
        return list(BACKENDS)
    return [name for name in BACKENDS if name in names]


def final_name(output_dir: str | os.PathLike) -> str:
    """The run's folder name: ``ppo`` for ``ppo`` and for its work folder ``.ppo.partial``."""
    name = Path(output_dir).name
    if name.startswith(".") and name.endswith(".partial"):
        name = name[1 : -len(".partial")]
    return name


def trackio_dir(output_dir: str | os.PathLike) -> Path:
    """Where trackio writes: ``TRACKIO_DIR`` when the user set it, else ``trackio/`` beside ``output_dir`` (a work
    folder ``.<name>.partial`` is beside it too)."""
    current = os.environ.get("TRACKIO_DIR")
    if current and current != _TRACKIO_DIR_SET:
        return Path(current)
    return Path(output_dir).absolute().parent / "trackio"


def point_trackio_at(path: str | os.PathLike) -> None:
    """Make trackio write to ``path``. trackio reads ``TRACKIO_DIR`` once, at import: when it is already imported (a
    second run in one process), its module-level folders are pointed at ``path`` too."""
    global _TRACKIO_DIR_SET
    path = Path(path)
    os.environ["TRACKIO_DIR"] = _TRACKIO_DIR_SET = str(path)
    for name, module in list(sys.modules.items()):
        if name == "trackio" or name.startswith("trackio."):
            for attr, sub in (("TRACKIO_DIR", None), ("MEDIA_DIR", "media"), ("ARTIFACTS_DIR", "artifacts")):
                if isinstance(getattr(module, attr, None), Path):
                    setattr(module, attr, path if sub is None else path / sub)


def keep_trackio_local() -> None:
    """Clear the variables that would send trackio's metrics to a Space, bucket, dataset or server."""
    for name in REMOTE_VARIABLES:
        if os.environ.pop(name, None) is not None:
            logger.warning(f"posttrain: {name} is ignored: trackio logs to a local folder only (docs/tracking.md)")


def configure(training_args, final_dir: str | os.PathLike | None = None) -> None:
    """Before the trainer is built (transformers imports trackio then): with ``trackio`` in ``report_to``, its local
    folder, no remote of any kind, ``project`` ``posttrain`` (unless set) and a run name (unless ``run_name`` is set:
    ``<output folder>-<start time>``). ``final_dir``: the configured ``output_dir`` (default: ``output_dir``)."""
    out = Path(final_dir if final_dir is not None else training_args.output_dir)
    if not getattr(training_args, "run_name", None):
        training_args.run_name = f"{final_name(out)}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "trackio" not in backends(getattr(training_args, "report_to", None)):
        return
    point_trackio_at(trackio_dir(out))
    keep_trackio_local()
    if getattr(training_args, "project", TRANSFORMERS_PROJECT) in (None, TRANSFORMERS_PROJECT):
        training_args.project = DEFAULT_PROJECT
    for key, value in (("trackio_space_id", None), ("trackio_bucket_id", None), ("trackio_static_space_id", False)):
        if hasattr(training_args, key):
            setattr(training_args, key, value)


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number) and not isinstance(value, str):
            out[key] = number
    return out


class Tracker:
    """Where a run's series go; this one goes nowhere (``report_to: none``, processes other than the main one)."""

    backends: tuple[str, ...] = ()

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """One point of each finite number in ``metrics`` at ``step``."""

    def finish(self) -> None:
        """Flush and close. A later :meth:`log` reopens the same run, logs and closes it again."""


class TrackioTracker(Tracker):
    """A trackio run (``project``, ``run_name``) in the local folder :func:`configure` chose.

    ``owned``: this tracker opened the run and keeps it open until :meth:`finish`, logging at PPO's own steps. Not
    owned (a TRL stage): the run transformers' ``TrackioCallback`` opened under the same name is current during
    training, and points go into it with the step as ``train/global_step`` (trackio counts the steps there, as for
    TRL's own points); after training the run is reopened for each point (trackio's ``resume="allow"``)."""

    backends = ("trackio",)

    def __init__(self, project: str, run_name: str, config: dict | None = None, *, owned: bool = True) -> None:
        self.project, self.run_name, self.config, self.owned = project, run_name, config, owned
        self.keep_open = owned

    def _current(self):
        import trackio

        run = trackio.context_vars.current_run.get()
        if run is None or run.project != self.project or self.run_name not in (None, run.name):
            return None
        self.run_name = run.name  # a run transformers opened without a run_name: trackio named it
        return run

    def log(self, metrics: dict[str, Any], step: int) -> None:
        import trackio

        values = _finite(metrics)
        if not values:
            return
        run, opened = self._current(), False
        if run is None:
            run = trackio.init(project=self.project, name=self.run_name, resume="allow", config=self.config,
                               space_id=None, server_url=None, bucket_id=None, embed=False)  # fmt: skip
            opened = True
        run.log({**values, STEP_KEY: step}, step=step if self.owned else None)
        if opened and not self.keep_open:
            trackio.finish()

    def finish(self) -> None:
        import trackio

        if self.owned and self._current() is not None:
            trackio.finish()
        self.keep_open = False


class TensorBoardTracker(Tracker):
    """Scalars in a TensorBoard log folder (an events file of its own beside any other writer's)."""

    backends = ("tensorboard",)

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.log_dir = Path(log_dir)
        self.writer = None
        self.keep_open = True

    def log(self, metrics: dict[str, Any], step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        values = _finite(metrics)
        if not values:
            return
        if self.writer is None:
            self.writer = SummaryWriter(log_dir=str(self.log_dir))
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()
        if not self.keep_open:
            self.writer.close()
            self.writer = None

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.keep_open = False


class Trackers(Tracker):
    """Several trackers as one."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers
        self.backends = tuple(b for t in trackers for b in t.backends)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(metrics, step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


def tensorboard_dir(run_dir: str | os.PathLike) -> Path:
    """Where TensorBoard events go, as transformers' ``TensorBoardCallback`` chooses: ``TENSORBOARD_LOGGING_DIR`` or
    ``<run_dir>/runs/<date>_<host>``."""
    from transformers.integrations.integration_utils import default_logdir

    env = os.environ.get("TENSORBOARD_LOGGING_DIR")
    return Path(os.path.expanduser(env)) if env else Path(run_dir) / default_logdir()


def open_tracker(report_to, run_dir: str | os.PathLike, run_name: str | None, config: dict | None = None, *,
                 project: str | None = None) -> Tracker:  # fmt: skip
    """The tracker of a run that logs its own steps (posttrain's PPO): trackio (its local folder beside
    ``run_dir``'s final folder, see :func:`configure`) and/or TensorBoard (under ``run_dir``), a no-op for neither."""
    trackers: list[Tracker] = []
    names = backends(report_to)
    if "trackio" in names:
        point_trackio_at(trackio_dir(run_dir))
        keep_trackio_local()
        name = run_name or f"{final_name(run_dir)}-{time.strftime('%Y%m%d-%H%M%S')}"
        project = DEFAULT_PROJECT if project in (None, TRANSFORMERS_PROJECT) else project
        trackers.append(TrackioTracker(project, name, config))
    if "tensorboard" in names:
        trackers.append(TensorBoardTracker(tensorboard_dir(run_dir)))
    if not trackers:
        return Tracker()
    return trackers[0] if len(trackers) == 1 else Trackers(trackers)


class TrackerCallback(TrainerCallback, Tracker):
    """posttrain's series in a TRL trainer's tracking: :meth:`log` sends them where transformers sends the trainer's
    own metrics under ``report_to`` (the same trackio run, the same TensorBoard folder); points logged before
    training starts wait for it. Add it with :meth:`attach` (on every process; only the main one logs)."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.tracker: Tracker | None = None
        self.pending: list[tuple[dict, int]] = []

    @classmethod
    def attach(cls, trainer) -> TrackerCallback:
        callback = cls(trainer)
        trainer.add_callback(callback)
        return callback

    def _open(self, args) -> Tracker:
        from transformers.integrations import TensorBoardCallback

        if not self.trainer.is_world_process_zero():
            return Tracker()
        trackers: list[Tracker] = []
        names = backends(args.report_to)
        if "trackio" in names:
            project = args.project if args.project not in (None, TRANSFORMERS_PROJECT) else DEFAULT_PROJECT
            trackers.append(TrackioTracker(project, args.run_name, owned=False))
        if "tensorboard" in names:
            tb = next((c for c in self.trainer.callback_handler.callbacks if isinstance(c, TensorBoardCallback)), None)
            log_dir = tb.logging_dir if tb is not None and tb.logging_dir else tensorboard_dir(args.output_dir)
            trackers.append(TensorBoardTracker(log_dir))
        if not trackers:
            return Tracker()
        return trackers[0] if len(trackers) == 1 else Trackers(trackers)

    def on_train_begin(self, args, state, control, **kwargs):
        self.tracker = self._open(args)
        for metrics, step in self.pending:
            self.tracker.log(metrics, step)
        self.pending.clear()

    def on_train_end(self, args, state, control, **kwargs):
        if self.tracker is not None:
            self.tracker.finish()  # later points (the held-out scores after training) reopen the run one at a time

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.tracker is None:
            self.pending.append((dict(metrics), step))
        else:
            self.tracker.log(metrics, step)

    def finish(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()
