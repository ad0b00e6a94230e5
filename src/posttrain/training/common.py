"""What every training stage shares: model + tokenizer + chat template set-up, LoRA config, and the run record."""

from __future__ import annotations

import copy
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from posttrain import chat_templates, tracking
from posttrain.errors import ConfigError
from posttrain.log import ALL_RANKS, get_logger
from posttrain.manifest import write_manifest, write_model_card
from posttrain.models.loading import load_model, load_tokenizer, lora_config
from posttrain.models.resolve import resolve_model
from posttrain.precision import compute_dtype, match_trainable_dtype
from posttrain.storage import checkpoints, partial_dir, publish_dir, resume_value
from posttrain.training import fast_paths

logger = get_logger(__name__)


@dataclass
class Run:
    """A stage in progress: accelerate state, wall-clock start, and where it writes.

    A stage writes into ``work_dir`` (:func:`posttrain.storage.partial_dir`, ``<parent>/.<name>.partial``: checkpoints,
    adapter, model card, manifest) and :func:`finish_run` renames it to ``final_dir`` (the configured ``output_dir``)
    once the manifest is written, so ``output_dir`` only ever holds one complete run and a crash leaves the previous
    result untouched. The work folder of a crashed or interrupted run keeps its checkpoints for
    ``--resume_from_checkpoint true``. The stage's ``training_args`` keep the configured ``output_dir`` (what the
    manifest records); only the trainer is pointed at the work folder (:meth:`trainer_args`).
    """

    state: object
    final_dir: Path
    work_dir: Path
    started: float = field(default_factory=time.time)

    def trainer_args(self, training_args):
        """The arguments the trainer is built with: a copy of ``training_args`` whose ``output_dir`` is the work
        folder. Trainers (TRL's, and :class:`posttrain.rl.ppo.PPOTrainer`) write their ``checkpoint-<step>`` folders
        into ``args.output_dir`` and look there for the newest one (``resume_from_checkpoint: true``), so they must
        see the work folder. Call it once the stage has settled the settings the trainer reads (after
        :func:`eval_split`)."""
        args = copy.copy(training_args)
        args.output_dir = str(self.work_dir)
        return args


_RUNS: list[Run] = []  # runs started in this process, for discard_unfinished_runs


def start_run(training_args) -> Run:
    """Seed, accelerate state, and the run's folders (the work folder is not created yet: inputs are validated first);
    ``resume_from_checkpoint`` is read once (:func:`~posttrain.storage.resume_value`)."""
    from accelerate import PartialState
    from transformers import set_seed

    set_seed(training_args.seed)
    state = PartialState()
    final = Path(training_args.output_dir)
    check_output_dir(final)
    work = partial_dir(final)
    resume = training_args.resume_from_checkpoint = resume_value(training_args.resume_from_checkpoint)
    if resume is True and not checkpoints(work, final):
        raise ConfigError(
            f"resume_from_checkpoint: no checkpoint-* folder in {work} (interrupted run) or {final} "
            "(finished run) to resume from"
        )
    if state.is_main_process:
        if not resume and work.exists():
            shutil.rmtree(work)  # leftovers of a crashed run that is not being resumed: never mix two runs
        elif resume and not work.exists() and final.is_dir():
            shutil.copytree(final, work)  # continue a finished run (e.g. with a larger max_steps)
    state.wait_for_everyone()
    tracking.configure(
        training_args, final
    )  # report_to: trackio local beside output_dir, never the Hub (docs/tracking.md)
    run = Run(state=state, final_dir=final, work_dir=work)
    _RUNS.append(run)
    return run


