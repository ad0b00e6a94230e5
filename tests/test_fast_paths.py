"""Training fast paths (posttrain.training.fast_paths): the same forward and gradients as transformers + peft, less work.

Each fast path is compared with the stock path on the tiny Llama (GQA: 4 query heads, 2 KV heads), fp32, with a
packed padding-free row of three sequences of different lengths, as TRL's ``bfd`` packing passes it.
"""

from __future__ import annotations

import pytest
import torch

from posttrain.training import fast_paths

LENGTHS = (7, 12, 5)


@pytest.fixture(autouse=True)
def stock_trl_head_after_each_test():
    """compact_lm_head patches TRL process-wide: each test starts from stock TRL."""
    fast_paths.uninstall_compact_lm_head()
    yield
    fast_paths.uninstall_compact_lm_head()


def packed_batch(vocab: int):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (1, sum(LENGTHS)), generator=generator)
    positions = torch.cat([torch.arange(n) for n in LENGTHS]).unsqueeze(0)
    return ids, positions


def lora_model(path, *, dropout: float = 0.0, quantized: bool = False):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch.float32, "attn_implementation": "sdpa"}
    if quantized:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(model, config)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    model.train()
    return model


def logits_and_grads(model, ids, positions):
    model.zero_grad()
    logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits
    logits.square().mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


def separate_sequences(model, ids):
    """Reference: each sequence alone (no packing at all)."""
    out, start = [], 0
    for n in LENGTHS:
        out.append(model(input_ids=ids[:, start : start + n], use_cache=False).logits)
        start += n
    return torch.cat(out, dim=1).detach()


@pytest.mark.parametrize("quantized", [False, True], ids=["lora", "qlora"])
def test_fast_paths_match_stock_forward_and_gradients(tiny_chat_model, quantized):
    stock = lora_model(tiny_chat_model, quantized=quantized)
    fast = lora_model(tiny_chat_model, quantized=quantized)
    done = fast_paths.apply(fast, fast_paths.NAMES, padding_free=True)
    assert "off" not in done["varlen_attention"] and done["fused_lora"].startswith("14 adapted layers")
    assert fast.config._attn_implementation == fast_paths.ATTENTION

    ids, positions = packed_batch(stock.config.vocab_size)
    stock_logits, stock_grads = logits_and_grads(stock, ids, positions)
    fast_logits, fast_grads = logits_and_grads(fast, ids, positions)
    torch.testing.assert_close(fast_logits, stock_logits, rtol=1e-4, atol=1e-5)
    assert fast_grads.keys() == stock_grads.keys() and len(fast_grads) == 28
    for name in stock_grads:
        torch.testing.assert_close(fast_grads[name], stock_grads[name], rtol=1e-3, atol=1e-6, msg=name)
    # and the packed row is exactly its sequences run one by one: no attention across a boundary
    with torch.no_grad():
        torch.testing.assert_close(fast_logits, separate_sequences(stock, ids), rtol=1e-4, atol=1e-5)


def test_varlen_attention_ignores_boundaries_only_where_packed(tiny_chat_model):
    """Without position_ids restarting (one sequence, or a padded batch) the stock SDPA path runs: same logits."""
    stock = lora_model(tiny_chat_model)
    fast = lora_model(tiny_chat_model)
    fast_paths.apply(fast, ("varlen_attention",))
    ids = torch.randint(3, stock.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    with torch.no_grad():
        torch.testing.assert_close(
            fast(input_ids=ids, attention_mask=mask).logits, stock(input_ids=ids, attention_mask=mask).logits
        )
        torch.testing.assert_close(fast(input_ids=ids[:1]).logits, stock(input_ids=ids[:1]).logits)
    fast_paths.uninstall_varlen_attention(fast)
    assert fast.config._attn_implementation == "sdpa"


def test_varlen_attention_refuses_sliding_windows(tiny_chat_model):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_chat_model)
    config._attn_implementation = "sdpa"
    assert fast_paths.varlen_supported(config) is None
    config.layer_types = ["sliding_attention", "full_attention"]
    assert "sliding" in fast_paths.varlen_supported(config)
    config.layer_types = None
    config._attn_implementation = "eager"
    assert "not sdpa" in fast_paths.varlen_supported(config)


def test_shared_dropout_is_dropout_with_one_mask_per_input(tiny_chat_model):
    model = lora_model(tiny_chat_model, dropout=0.25)
    assert fast_paths.apply(model, ("shared_dropout",))["shared_dropout"].startswith("14 LoRA dropouts")
    attention = model.base_model.model.model.layers[0].self_attn
    q, k = attention.q_proj.lora_dropout["default"], attention.k_proj.lora_dropout["default"]
    x = torch.ones(64, 512, requires_grad=True)
    dropped_q = q(x)
    assert k(x) is dropped_q  # q/k/v read the same hidden states: one mask
    assert q(x.clone()) is not dropped_q  # a new input draws a new mask
    kept = dropped_q != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01  # keep rate 1 - p
    torch.testing.assert_close(dropped_q[kept], torch.full_like(dropped_q[kept], 1 / 0.75))  # inverted scaling
    dropped_q.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)  # gradient flows through kept entries only
    model.eval()
    assert q(x) is x


