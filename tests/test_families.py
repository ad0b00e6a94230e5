"""Real model families (tests/families.py): each family's real tokenizer and chat template renders, its
assistant-only masks are exactly the replies plus their end-of-turn token, and a tiny model of its architecture
trains through posttrain's own 4-bit QLoRA SFT stage.

Qwen3 and Mistral NeMo (with a system prompt) have templates that are not prefix-preserving: they are trained turn
by turn, each reply in the prompt the unchanged template renders at inference (posttrain.chat_templates).
"""

from __future__ import annotations

import pytest
from families import FAMILIES, SPECS, build_tiny_family_model, load_family_tokenizer, trained_runs

SYSTEM = {"role": "system", "content": "Answer briefly."}
TURNS = [
    {"role": "user", "content": "Which is larger, 9.11 or 9.9?"},
    {"role": "assistant", "content": "9.9 is larger."},
    {"role": "user", "content": "Why?"},
    {"role": "assistant", "content": "Because 0.90 > 0.11."},
]
REPLIES = ("9.9 is larger.", "Because 0.90 > 0.11.")

#: what each family's template renders after a reply: the end-of-turn token and what follows it in the turn
TURN_END = {
    "smollm2": "<|im_end|>\n",
    "qwen2_5": "<|im_end|>\n",
    "qwen3": "<|im_end|>\n",
    "llama3_1": "<|eot_id|>",
    "gemma3": "<end_of_turn>\n",
    "mistral_nemo": "</s>",
}
#: what the model generates before the reply itself (Qwen3: the think block, empty when there is no reasoning)
REPLY_START = {"qwen3": "<think>\n\n</think>\n\n"}
#: families whose template rewrites earlier turns of this conversation (trained turn by turn)
NOT_PREFIX_PRESERVING = {"qwen3", "mistral_nemo"}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def tokenizer(family):
    return load_family_tokenizer(family)


