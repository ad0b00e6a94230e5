"""Training fast paths (posttrain.training.fast_paths): stock training, less work, or off with a reason.

The paths are compared with the stock path on packed padding-free rows of three sequences of different lengths, as
TRL's ``bfd`` packing passes them: logits and gradients on the tiny Llama, and per-step losses of a few optimizer
steps on every architecture ``docs/families.md`` lists plus architectures with unusual attention or projections. A
deprecation warning raised by the code the paths patch or call fails these tests (that is how those libraries
announce a break).
"""

from __future__ import annotations

import pytest
import torch

from posttrain.configs import FAST_PATHS, FastPathError, FastPathSelection, parse_fast_paths
from posttrain.training import fast_paths
from posttrain.training.fast_paths import Context, check

# a deprecation raised by the code the paths patch or call (attributed there or to the paths) fails the test
pytestmark = [
    pytest.mark.filterwarnings(f"error::{kind}:{module}")
    for kind in ("DeprecationWarning", "FutureWarning")
    for module in (
        r"posttrain\.training\.fast_paths",
        r"transformers\.masking_utils",
        r"transformers\.integrations\.sdpa_attention",
        r"peft\.tuners\.lora\.(layer|bnb)",
        r"trl\.trainer\.utils",
    )
]

LENGTHS = (7, 12, 5)
PACKED = Context(padding_free=True)
AUTO = FastPathSelection(auto=True)


def named(*names: str) -> FastPathSelection:
    return FastPathSelection(named=names)


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
    installed = fast_paths.install(fast, named("varlen_attention", "fused_lora"), PACKED)
    assert installed.active == ("varlen_attention", "fused_lora")
    assert fast.config._attn_implementation == fast_paths.ATTENTION

    ids, positions = packed_batch(stock.config.vocab_size)
    stock_logits, stock_grads = logits_and_grads(stock, ids, positions)
    fast_logits, fast_grads = logits_and_grads(fast, ids, positions)
    torch.testing.assert_close(fast_logits, stock_logits, rtol=1e-4, atol=1e-5)
    assert fast_grads.keys() == stock_grads.keys() and len(fast_grads) == 28
    for name in stock_grads:
        torch.testing.assert_close(fast_grads[name], stock_grads[name], rtol=1e-3, atol=1e-6, msg=name)
    # the packed row is exactly its sequences run one by one: no attention across a boundary
    with torch.no_grad():
        torch.testing.assert_close(fast_logits, separate_sequences(stock, ids), rtol=1e-4, atol=1e-5)
    # the counters saw it: every attention call of the packed forward and every adapted layer took the fast path
    assert fast_paths.PATHS["varlen_attention"].calls.fast == 2  # 2 layers, one forward
    assert fast_paths.PATHS["fused_lora"].calls.fast == 14
    installed.undo()
    assert fast.config._attn_implementation == "sdpa"
    assert not any("forward" in layer.__dict__ for layer in fast_paths.lora_layers(fast))


# ---------------------------------------------------------------------------------------------------------------
# per-step losses, paths on vs off, on many architectures


@pytest.mark.parametrize("architecture", list(check.ARCHITECTURES))
def test_per_step_losses_equal_stock_on_every_architecture(architecture):
    """Fast paths (auto, CPU) on vs off: the same losses step by step (posttrain.training.fast_paths.check, which
    benchmarks/gpu_check.sh runs on a GPU with the same tolerances)."""
    result = check.compare(architecture, AUTO)
    varlen_exact = check.ARCHITECTURES[architecture][2]
    assert ("varlen_attention" in result["active"]) == varlen_exact, result["done"]
    assert "fused_lora" in result["active"], result["done"]
    assert result["done"]["shared_dropout"].startswith("off: not exact")
    assert result["fast_losses"][-1] < result["fast_losses"][0]  # it trains
    assert result["exact"], result
    if varlen_exact:  # and the paths ran: 3 forwards x 2 layers took the per-sequence attention
        assert result["calls"]["varlen_attention"].startswith("6 of 6 calls fast"), result["calls"]


# ---------------------------------------------------------------------------------------------------------------
# varlen_attention: only where packed, fail closed elsewhere


