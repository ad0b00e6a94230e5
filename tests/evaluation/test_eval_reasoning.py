"""Thinking models in evaluation: reasoning split from the answer (format read from the chat template), scores on the
answer only, reasoning length in results and reports, ``chat_template_kwargs`` (enable_thinking on/off) reaching the
template through every backend and the generation cache key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from families import TOKENIZERS_DIR, FamilyAssetsMissing, build_tiny_family_model, load_family_tokenizer

from posttrain.errors import ConfigError
from posttrain.evaluation.backends import BackendError, GenerationSettings, HFBackend, OpenAIBackend
from posttrain.evaluation.cache import GenerationCache
from posttrain.evaluation.config import EvalArguments
from posttrain.evaluation.generation import check_template_kwargs
from posttrain.evaluation.reasoning import (
    HARMONY,
    PLAIN,
    ReasoningFormat,
    decode_reply,
    detect_reasoning_format,
    split_reasoning,
    tokenizer_renderer,
)
from posttrain.evaluation.runner import evaluate

QWEN3 = ReasoningFormat("tags", "<think>", "</think>")
R1 = ReasoningFormat("tags", "<think>", "</think>", opened_by_prompt=True)


def family_tokenizer(family: str, template: str | None = None):
    """A family's real tokenizer, with one of TRL's shipped templates when ``template`` names one."""
    try:
        if family in ("gptoss", "deepseek_v3"):  # packages without (or with another) template: TRL's is set below
            from transformers import AutoTokenizer

            path = TOKENIZERS_DIR / f"tokenizer-{family}" / "models"
            if not (path / "tokenizer.json").is_file():
                raise FamilyAssetsMissing(f"{path} missing: run `make setup`")
            tokenizer = AutoTokenizer.from_pretrained(path)
        else:
            tokenizer = load_family_tokenizer(family)
    except FamilyAssetsMissing as missing:
        pytest.skip(str(missing))
    if template:
        import trl

        tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / f"{template}.jinja").read_text()
    return tokenizer


# ------------------------------------------------------------------------------------------------------ split


def test_split_qwen3_style_block():
    split = split_reasoning("<think>\nIs it 42? No: 3 + 4.\n</think>\n\nThe answer is 7.", QWEN3)
    assert split.reasoning == "Is it 42? No: 3 + 4." and split.answer == "The answer is 7." and split.closed


def test_split_r1_style_block_opened_by_the_prompt():
    # the generation prompt ended with `<think>\n`: the reply starts inside the block and only closes it
    split = split_reasoning("Maybe 42... no, 7.\n</think>\n\n7", R1)
    assert (split.reasoning, split.answer, split.closed) == ("Maybe 42... no, 7.", "7", True)
    # a reply that never closes the block the prompt opened is reasoning, not an answer that mentions 42
    assert split_reasoning("still thinking about 42", R1).answer == ""


def test_split_unclosed_block_is_all_reasoning():
    split = split_reasoning("<think>\nLet me count: 1, 2, 3, 42", QWEN3)
    assert split.reasoning == "Let me count: 1, 2, 3, 42" and split.answer == "" and not split.closed
    cut = split_reasoning("Let me count: 1, 2", R1)
    assert cut.reasoning == "Let me count: 1, 2" and cut.answer == "" and not cut.closed


def test_split_plain_model_and_empty_block():
    assert split_reasoning("<think>x</think> 42", PLAIN).answer == "<think>x</think> 42"  # plain: nothing split
    assert split_reasoning("  7  ", QWEN3).reasoning is None
    empty = split_reasoning("<think>\n\n</think>\n\n7", QWEN3)  # Qwen3 with thinking off renders an empty block
    assert empty.reasoning == "" and empty.answer == "7"


def test_split_harmony_channels():
    text = (
        "<|channel|>analysis<|message|>User asks 3+4; 42 is wrong.<|end|><|start|>assistant"
        "<|channel|>final<|message|>7<|return|>"
    )
    split = split_reasoning(text, HARMONY)
    assert (split.reasoning, split.answer, split.closed) == ("User asks 3+4; 42 is wrong.", "7", True)
    cut = split_reasoning("<|channel|>analysis<|message|>User asks", HARMONY)
    assert (cut.reasoning, cut.answer, cut.closed) == ("User asks", "", False)
    call = split_reasoning(
        "<|channel|>analysis<|message|>need a tool<|end|><|start|>assistant<|channel|>commentary to=functions.add "
        '<|constrain|>json<|message|>{"a": 3}<|call|>',
        HARMONY,
    )
    assert call.reasoning == "need a tool" and call.answer.startswith("<|channel|>commentary to=functions.add")
    assert split_reasoning("just text<|return|>", HARMONY).answer == "just text"


def test_endpoint_default_splits_only_leading_blocks():
    endpoint = OpenAIBackend("http://127.0.0.1:9/v1", "m").reasoning_format()
    assert split_reasoning("<think>hmm 42</think>7", endpoint).answer == "7"
    assert split_reasoning("Use </think> to close", endpoint).answer == "Use </think> to close"


# -------------------------------------------------------------------------------------------------- detection


def test_formats_are_read_from_real_templates():
    qwen3 = family_tokenizer("qwen3")
    assert detect_reasoning_format(tokenizer_renderer(qwen3), qwen3.chat_template) == QWEN3
    # thinking off: the prompt carries a closed, empty block; replies are answers unless they open one
    off = detect_reasoning_format(tokenizer_renderer(qwen3, {"enable_thinking": False}), qwen3.chat_template)
    assert off == QWEN3 and not off.opened_by_prompt
    think = family_tokenizer("qwen3", "qwen3_5_think")  # opens <think> in the generation prompt
    assert detect_reasoning_format(tokenizer_renderer(think), think.chat_template).opened_by_prompt
    assert not detect_reasoning_format(
        tokenizer_renderer(think, {"enable_thinking": False}), think.chat_template
    ).opened_by_prompt
    r1 = family_tokenizer("deepseek_v3", "deepseek_r1_distill")
    assert detect_reasoning_format(tokenizer_renderer(r1), r1.chat_template) == R1
    gptoss = family_tokenizer("gptoss", "gptoss")
    assert detect_reasoning_format(tokenizer_renderer(gptoss), gptoss.chat_template) == HARMONY
    for plain in ("qwen2_5", "llama3_1", "smollm2"):
        tokenizer = family_tokenizer(plain)
        assert detect_reasoning_format(tokenizer_renderer(tokenizer), tokenizer.chat_template) == PLAIN, plain


def test_decoding_keeps_reasoning_markers():
    qwen3 = family_tokenizer("qwen3")
    ids = qwen3("<think>\n42?\n</think>\n\n7<|im_end|>", add_special_tokens=False)["input_ids"]
    assert decode_reply(qwen3, ids, QWEN3) == "<think>\n42?\n</think>\n\n7"
    # where the harmony markers are special tokens (as in gpt-oss's release), skipping special tokens erases them
    harmony = family_tokenizer("qwen2_5")
    markers = ["<|channel|>", "<|message|>", "<|end|>", "<|start|>"]
    harmony.add_special_tokens({"additional_special_tokens": markers}, replace_extra_special_tokens=False)
    text = "<|channel|>analysis<|message|>hm 42<|end|><|start|>assistant<|channel|>final<|message|>7"
    ids = harmony(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert "<|channel|>" not in harmony.decode(ids, skip_special_tokens=True)
    assert decode_reply(harmony, ids, HARMONY) == text
    assert split_reasoning(decode_reply(harmony, ids, HARMONY), HARMONY).answer == "7"


# ------------------------------------------------------------------------------------ backends and the cache


def test_cache_key_changes_with_tools_and_template_kwargs():
    messages, settings = [{"role": "user", "content": "hi"}], {"max_new_tokens": 8}
    plain = GenerationCache.key("fp", messages, settings)
    assert GenerationCache.key("fp", messages, settings, tools=None, template_kwargs={}) == plain  # old keys stay
    off = GenerationCache.key("fp", messages, settings, template_kwargs={"enable_thinking": False})
    on = GenerationCache.key("fp", messages, settings, template_kwargs={"enable_thinking": True})
    tool = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    with_tools = GenerationCache.key("fp", messages, settings, tools=tool)
    assert len({plain, off, on, with_tools}) == 4


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    try:
        return build_tiny_family_model("qwen3", tmp_path_factory.mktemp("qwen3"))
    except FamilyAssetsMissing as missing:
        pytest.skip(str(missing))


def test_enable_thinking_reaches_the_qwen3_template_through_the_hf_backend(tiny_qwen3, monkeypatch):
    import posttrain.models.generation as generation

    rendered = []
    real = generation.render_prompt

    def spy(tokenizer, conversation, **kwargs):
        rendered.append(real(tokenizer, conversation, **kwargs))
        return rendered[-1]

    monkeypatch.setattr(generation, "render_prompt", spy)
    backend = HFBackend(str(tiny_qwen3), dtype="float32")
    conversation = [{"role": "user", "content": "What is 3 + 4?"}]
    tool = {"type": "function", "function": {"name": "add_numbers", "parameters": {"type": "object"}}}
    settings = GenerationSettings(max_new_tokens=2)
    backend.generate([conversation], settings, progress=False)
    backend.generate([conversation], settings, progress=False, template_kwargs={"enable_thinking": False})
    backend.generate([conversation], settings, progress=False, tools=[[tool]])
    default, off, with_tools = rendered
    assert default.endswith("<|im_start|>assistant\n")
    assert off == default + "<think>\n\n</think>\n\n"
    assert "add_numbers" in with_tools and "add_numbers" not in default
    with pytest.raises(ValueError, match="one tool list"):
        backend.generate([conversation], settings, progress=False, tools=[[tool], None])
    assert backend.reasoning_format() == QWEN3
    assert backend.count_tokens(["<think>", ""]) == [1, 0]
    backend.close()


@pytest.mark.slow
def test_gguf_renders_its_own_template_with_tools_and_template_kwargs(tiny_chat_model, tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python")
    import shutil

    from llama_cpp import llama_chat_format
    from transformers import AutoTokenizer

    from posttrain.evaluation.backends import GGUFBackend
    from posttrain.export.llama_cpp import convert, converter_dir

    # the tiny ChatML model carrying Qwen3's real template (same <|im_start|> tokens; a 49k vocabulary converts fast)
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_chat_model, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = family_tokenizer("qwen3").chat_template
    tokenizer.save_pretrained(model_dir)
    gguf = tmp_path / "qwen3-template.gguf"
    convert(model_dir, gguf, "f16", llama_cpp=converter_dir())
    prompts = []
    real = llama_chat_format.Jinja2ChatFormatter.__call__

    def spy(self, **kwargs):
        prompts.append(real(self, **kwargs).prompt)
        return real(self, **kwargs)

    monkeypatch.setattr(llama_chat_format.Jinja2ChatFormatter, "__call__", spy)
    backend = GGUFBackend(str(gguf), n_ctx=1024)
    assert "enable_thinking" in backend.template_source()
    assert backend.reasoning_format() == QWEN3  # read from the GGUF's template, as for the HF model
    prompts.clear()
    conversation = [{"role": "user", "content": "What is 3 + 4?"}]
    tool = {"type": "function", "function": {"name": "add_numbers", "parameters": {"type": "object"}}}
    settings = GenerationSettings(max_new_tokens=2)
    [off] = backend.generate([conversation], settings, progress=False, template_kwargs={"enable_thinking": False})
    [with_tools] = backend.generate([conversation], settings, progress=False, tools=[[tool]])
    assert prompts[0].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "add_numbers" in prompts[1] and prompts[1].endswith("<|im_start|>assistant\n")
    assert off.num_tokens <= 2 and with_tools.num_tokens <= 2
    backend.close()
    small = GGUFBackend(str(gguf), n_ctx=64)  # the tool schema prompt does not fit: an error naming the file
    with pytest.raises(BackendError, match=r"conversation 1 with .*qwen3-template.gguf \(n_ctx 64\)"):
        small.generate([conversation], settings, progress=False, tools=[[tool]])
    small.close()


def test_endpoint_sends_tools_and_chat_template_kwargs_and_reads_reasoning(chat_server):
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    reply = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "7", "reasoning_content": "3 + 4, not 42"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"completion_tokens": 5},
    }
    chat_server.reply = lambda messages: (200, reply)
    backend = OpenAIBackend(chat_server.url, "qwen3", max_retries=0)
    [output] = backend.generate(
        [[{"role": "user", "content": "3 + 4?"}]],
        GenerationSettings(max_new_tokens=8),
        progress=False,
        tools=[[tool]],
        template_kwargs={"enable_thinking": False},
    )
    payload = chat_server.requests[-1]["payload"]
    assert payload["tools"] == [tool] and payload["chat_template_kwargs"] == {"enable_thinking": False}
    assert (output.text, output.reasoning) == ("7", "3 + 4, not 42")
    backend.generate([[{"role": "user", "content": "hi"}]], GenerationSettings(max_new_tokens=8), progress=False)
    assert "tools" not in chat_server.requests[-1]["payload"]
    assert "chat_template_kwargs" not in chat_server.requests[-1]["payload"]


# ------------------------------------------------------------------------------------------------- config


def test_chat_template_kwargs_config_merges_and_names_bad_keys():
    args = EvalArguments(
        models=[
            {"label": "think", "path": "smollm2-135m-instruct"},
            {"label": "off", "path": "smollm2-135m-instruct", "chat_template_kwargs": {"enable_thinking": False}},
        ],
        chat_template_kwargs={"enable_thinking": True, "reasoning_effort": "low"},
    )
    assert args.template_kwargs(args.models[0]) == {"enable_thinking": True, "reasoning_effort": "low"}
    assert args.template_kwargs(args.models[1]) == {"enable_thinking": False, "reasoning_effort": "low"}
    with pytest.raises(ConfigError, match=r"models\[0\]\.chat_template_kwargs.*must be a mapping"):
        EvalArguments(models=[{"label": "m", "path": "x", "chat_template_kwargs": ["enable_thinking"]}])
    with pytest.raises(ConfigError, match=r"models\[0\]: label False is a YAML boolean"):  # `label: off`
        EvalArguments(models=[{"label": False, "path": "x"}])
    with pytest.raises(ConfigError, match=r"^chat_template_kwargs: .*'tools'"):
        EvalArguments(models=[{"label": "m", "path": "x"}], chat_template_kwargs={"tools": []})


def test_template_kwargs_a_template_never_mentions_are_warned_about(tiny_qwen3, tiny_chat_model):
    args = EvalArguments(
        models=[{"label": "qwen3", "path": str(tiny_qwen3)}, {"label": "chatml", "path": str(tiny_chat_model)}],
        chat_template_kwargs={"enable_thinking": False},
    )
    warnings = []
    backends = [HFBackend(m.path) for m in args.models]
    check_template_kwargs(args, backends, warn=warnings.append)
    assert len(warnings) == 1 and "models[1] (chatml)" in warnings[0] and "'enable_thinking'" in warnings[0]
    assert "never referenced" in warnings[0]


# -------------------------------------------------------------------------------------------- whole runs

SUITE = """
name: think
max_new_tokens: 32
data:
  - samples:
      - {id: sum, prompt: "What is 3 + 4?", answer: "7", check: contains}
      - {id: trap, prompt: "What is 40 + 2 minus 35?", answer: "42", check: contains}