def test_template_renders_with_generation_prompt(family, tokenizer):
    from posttrain.chat_templates import render

    prompt = render(tokenizer, [SYSTEM, *TURNS[:1]], add_generation_prompt=True)
    assert "Answer briefly." in prompt and TURNS[0]["content"] in prompt
    full = render(tokenizer, [SYSTEM, *TURNS])
    assert full.count(SPECS[family].end_of_turn) >= 2
    assert tokenizer.eos_token == SPECS[family].end_of_turn and tokenizer.pad_token != tokenizer.eos_token
    # one id, never split into pieces
    assert len(tokenizer(SPECS[family].end_of_turn, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("system", [True, False], ids=["system", "no-system"])
def test_assistant_masks_are_exactly_the_replies_and_end_of_turn(family, tokenizer, system):
    from posttrain.chat_templates import NotPrefixPreservingError, assistant_spans, render, tokenize_conversations

    messages = [SYSTEM, *TURNS] if system else TURNS
    rows = tokenize_conversations(tokenizer, messages)
    expected = [REPLY_START.get(family, "") + reply + TURN_END[family] for reply in REPLIES]

    rewrites = family == "qwen3" or (family == "mistral_nemo" and system)
    if rewrites:  # one sequence per reply, each ending with the reply it trains
        with pytest.raises(NotPrefixPreservingError):
            assistant_spans(tokenizer, messages)
        assert [trained_runs(tokenizer, row) for row in rows] == [[e] for e in expected]
    else:
        assert len(rows) == 1 and trained_runs(tokenizer, rows[0]) == expected

    # every reply is trained right after exactly the prompt the template renders at inference, token for token
    assistant_at = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    starts = [
        (row, k)
        for row in rows
        for k, flag in enumerate(row["assistant_masks"])
        if flag and (k == 0 or not row["assistant_masks"][k - 1])
    ]
    for (row, k), i in zip(starts, assistant_at, strict=True):
        prompt = render(tokenizer, messages[:i], add_generation_prompt=True)
        assert row["input_ids"][:k] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # the end-of-turn token of every reply is trained, and no other
    eot = tokenizer.convert_tokens_to_ids(SPECS[family].end_of_turn)
    trained_eot = sum(m for row in rows for t, m in zip(row["input_ids"], row["assistant_masks"]) if t == eot)
    assert trained_eot == 2
    if "bos_token" in tokenizer.chat_template:  # the template's own BOS opens every sequence and stays the only one
        bos = tokenizer.bos_token_id
        assert all(row["input_ids"][0] == bos and row["input_ids"].count(bos) == 1 for row in rows)


def test_qwen3_earlier_reasoning_is_trained_in_its_own_turn():
    """Qwen3's template drops an earlier reply's reasoning from the history: a single rendering would never train
    it; per-turn rendering trains it where the model produced it."""
    from posttrain.chat_templates import render, tokenize_conversations

    tokenizer = load_family_tokenizer("qwen3")
    messages = [
        TURNS[0],
        {"role": "assistant", "content": "<think>\nCompare tenths: 9 > 1.\n</think>\n\n9.9 is larger."},
        *TURNS[2:],
    ]
    assert "Compare tenths" not in render(tokenizer, messages)  # the whole rendering drops it
    first, second = tokenize_conversations(tokenizer, messages)
    assert trained_runs(tokenizer, first) == ["<think>\nCompare tenths: 9 > 1.\n</think>\n\n9.9 is larger.<|im_end|>\n"]
    assert trained_runs(tokenizer, second) == ["<think>\n\n</think>\n\nBecause 0.90 > 0.11.<|im_end|>\n"]
    assert "Compare tenths" not in tokenizer.decode(second["input_ids"])  # the history as inference renders it


def test_prefix_preserving_turns_share_one_sequence():
    """Qwen3 keeps a reply after the last user message with its reasoning (tool steps): the template does not
    rewrite it, so it shares the next reply's sequence instead of repeating the history."""
    from posttrain.chat_templates import training_segments

    tokenizer = load_family_tokenizer("qwen3")
    step = {"role": "assistant", "content": "<think>\nTenths.\n</think>\n\nBecause 0.90 > 0.11."}
    messages = [*TURNS[:3], step, {"role": "assistant", "content": "Tenths decide."}]
    segments = training_segments(tokenizer, messages)
    assert [len(s.spans) for s in segments] == [1, 2]
    assert [segments[1].text[a:b] for a, b in segments[1].spans] == [
        "<think>\nTenths.\n</think>\n\nBecause 0.90 > 0.11.<|im_end|>\n",
        "<think>\n\n</think>\n\nTenths decide.<|im_end|>\n",
    ]


STEPS = 8


@pytest.fixture(scope="module")
def sft_run(family, tmp_path_factory):
    from posttrain.stages import run_stage

    from tiny import write_sft_config

    tmp_path = tmp_path_factory.mktemp(f"sft-{family}")
    model = build_tiny_family_model(family, tmp_path / "model")
    # few, small steps: the real vocabularies (128k-262k rows) make the LM head the cost of every step
    config = write_sft_config(tmp_path, model, max_steps=STEPS, per_device_train_batch_size=4, learning_rate=1e-2)
    trainer = run_stage("sft", ["--config", str(config)])
    return tmp_path / "out", trainer


def test_tiny_model_has_the_family_architecture_and_tokens(family, sft_run):
    import json

    out, trainer = sft_run
    config = json.loads((out.parent / "model" / "config.json").read_text())
    expected = {
        "llama": "LlamaForCausalLM",
        "qwen2": "Qwen2ForCausalLM",
        "qwen3": "Qwen3ForCausalLM",
        "gemma3": "Gemma3ForCausalLM",
        "mistral": "MistralForCausalLM",
    }[SPECS[family].architecture]
    assert config["architectures"] == [expected] and config["num_hidden_layers"] == 2
    generation = json.loads((out.parent / "model" / "generation_config.json").read_text())
    eos = generation["eos_token_id"]
    eot = trainer.processing_class.convert_tokens_to_ids(SPECS[family].end_of_turn)
    assert eot == (eos[0] if isinstance(eos, list) else eos)
    assert generation["pad_token_id"] not in (eos if isinstance(eos, list) else [eos])


def test_qlora_sft_trains(family, sft_run):
    import bitsandbytes as bnb
    from safetensors.torch import load_file

    from posttrain.manifest import read_manifest

    out, trainer = sft_run
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules()), "the base must be 4-bit"
    manifest = read_manifest(out)
    losses = manifest["loss_curve"]
    assert len(losses) == STEPS
    assert sum(losses[-2:]) / 2 < 0.85 * sum(losses[:2]) / 2, losses  # from ~ln(vocab): 12-14 nats
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero: nonzero means trained
    assert 0 < manifest["loss_mask"]["trained_tokens"] < manifest["loss_mask"]["total_tokens"]


@pytest.fixture(scope="module")
def converter():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from posttrain.export.llama_cpp import converter_dir

    return converter_dir()


@pytest.mark.slow
def test_sft_adapter_merges_exports_and_verifies(family, sft_run, converter, tmp_path):
    """SFT adapter -> merge -> GGUF f16 -> Modelfile -> verification, on the family's real template and stops."""
    import json

    from posttrain.configs import parse_args
    from posttrain.export.modelfile import parse_modelfile
    from posttrain.stages import export as stage_export

    out, _ = sft_run
    settings = {
        "model_name_or_path": str(out),
        "output_dir": str(tmp_path / "export"),
        "gguf_types": ["f16"],
        "system_prompt": "Answer briefly.",
        "threads": 2,
        "verify_prompts": 4,
        "verify_max_new_tokens": 8,
        "serve": False,
        "ollama_create": False,
        "min_agreement_f16": 0.5,  # a random tiny model has flat logits: f16 rounding flips some late tokens
        "min_agreement_q8_0": 0.0,
    }
    config = tmp_path / "export.yaml"
    config.write_text(json.dumps(settings))
    report = stage_export.main(*parse_args(stage_export.make_parser(), ["--config", str(config)]))
    failed = [f"{c['name']}: {c.get('summary')}" for c in report["checks"] if c["status"] == "fail"]
    assert report["passed"], failed
    modelfile = parse_modelfile((tmp_path / "export" / "Modelfile").read_text())
    assert modelfile["FROM"] == ["./model.f16.gguf"]
    assert SPECS[family].end_of_turn in modelfile["PARAMETER stop"]
