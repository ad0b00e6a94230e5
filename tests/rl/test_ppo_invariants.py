"""Invariants that catch real PPO bugs, checked on posttrain's trainer with the tiny chat model: the KL estimate is zero
for identical policies and positive when they differ; before any update, training-time log-probs equal the
rollout's (ratio 1) also with temperature != 1 and top-p < 1; the missing-EOS penalty lowers unfinished replies'
scores; rewards are standardized per component; the critic starts at the first batch's mean and has its own
learning rate; value gradients never reach the policy adapter."""

from __future__ import annotations

import pytest
import torch

from posttrain.configs import parse_args
from posttrain.data.spec import DatasetSpec
from posttrain.rl import ppo_core
from posttrain.rl.ppo import PPOTrainer
from posttrain.rl.ppo_model import sequence_inputs
from posttrain.rl.ppo_rollout import token_logprobs
from posttrain.rl.prompts import load_prompts
from posttrain.rl.rewards import build_rewards
from posttrain.stages import STAGES

from helpers import ppo_config


def make_trainer(tmp_path, tiny_chat_model, **overrides):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = ppo_config(tmp_path, tiny_chat_model, **{"test_split_size": None, **overrides})
    _, args, _ = parse_args(STAGES["ppo"].load().make_parser(), ["--config", str(config)])
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model, dtype=torch.float32)
    rewards = build_rewards(args.rewards, policy_tokenizer=tokenizer)
    data = load_prompts([DatasetSpec(path="builtin:arithmetic", num_samples=16)], seed=0)
    peft = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    return PPOTrainer(model, tokenizer, rewards, args, data["train"], peft_config=peft)


def training_logprobs(trainer, batch):
    """Log-probs of the rollout's tokens as the update computes them (train mode, with gradients)."""
    context = batch.queries.shape[1]
    trainer.model.train()
    inputs = sequence_inputs(batch.queries, batch.query_mask, batch.responses, batch.response_mask)
    logits, values = trainer.model(*inputs)
    trainer.model.eval()
    logprobs = token_logprobs(logits, batch.responses, batch.response_mask, trainer.args).sampler
    return logprobs, values[:, context - 1 : -1]


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 1.0), (0.7, 0.9)])
def test_first_ratio_is_one_and_kl_is_zero_before_any_update(tmp_path, tiny_chat_model, temperature, top_p):
    trainer = make_trainer(tmp_path, tiny_chat_model, temperature=temperature, top_p=top_p,
                           rollout_batch_size=8, generation_batch_size=8, per_device_train_batch_size=4)  # fmt: skip
    batch = trainer.rollout([trainer.train_dataset[i] for i in range(8)])
    mask = batch.response_mask.bool()
    logprobs, _ = training_logprobs(trainer, batch)
    ratio = torch.exp(logprobs - batch.logprobs)[mask]
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-4), ratio
    # the adapter starts at zero (lora_B = 0): policy == reference, so every KL estimate is zero (the KL compares
    # the full temperature-scaled distributions, also with top_p < 1)
    for estimator in ("k1", "k3"):
        kl = ppo_core.kl_penalty(batch.kl_logprobs, batch.ref_logprobs, estimator)[mask]
        assert kl.abs().max() < 1e-5, (estimator, kl.abs().max())


def test_kl_is_positive_once_the_policy_moves(tmp_path, tiny_chat_model):
    trainer = make_trainer(tmp_path, tiny_chat_model, rollout_batch_size=8, generation_batch_size=8,
                           per_device_train_batch_size=4, learning_rate=5e-2)  # fmt: skip
    for step in (1, 2):
        trainer.step(step)
    batch = trainer.rollout([trainer.train_dataset[i] for i in range(8)])
    mask = batch.response_mask.bool()
    assert ppo_core.kl_penalty(batch.logprobs, batch.ref_logprobs, "k3")[mask].mean() > 1e-4
    assert ppo_core.kl_penalty(batch.logprobs, batch.ref_logprobs, "k1")[mask].sum() > 0  # sampled from the policy


def test_missing_eos_penalty_and_per_reward_normalization(tmp_path, tiny_chat_model):
    trainer = make_trainer(tmp_path, tiny_chat_model, missing_eos_penalty=2.0, max_completion_length=2,
                           rollout_batch_size=8, generation_batch_size=8, per_device_train_batch_size=4)  # fmt: skip
    rows = [trainer.train_dataset[i] for i in range(8)]
    batch = trainer.rollout(rows)
    unfinished = ~batch.finished
    assert unfinished.any(), "2-token replies should run out of budget"
    texts = [trainer.tokenizer.decode(r[m.bool()], skip_special_tokens=True)
             for r, m in zip(batch.responses, batch.response_mask, strict=True)]  # fmt: skip
    has_number = torch.tensor([float(any(c.isdigit() for c in t)) for t in texts])
    assert torch.allclose(batch.raw_scores.cpu(), has_number - 2.0 * unfinished.float().cpu())
    moments = trainer.normalizer.moments["has_number"]
    assert moments.count == 8 and moments.mean == pytest.approx(has_number.mean().item())


def test_critic_has_its_own_learning_rate_starts_at_the_mean_and_never_moves_the_adapter(tmp_path, tiny_chat_model):
    trainer = make_trainer(tmp_path, tiny_chat_model, learning_rate=1e-3, value_learning_rate=3e-2,
                           rollout_batch_size=8, generation_batch_size=8, per_device_train_batch_size=4)  # fmt: skip
    groups = trainer.optimizer.param_groups
    assert [g["lr"] for g in groups] == [1e-3, 3e-2]
    head = trainer.unwrapped.value_head
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in head.parameters()}
    batch = trainer.rollout([trainer.train_dataset[i] for i in range(8)])
    trainer.init_value_bias(batch)
    assert head.bias.item() == pytest.approx(batch.scores.mean().item(), abs=1e-6)
    # a value-only loss leaves every adapter gradient empty: the value features are detached
    trainer.optimizer.zero_grad(set_to_none=True)
    _, values = training_logprobs(trainer, batch)
    (values - 1.0).pow(2).mean().backward()
    adapter = [p for n, p in trainer.unwrapped.policy.named_parameters() if p.requires_grad]
    assert adapter and all(p.grad is None or p.grad.abs().max() == 0 for p in adapter)
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_top_p_logits_keep_the_nucleus_and_renormalize():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = ppo_core.top_p_logits(logits, 0.8).softmax(-1)
    assert torch.allclose(kept, torch.tensor([[0.625, 0.375, 0.0, 0.0]]), atol=1e-6)
    assert torch.equal(ppo_core.top_p_logits(logits, 1.0), logits)


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert ppo_core.explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    assert ppo_core.explained_variance(torch.full_like(returns, 2.0), returns, mask).item() == pytest.approx(0.0)
