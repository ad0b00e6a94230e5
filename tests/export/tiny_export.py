"""Tiny models for export tests: a Qwen2-architecture chat model beside tests/tiny.py's Llama, and a LoRA adapter
with random (non-zero) weights, so merges change the logits."""

from __future__ import annotations


def build_tiny_qwen2(path):
    from tiny import build_tiny_model

    return build_tiny_model(path, chat=True, architecture="qwen2")


def make_adapter(base_path, adapter_path, *, seed: int = 0, base_name: str | None = None, r: int = 4):
    """A LoRA adapter on ``base_path`` with random A and B (peft's ``init_lora_weights=False``)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    config = LoraConfig(
        r=r, lora_alpha=2 * r, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(adapter_path)
    AutoTokenizer.from_pretrained(base_path).save_pretrained(adapter_path)
    if base_name is not None:  # record another base path, as an adapter trained elsewhere would
        import json
        from pathlib import Path

        file = Path(adapter_path) / "adapter_config.json"
        data = json.loads(file.read_text())
        data["base_model_name_or_path"] = base_name
        file.write_text(json.dumps(data))
    return adapter_path