def check_output_dir(final: Path) -> None:
    """Fail before any work when ``output_dir`` cannot be written (its parent is a file, read-only, ...)."""
    import os

    if final.exists() and not final.is_dir():
        raise ConfigError(f"output_dir {final} exists and is not a folder")
    blocker = next((p for p in final.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"output_dir {final}: {blocker} is a file, not a folder")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"output_dir {final}: cannot create {err.filename or final.parent} ({err.strerror})"
        ) from None
    if not os.access(final.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir {final}: {final.parent} is not writable")


def discard_unfinished_runs() -> None:
    """After a stage failed: remove work folders that hold no checkpoint (nothing to resume), so a failed run leaves
    no partial output behind; a work folder with a checkpoint stays for ``--resume_from_checkpoint true``."""
    while _RUNS:
        run = _RUNS.pop()
        work = run.work_dir
        if not work.is_dir() or not run.state.is_main_process:
            continue
        if checkpoints(work):
            logger.info(f"posttrain: the unfinished run's checkpoints stay in {work} (--resume_from_checkpoint true)")
        else:
            shutil.rmtree(work, ignore_errors=True)


class StopOnSignal(TrainerCallback):
    """SIGTERM or SIGINT (Ctrl-C) during training: finish the current step, save a checkpoint, stop.

    Every rank stops at the same step (the flag is reduced across processes each step), so DDP never waits on a rank
    that left. A second signal interrupts at once. :func:`run_interruptibly` then exits with 128 + the signal number,
    leaving the checkpoint in the run's work folder for ``--resume_from_checkpoint true``. As a TrainerCallback it
    drives a transformers Trainer; posttrain's PPO loop calls :meth:`should_stop` itself after each step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.received: int | None = None
        self._previous = {}

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # second signal: stop now
            self.restore()
            raise KeyboardInterrupt
        self.received = signum
        logger.info(
            f"\nposttrain: {signal.Signals(signum).name} received: saving a checkpoint after this step, then "
            "stopping (send it again to stop at once)",
            extra=ALL_RANKS,
        )

    def should_stop(self) -> bool:
        import torch

        flag = torch.tensor([0 if self.received is None else self.received], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, reduction="sum")
        if flag.item() and self.received is None:
            self.received = signal.SIGTERM  # another rank was signalled
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self.should_stop():
            control.should_save = True
            control.should_training_stop = True
        return control


def keep_trainable_dtypes_on_resume(trainer) -> None:
    """Resume with the trainable weights in the dtype they were trained in.

    TRL trains a QLoRA adapter in bf16 (it casts the LoRA weights after ``get_peft_model``), but on resume the Trainer
    reloads the adapter through peft's ``load_adapter``, which upcasts it to fp32 (``autocast_adapter_dtype``). The
    resumed run would then train in another precision than the uninterrupted one and drift from its loss curve
    (relative 1e-3 after three steps). The loaded values are cast back to the recorded dtypes right after loading,
    before the optimizer (and its bf16 state) is built on them, so the continuation is the same computation.
    """
    dtypes = {name: p.dtype for name, p in trainer.model.named_parameters() if p.requires_grad}
    load = trainer._load_from_checkpoint

    def load_keeping_dtypes(*args, **kwargs):
        load(*args, **kwargs)
        for name, param in trainer.model.named_parameters():
            if name in dtypes and param.dtype != dtypes[name]:
                param.data = param.data.to(dtypes[name])

    trainer._load_from_checkpoint = load_keeping_dtypes


def run_interruptibly(run: Run, stopper: StopOnSignal, fit, current_step):
    """``fit()`` with ``stopper`` listening for SIGTERM/SIGINT; a stopped run (checkpoint saved by ``fit``) exits with
    128 + the signal number and publishes nothing."""
    stopper.install()
    try:
        result = fit()
    finally:
        stopper.restore()
    if stopper.received is not None:
        step = current_step()
        logger.warning(
            f"posttrain: stopped by {signal.Signals(stopper.received).name} at step {step}; checkpoint saved in "
            f"{run.work_dir / f'checkpoint-{step}'}; {run.final_dir} is unchanged. Continue with "
            "--resume_from_checkpoint true"
        )
        raise SystemExit(128 + stopper.received)
    return result


def train(run: Run, trainer, training_args, *, fast: str = "auto"):
    """``trainer.train`` with resume and signal handling: an interrupted run saves a checkpoint and exits non-zero
    without publishing anything. The trainable weights are first put in the run's compute dtype (TRL leaves a
    quantized model's in bf16 whatever the precision; see :mod:`posttrain.precision`), before the optimizer is built,
    and the chosen :mod:`~posttrain.training.fast_paths` are installed for the length of training (``fast``: the
    stage's ``fast_paths``)."""

    match_trainable_dtype(trainer.model, compute_dtype(training_args))
    if training_args.resume_from_checkpoint:
        keep_trainable_dtypes_on_resume(trainer)
    stopper = StopOnSignal(trainer.accelerator)
    trainer.add_callback(stopper)
    with fast_paths_applied(run, trainer.model, fast, fast_paths.context_for(trainer)):
        return run_interruptibly(
            run,
            stopper,
            lambda: trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint),
            lambda: trainer.state.global_step,
        )


def fast_paths_applied(run: Run, model, fast: str, ctx: fast_paths.Context):
    """:func:`posttrain.training.fast_paths.applied` with the run's main process saying what each path did and, when
    training ends, how many calls took it."""
    return fast_paths.applied(model, fast, ctx, log=logger.info if run.state.is_main_process else None)


def publish(run: Run) -> None:
    """Move the finished work folder into ``output_dir`` (replacing a previous result as a whole)."""
    publish_dir(run.work_dir, run.final_dir)
    if run in _RUNS:
        _RUNS.remove(run)


def load_model_and_tokenizer(pt_args, training_args, model_args, *, sequence_classification: bool = False):
    """Tokenizer, (4-bit) model and chat template set up together, both loaded from ``model_name_or_path`` resolved
    once (:func:`~posttrain.models.resolve.resolve_model`: an adapter folder is merged the first time); returns the
    ids of tokens added to the vocab."""

    from transformers import set_seed

    model_path = resolve_model(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_path, model_args, trust_remote_code=training_args.trust_remote_code)
    # Resolving the model may merge an adapter chain the first time (consuming random numbers while loading); seed
    # again so new weights (a reward model's score head, resized embeddings) are the same whether or not it did.
    set_seed(training_args.seed)
    if sequence_classification:
        from transformers import AutoModelForSequenceClassification

        model = load_model(
            model_path, model_args, training_args, model_class=AutoModelForSequenceClassification, num_labels=1
        )
    else:
        model = load_model(model_path, model_args, training_args)
    new_token_ids = chat_templates.setup_chat_template(model, tokenizer, pt_args.chat_template)
    return model, tokenizer, new_token_ids


def eval_split(data, training_args):
    """The held-out split the trainer evaluates on, or None (``eval_strategy: no``). A run left without a held-out
    split (every held-out row repeated a training prompt) turns periodic evaluation off instead of failing."""
    if training_args.eval_strategy == "no":
        return None
    if "test" not in data:
        logger.info(f"posttrain: no held-out split, so eval_strategy {training_args.eval_strategy!s} is turned off")
        training_args.eval_strategy = "no"
        return None
    return data["test"]


def peft_config(model, model_args, new_token_ids, *, task_type: str | None = None):

    tied = bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False))
    return lora_config(model_args, new_token_ids=new_token_ids, tied_embeddings=tied, task_type=task_type)