def test_varlen_attention_keeps_stock_path_where_not_packed(tiny_chat_model):
    """Without position_ids restarting (one sequence, or a padded batch) the stock SDPA path runs: same logits."""
    stock = lora_model(tiny_chat_model)
    fast = lora_model(tiny_chat_model)
    installed = fast_paths.install(fast, named("varlen_attention"), PACKED)
    ids = torch.randint(3, stock.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    with torch.no_grad():
        torch.testing.assert_close(
            fast(input_ids=ids, attention_mask=mask).logits, stock(input_ids=ids, attention_mask=mask).logits
        )
        torch.testing.assert_close(fast(input_ids=ids[:1]).logits, stock(input_ids=ids[:1]).logits)
    calls = fast_paths.PATHS["varlen_attention"].calls
    assert calls.fast == 0 and calls.stock == {"padded or cached input": 2, "one sequence": 2}
    installed.undo()


def test_varlen_attention_refuses_a_model_that_does_not_pass_position_ids(tiny_chat_model):
    """A model whose layers do not hand position_ids to attention would let packed sequences attend across their
    boundaries once the mask is dropped: the install probe refuses it, and the attention function raises rather
    than computing it."""
    model = lora_model(tiny_chat_model)
    for layer in model.base_model.model.model.layers:
        stock_forward = layer.self_attn.forward

        def forward(*args, _stock=stock_forward, **kwargs):
            kwargs.pop("position_ids", None)
            return _stock(*args, **kwargs)

        layer.self_attn.forward = forward
    with pytest.raises(FastPathError, match="varlen_attention was asked for but cannot run: .*position_ids"):
        fast_paths.install(model, named("varlen_attention"), PACKED)
    assert model.config._attn_implementation == "sdpa"  # the refused install undid itself
    installed = fast_paths.install(model, AUTO, PACKED)  # under auto: off with the reason, training goes on
    assert "varlen_attention" not in installed.active
    assert "position_ids" in installed.done["varlen_attention"]
    installed.undo()

    varlen = fast_paths.PATHS["varlen_attention"]  # forced past the probe: an error, never a silent cross-attention
    varlen.probe = lambda model: None
    try:
        installed = fast_paths.install(model, named("varlen_attention"), PACKED)
        ids, positions = packed_batch(model.config.vocab_size)
        with pytest.raises(RuntimeError, match="received no position_ids for a packed row"):
            model(input_ids=ids, position_ids=positions, use_cache=False)
        installed.undo()
    finally:
        del varlen.probe


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 4}, "sliding"),
        ({"attention_dropout": 0.1}, "attention dropout"),
    ],
)
def test_varlen_attention_refuses_what_it_would_change(tiny_chat_model, overrides, reason):
    from transformers import AutoConfig

    from posttrain.training.fast_paths.varlen_attention import config_reason

    config = AutoConfig.from_pretrained(tiny_chat_model)
    config._attn_implementation = "sdpa"
    assert config_reason(config) is None
    for key, value in overrides.items():
        setattr(config, key, value)
    assert reason in config_reason(config)


def test_padded_batches_and_sharded_parameters_turn_paths_off(tiny_chat_model):
    model = lora_model(tiny_chat_model)
    installed = fast_paths.install(model, AUTO, Context(padding_free=False))
    assert installed.done["varlen_attention"] == "off: batches are padded, not packed padding-free"
    installed.undo()
    with pytest.raises(FastPathError, match="fused_lora was asked for but cannot run: FSDP shards"):
        fast_paths.install(model, named("fused_lora"), Context(padding_free=True, sharded="FSDP shards the parameters"))


def test_sharded_parameters_are_asked_of_accelerate():
    from accelerate.utils import DistributedType

    class State:
        distributed_type = DistributedType.FSDP
        deepspeed_plugin = None

    class Accelerator:
        state = State()

    assert fast_paths.sharded_reason(Accelerator()) == "FSDP shards the parameters"
    State.distributed_type = DistributedType.DEEPSPEED
    State.deepspeed_plugin = type("Plugin", (), {"zero_stage": 3})()
    assert fast_paths.sharded_reason(Accelerator()).startswith("DeepSpeed ZeRO-3")
    State.deepspeed_plugin.zero_stage = 2
    assert fast_paths.sharded_reason(Accelerator()) is None


# ---------------------------------------------------------------------------------------------------------------
# fused_lora: fallbacks are counted, under autocast too