def test_keep_mask_rate_and_independence():
    torch.manual_seed(0)
    first, second = fast_paths.keep_mask((1000, 1000), 0.05, "cpu"), fast_paths.keep_mask((1000, 1000), 0.05, "cpu")
    assert abs(first.float().mean().item() - 0.95) < 0.002
    assert abs((first & second).float().mean().item() - 0.95**2) < 0.002  # two draws are independent
    # the columns the three 16-bit words of each 64-bit draw fill are unbiased too
    for lane in range(3):
        assert abs(first.flatten()[lane::3].float().mean().item() - 0.95) < 0.003


def test_fast_paths_setting_is_validated():
    assert fast_paths.parse("all") == fast_paths.NAMES
    assert fast_paths.parse("none") == ()
    assert fast_paths.parse("fused_lora, shared_dropout") == ("fused_lora", "shared_dropout")
    with pytest.raises(ValueError, match="unknown fast path"):
        fast_paths.parse("fused_lora,turbo")


def test_bad_fast_paths_in_a_stage_config_is_a_config_error():
    from posttrain.configs import PosttrainArguments
    from posttrain.errors import ConfigError

    with pytest.raises(ConfigError, match="fast_paths: unknown fast path"):
        PosttrainArguments(datasets=["builtin:identity"], fast_paths="turbo")


def test_fast_paths_in_bf16_are_as_close_to_fp32_as_stock_bf16(tiny_chat_model):
    """The bf16 path (AVX512-BF16 CPUs, GPUs; adapter and compute in bf16, as posttrain.precision sets them): bf16
    rounds differently in a different order of operations, so fast and stock bf16 are each compared with fp32."""
    exact = lora_model(tiny_chat_model)
    ids, positions = packed_batch(exact.config.vocab_size)
    exact_logits, exact_grads = logits_and_grads(exact, ids, positions)
    errors = {}
    for name, chosen in (("stock", ()), ("fast", fast_paths.NAMES)):
        model = lora_model(tiny_chat_model).to(torch.bfloat16)
        fast_paths.apply(model, chosen, padding_free=True)
        logits, grads = logits_and_grads(model, ids, positions)
        assert logits.dtype == torch.bfloat16
        errors[name] = [(logits.float() - exact_logits).abs().max().item()] + [
            ((grads[k].float() - exact_grads[k]).norm() / exact_grads[k].norm()).item() for k in exact_grads
        ]
    assert errors["stock"][0] < 0.5  # bf16 of logits up to about 7
    for stock, fast in zip(errors["stock"], errors["fast"]):
        assert fast <= 1.5 * stock + 1e-3, (stock, fast)


def test_compact_lm_head_scores_labelled_positions_only_with_the_same_log_probs(tiny_chat_model):
    """TRL's fused LM head (DPO, GRPO, RLOO) on a CPU: the same per-token log-probs from fewer projected positions."""
    from transformers import AutoModelForCausalLM
    from trl.trainer import utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model, dtype=torch.float32)
    add_fused_lm_head(model)
    ids = torch.randint(3, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(3))
    labels = ids.clone()
    labels[:, :6] = -100  # the prompt: no label
    projected = []
    chunked = trl_utils._ChunkedLogProbFunction.apply

    def counting(hidden, *args):
        projected.append(hidden.shape[0])
        return chunked(hidden, *args)

    trl_utils._ChunkedLogProbFunction.apply = counting
    try:
        stock = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
        assert fast_paths.apply(model, ("compact_lm_head",))["compact_lm_head"].startswith("TRL's fused head")
        compact = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
    finally:
        trl_utils._ChunkedLogProbFunction.apply = chunked
        fast_paths.uninstall_compact_lm_head()
    assert projected == [2 * 9, 2 * 4]  # every shifted position, then the labelled ones
    torch.testing.assert_close(compact, stock)
    assert (stock[:, :5] == 0).all() and (stock[:, 5:] < 0).all()
    assert not getattr(trl_utils._use_triton, "posttrain_compact", False)


def test_fused_lora_stays_off_where_parameters_are_sharded(tiny_chat_model, monkeypatch):
    """FSDP (and DeepSpeed ZeRO-3) gather a module's weights around its own forward only: peft's forward stays."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    model = lora_model(tiny_chat_model)
    done = fast_paths.apply(model, ("fused_lora",))
    assert done["fused_lora"].startswith("off: FSDP shards")
    assert not any(hasattr(layer, "_posttrain_stock_forward") for layer in fast_paths.lora_layers(model))


def test_varlen_attention_matches_on_qwen2(tmp_path):
    """Another attention implementation (Qwen2: q/k/v biases, a sliding-window argument set to None)."""
    from tiny import build_tiny_model

    path = build_tiny_model(tmp_path / "qwen2", chat=True, architecture="qwen2")
    stock, fast = lora_model(path), lora_model(path)
    assert "off" not in fast_paths.apply(fast, ("varlen_attention",))["varlen_attention"]
    ids, positions = packed_batch(stock.config.vocab_size)
    with torch.no_grad():
        fast_logits = fast(input_ids=ids, position_ids=positions, use_cache=False).logits
        stock_logits = stock(input_ids=ids, position_ids=positions, use_cache=False).logits
        torch.testing.assert_close(fast_logits, stock_logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast_logits, separate_sequences(stock, ids), rtol=1e-4, atol=1e-5)