def rank_summary(trainer, state) -> dict:
    """This rank's view after training: its index, steps taken and a checksum of its trainable weights."""
    checksum = sum(p.detach().double().sum().item() for p in trainer.model.parameters() if p.requires_grad)
    return {"rank": state.process_index, "steps": trainer.state.global_step, "trainable_checksum": checksum}


def logged(trainer, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def finish_run(
    run: Run,
    trainer,
    *,
    stage: str,
    title: str,
    configs: tuple,
    data_fingerprint: dict,
    summary: dict,
    metrics: dict,
    **fields,
) -> None:
    """Gather every rank's summary, then (main process) write the model card and, last, the run manifest."""
    from accelerate.utils import gather_object

    pt_args, training_args, model_args = configs
    ranks = gather_object([rank_summary(trainer, run.state)])  # proves every rank trained (and stayed in sync)
    if run.state.is_main_process:
        losses = logged(trainer, "loss")
        write_model_card(
            run.work_dir,
            title=title,
            base_model=model_args.model_name_or_path,
            summary={
                "stage": f"{stage} ({'QLoRA' if model_args.load_in_4bit else 'LoRA'})",
                "steps": trainer.state.global_step,
                "first / last logged loss": f"{losses[0]:.4f} / {losses[-1]:.4f}" if losses else "n/a",
                **summary,
            },
        )
        write_manifest(
            run.work_dir,
            stage=stage,
            configs=configs,
            seed=training_args.seed,
            base_model=model_args.model_name_or_path,
            data_fingerprint=data_fingerprint,
            loss_curve=losses,
            metrics=metrics,
            world_size=run.state.num_processes,
            ranks=ranks,
            wall_time_s=round(time.time() - run.started, 1),
            **fields,
        )
        publish(run)
    run.state.wait_for_everyone()