def test_fused_lora_falls_back_under_cpu_autocast_and_says_so(tiny_chat_model):
    model = lora_model(tiny_chat_model)
    logs: list[str] = []
    ids, positions = packed_batch(model.config.vocab_size)
    with fast_paths.applied(model, "fused_lora", PACKED, log=logs.append):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=ids, position_ids=positions, use_cache=False)
        model(input_ids=ids, position_ids=positions, use_cache=False)
    assert logs[0] == "posttrain: fast paths: fused_lora: LoRA added by one addmm per adapted layer"
    assert logs[1] == "posttrain: fast paths taken: fused_lora: 14 of 28 calls fast (stock: 14 autocast)"
    assert not any("forward" in layer.__dict__ for layer in fast_paths.lora_layers(model))


# ---------------------------------------------------------------------------------------------------------------
# shared_dropout: opt-in, dropout with one mask per input


def test_shared_dropout_is_opt_in_and_exactly_dropout_with_a_fixed_mask(tiny_chat_model, monkeypatch):
    from posttrain.training.fast_paths import shared_dropout

    model = lora_model(tiny_chat_model, dropout=0.25)
    installed = fast_paths.install(model, AUTO, PACKED)
    assert installed.done["shared_dropout"] == "off: not exact (opt-in)"
    installed.undo()

    installed = fast_paths.install(model, named("shared_dropout"), PACKED)
    attention = model.base_model.model.model.layers[0].self_attn
    q, k = attention.q_proj.lora_dropout["default"], attention.k_proj.lora_dropout["default"]
    x = torch.randn(64, 512, requires_grad=True)
    fixed = torch.rand(64, 512, generator=torch.Generator().manual_seed(5)) >= 0.25
    monkeypatch.setattr(shared_dropout, "keep_mask", lambda shape, p, device: fixed)
    dropped = q(x)
    assert k(x) is dropped  # q/k/v read the same hidden states: one mask
    # with the mask fixed it is what torch's dropout computes: x * keep / (1 - p), and the same gradient
    expected = x.detach() * fixed / 0.75
    torch.testing.assert_close(dropped, expected)
    dropped.square().sum().backward()
    torch.testing.assert_close(x.grad, 2 * expected * fixed / 0.75)
    model.eval()
    assert q(x) is x
    installed.undo()
    assert isinstance(attention.q_proj.lora_dropout["default"], torch.nn.Dropout)


def test_keep_mask_rate_and_independence():
    torch.manual_seed(0)
    first, second = fast_paths.keep_mask((1000, 1000), 0.05, "cpu"), fast_paths.keep_mask((1000, 1000), 0.05, "cpu")
    assert abs(first.float().mean().item() - 0.95) < 0.002
    assert abs((first & second).float().mean().item() - 0.95**2) < 0.002  # two draws are independent
    for lane in range(3):  # the three 16-bit words of each 64-bit draw are unbiased too
        assert abs(first.flatten()[lane::3].float().mean().item() - 0.95) < 0.003


# ---------------------------------------------------------------------------------------------------------------
# compact_lm_head: same log-probs, undone when training ends


def test_compact_lm_head_same_log_probs_and_undone_after_training(tiny_chat_model):
    """TRL's fused LM head (DPO, GRPO, RLOO) on a CPU: the same per-token log-probs from fewer projected positions;
    the process-wide switch is TRL's own again once the block ends, even when it ends in an error."""
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
    stock_switch = trl_utils._use_triton

    def counting(hidden, *args):
        projected.append(hidden.shape[0])
        return chunked(hidden, *args)

    trl_utils._ChunkedLogProbFunction.apply = counting
    try:
        stock = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
        with pytest.raises(KeyboardInterrupt), fast_paths.applied(model, "compact_lm_head", PACKED):
            compact = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
            assert fast_paths.PATHS["compact_lm_head"].calls.fast == 1
            raise KeyboardInterrupt
    finally:
        trl_utils._ChunkedLogProbFunction.apply = chunked
    assert projected == [2 * 9, 2 * 4]  # every shifted position, then the labelled ones
    torch.testing.assert_close(compact, stock)
    assert trl_utils._use_triton is stock_switch


# ---------------------------------------------------------------------------------------------------------------
# the setting, versions, devices


