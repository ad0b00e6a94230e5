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


def train(run, trainer, training_args, **kwargs):
    trainer.add_callback(Interrupt())
    return _train(run, trainer, training_args, **kwargs)


common.train = train
for name in ("sft", "reward", "dpo"):
    module = __import__(f"posttrain.stages.{name}", fromlist=["train"])
    module.train = train

# posttrain's PPO is not a transformers Trainer: interrupt it around its own step and checkpoint methods.
from posttrain.rl.ppo import PPOTrainer  # noqa: E402

_step, _save_checkpoint = PPOTrainer.step, PPOTrainer.save_checkpoint


def ppo_step(self, step):
    metrics = _step(self, step)
    if SIGNAL != signal.SIGKILL and step == STEP:
        os.kill(os.getpid(), SIGNAL)
    return metrics


def ppo_save_checkpoint(self):
    path = _save_checkpoint(self)
    if SIGNAL == signal.SIGKILL and self.state.global_step >= STEP:
        os.kill(os.getpid(), SIGNAL)
    return path


PPOTrainer.step, PPOTrainer.save_checkpoint = ppo_step, ppo_save_checkpoint

from posttrain.stages import main  # noqa: E402 -- runs the stage in this process

sys.exit(main(sys.argv[3:]))
