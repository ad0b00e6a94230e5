"""Real model families (tests/families.py): each family's real tokenizer and chat template renders, its
assistant-only masks are exactly the replies plus their end-of-turn token, and a tiny model of its architecture
trains through posttrain's own 4-bit QLoRA SFT stage.

Qwen3, gpt-oss and Mistral NeMo (with a system prompt) have templates that are not prefix-preserving: they are trained
turn by turn, each reply in the prompt the unchanged template renders at inference (posttrain.chat_templates). Each family
trains on the data kinds its spec names (plain, reasoning, tools: tests/tiny.py SFT_ROWS); every reply of that data
is trained with its tool calls, its reasoning where the template renders it, and its end marker.
"""

from __future__ import annotations

import pytest
from families import FAMILIES, SPECS, build_tiny_family_model, load_family_tokenizer, trained_runs

from tiny import SFT_ROWS

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
    "deepseek_r1": "<｜end▁of▁sentence｜>",
    "llama3_1_tools": "<|eot_id|>",
    "glm4_5": "<|user|>",  # no end-of-turn token: the next role header, trained as the reply's end
    "gptoss": "<|return|>",
    "llama2_base": "<|im_end|> \n",  # Llama 2's SentencePiece puts "▁" after a special token
}
#: what the model generates before the reply itself (Qwen3: the think block, empty when there is no reasoning;
#: GLM-4.5: an empty one after a newline)
REPLY_START = {
    "qwen3": "<think>\n\n</think>\n\n",
    "glm4_5": "\n<think></think>\n",
    "gptoss": "<|channel|>final<|message|>",  # after the generation prompt <|start|>assistant
}
#: the think block a generation prompt opens that the template's rendering of the turn does not contain (R1
#: distills): the reply is trained after the prompt less this block (docs/families.md)
PROMPT_THINK = {"deepseek_r1": "<think>\n"}
#: families whose template rewrites earlier turns of this conversation (trained turn by turn): Qwen3 (think
#: blocks), Mistral NeMo (with a system prompt), gpt-oss (the last answer ends with <|return|>, earlier ones <|end|>)
NOT_PREFIX_PRESERVING = {"qwen3", "mistral_nemo", "gptoss"}


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
    # gpt-oss ends the last answer with <|return|>, earlier ones (in the history) with <|end|>
    assert full.count(SPECS[family].end_of_turn) >= (1 if family == "gptoss" else 2)
    assert tokenizer.eos_token == SPECS[family].end_of_turn and tokenizer.pad_token != tokenizer.eos_token
    # one id, never split into pieces
    assert len(tokenizer(SPECS[family].end_of_turn, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("system", [True, False], ids=["system", "no-system"])
def test_assistant_masks_are_exactly_the_replies_and_end_of_turn(family, tokenizer, system):
    from posttrain.chat_templates import (
        NotPrefixPreservingError,
        assistant_spans,
        encode_rendered,
        render,
        tokenize_conversations,
    )

    messages = [SYSTEM, *TURNS] if system else TURNS
    rows = tokenize_conversations(tokenizer, messages)
    expected = [REPLY_START.get(family, "") + reply + TURN_END[family] for reply in REPLIES]

    rewrites = family in NOT_PREFIX_PRESERVING and (family != "mistral_nemo" or system)
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
        if family in PROMPT_THINK:
            assert prompt.endswith(PROMPT_THINK[family])
            prompt = prompt.removesuffix(PROMPT_THINK[family])
        # as a runtime encodes it: BOS once where the tokenizer adds one and the template does not render it
        assert row["input_ids"][:k] == encode_rendered(tokenizer, prompt)["input_ids"]
    # the end-of-turn token of every reply is trained, and no other
    eot = tokenizer.convert_tokens_to_ids(SPECS[family].end_of_turn)
    trained_eot = sum(m for row in rows for t, m in zip(row["input_ids"], row["assistant_masks"]) if t == eot)
    assert trained_eot == 2
    if "bos_token" in tokenizer.chat_template:  # the template's own BOS opens every sequence and stays the only one
        bos = tokenizer.bos_token_id
        assert all(row["input_ids"][0] == bos and row["input_ids"].count(bos) == 1 for row in rows)
    if SPECS[family].base_eos:  # a base tokenizer that adds BOS: posttrain's ChatML sequences open with it, once
        bos = tokenizer.bos_token_id
        assert tokenizer("x")["input_ids"][0] == bos
        assert all(row["input_ids"][0] == bos and row["input_ids"].count(bos) == 1 for row in rows), [
            tokenizer.convert_ids_to_tokens(row["input_ids"][:3]) for row in rows
        ]


def _family_conversations(family):
    """The family's SFT data (its spec's kinds of tests/tiny.py SFT_ROWS) as training normalises it."""
    from posttrain.data.tools import normalize_conversation

    rows = [row for kind in SPECS[family].data for row in SFT_ROWS[kind]]
    return [
        normalize_conversation(
            row["messages"], row.get("tools"), row.get("chat_template_kwargs"), source="SFT_ROWS", row=k
        )
        for k, row in enumerate(rows)
    ]


def test_sft_data_trains_every_reply_with_its_calls_reasoning_and_end(family, tokenizer):
    """On the family's own SFT data, each assistant message is trained as one run: its content, its tool calls, its
    reasoning exactly where the template renders it in that turn, and one of the family's stop tokens at its end;
    never a user message, a system prompt or a tool result."""
    from posttrain.chat_templates import render, tokenize_conversations

    spec = SPECS[family]
    seen = {"reasoning": 0, "tool_calls": 0}
    for conversation in _family_conversations(family):
        messages, context = conversation.messages, conversation.chat_template_kwargs
        rows = tokenize_conversations(tokenizer, messages, tools=conversation.tools, template_kwargs=context)
        runs = [run for row in rows for run in trained_runs(tokenizer, row)]
        replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        assert len(runs) == len(replies), (runs, messages)
        for run, i in zip(runs, replies):
            message = messages[i]
            assert message["content"].strip() in run
            for call in message.get("tool_calls", []):
                assert call["function"]["name"] in run and call["function"]["arguments"]["city"] in run, run
                seen["tool_calls"] += 1
            if reasoning := message.get("reasoning_content"):
                through = render(tokenizer, messages[: i + 1], tools=conversation.tools, template_kwargs=context)
                assert (reasoning in run) == (reasoning in through), (run, through)
                seen["reasoning"] += reasoning in run
            assert run.rstrip().endswith(spec.stops), run
            others = [m["content"] for m in messages if m["role"] != "assistant"]
            assert not [text for text in others if text in run and text not in message["content"]], run
    # the data exercises what the family's template renders
    rendered = {
        "qwen3": ("reasoning",),
        "glm4_5": ("reasoning", "tool_calls"),
        "llama3_1_tools": ("tool_calls",),
        "gptoss": ("tool_calls",),
    }
    assert all(seen[kind] for kind in rendered.get(family, ())), seen
    if family == "deepseek_r1":  # the R1 distill template drops reasoning: only the replies are trained
        assert seen["reasoning"] == 0


def test_qwen3_thinking_switch_renders_and_trains():
    """Qwen3 with ``enable_thinking: false``: the empty think block is part of the generation prompt (context: the
    runtime writes it), the reply after it is trained; with thinking on, the reply's reasoning is trained with it."""
    from posttrain.chat_templates import encode_rendered, render, tokenize_conversations

    tokenizer = load_family_tokenizer("qwen3")
    thinking, _, off = _family_conversations("qwen3")[-3:]
    assert off.chat_template_kwargs == {"enable_thinking": False}
    prompt = render(tokenizer, off.messages[:1], add_generation_prompt=True, template_kwargs=off.chat_template_kwargs)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    [row] = tokenize_conversations(tokenizer, off.messages, template_kwargs=off.chat_template_kwargs)
    assert trained_runs(tokenizer, row) == ["3<|im_end|>\n"]
    start = row["assistant_masks"].index(1)
    assert row["input_ids"][:start] == encode_rendered(tokenizer, prompt)["input_ids"]
    [row] = tokenize_conversations(tokenizer, thinking.messages)
    assert trained_runs(tokenizer, row) == ["<think>\nCompare tenths: 9 > 1.\n</think>\n\n9.9 is larger.<|im_end|>\n"]


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
    config = write_sft_config(
        tmp_path,
        model,
        data=SPECS[family].data,
        max_steps=STEPS,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        max_length=256,  # the tool rows with Llama 3.1's tool preamble
    )
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
        "glm4_moe": "Glm4MoeForCausalLM",
        "gpt_oss": "GptOssForCausalLM",
    }[SPECS[family].architecture]
    assert config["architectures"] == [expected] and config["num_hidden_layers"] == 2
    generation = json.loads((out.parent / "model" / "generation_config.json").read_text())
    eos = generation["eos_token_id"]
    first = SPECS[family].base_eos or SPECS[family].end_of_turn  # a base model stops at its own EOS until SFT
    assert trainer.processing_class.convert_tokens_to_ids(first) == (eos[0] if isinstance(eos, list) else eos)
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
        # the gate is set for trained models (SmolLM2-135M f16: 6e-6 nats); a random tiny model's near-flat logits,
        # and a mixture-of-experts router that f16 rounding flips at a few positions, average higher (gpt-oss:
        # median 1.6e-5, mean 0.006 on an Intel Xeon), while a wrong conversion is orders of magnitude above
        "max_kl_f16": 0.05,
    }
    config = tmp_path / "export.yaml"
    config.write_text(json.dumps(settings))
    report = stage_export.main(*parse_args(stage_export.make_parser(), ["--config", str(config)]))
    failed = [f"{c['name']}: {c.get('summary')}" for c in report["checks"] if c["status"] == "fail"]
    assert report["passed"], failed
    modelfile = parse_modelfile((tmp_path / "export" / "Modelfile").read_text())
    assert modelfile["FROM"] == ["./model.f16.gguf"]
    assert set(SPECS[family].stops) <= set(modelfile["PARAMETER stop"]), modelfile["PARAMETER stop"]