def test_auto_decides_per_device(tiny_chat_model):
    model = lora_model(tiny_chat_model)
    installed = fast_paths.install(model, AUTO, Context(device=torch.device("cuda"), padding_free=True))
    assert installed.active == ()  # nothing measured on a GPU yet
    assert installed.done["fused_lora"] == "off: not measured faster and equal on cuda"
    installed = fast_paths.install(model, AUTO, PACKED)
    assert installed.active == ("varlen_attention", "fused_lora", "compact_lm_head")
    installed.undo()


def test_a_library_version_outside_the_table_turns_the_path_off(tiny_chat_model, monkeypatch):
    model = lora_model(tiny_chat_model)
    monkeypatch.setattr(fast_paths.PATHS["fused_lora"], "verified", {"peft": "==0.19.*"})
    installed = fast_paths.install(model, AUTO, PACKED)
    assert "fused_lora" not in installed.active
    assert installed.done["fused_lora"].startswith("off: peft 0.21.") and "(==0.19.*)" in installed.done["fused_lora"]
    installed.undo()
    with pytest.raises(FastPathError, match=r"fused_lora was asked for but cannot run: peft 0\.21\."):
        fast_paths.install(model, named("fused_lora"), PACKED)


def test_a_deprecation_warning_while_installing_turns_the_path_off(tiny_chat_model, monkeypatch):
    import warnings

    path = fast_paths.PATHS["compact_lm_head"]
    stock_install = path.install

    def warning_install(model, ctx):
        warnings.warn("_use_triton is deprecated", DeprecationWarning, stacklevel=1)
        return stock_install(model, ctx)

    monkeypatch.setattr(path, "install", warning_install)
    installed = fast_paths.install(lora_model(tiny_chat_model), AUTO, PACKED)
    assert installed.done["compact_lm_head"] == "off: the patched library warns: _use_triton is deprecated"
    from trl.trainer import utils as trl_utils

    assert not getattr(trl_utils._use_triton, "posttrain_compact", False)  # undone
    installed.undo()


def test_the_setting_is_validated():
    assert parse_fast_paths("auto") == parse_fast_paths("") == FastPathSelection(auto=True)
    assert parse_fast_paths("none") == FastPathSelection()
    assert parse_fast_paths("all") == FastPathSelection(all=True)
    assert parse_fast_paths("auto, shared_dropout") == FastPathSelection(auto=True, named=("shared_dropout",))
    with pytest.raises(FastPathError, match="unknown fast path.*turbo"):
        parse_fast_paths("fused_lora,turbo")
    with pytest.raises(FastPathError, match="'none' cannot be combined"):
        parse_fast_paths("none,fused_lora")
    assert tuple(fast_paths.PATHS) == FAST_PATHS  # the setting's names are the implemented paths, in install order


def test_bad_fast_paths_in_a_stage_config_is_a_config_error():
    from posttrain.configs import PosttrainArguments
    from posttrain.errors import ConfigError

    with pytest.raises(ConfigError, match="fast_paths: unknown fast path"):
        PosttrainArguments(datasets=["builtin:identity"], fast_paths="turbo")


def test_fast_paths_in_bf16_are_as_close_to_fp32_as_stock_bf16(tiny_chat_model):
    """The bf16 path (adapter and compute in bf16, as posttrain.precision sets them): bf16 rounds differently in a
    different order of operations, so fast and stock bf16 are each compared with fp32."""
    exact = lora_model(tiny_chat_model)
    ids, positions = packed_batch(exact.config.vocab_size)
    exact_logits, exact_grads = logits_and_grads(exact, ids, positions)
    errors = {}
    for name, selection in (("stock", FastPathSelection()), ("fast", AUTO)):
        model = lora_model(tiny_chat_model).to(torch.bfloat16)
        installed = fast_paths.install(model, selection, PACKED)
        logits, grads = logits_and_grads(model, ids, positions)
        installed.undo()
        if name == "fast":  # fused_lora runs in fp32 only: in bf16 every call is peft's
            assert fast_paths.PATHS["fused_lora"].calls.stock == {"not fp32": 14}
        assert logits.dtype == torch.bfloat16
        errors[name] = [(logits.float() - exact_logits).abs().max().item()] + [
            ((grads[k].float() - exact_grads[k]).norm() / exact_grads[k].norm()).item() for k in exact_grads
        ]
    assert errors["stock"][0] < 0.5  # bf16 of logits up to about 7
    for stock, fast in zip(errors["stock"], errors["fast"]):
        assert fast <= 1.5 * stock + 1e-3, (stock, fast)
