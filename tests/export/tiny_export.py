"""Tiny models for export tests: a Qwen2-architecture chat model beside tests/tiny.py's Llama, and a LoRA adapter
with random (non-zero) weights, so merges change the logits."""

from __future__ import annotations


def build_tiny_qwen2(path):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from posttrain.chat_templates import CHATML_TOKENS, load_template
    from tiny import train_tokenizer

    tokenizer = train_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": list(CHATML_TOKENS)})
    tokenizer.chat_template = load_template("chatml")
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_adapter(base_path, adapter_path, *, seed: int = 0, base_name: str | None = None, r: int = 4):
    """A LoRA adapter on ``base_path`` with random A and B (peft's ``init_lora_weights=False``)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", init_lora_weights=False,
                        task_type="CAUSAL_LM")
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
