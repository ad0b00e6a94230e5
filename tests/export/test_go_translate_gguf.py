"""BOS agreement between training sequences, HF generation and llama.cpp; the GGUF's metadata (add_bos_token, an
inference chat template without TRL's ``{% generation %}`` markers), read back from converted tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

from posttrain.chat_templates import has_generation_tags, strip_generation_tags

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! 12 apples."},
    {"role": "user", "content": "And pears?"},
    {"role": "assistant", "content": "Three."},
]


def family_tokenizer(family: str):
    families = pytest.importorskip("families")
    if family not in families.FAMILIES:
        pytest.skip(f"tests/families.py has no {family}")
    try:
        return families.load_family_tokenizer(family)
    except families.FamilyAssetsMissing as err:
        pytest.skip(str(err))


@pytest.mark.parametrize(
    ("family", "first"),
    [
        ("llama2_base", "<s>"),  # adds BOS, posttrain's ChatML does not render it: BOS added once, masked
        ("llama3_1", "<|begin_of_text|>"),  # its template renders BOS: not doubled
        ("qwen2_5", "<|im_start|>"),  # no BOS at all
    ],
)
def test_training_and_generation_start_like_the_runtime(family, first):
    from posttrain.chat_templates import adds_bos, tokenize_conversations
    from posttrain.export.verify import chat_prompt_ids

    tokenizer = family_tokenizer(family)
    [row] = tokenize_conversations(tokenizer, CONVERSATION)
    ids = row["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[:1]) == [first]
    bos = tokenizer.bos_token_id
    assert ids.count(bos) == (1 if adds_bos(tokenizer) else 0) if bos is not None else True
    assert row["assistant_masks"][0] == 0 and len(row["assistant_masks"]) == len(ids)
    # the prompt HF generation and the export's checks use starts the same way
    prompt = chat_prompt_ids(tokenizer, CONVERSATION[:2])
    assert prompt[:2] == ids[:2]
    if family == "llama2_base":
        assert ids[0] == bos == 1 and tokenizer.convert_ids_to_tokens(ids[1]) == "<|im_start|>"


def test_generate_tokenizes_prompts_with_bos_once(monkeypatch):
    """posttrain's HF generation (evaluation, pairs) feeds the model the prompt ids training used."""
    import torch

    from posttrain.export.verify import chat_prompt_ids
    from posttrain.models import generation

    tokenizer = family_tokenizer("llama2_base")
    seen = []

    class Model(torch.nn.Module):  # records the prompt ids it is given
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.generation_config = type("GenerationConfig", (), {"eos_token_id": tokenizer.eos_token_id})()

        def generate(self, input_ids, attention_mask, **kwargs):
            seen.append(input_ids[0][attention_mask[0].bool()].tolist())
            return torch.cat([input_ids, torch.full((len(input_ids), 1), tokenizer.eos_token_id)], dim=1)

    generation.generate(Model(), tokenizer, [CONVERSATION[:2]], max_new_tokens=1, progress=False)
    assert seen == [chat_prompt_ids(tokenizer, CONVERSATION[:2])] and seen[0][:1] == [1]


# ------------------------------------------------------------------------------------------------ converted GGUFs


def training_chatml() -> str:
    """posttrain's ChatML as a TRL-style training template: {% generation %} markers around every message."""
    from posttrain.chat_templates import load_template

    template = load_template("chatml")
    loop = "{%- for message in messages -%}"
    end = "{%- endfor -%}\n{%- if add_generation_prompt -%}"
    assert template.count(loop) == 1 and template.count(end) == 1
    return template.replace(loop, loop + "{%- generation -%}").replace(end, "{%- endgeneration -%}" + end)


@pytest.fixture(scope="module")
def llama2_chatml(tmp_path_factory, converter):
    """A tiny Llama-2-tokenizer base model as SFT + merge leave it -- ChatML added by setup_chat_template (here
    the training variant, as a user may set it) -- and its f16 GGUF, converted as the export converts it."""
    families = pytest.importorskip("families")
    family_tokenizer("llama2_base")  # skips when the assets are missing
    from transformers import AutoModelForCausalLM

    from posttrain.chat_templates import setup_chat_template
    from posttrain.export.llama_cpp import convert

    tmp = tmp_path_factory.mktemp("llama2-chatml")
    model_dir = families.build_tiny_family_model("llama2_base", tmp / "model")
    (tmp / "chatml_training.jinja").write_text(training_chatml(), encoding="utf-8")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = families.load_family_tokenizer("llama2_base", as_trained=False)
    setup_chat_template(model, tokenizer, str(tmp / "chatml_training.jinja"))
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    gguf = tmp / "model.f16.gguf"
    convert(model_dir, gguf, "f16", llama_cpp=converter)
    return model_dir, gguf


