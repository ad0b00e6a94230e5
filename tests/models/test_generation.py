import pytest
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


# ------------------------------------------------------------------------------------------ compact decoding loop
# generate() decodes with its own KV-cached loop in which finished rows leave the batch (compact=True, the default);
# compact=False is model.generate on whole batches, the reference these tests compare with.

PROMPTS = CONVERSATIONS + [  # several prompt lengths, so batches are left-padded
    [{"role": "user", "content": "What is 12 plus 30? " * k}] for k in (1, 3, 6)
]


def _ids(results):
    return [[c.token_ids for c in r] for r in results]


def _no_hf_generate(model, monkeypatch):
    """Make model.generate fail, so a passing test shows the compact loop produced the tokens."""

    def refuse(*args, **kwargs):
        raise AssertionError("model.generate called: the compact loop was not used")

    monkeypatch.setattr(model, "generate", refuse)


def _stop_early(model, reference):
    """Add a stop id taken from the middle of the first reference reply: some rows end after a few tokens, others
    run to the budget. Returns that id."""
    stop = reference[0][0].token_ids[3]
    eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [eos, stop] if isinstance(eos, int) else [*eos, stop]
    return stop


def test_compact_greedy_is_model_generate(tiny_chat_model, monkeypatch):
    model, tokenizer = load_model_for_generation(str(tiny_chat_model))
    for batch_size in (1, 3):
        reference = generate(
            model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=batch_size, progress=False, compact=False
        )
        with monkeypatch.context() as patch:
            _no_hf_generate(model, patch)
            compact = generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=batch_size, progress=False)
        assert _ids(compact) == _ids(reference)
        assert [[c.finished for c in r] for r in compact] == [[c.finished for c in r] for r in reference]
        assert [[c.text for c in r] for r in compact] == [[c.text for c in r] for r in reference]


def test_rows_that_stop_early_leave_the_batch_and_keep_their_reply(tiny_chat_model, monkeypatch):
    model, tokenizer = load_model_for_generation(str(tiny_chat_model))
    reference = generate(model, tokenizer, PROMPTS, max_new_tokens=16, batch_size=3, progress=False, compact=False)
    stop = _stop_early(model, reference)
    reference = generate(model, tokenizer, PROMPTS, max_new_tokens=16, batch_size=3, progress=False, compact=False)
    lengths = [r[0].num_tokens for r in reference]
    # the case under test: in one batch, rows end at different steps and some run to the budget
    assert reference[0][0].finished and reference[0][0].token_ids[-1] == stop and lengths[0] <= 4
    assert any(not r[0].finished for r in reference) and len(set(lengths)) > 2
    selected = []
    with monkeypatch.context() as patch:
        _no_hf_generate(model, patch)
        from transformers import DynamicCache

        select = DynamicCache.batch_select_indices
        patch.setattr(DynamicCache, "batch_select_indices", lambda self, i: (selected.append(len(i)), select(self, i)))
        batched = generate(model, tokenizer, PROMPTS, max_new_tokens=16, batch_size=3, progress=False)
        alone = [generate(model, tokenizer, [c], max_new_tokens=16, progress=False)[0] for c in PROMPTS]
    assert selected, "no row left a batch"
    assert _ids(batched) == _ids(alone) == _ids(reference)
    assert [r[0].finished for r in batched] == [r[0].finished for r in reference]


def test_compact_sampling_is_seeded_and_draws_as_model_generate(tiny_chat_model, monkeypatch):
    model, tokenizer = load_model_for_generation(str(tiny_chat_model))
    kwargs = dict(max_new_tokens=6, do_sample=True, temperature=0.7, top_p=0.9, seed=11, progress=False)
    for n in (1, 3):
        reference = generate(model, tokenizer, PROMPTS, num_return_sequences=n, compact=False, **kwargs)
        assert not any(c.finished for r in reference for c in r)  # no row leaves: the draws stay aligned
        with monkeypatch.context() as patch:
            _no_hf_generate(model, patch)
            first = generate(model, tokenizer, PROMPTS, num_return_sequences=n, **kwargs)
            again = generate(model, tokenizer, PROMPTS, num_return_sequences=n, **kwargs)
        assert [len(r) for r in first] == [n] * len(PROMPTS)
        # same warpers (temperature, HF's default top-k 50, top-p), same softmax and multinomial: the same samples
        assert _ids(first) == _ids(again) == _ids(reference)
    assert len({tuple(c.token_ids) for r in first for c in r}) > len(PROMPTS)  # the n samples differ


def test_compact_sampling_with_rows_leaving_is_seeded(tiny_chat_model, monkeypatch):
    model, tokenizer = load_model_for_generation(str(tiny_chat_model))
    greedy = generate(model, tokenizer, PROMPTS, max_new_tokens=16, batch_size=3, progress=False, compact=False)
    _stop_early(model, greedy)
    kwargs = dict(max_new_tokens=16, do_sample=True, num_return_sequences=4, seed=2, batch_size=3, progress=False)
    with monkeypatch.context() as patch:
        _no_hf_generate(model, patch)
        first = generate(model, tokenizer, PROMPTS, **kwargs)
        again = generate(model, tokenizer, PROMPTS, **kwargs)
        other = generate(model, tokenizer, PROMPTS, **dict(kwargs, seed=3))
    assert _ids(first) == _ids(again) != _ids(other)
    completions = [c for r in first for c in r]
    assert len(completions) == 4 * len(PROMPTS) and any(c.finished for c in completions)
    assert all(0 < c.num_tokens <= 16 and (c.finished or c.num_tokens == 16) for c in completions)
    assert all(c.finished == (c.token_ids[-1] in model.generation_config.eos_token_id) for c in completions)


def test_falls_back_to_model_generate_where_the_loop_does_not_apply(tiny_chat_model, monkeypatch):
    from posttrain.models import generation

    model, tokenizer = load_model_for_generation(str(tiny_chat_model))
    plain = generate(model, tokenizer, PROMPTS, max_new_tokens=8, progress=False, compact=False)
    model.generation_config.repetition_penalty = 1.5  # a logits processor the loop does not implement
    calls = []
    original = model.generate
    monkeypatch.setattr(model, "generate", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    monkeypatch.setattr(generation, "_compact_decode", lambda *a, **k: pytest.fail("compact loop used"))
    penalized = generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=3, progress=False)
    assert len(calls) == 2  # two batches, both through model.generate
    reference = generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=3, progress=False, compact=False)
    assert _ids(penalized) == _ids(reference) != _ids(plain)  # the penalty applied, as in model.generate
    # an encoder-decoder or a cache that cannot drop rows is refused as well
    model.generation_config.repetition_penalty = 1.0
    assert generation._compact_forward_model(model, do_sample=False) is model
    monkeypatch.setattr(model.config, "is_encoder_decoder", True)
    assert generation._compact_forward_model(model, do_sample=False) is None
