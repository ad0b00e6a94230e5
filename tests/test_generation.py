import torch

from posttrain.models.generation import generate, load_model_for_generation

CONVERSATIONS = [
    [{"role": "user", "content": "Which is larger, 9.11 or 9.9?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "How many r's are in strawberry? Count the letters one by one."}],
]


def test_batched_greedy_equals_one_at_a_time(tiny_chat_model):
    model, tokenizer = load_model_for_generation(str(tiny_chat_model))
    batched = generate(model, tokenizer, CONVERSATIONS, max_new_tokens=8, batch_size=3, progress=False)
    single = [generate(model, tokenizer, [c], max_new_tokens=8, progress=False)[0] for c in CONVERSATIONS]
    assert [r[0].token_ids for r in batched] == [r[0].token_ids for r in single]
    assert all(len(r) == 1 and 0 < r[0].num_tokens <= 8 for r in batched)


def test_stops_at_end_of_turn_and_reports_it(tiny_chat_model):
    model, tokenizer = load_model_for_generation(str(tiny_chat_model))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():  # make <|im_end|> the most likely next token everywhere
        model.lm_head.weight[im_end] = model.lm_head.weight.abs().max() * 50 * model.model.norm.weight.sign()
    [[done]] = generate(model, tokenizer, CONVERSATIONS[:1], max_new_tokens=8, progress=False)
    assert done.finished and done.token_ids[-1] == im_end and "<|im_end|>" not in done.text
    # with a budget too small to reach the end of turn, the completion is reported as cut
    [[cut]] = generate(model, tokenizer, CONVERSATIONS[:1], max_new_tokens=1, progress=False)
    assert cut.num_tokens == 1 and cut.finished == (cut.token_ids[0] == im_end)


def test_sampling_is_seeded_and_returns_n(tiny_chat_model):
    model, tokenizer = load_model_for_generation(str(tiny_chat_model))
    kwargs = dict(max_new_tokens=6, do_sample=True, num_return_sequences=4, seed=3, progress=False)
    first = generate(model, tokenizer, CONVERSATIONS, **kwargs)
    again = generate(model, tokenizer, CONVERSATIONS, **kwargs)
    assert [len(r) for r in first] == [4, 4, 4]
    assert [[c.token_ids for c in r] for r in first] == [[c.token_ids for c in r] for r in again]
    assert len({tuple(c.token_ids) for r in first for c in r}) > 3  # samples differ
