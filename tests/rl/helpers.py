"""Shared settings for the RL tests: PPO on the tiny chat model with an easy rule reward (the reply states a number)."""

from __future__ import annotations

from tiny import write_stage_config

PROMPTS = [{"path": "builtin:arithmetic", "num_samples": 64}]

# fp32 LoRA (no 4-bit) keeps a tiny step under a second or two on 2 CPU cores. These settings are tuned to show
# learning within 12 steps in fp32; on a bf16 base the LoRA deltas are rounded into bf16 activations and the reward
# did not rise within 12 steps (0.21 -> 0.22), so PPO in both precisions (4-bit, as the default configs) is exercised
# by tests/test_precision.py.
PPO_SETTINGS = {
    "datasets": PROMPTS,
    "test_split_size": 16,
    "rewards": ["has_number"],
    "missing_eos_penalty": None,
    "load_in_4bit": False,
    "bf16": False,
    "max_steps": 12,
    "rollout_batch_size": 32,
    "num_mini_batches": 2,
    "per_device_train_batch_size": 16,
    "generation_batch_size": 32,
    "forward_batch_size": 32,
    "max_completion_length": 8,
    "learning_rate": 5e-3,
    "temperature": 1.0,  # the tiny random model needs the full sampling distribution to find the reward
    "lr_scheduler_type": "constant",
    "kl_coef": 0.1,
}


def ppo_config(tmp_path, model, name="ppo", **overrides):
    return write_stage_config(tmp_path, name, {"model_name_or_path": str(model), **PPO_SETTINGS, **overrides})


def save_seq_cls(path, tokenizer):
    """An untrained one-output sequence-classification model with ``tokenizer`` (a reward model in form)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
