import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.chat_templates import (
    ChatTemplateError,
    NotPrefixPreservingError,
    check_mask_coverage,
    format_masked,
    load_template,
    setup_chat_template,
    tokenize_conversation,
    tokenize_conversations,
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Which is larger, 9.11 or 9.9?"},
    {"role": "assistant", "content": "9.9 is larger."},
    {"role": "user", "content": "Why?"},
    {"role": "assistant", "content": "Because 0.90 > 0.11."},
]

GOLDEN_MASKED = (
    "<|im_start|>system\nBe brief.<|im_end|>\n"
    "<|im_start|>user\nWhich is larger, 9.11 or 9.9?<|im_end|>\n"
    "<|im_start|>assistant\n⟦9.9 is larger.<|im_end|>\n⟧"
    "<|im_start|>user\nWhy?<|im_end|>\n"
    "<|im_start|>assistant\n⟦Because 0.90 > 0.11.<|im_end|>\n⟧"
)


def load(path):
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_base_model_gets_chatml_tokens_and_resized_embeddings(tiny_base_model):
    model, tokenizer = load(tiny_base_model)
    old_vocab = model.get_input_embeddings().num_embeddings
    assert tokenizer.chat_template is None

    new_ids = setup_chat_template(model, tokenizer, "auto")

    assert tokenizer.convert_ids_to_tokens(new_ids) == ["<|im_start|>", "<|im_end|>"]
    assert model.get_input_embeddings().num_embeddings == old_vocab + 2
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    # special tokens are single ids, never split into pieces
    assert tokenizer("<|im_start|>user", add_special_tokens=False)["input_ids"][0] == new_ids[0]


def test_chat_model_keeps_its_template_and_vocabulary(tiny_chat_model):
    model, tokenizer = load(tiny_chat_model)
    template, vocab = tokenizer.chat_template, len(tokenizer)
    assert setup_chat_template(model, tokenizer, "auto") == []
    assert tokenizer.chat_template == template and len(tokenizer) == vocab


def test_assistant_mask_golden(tiny_chat_model):
    _, tokenizer = load(tiny_chat_model)
    out = tokenize_conversation(tokenizer, CONVERSATION)
    assert len(out["input_ids"]) == len(out["assistant_masks"])
    assert format_masked(tokenizer, out["input_ids"], out["assistant_masks"]) == GOLDEN_MASKED
    # the end-of-turn token of every assistant turn is trained, the user's is not
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    trained_ends = [m for t, m in zip(out["input_ids"], out["assistant_masks"]) if t == im_end]
    assert trained_ends == [0, 0, 1, 0, 1]


def test_render_matches_golden_string(tiny_chat_model):
    _, tokenizer = load(tiny_chat_model)
    rendered = tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhich is larger, 9.11 or 9.9?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_non_prefix_preserving_template_is_trained_turn_by_turn(tiny_chat_model):
    _, tokenizer = load(tiny_chat_model)
    # drops earlier assistant turns' content, like reasoning templates that strip <think> from history
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}<|im_start|>assistant\n<|im_end|>\n"
        "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(NotPrefixPreservingError, match="prefix-preserving"):
        tokenize_conversation(tokenizer, CONVERSATION)
    first, second = tokenize_conversations(tokenizer, CONVERSATION)
    # each reply is trained in the rendering that ends with it: the first one is never hidden by the template
    assert (
        format_masked(tokenizer, first["input_ids"], first["assistant_masks"])
        == GOLDEN_MASKED.split("<|im_start|>user\nWhy?")[0]
    )
    assert format_masked(tokenizer, second["input_ids"], second["assistant_masks"]) == GOLDEN_MASKED.replace(
        "⟦9.9 is larger.<|im_end|>\n⟧", "<|im_end|>\n"
    )


def test_prefix_preserving_template_gives_one_sequence(tiny_chat_model):
    _, tokenizer = load(tiny_chat_model)
    assert tokenize_conversations(tokenizer, CONVERSATION) == [tokenize_conversation(tokenizer, CONVERSATION)]


def test_template_whose_turn_does_not_start_with_its_generation_prompt_is_refused(tiny_chat_model):
    _, tokenizer = load(tiny_chat_model)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>bot\n{% endif %}"
    )
    with pytest.raises(ChatTemplateError, match="generation prompt"):
        tokenize_conversations(tokenizer, CONVERSATION)


@pytest.mark.parametrize(
    "masks, message",
    [([[0, 0, 0], [0, 0]], "0%"), ([[1, 1], [1]], "100%"), ([[]], "0%")],
)
def test_mask_coverage_rejects_all_or_nothing(masks, message):
    with pytest.raises(ChatTemplateError, match=message):
        check_mask_coverage({"assistant_masks": masks})


def test_mask_coverage_reports_fraction():
    stats = check_mask_coverage({"assistant_masks": [[0, 1, 1, 0], [0, 1]]})
    assert (stats.trained, stats.total) == (3, 6) and stats.fraction == pytest.approx(0.5)


def test_unknown_template_name_lists_builtins():
    with pytest.raises(ChatTemplateError, match="chatml"):
        load_template("no-such-template")


def test_new_token_rows_are_trainable_through_lora(tiny_untied_base_model):
    """With untied embeddings, both the input rows and lm_head rows of new tokens must receive gradients."""
    from peft import get_peft_model

    from posttrain.configs import ModelConfig
    from posttrain.models.loading import lora_config

    model, tokenizer = load(tiny_untied_base_model)
    new_ids = setup_chat_template(model, tokenizer, "auto")
    config = lora_config(
        ModelConfig(
            model_name_or_path=str(tiny_untied_base_model), use_peft=True, lora_target_modules=["q_proj", "v_proj"]
        ),
        new_token_ids=new_ids,
        tied_embeddings=False,
    )
    peft_model = get_peft_model(model, config)
    ids = torch.tensor([tokenizer("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)["input_ids"]])
    peft_model(input_ids=ids, labels=ids).loss.backward()
    deltas = {n: p for n, p in peft_model.named_parameters() if "trainable_tokens_delta" in n}
    assert any("embed_tokens" in n for n in deltas) and any("lm_head" in n for n in deltas)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in deltas.values())


def test_overlong_conversations_error_drop_or_pass_through():
    from datasets import Dataset

    from posttrain.chat_templates import ChatTemplateError, check_lengths

    data = Dataset.from_dict(
        {"input_ids": [[1] * 5, [1] * 12, [1] * 8], "assistant_masks": [[1] * 5, [1] * 12, [1] * 8]}
    )
    with pytest.raises(ChatTemplateError, match=r"1 of 3 conversations are longer than max_length 10 tokens: row 1"):
        check_lengths(data, 10, "error")
    assert [len(r) for r in check_lengths(data, 10, "drop")["input_ids"]] == [5, 8]
    assert check_lengths(data, 10, "truncate") is data  # the trainer cuts them
    with pytest.raises(ChatTemplateError, match="drop would leave nothing"):
        check_lengths(data, 4, "drop")