scoring: [task]
"""


def _scripted_generate(reasoning: dict[str, str], answers: dict[str, str]):
    """A stand-in for posttrain.models.generation.generate that behaves like Qwen3: it reasons (in a <think> block)
    unless the prompt closed the block already (enable_thinking false), then answers; token ids come from the real
    tokenizer, so the backend's decoding runs as for a real model."""
    from posttrain.models.generation import Completion, render_prompt

    calls = []

    def generate(model, tokenizer, conversations, *, tools=None, template_kwargs=None, **kwargs):
        completions = []
        for i, conversation in enumerate(conversations):
            prompt = render_prompt(
                tokenizer, conversation, tools=tools[i] if tools else None, template_kwargs=template_kwargs
            )
            calls.append(prompt)
            question = conversation[-1]["content"]
            thinking = not prompt.endswith("</think>\n\n")
            text = (f"<think>\n{reasoning[question]}\n</think>\n\n" if thinking else "") + answers[question]
            ids = tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
            completions.append([Completion(text, ids, True)])
        return completions

    return generate, calls


def test_thinking_on_and_off_scored_on_the_answer_with_reasoning_length(tmp_path, tiny_qwen3, monkeypatch):
    import posttrain.evaluation.backends as backends

    generate, calls = _scripted_generate(
        reasoning={"What is 3 + 4?": "Not 42. 3 + 4 = 7.", "What is 40 + 2 minus 35?": "40 + 2 = 42; 42 - 35 = 7."},
        answers={"What is 3 + 4?": "The answer is 7.", "What is 40 + 2 minus 35?": "It is 7."},
    )
    monkeypatch.setattr(backends, "generate", generate)
    suite = tmp_path / "think.yaml"
    suite.write_text(SUITE)
    args = EvalArguments(
        models=[
            {"label": "think", "path": str(tiny_qwen3)},
            {"label": "no-think", "path": str(tiny_qwen3), "chat_template_kwargs": {"enable_thinking": False}},
        ],
        suites=[str(suite)],
        output_dir=str(tmp_path / "eval"),
        dtype="float32",
        progress=False,
        bootstrap_samples=50,
    )
    results = json.loads(evaluate(args).read_text())
    assert results["counts"] == {"generated": 4, "cached": 0}  # the kwargs are in the cache key: no shared replies
    assert sum(p.endswith("<think>\n\n</think>\n\n") for p in calls) == 2
    models = {m["label"]: m for m in results["models"]}
    assert models["no-think"]["chat_template_kwargs"] == {"enable_thinking": False}
    assert models["think"]["reasoning_format"] == {**QWEN3.describe()}
    records = {(r["model"], r["id"]): r for r in results["samples"]}
    think_trap = records[("think", "trap")]
    assert think_trap["reasoning"] == "40 + 2 = 42; 42 - 35 = 7." and think_trap["output"] == "It is 7."
    # "42" is only in the reasoning: the check scores the answer, so the trap fails, the sum passes
    assert think_trap["scores"]["task"] == 0.0 and records[("think", "sum")]["scores"]["task"] == 1.0
    assert records[("no-think", "sum")]["reasoning"] is None and records[("no-think", "sum")]["scores"]["task"] == 1.0
    assert think_trap["reasoning_tokens"] > 5 and think_trap["reasoning_chars"] == len(think_trap["reasoning"])
    on, off = results["summary"]["think"]["think"]["_reasoning"], results["summary"]["think"]["no-think"]["_reasoning"]
    assert on["with_reasoning"] == 1.0 and on["mean_tokens"] > 5 and on["unclosed"] == 0.0
    assert off == {"with_reasoning": 0.0, "mean_chars": 0.0, "mean_tokens": 0.0, "unclosed": 0.0}
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "reasoning" in report and "100% · " in report and "0% · 0 tokens" in report
    assert "40 + 2 = 42" in (tmp_path / "eval" / "report.html").read_text()  # the example's reasoning, folded

    again = json.loads(evaluate(args).read_text())  # re-scoring reads the cache, split the same way
    assert again["counts"] == {"generated": 0, "cached": 4}
    assert again["summary"]["think"]["think"]["_reasoning"] == on


