"""The model PPO trains: the policy (a causal LM with a LoRA adapter; the reference is the adapter disabled) with a
scalar value head on its last hidden state, sharing the LoRA-adapted trunk (as TRL's original
``AutoModelForCausalLMWithValueHead``): one forward pass gives logits and values, and DDP sees one module. Also its
optimizer (the critic in its own parameter group) and the inputs of a forward pass over query + response."""

from __future__ import annotations

import torch
from torch import nn

from posttrain.errors import ConfigError
from posttrain.rl.config import PPOConfig


class PolicyWithValueHead(nn.Module):
    """A causal LM (a peft model: the policy) and a scalar value head on its last hidden state."""

    def __init__(self, policy: nn.Module, *, detach_features: bool = True) -> None:
        super().__init__()
        self.policy = policy
        self.detach_features = detach_features
        hidden = policy.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        device = next(policy.parameters()).device
        self.value_head.to(device=device, dtype=torch.float32)

    def forward(self, input_ids, attention_mask, position_ids):
        output = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = output.hidden_states[-1]
        if self.detach_features:  # value gradients train the head only, never the policy adapter
            hidden = hidden.detach()
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return output.logits, values


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def with_adapter(model, args: PPOConfig, peft_config=None):
    """``model`` with a new LoRA adapter (``peft_config``; a k-bit base prepared first) or its own (a peft model),
    gradient checkpointing as configured and dropout off (rollout and update must score the same function)."""
    if peft_config is not None:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
        model = get_peft_model(model, peft_config)
    elif not hasattr(model, "disable_adapter"):
        raise ConfigError("PPO trains a LoRA adapter: set use_peft: true (the reference is the adapter disabled)")
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    disable_dropout(model)
    return model


def make_optimizer(model: PolicyWithValueHead, args: PPOConfig) -> torch.optim.Optimizer:
    """AdamW with the critic in its own parameter group and learning rate (``value_learning_rate``, default 10 x
    ``learning_rate``)."""
    value_lr = args.value_learning_rate if args.value_learning_rate is not None else 10 * args.learning_rate
    groups = [
        {"params": [p for p in model.policy.parameters() if p.requires_grad], "lr": args.learning_rate},
        {"params": list(model.value_head.parameters()), "lr": value_lr},
    ]
    return torch.optim.AdamW(
        groups,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
    )


def sequence_inputs(queries, query_mask, responses, response_mask):
    """Concatenated ids, attention mask and position ids (counting real tokens only, so left padding is harmless)."""
    input_ids = torch.cat([queries, responses], dim=1)
    attention_mask = torch.cat([query_mask, response_mask], dim=1)
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids
