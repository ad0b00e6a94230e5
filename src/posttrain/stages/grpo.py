"""GRPO stage (and RLOO, :mod:`posttrain.stages.rloo`): TRL's ``GRPOTrainer``/``RLOOTrainer`` on a LoRA adapter with
posttrain's rewards as ``reward_funcs``.

The ``rewards:`` list (:mod:`posttrain.rl.rewards`) becomes TRL's ``reward_funcs`` and ``reward_weights``: rule rewards
are the evaluation checks, read the prompt rows' ``task``/``answer``/``meta`` columns (TRL passes extra dataset
columns to reward functions) and ``completion_ids`` (for ``stopped``); ``reward_model`` is called on the decoded
conversation with its own chat template. As in DPO and PPO, an SFT/DPO adapter named as ``model_name_or_path`` is
merged and a new adapter trained, so TRL's reference (``beta`` > 0) is the adapter disabled. With
``test_split_size``, the mean reward of greedy replies on held-out prompts is reported before and after.
"""

from __future__ import annotations

from posttrain.configs import ModelConfig, PosttrainArguments
from posttrain.data import fingerprint
from posttrain.log import get_logger
from posttrain.rl.config import GRPOConfig
from posttrain.rl.guard_stop import GuardStop, make_guard
from posttrain.rl.heldout import heldout_lines, heldout_metrics, heldout_rewards, heldout_series
from posttrain.tracking import TrackerCallback
from posttrain.training.common import finish_run, logged, peft_config, start_run, train
from posttrain.training.rl_common import (
    GuardCallback,
    GuardTally,
    filter_metrics,
    filter_rl_prompts,
    filter_summary,
    keep_best_adapter,
    load_policy,
    load_rewards,
    load_rl_prompts,
    reward_summary,
)

logger = get_logger(__name__)


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, GRPOConfig, ModelConfig))


def main(
    pt_args: PosttrainArguments, training_args: GRPOConfig, model_args: ModelConfig, *, trainer_name: str = "grpo"
):
    """Prompts → merged start model (4-bit) + new adapter → reward_funcs → GRPO/RLOO → save → held-out."""
    import trl

    run = start_run(training_args)
    data = load_rl_prompts(pt_args, training_args)
    model, tokenizer = load_policy(pt_args, training_args, model_args)
    rewards = load_rewards(training_args, model, tokenizer)
    prompt_filter = filter_rl_prompts(training_args, model, tokenizer, rewards, data)
    training_args.reward_weights = rewards.weights
    trainer_class = {"grpo": trl.GRPOTrainer, "rloo": trl.RLOOTrainer}[trainer_name]
    tally = GuardTally(rewards)  # reply counts and repetition for the hacking guard, where the rewards are computed
    trainer = trainer_class(
        model=model,
        reward_funcs=tally.wrap(),
        args=run.trainer_args(training_args),
        train_dataset=data["train"],
        processing_class=tokenizer,
        peft_config=peft_config(model, model_args, []),
    )
    rewards.to(trainer.accelerator.device)
    guard = make_guard(training_args, rewards)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    guard_stop = GuardStop(guard, policy, stage=trainer_name)  # stop: keeps the best candidate adapter
    trainer.add_callback(GuardCallback(guard_stop, tally))
    tracker = guard_stop.tracker = TrackerCallback.attach(trainer)  # posttrain's series into report_to's run
    result = train(run, trainer, training_args, fast=pt_args.fast_paths)
    metrics = {**dict(result.metrics), **filter_metrics(prompt_filter)}
    eval_max_new_tokens = training_args.eval_max_new_tokens or training_args.max_completion_length
    keep_best_adapter(guard_stop, trainer.state.global_step, policy, tokenizer, rewards, data.get("test"),
                      max_new_tokens=eval_max_new_tokens, work_dir=run.work_dir)  # fmt: skip
    reward_curve = logged(trainer, "reward")
    heldout = None
    if "test" in data:
        heldout = heldout_rewards(policy, tokenizer, rewards, data["test"], max_new_tokens=eval_max_new_tokens)
        metrics.update(heldout_metrics(heldout))
        tracker.log(heldout_series(heldout), trainer.state.global_step)
    trainer.save_model(str(run.work_dir))
    if run.state.is_main_process:
        tokenizer.save_pretrained(run.work_dir)
    if reward_curve:
        logger.info(
            f"posttrain: {trainer_name.upper()} mean training reward {reward_curve[0]:.3f} -> {reward_curve[-1]:.3f}"
        )
    if heldout is not None:
        logger.info(
            f"posttrain: held-out prompts ({heldout['prompts']}, greedy), reference -> {trainer_name.upper()} policy:"
        )
        for line in heldout_lines(heldout):
            logger.info(f"  {line}")
    finish_run(
        run,
        trainer,
        stage=trainer_name,
        title=f"{trainer_name.upper()} adapter on {model_args.model_name_or_path}",
        configs=(pt_args, training_args, model_args),
        data_fingerprint=fingerprint(data, pt_args.datasets),
        summary={
            "rewards": ", ".join(f"{s['name']}×{s['weight']:g}" for s in training_args.rewards),
            **filter_summary(prompt_filter),
            **reward_summary(metrics),
        },
        metrics=metrics,
        heldout=heldout,
        hacking_guard=guard.summary(),
        reward_curve=reward_curve,
    )
    return trainer, metrics
