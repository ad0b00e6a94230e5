"""A 4-bit model computes the same training forward after an inference pass (bitsandbytes' CPU repacking is off)."""

from __future__ import annotations

import torch


def test_an_eval_pass_does_not_change_the_4bit_training_forward(tiny_chat_model):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from posttrain.models.quantized import keep_4bit_weights_for_training

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model, dtype=torch.float32, quantization_config=quant)
    model.train()
    ids = torch.randint(3, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    # the switch bitsandbytes reads is set on AVX512-BF16 CPUs (the repacking happens there); forced on here so
    # that the guard is exercised on every CPU class
    layers = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    assert layers
    for layer in layers:
        layer.support_avx512bf16_for_cpu = True
    assert keep_4bit_weights_for_training(model) == len(layers)
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # an inference pass (rollouts, a held-out probe)
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, before)
