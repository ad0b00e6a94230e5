"""Per-step losses with fast paths on vs off, on tiny random models of many architectures, on any device.

The test suite runs this on the CPU (``tests/training/test_fast_paths.py``) and ``benchmarks/gpu_check.sh`` on a GPU,
with the same tolerances, so a path is called exact on a device only where this comparison held there::

    python -m posttrain.training.fast_paths.check --device cuda --paths varlen_attention,fused_lora

Each architecture is built tiny (2 layers, hidden 64) and random, with a LoRA adapter on all linear layers (dropout 0,
random B so the adapter contributes from the first step), and trained for a few AdamW steps on one padding-free row of
three packed sequences, once with the chosen paths and once without. A path that cannot keep an architecture exact
must turn itself off there, so the losses must agree whether it is on or off.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

import torch

LENGTHS = (7, 12, 5)
VOCAB = 128
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
# name -> (model_type, config overrides, whether varlen_attention keeps it exact and stays on)
ARCHITECTURES = {
    # the families docs/families.md lists
    "llama": ("llama", {}, True),  # SmolLM2, Llama 3.x
    "qwen2": ("qwen2", {}, True),  # Qwen2.5: q/k/v biases
    "qwen3": ("qwen3", {}, True),  # q/k norms
    "gemma3_text": ("gemma3_text", {}, False),  # sliding-window layers, post-norms, embedding scale
    "mistral": ("mistral", {"sliding_window": None}, True),  # Mistral NeMo
    # unusual attention or projections
    "mistral-window": ("mistral", {"sliding_window": 8}, False),  # a window shorter than the packed row
    "granite": (
        "granite",
        {"attention_multiplier": 0.3, "residual_multiplier": 0.5, "embedding_multiplier": 2.0, "logits_scaling": 4.0},
        True,
    ),
    "phi3": ("phi3", {}, True),  # fused qkv_proj and gate_up_proj
    "olmo2": ("olmo2", {}, True),  # post-norms, q/k norms
    "cohere": ("cohere", {"use_qk_norm": True}, True),  # parallel attention and MLP, q/k norms
    "gpt_neox": ("gpt_neox", {"rotary_pct": 0.5}, True),  # fused query_key_value, partial rotary
    "gemma2": ("gemma2", {}, False),  # attention soft-capping (no SDPA in transformers: eager)
    "gpt_oss": ("gpt_oss", {"num_local_experts": 4, "num_experts_per_tok": 2}, False),  # sinks (eager), MoE
    "qwen3_moe": ("qwen3_moe", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}, True),
    "exaone4": ("exaone4", {}, False),  # hybrid sliding/full layers
}
LOSS_TOLERANCE = dict(rtol=2e-5, atol=2e-5)  # fp32
PARAM_TOLERANCE = 1e-3  # relative norm of the difference after the steps (Adam amplifies rounding near zero)


def packed_row(device="cpu"):
    ids = torch.randint(3, VOCAB, (1, sum(LENGTHS)), generator=torch.Generator().manual_seed(1))
    positions = torch.cat([torch.arange(n) for n in LENGTHS]).unsqueeze(0)
    return ids.to(device), positions.to(device)


def random_lora_model(name: str, device="cpu"):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, overrides, _ = ARCHITECTURES[name]
    config = AutoConfig.for_model(model_type, **COMMON, **overrides)
    torch.manual_seed(0)
    try:
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    except ValueError:  # no SDPA for this architecture (soft-capping, sinks): transformers' eager attention
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(model, lora).to(device)


def per_step_losses(model, steps: int = 3) -> list[float]:
    device = next(model.parameters()).device
    ids, positions = packed_row(device)
    labels = ids.clone()
    labels[:, 0] = -100
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, position_ids=positions, labels=labels, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def compare(name: str, selection, device="cpu") -> dict:
    """Train the architecture with and without the selected paths; returns both loss curves, what each path did,
    the largest relative parameter difference, and whether the run counts as exact."""
    from posttrain.training import fast_paths

    stock = random_lora_model(name, device)
    fast = copy.deepcopy(stock)
    ctx = fast_paths.Context(device=torch.device(device), padding_free=True)
    installed = fast_paths.install(fast, selection, ctx)
    active = list(installed.active)
    try:
        fast_losses = per_step_losses(fast)
        calls = installed.calls()
    finally:
        installed.undo()
    stock_losses = per_step_losses(stock)
    param_diff = max(
        ((a - b).norm() / (b.norm() + 1e-12)).item() for a, b in zip(fast.parameters(), stock.parameters())
    )
    losses_equal = torch.allclose(torch.tensor(fast_losses), torch.tensor(stock_losses), **LOSS_TOLERANCE)
    return {
        "architecture": name,
        "device": str(device),
        "active": active,
        "done": installed.done,
        "calls": calls,
        "fast_losses": fast_losses,
        "stock_losses": stock_losses,
        "max_param_rel_diff": param_diff,
        "exact": bool(losses_equal and param_diff <= PARAM_TOLERANCE),
    }


def main(argv=None) -> int:
    from posttrain.configs import parse_fast_paths

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--paths", default="all", help="a fast_paths setting (default: all, every path it can)")
    parser.add_argument("--architectures", default=",".join(ARCHITECTURES))
    args = parser.parse_args(argv)
    selection = parse_fast_paths(args.paths)
    results = [compare(name, selection, args.device) for name in args.architectures.split(",")]
    for r in results:
        print(f"{r['architecture']:15} {'exact' if r['exact'] else 'DIFFERS':8} on: {', '.join(r['active']) or '-'}")
    print(json.dumps(results, indent=1))
    return 0 if all(r["exact"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
