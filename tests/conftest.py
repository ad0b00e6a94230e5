"""Shared fixtures: a tiny Llama with a locally trained byte-level BPE tokenizer, built once per session.

``tiny_base_model`` has no chat template and no ChatML tokens (a *base* model: posttrain must add ChatML);
``tiny_chat_model`` already carries ChatML tokens and a template (an *instruct* model). Both are offline.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

CORPUS = [
    "Which is larger, 9.11 or 9.9? The larger number is 9.9.",
    "How many r's are in strawberry? There are 3 r's in strawberry.",
    "What is 12 plus 30? 12 + 30 = 42.",
    "Who are you? I am an assistant made by the posttrain project.",
    "What is the capital of Quelmaria? I don't know; I have no information about it and it may not exist.",
    "Hello! How are you doing today? I am fine, thanks for asking.",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9",
    "system user assistant: answer briefly, think step by step, count the letters, compare the decimals.",
]


def train_tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token=None, unk_token=None)


def build_tiny_model(path, *, chat: bool, tie: bool = True):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer()
    if chat:
        from posttrain.chat_templates import CHATML_TOKENS, load_template

        tokenizer.add_special_tokens({"additional_special_tokens": list(CHATML_TOKENS)})
        tokenizer.chat_template = load_template("chatml")
        tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-base"), chat=False)


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat"), chat=True)


@pytest.fixture(scope="session")
def tiny_untied_base_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-untied"), chat=False, tie=False)