def test_llama2_with_chatml_agrees_with_llama_cpp(llama2_chatml):
    """The real Llama-2 tokenizer with posttrain's ChatML: the GGUF adds BOS as the HF tokenizer does, and
    llama.cpp's ids for rendered conversations and chat prompts (BOS included, once) are the training/HF ids."""
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    from posttrain.chat_templates import tokenize_conversations
    from posttrain.export.prompts import TEMPLATE_CONVERSATIONS
    from posttrain.export.verify import chat_prompt_ids, check_tokenization, gguf_metadata

    model_dir, gguf = llama2_chatml
    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # as the export loads it: `legacy` kept through the save
    tokenizer.chat_template = strip_generation_tags(tokenizer.chat_template)
    assert gguf_metadata(gguf)["tokenizer.ggml.add_bos_token"] is True
    llm = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    try:
        [row] = tokenize_conversations(tokenizer, CONVERSATION)
        assert row["input_ids"][:1] == [1] and row["input_ids"].count(1) == 1
        text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
        assert list(llm.tokenize(text.encode(), add_bos=True, special=True)) == row["input_ids"]
        for conversation in TEMPLATE_CONVERSATIONS[:8]:
            text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
            gguf_ids = list(llm.tokenize(text.encode(), add_bos=True, special=True))
            assert gguf_ids == chat_prompt_ids(tokenizer, conversation) and gguf_ids.count(1) == 1
        # the export's check: every text identical but one starting with spaces (llama.cpp's SPM space prefix)
        check = check_tokenization(tokenizer, llm)
        assert check.passed, check.details["mismatches"]
        assert [m["text"][:1] for m in check.details["space_prefix_only"]] == [" "]
    finally:
        llm.close()


def test_gguf_carries_the_inference_template(llama2_chatml):
    """The tokenizer carries a training template: the GGUF's tokenizer.chat_template has no {% generation %}
    markers, parses without TRL's extension and renders like posttrain's ChatML."""
    import jinja2

    from posttrain.chat_templates import load_template
    from posttrain.export.prompts import TEMPLATE_CONVERSATIONS
    from posttrain.export.verify import gguf_metadata

    written = gguf_metadata(llama2_chatml[1])["tokenizer.chat_template"]
    assert has_generation_tags(training_chatml()) and not has_generation_tags(written)
    assert written == strip_generation_tags(training_chatml())
    jinja2.Environment().parse(written)
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    for conversation in TEMPLATE_CONVERSATIONS:
        assert env.from_string(written).render(messages=conversation, add_generation_prompt=True) == env.from_string(
            load_template("chatml")
        ).render(messages=conversation, add_generation_prompt=True)


def test_gguf_add_bos_follows_the_hf_tokenizer(monkeypatch):
    """DeepSeek-V3's tokenizer_config.json says add_bos_token, its tokenizer adds none and its template writes BOS:
    the converter (patched by _convert_runner) writes what the tokenizer does, so Ollama's runner does not put a
    second BOS before the TEMPLATE's; a training template reaches the GGUF without its markers."""
    import gguf

    from posttrain.chat_templates import adds_bos
    from posttrain.export import _convert_runner

    path = Path(__file__).parents[1] / "assets" / "tokenizers" / "node_modules" / "@lenml" / "tokenizer-deepseek_v3"
    if not (path / "models" / "tokenizer.json").is_file():
        pytest.skip(f"{path} is missing: run `make setup`")
    from transformers import AutoTokenizer

    assert adds_bos(AutoTokenizer.from_pretrained(path / "models")) is False

    class Writer:  # records what the converter writes
        def __init__(self):
            self.values = {}

        def __getattr__(self, name):
            return lambda value: self.values.__setitem__(name, value)

    monkeypatch.setattr(gguf.SpecialVocab, "add_to_gguf", gguf.SpecialVocab.add_to_gguf)  # restored afterwards
    monkeypatch.setattr(gguf.LlamaHfVocab, "get_token_score", gguf.LlamaHfVocab.get_token_score)
    vocab = gguf.SpecialVocab(path / "models", load_merges=False)
    writer = Writer()
    vocab.add_to_gguf(writer, quiet=True)
    assert writer.values["add_add_bos_token"] is True  # what the converter alone would write
    monkeypatch.setenv("POSTTRAIN_ADD_BOS", "0")
    _convert_runner._patch_vocab(gguf, path / "models")
    vocab.chat_template = training_chatml()
    writer = Writer()
    vocab.add_to_gguf(writer, quiet=True)
    assert writer.values["add_add_bos_token"] is False
    assert writer.values["add_chat_template"] == strip_generation_tags(training_chatml())
