"""Rule rewards are the evaluation checks; the same objects work as TRL reward_funcs; reward models are checked."""

import json

import pytest

from posttrain.errors import ConfigError
from posttrain.models.reward import RewardModelError
from posttrain.rl.rewards import RuleReward, build_rewards
from posttrain.tasks import TASKS, check_task, generate_task

from helpers import save_seq_cls


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_reward_is_the_evaluation_check(task):
    examples = generate_task(task, 12, seed=7)
    reward = RuleReward("task")
    replies = [ex.response for ex in examples] + [ex.wrong_response for ex in examples]
    rows = examples + examples
    scores = reward(
        [[{"role": "user", "content": ex.prompt}] for ex in rows],
        [[{"role": "assistant", "content": r}] for r in replies],  # TRL's conversational completions
        task=[ex.task for ex in rows],
        answer=[ex.answer for ex in rows],
        meta=[json.dumps(ex.meta) for ex in rows],
    )
    assert scores == [float(check_task(ex, r)) for ex, r in zip(rows, replies)]
    assert scores[:12] == [1.0] * 12 and sum(scores[12:]) == 0


def test_named_checks_numbers_format_length_and_stop():
    prompts = [[{"role": "user", "content": "q"}]] * 3
    texts = ["The answer is 42.", "forty two", "1, 2, 3 and 4 then 5 and more words here"]
    assert RuleReward("has_number")(prompts, texts) == [1.0, 0.0, 1.0]
    assert RuleReward("numeric_match")(prompts, texts, answer=["42", "42", "42"]) == [1.0, 0.0, 0.0]
    assert RuleReward("numeric_match")(prompts, texts) == [None, None, None]  # no answer: not applicable
    assert RuleReward("word_count", max_words=4)(prompts, texts) == [1.0, 1.0, 0.0]
    assert RuleReward("length", max_words=5)(prompts, texts)[:2] == [1.0, 1.0]
    assert RuleReward("no_commas")(prompts, texts) == [1.0, 1.0, 0.0]
    assert RuleReward("task")(prompts, texts) == [None, None, None]  # prompts without a task
    stopped = RuleReward("stopped", stop_token_ids=[7])
    assert stopped(prompts, texts, completion_ids=[[5, 7], [5, 6], [7, 1]]) == [1.0, 0.0, 0.0]


def test_weighted_combination_skips_not_applicable():
    rewards = build_rewards([{"name": "has_number", "weight": 2.0}, {"name": "exact_match", "weight": 0.5}])
    total, per_func = rewards([[{"role": "user", "content": "q"}]] * 2, ["7", "no"], answer=["7", None])
    assert total == [2.5, 0.0]
    assert per_func == {"has_number": [1.0, 0.0], "exact_match": [1.0, None]}


@pytest.mark.parametrize(
    "spec,match",
    [
        ("nope", "unknown reward 'nope'"),
        ({"weight": 1}, "mapping with 'name'"),
        ({"name": "reward_model"}, "needs path"),
        ({"name": "has_number", "weight": "heavy"}, "weight must be a number"),
        ({"name": "length"}, "max_words"),
    ],
)
def test_bad_reward_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_rewards([spec])


def test_reward_model_reward_and_tokenizer_mismatch(tmp_path, tiny_chat_model):
    from transformers import AutoTokenizer

    from tiny import train_tokenizer

    policy_tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    good = save_seq_cls(tmp_path / "rm", policy_tokenizer)
    rewards = build_rewards([{"name": "reward_model", "path": str(good)}], policy_tokenizer=policy_tokenizer)
    total, _ = rewards([[{"role": "user", "content": "hi"}]] * 2, ["hello", "42"])
    assert len(total) == 2 and total[0] != total[1]

    other = train_tokenizer(vocab_size=300)
    other.chat_template = policy_tokenizer.chat_template
    other.pad_token = other.eos_token
    bad = save_seq_cls(tmp_path / "rm-other", other)
    with pytest.raises(RewardModelError, match="tokenizer does not match"):
        build_rewards([{"name": "reward_model", "path": str(bad)}], policy_tokenizer=policy_tokenizer)
