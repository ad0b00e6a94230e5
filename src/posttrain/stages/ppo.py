"""PPO stage: a LoRA policy trained with posttrain's PPO (:mod:`posttrain.rl.ppo`) against rule rewards and/or a
reward model.

Starting point: ``model_name_or_path`` names the SFT or DPO result. As in DPO, an adapter is merged into the
full-precision base and a new LoRA adapter (4-bit base with ``load_in_4bit``) is trained on top, so the reference
policy -- the model PPO's KL penalty holds the policy near -- is the same model with the adapter disabled. Writes the
adapter, ``value_head.safetensors``, the tokenizer, a model card and the run manifest to ``output_dir``; with
``test_split_size``, the mean reward of greedy replies on held-out prompts before (reference) and after (policy).
"""

from __future__ import annotations

from posttrain.configs import ModelConfig, PosttrainArguments
from posttrain.data import fingerprint
from posttrain.errors import ConfigError
from posttrain.log import get_logger
from posttrain.rl.config import PPOConfig
from posttrain.rl.heldout import heldout_lines, heldout_metrics
from posttrain.rl.ppo import PPOTrainer, steps_summary
from posttrain.training import fast_paths
from posttrain.training.common import (
    StopOnSignal,
    fast_paths_applied,
    finish_run,
    peft_config,
    run_interruptibly,
    start_run,
)
from posttrain.training.rl_common import (
    filter_metrics,
    filter_rl_prompts,
    filter_summary,
    load_policy,
    load_rewards,
    load_rl_prompts,
    reward_summary,
)

logger = get_logger(__name__)


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, PPOConfig, ModelConfig))


def main(pt_args: PosttrainArguments, training_args: PPOConfig, model_args: ModelConfig):
    """Prompts → merged start model (4-bit) + new adapter → rewards → PPO → save → held-out reward."""

    if not model_args.use_peft:
        raise ConfigError("PPO trains a LoRA adapter (its reference is the adapter disabled): set use_peft: true")
    run = start_run(training_args)
    data = load_rl_prompts(pt_args, training_args)
    model, tokenizer = load_policy(pt_args, training_args, model_args)
    rewards = load_rewards(training_args, model, tokenizer)  # every input is validated before anything is written
    prompt_filter = filter_rl_prompts(training_args, model, tokenizer, rewards, data)

    trainer = PPOTrainer(
        model, tokenizer, rewards, run.trainer_args(training_args), data["train"],
        peft_config=peft_config(model, model_args, []),
        eval_dataset=data.get("test"),  # hacking_guard: stop keeps the adapter with the best held-out task score
    )  # fmt: skip
    stopper = StopOnSignal(trainer.accelerator)  # SIGTERM/Ctrl-C: checkpoint after the current step, exit 128+signal

    def fit():
        return trainer.train(
            resume_from_checkpoint=training_args.resume_from_checkpoint, should_stop=stopper.should_stop
        )

    ctx = fast_paths.context_for(trainer, padding_free=False)
    with fast_paths_applied(run, trainer.unwrapped.policy, pt_args.fast_paths, ctx):
        metrics = run_interruptibly(run, stopper, fit, lambda: trainer.state.global_step)
    metrics.update(filter_metrics(prompt_filter))
    heldout = None
    if "test" in data:
        heldout = trainer.final_evaluation()  # held-out rewards, also logged to the tracker
        metrics.update(heldout_metrics(heldout))
    trainer.save_model(run.work_dir)
    history = [h for h in trainer.state.log_history if "reward" in h]
    logger.info(f"posttrain: PPO {steps_summary(history)}")
    if heldout is not None:
        logger.info(f"posttrain: held-out prompts ({heldout['prompts']}, greedy), reference -> PPO policy:")
        for line in heldout_lines(heldout):
            logger.info(f"  {line}")
    finish_run(
        run,
        trainer,
        stage="ppo",
        title=f"PPO adapter on {model_args.model_name_or_path}",
        configs=(pt_args, training_args, model_args),
        data_fingerprint=fingerprint(data, pt_args.datasets),
        summary={
            "rewards": ", ".join(f"{s['name']}×{s['weight']:g}" for s in training_args.rewards),
            "training reward": steps_summary(history),
            **filter_summary(prompt_filter),
            **reward_summary(metrics),
        },
        metrics=metrics,
        heldout=heldout,
        hacking_guard=trainer.guard.summary(),
        reward_curve=[h["reward"] for h in history],
        kl_curve=[h["kl"] for h in history],
    )
    logger.info(
        f"posttrain: PPO adapter, value head, tokenizer, README.md and run_manifest.json saved to {run.final_dir}"
    )
    return trainer, metrics
