"""Run ``posttrain <stage> ...`` and interrupt it from inside, deterministically (test helper, not a test).

    python interrupt_hook.py SIGKILL 3 sft --config run.yaml   # SIGKILL right after the checkpoint of step 3 is saved
    python interrupt_hook.py SIGTERM 3 sft --config run.yaml   # SIGTERM at the end of step 3 (as a scheduler would)
"""

import os
import signal
import sys

from transformers import TrainerCallback

import posttrain.training.common as common

SIGNAL, STEP = getattr(signal, sys.argv[1]), int(sys.argv[2])


class Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if SIGNAL != signal.SIGKILL and state.global_step == STEP:
            os.kill(os.getpid(), SIGNAL)

    def on_save(self, args, state, control, **kwargs):
        if SIGNAL == signal.SIGKILL and state.global_step >= STEP:
            os.kill(os.getpid(), SIGNAL)


_train = common.train


def train(run, trainer, training_args):
    trainer.add_callback(Interrupt())
    return _train(run, trainer, training_args)


common.train = train
for name in ("sft", "reward", "dpo"):
    module = __import__(f"posttrain.training.{name}", fromlist=["train"])
    module.train = train

from posttrain.cli import main  # noqa: E402

sys.exit(main(sys.argv[3:]))