def test_endpoint_reasoning_fields_and_leading_think_blocks(tmp_path, chat_server):
    def reply(messages):
        question = messages[-1]["content"]
        if "3 + 4" in question:  # a server with a reasoning parser: reasoning apart from the content
            message = {"role": "assistant", "content": "7", "reasoning_content": "not 42"}
        else:  # a server without one: the block stays in the content
            message = {"role": "assistant", "content": "<think>surely 42</think>\n\nIt is 7."}
        return 200, {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": {}}

    chat_server.reply = reply
    suite = tmp_path / "think.yaml"
    suite.write_text(SUITE)
    args = EvalArguments(
        models=[{"label": "m", "model": "qwen3", "endpoint": chat_server.url}],
        suites=[str(suite)],
        output_dir=str(tmp_path / "eval"),
        progress=False,
        bootstrap_samples=50,
        max_retries=0,
    )
    results = json.loads(evaluate(args).read_text())
    records = {r["id"]: r for r in results["samples"]}
    assert (records["sum"]["reasoning"], records["sum"]["output"], records["sum"]["scores"]["task"]) == (
        "not 42",
        "7",
        1.0,
    )
    assert (records["trap"]["reasoning"], records["trap"]["scores"]["task"]) == ("surely 42", 0.0)
    summary = results["summary"]["think"]["m"]["_reasoning"]
    assert summary["with_reasoning"] == 1.0 and summary["mean_tokens"] is None  # no tokenizer: characters only
    assert summary["mean_chars"] == (len("not 42") + len("surely 42")) / 2
    assert "with it · mean length" in (tmp_path / "eval" / "report.md").read_text()
