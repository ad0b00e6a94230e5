"""On-policy preference pairs: sampling with the tiny chat model, scoring, selection, atomic output, the CLI."""

from __future__ import annotations

import json

import pytest

import posttrain.models.generation
import posttrain.rl.pairs as pairs_module
from posttrain.data import DataError, DataValidationError, Identity, load_preferences, validate_preference
from posttrain.models.generation import Completion, load_model_for_generation
from posttrain.rl.pairs import (
    Pairs,
    PromptItem,
    as_scorer,
    build_pairs,
    read_prompts,
    reward_model_scorer,
    rule_scorer,
    task_prompts,
    write_pairs,
)
from posttrain.stages import run_stage
from posttrain.tasks import TASKS, TOOL_TASKS, generate_task


def shortest_wins(prompt, texts):
    """A deterministic fake reward: shorter replies are better."""
    return [-float(len(t)) for t in texts]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model's matrices are far too small to share: on a busy 2-core machine, torch's intra-op threads
    spin against each other and make generation ~50x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def chat_model(tiny_chat_model):
    return load_model_for_generation(str(tiny_chat_model))


@pytest.fixture(scope="module")
def prompts():
    return task_prompts(["builtin:decimal_compare", "builtin:unknown_entity"], 6, seed=0, system_prompt="Be brief.")


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


# ----------------------------------------------------------------------------------------------- build_pairs


def test_pairs_from_the_tiny_model_are_valid_and_ordered(chat_model, prompts):
    model, tokenizer = chat_model
    # the tiny random model never stops within 8 tokens: keep its cut-off replies
    settings = dict(scorer=shortest_wins, n=4, max_new_tokens=8, seed=0, require_finished=False)
    rows = build_pairs(model, tokenizer, prompts, **settings)
    assert isinstance(rows, Pairs) and rows.prompts == 6
    assert len(rows) + rows.skipped == 6 and len(rows) >= 3
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}
        pair = validate_preference(row)
        assert pair["prompt"] == row["prompt"] and row["prompt"][0] == {"role": "system", "content": "Be brief."}
        assert row["prompt"][-1]["role"] == "user"
        assert row["chosen_score"] > row["rejected_score"]
        assert row["chosen_score"] == -len(row["chosen"][0]["content"])
        assert row["rejected_score"] == -len(row["rejected"][0]["content"])
    positions = [[p.messages for p in prompts].index(r["prompt"]) for r in rows]
    assert positions == sorted(set(positions))  # at most one pair per prompt, in prompt order
    again = build_pairs(model, tokenizer, prompts, **settings)
    assert list(again) == list(rows)  # seeded sampling: same pairs


def test_prompts_whose_scores_tie_are_skipped(chat_model, prompts):
    model, tokenizer = chat_model
    flat = build_pairs(
        model, tokenizer, prompts, scorer=lambda p, texts: [0.5] * len(texts), n=3, max_new_tokens=4, seed=0
    )
    assert list(flat) == [] and flat.skipped == 6
    # a margin larger than any length difference of 6-token replies skips everything too
    wide = build_pairs(
        model, tokenizer, prompts, scorer=shortest_wins, n=3, max_new_tokens=4, seed=0, min_margin=1000.0
    )
    assert list(wide) == [] and wide.skipped == 6


def fake_generate(completions):
    def generate(model, tokenizer, conversations, **kwargs):
        assert kwargs["do_sample"] is True and kwargs["num_return_sequences"] == len(completions)
        return [list(completions) for _ in conversations]

    return generate


def test_ties_prefer_finished_then_short_replies_on_both_sides(monkeypatch):
    item = task_prompts(["arithmetic"], 1, seed=0)[0]
    right, wrong = f"The answer is {item.answer}.", f"The answer is {int(item.answer) + 1}."
    completions = [
        Completion(right + " And more words.", [1] * 9, False),
        Completion(right + " Sure.", [1] * 7, True),
        Completion(right, [1] * 5, True),  # best: correct, finished, shortest
        Completion(wrong + " blah blah", [1] * 12, False),
        Completion(wrong, [1] * 4, True),  # rejected: wrong, and the cleanest wrong reply
        Completion("   ", [1], True),  # empty replies are never used
    ]
    monkeypatch.setattr(posttrain.models.generation, "generate", fake_generate(completions))
    [row] = build_pairs(None, None, [item], scorer=rule_scorer, n=len(completions))
    assert row["chosen"][0]["content"] == right and row["rejected"][0]["content"] == wrong
    assert (row["chosen_score"], row["rejected_score"]) == (1.0, 0.0)


def test_a_cut_off_best_reply_never_becomes_chosen(monkeypatch):
    item = task_prompts(["arithmetic"], 1, seed=0)[0]
    right, wrong = f"The answer is {item.answer}", f"The answer is {int(item.answer) + 1}."
    completions = [Completion(right + " and then", [1] * 8, False), Completion(wrong, [1] * 4, True)]
    monkeypatch.setattr(posttrain.models.generation, "generate", fake_generate(completions))
    result = build_pairs(None, None, [item], scorer=rule_scorer, n=2)
    assert list(result) == [] and (result.skipped, result.truncated) == (1, 1)
    [row] = build_pairs(None, None, [item], scorer=rule_scorer, n=2, require_finished=False)
    assert row["chosen"][0]["content"] == completions[0].text
    # a finished reply at the best score is preferred over a cut-off one, so the prompt is kept
    finished = [*completions, Completion(right + ".", [1] * 5, True)]
    monkeypatch.setattr(posttrain.models.generation, "generate", fake_generate(finished))
    [row] = build_pairs(None, None, [item], scorer=rule_scorer, n=3)
    assert row["chosen"][0]["content"] == right + "." and row["rejected"][0]["content"] == wrong


def test_fewer_than_two_usable_replies_is_skipped(monkeypatch):
    monkeypatch.setattr(
        posttrain.models.generation,
        "generate",
        fake_generate([Completion("", [1], True), Completion("only one", [1, 2], True)]),
    )
    result = build_pairs(None, None, [PromptItem([{"role": "user", "content": "hi"}])], scorer=shortest_wins, n=2)
    assert list(result) == [] and result.skipped == 1


def test_bad_scorers_and_arguments(monkeypatch):
    monkeypatch.setattr(
        posttrain.models.generation, "generate", fake_generate([Completion("a", [1], True), Completion("b", [1], True)])
    )
    items = [PromptItem([{"role": "user", "content": "hi"}])]
    with pytest.raises(ValueError, match="returned 1 scores for 2 completions"):
        build_pairs(None, None, items, scorer=lambda p, c: [1.0], n=2)
    with pytest.raises(ValueError, match="not a finite number"):
        build_pairs(None, None, items, scorer=lambda p, c: [float("nan"), 1.0], n=2)
    with pytest.raises(ValueError, match="rule scoring needs prompts with a 'task'"):
        build_pairs(None, None, items, scorer=rule_scorer, n=2)
    with pytest.raises(ValueError, match="n must be at least 2"):
        build_pairs(None, None, items, scorer=shortest_wins, n=1)


# -------------------------------------------------------------------------------------------------- scorers


@pytest.mark.parametrize("task", sorted(set(TASKS) - TOOL_TASKS))  # tool tasks are refused (test_tool_task.py)
def test_rule_scorer_rewards_the_right_answer(task):
    identity = Identity(name="Wren", creator="Acme Labs")
    items = task_prompts([task], 10, seed=1, identity=identity)
    for item, ex in zip(items, generate_task(task, 10, seed=1, identity=identity), strict=True):
        assert item.messages == [{"role": "user", "content": ex.prompt}] and item.task == task
        assert rule_scorer(item.messages, [ex.response, ex.wrong_response], item) == [1.0, 0.0]


def test_scorer_signatures():
    item = PromptItem([{"role": "user", "content": "q"}])
    two = as_scorer(lambda prompt, texts: [len(texts)] * len(texts))
    assert two(item.messages, ["a", "b"], item) == [2, 2]
    three = lambda prompt, texts, it: [1.0 if it is item else 0.0] * len(texts)
    assert as_scorer(three) is three
    with pytest.raises(TypeError, match="a scorer must accept"):
        as_scorer(lambda: [])

    class FakeRewardModel:
        def score(self, conversations):
            self.seen = conversations
            return [float(len(c[-1]["content"])) for c in conversations]

    rm = FakeRewardModel()
    score = as_scorer(reward_model_scorer(rm))
    assert score(item.messages, ["ab", "abcd"], item) == [2.0, 4.0]
    assert rm.seen == [[*item.messages, {"role": "assistant", "content": t}] for t in ("ab", "abcd")]


def test_task_prompts_split_and_interleave():
    items = task_prompts(["builtin:arithmetic", "letter_count", "builtin:identity"], 7, seed=0, system_prompt="S")
    assert [i.task for i in items] == ["arithmetic", "letter_count", "identity"] * 2 + ["arithmetic"]
    assert all(i.messages[0] == {"role": "system", "content": "S"} for i in items)
    assert {i.task for i in task_prompts(["builtin:all"], 10)} == set(TASKS) - TOOL_TASKS
    with pytest.raises(DataError, match="unknown builtin task 'nope'"):
        task_prompts(["builtin:nope"], 3)


# ----------------------------------------------------------------------------------------------------- output


def test_written_pairs_load_back_and_files_are_never_clobbered(chat_model, prompts, tmp_path):
    model, tokenizer = chat_model
    rows = build_pairs(
        model, tokenizer, prompts, scorer=shortest_wins, n=4, max_new_tokens=8, seed=0, require_finished=False
    )
    out = tmp_path / "sub" / "pairs.jsonl"
    assert write_pairs(rows, out) == out
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines == list(rows)  # scores kept, one row per line
    loaded = load_preferences([{"path": str(out)}])["train"].to_list()
    assert loaded == [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]

    before = out.read_bytes()
    with pytest.raises(DataError, match="already exists; pass overwrite=True"):
        write_pairs(rows[:1], out)
    assert out.read_bytes() == before
    write_pairs(rows[:1], out, overwrite=True)
    assert len(out.read_text().splitlines()) == 1
    assert leftovers(out.parent) == []


def test_invalid_rows_are_refused_with_their_line_and_nothing_is_written(tmp_path):
    good = {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
        "chosen_score": 1.0,
        "rejected_score": 0.0,
    }
    same = {**good, "rejected": good["chosen"]}
    out = tmp_path / "pairs.jsonl"
    with pytest.raises(DataValidationError) as info:
        write_pairs([good, same, {**good, "prompt": "  "}], out)
    assert [(e.source, e.line) for e in info.value.errors] == [(str(out), 2), (str(out), 3)]
    assert "chosen and rejected are identical" in str(info.value)
    assert not out.exists() and leftovers(tmp_path) == []
    with pytest.raises(ValueError):
        write_pairs([{**good, "chosen_score": float("inf")}], out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_read_prompts(write_prompts):
    path = write_prompts(
        [
            {"prompt": "What is 2 + 2?", "task": "arithmetic", "answer": 4},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"prompt": [{"role": "system", "content": "own"}, {"role": "user", "content": "q"}]},
        ]
    )
    items = read_prompts(path, system_prompt="S")
    assert [i.messages for i in items] == [
        [{"role": "system", "content": "S"}, {"role": "user", "content": "What is 2 + 2?"}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
        [{"role": "system", "content": "own"}, {"role": "user", "content": "q"}],
    ]
    assert (items[0].task, items[0].answer) == ("arithmetic", "4") and items[1].task is None
    assert rule_scorer(items[0].messages, ["It is 4.", "It is 5."], items[0]) == [1.0, 0.0]
    assert len(read_prompts(path, limit=2)) == 2


def test_read_prompts_reports_bad_rows(write_prompts):
    path = write_prompts(
        [
            {"prompt": "fine"},
            {"question": "no prompt"},
            {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user"}]},
            {"prompt": "x", "task": "nope"},
        ]
    )
    with pytest.raises(DataValidationError) as info:
        read_prompts(path)
    assert [e.line for e in info.value.errors] == [2, 3, 4]
    assert "needs a 'prompt' (string or messages) or 'messages' field" in info.value.errors[0].problem
    assert "prompt message 3 is missing 'content'" in info.value.errors[1].problem
    assert "unknown task 'nope'" in info.value.errors[2].problem


@pytest.fixture
def write_prompts(tmp_path):
    def write(rows):
        path = tmp_path / "prompts.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    return write


# -------------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_pairs_and_refuses_to_overwrite(tiny_chat_model, tmp_path, monkeypatch, capsys):
    # Random tiny-model text never passes a real check: make "correct" mean an even number of characters.
    monkeypatch.setattr(pairs_module, "check_task", lambda task, text, answer=None, **meta: len(text) % 2 == 0)
    out = tmp_path / "pairs.jsonl"
    argv = [
        "--model_name_or_path",
        str(tiny_chat_model),
        "--tasks",
        "builtin:decimal_compare,builtin:identity",
        "--num_prompts",
        "6",
        "--n",
        "4",
        "--max_new_tokens",
        "6",
        "--seed",
        "1",
        "--output_dir",
        str(tmp_path),
        "--system_prompt",
        "Be brief.",
        "--require_finished",
        "false",
    ]
    assert run_stage("pairs", argv) == 0
    assert "pairs to" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(r["chosen_score"] == 1.0 and r["rejected_score"] == 0.0 for r in rows)
    assert all(r["prompt"][0] == {"role": "system", "content": "Be brief."} for r in rows)
    assert len(load_preferences([{"path": str(out)}])["train"]) == len(rows)

    before = out.read_bytes()
    with pytest.raises(SystemExit) as info:
        run_stage("pairs", argv)
    assert info.value.code == 2
    assert "already exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert run_stage("pairs", [*argv, "--overwrite", "--seed", "2"]) == 0
    assert leftovers(tmp_path) == []


def test_cli_refuses_before_loading_the_model(tmp_path, capsys, write_prompts):
    missing_model = str(tmp_path / "no-such-model")  # never loaded: the inputs are refused first
    prompts = write_prompts([{"prompt": "free-form question"}])
    with pytest.raises(SystemExit) as info:
        run_stage(
            "pairs",
            ["--model_name_or_path", missing_model, "--prompts", str(prompts), "--output_dir", str(tmp_path / "o")],
        )
    assert info.value.code == 2
    assert "1 of 1 prompts have no 'task'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        run_stage(
            "pairs",
            ["--model_name_or_path", missing_model, "--tasks", "builtin:nope", "--output_dir", str(tmp_path / "o")],
        )
    assert info.value.code == 2 and "unknown builtin task 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        run_stage("pairs", ["--n", "1", "--output_dir", str(tmp_path / "o")])
    assert info.value.code == 2 and "--n must be at least 2" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_old_key_names_still_work_with_a_deprecation_warning(tmp_path, capsys):
    """``model`` and ``output`` were renamed ``model_name_or_path`` and ``output_dir``, the keys every stage takes."""
    from posttrain.configs import parse_args
    from posttrain.errors import ConfigError
    from posttrain.stages.pairs import PairsArguments, make_parser

    (args,) = parse_args(make_parser(), ["--model", "m", "--output", str(tmp_path / "o.jsonl")])
    assert (args.model_name_or_path, args.model) == ("m", None)
    assert args.pairs_file == tmp_path / "o.jsonl"
    out = capsys.readouterr().out
    assert "posttrain: warning: pairs: 'model' is deprecated, use 'model_name_or_path'" in out
    assert "'output' is deprecated, use 'output_dir'" in out
    assert PairsArguments(output_dir=str(tmp_path)).pairs_file == tmp_path / "pairs.jsonl"
    assert "deprecated" not in capsys.readouterr().out
    with pytest.raises(ConfigError, match="model is the old name of model_name_or_path"):
        PairsArguments(model="m", model_name_or_path="n", output_dir="d")
    with pytest.raises(ConfigError, match="output_dir is required"):
        PairsArguments()


# ---------------------------------------------------------------------------------- replies that DPO would cut


def test_a_reply_budget_longer_than_max_length_is_refused_before_loading_the_model(tmp_path, capsys):
    missing_model = str(tmp_path / "no-such-model")  # never loaded: the settings are refused first
    argv = ["--model_name_or_path", missing_model, "--output_dir", str(tmp_path / "o"), "--max_new_tokens", "192"]
    with pytest.raises(SystemExit) as info:
        run_stage("pairs", argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--max_new_tokens 192 must be smaller than --max_length 192" in err and "end-of-turn" in err
    with pytest.raises(SystemExit) as info:  # a larger max_length lets the settings through (to the next check)
        run_stage("pairs", [*argv, "--max_length", "400", "--tasks", "builtin:nope"])
    assert info.value.code == 2 and "unknown builtin task 'nope'" in capsys.readouterr().err


def test_check_reply_budget_names_both_keys_and_the_largest_budget_that_fits(chat_model, prompts):
    from posttrain.errors import ConfigError
    from posttrain.rl.pairs import check_reply_budget, reply_suffix_tokens

    _, tokenizer = chat_model
    lengths = [
        len(
            tokenizer.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
        for p in prompts
    ]
    longest = max(lengths)
    suffix = reply_suffix_tokens(tokenizer, prompts[0].messages)
    assert suffix == 2  # ChatML: <|im_end|> and a newline after the reply
    fits = longest + 16 + suffix
    check_reply_budget(tokenizer, prompts, max_new_tokens=16, max_length=fits)
    check_reply_budget(tokenizer, prompts, max_new_tokens=10_000, max_length=None)
    with pytest.raises(ConfigError) as info:
        check_reply_budget(tokenizer, prompts, max_new_tokens=17, max_length=fits)
    message = str(info.value)
    assert message.startswith(f"max_new_tokens 17 does not fit max_length {fits}: prompt {lengths.index(longest) + 1} ")
    assert f"is {longest} tokens with the chat template" in message
    assert "Set max_new_tokens to at most 16, or raise max_length" in message


def test_the_budget_check_matches_what_dpo_trains(chat_model, prompts):
    """A pair of the longest prompt and a reply of max_new_tokens tokens, rendered as DPOTrainer renders it, fits
    max_length exactly when check_reply_budget lets the settings through."""
    from posttrain.rl.pairs import check_reply_budget, reply_suffix_tokens

    _, tokenizer = chat_model
    item = max(prompts, key=lambda p: len(tokenizer.apply_chat_template(p.messages, add_generation_prompt=True)))
    prompt_len = len(
        tokenizer.apply_chat_template(item.messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    reply = "The quick brown fox jumps over the lazy dog."
    budget = len(tokenizer(reply, add_special_tokens=False)["input_ids"])
    max_length = prompt_len + budget + reply_suffix_tokens(tokenizer, item.messages)
    check_reply_budget(tokenizer, [item], max_new_tokens=budget, max_length=max_length)
    full = tokenizer.apply_chat_template(
        [*item.messages, {"role": "assistant", "content": reply}], tokenize=True, return_dict=True
    )["input_ids"]
    assert len(full) == max_length


def test_shipped_pairs_config_fits_the_shipped_dpo_config():
    """recipes/configs/smollm2-135m: pairs.yaml (and the pairs defaults) sample replies that dpo.yaml's max_length
    never cuts: same max_length, and the longest prompt + max_new_tokens + ChatML's end of turn fits it."""
    from pathlib import Path

    import yaml
    from transformers import AutoTokenizer

    from posttrain.models.registry import materialize
    from posttrain.rl.pairs import check_reply_budget
    from posttrain.stages.pairs import PairsArguments

    configs = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "smollm2-135m"
    pairs = yaml.safe_load((configs / "pairs.yaml").read_text())
    dpo = yaml.safe_load((configs / "dpo.yaml").read_text())
    defaults = PairsArguments(output_dir="x")
    assert pairs["max_length"] == dpo["max_length"] == defaults.max_length
    assert pairs["max_new_tokens"] == defaults.max_new_tokens
    tokenizer = AutoTokenizer.from_pretrained(materialize("smollm2-135m-instruct"))
    identity = Identity(name=pairs["assistant_name"], creator=pairs["assistant_creator"])
    items = task_prompts(
        pairs["tasks"].split(","), 400, seed=pairs["seed"], identity=identity, system_prompt=pairs["system_prompt"]
    )
    check_reply_budget(tokenizer, items, max_new_tokens=pairs["max_new_tokens"], max_length=dpo["max_length"])


def test_cli_refuses_a_reply_budget_dpo_would_cut_and_writes_nothing(tiny_chat_model, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    argv = [
        "--model_name_or_path",
        str(tiny_chat_model),
        "--tasks",
        "builtin:decimal_compare",
        "--num_prompts",
        "2",
        "--n",
        "2",
    ]
    with pytest.raises(SystemExit) as info:
        run_stage("pairs", [*argv, "--max_new_tokens", "40", "--max_length", "64", "--output_dir", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "max_new_tokens 40 does not fit max_length 64" in err and "Set max_new_tokens to at most" in err
    assert not out.exists() and leftovers(tmp_path) == [] and not (tmp_path / "run_manifest.json").exists()


def test_cli_writes_nothing_when_no_prompt_gives_a_pair(tiny_chat_model, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"  # a random model never names the configured identity: every reply scores 0
    with pytest.raises(SystemExit) as info:
        run_stage(
            "pairs",
            [
                "--model_name_or_path",
                str(tiny_chat_model),
                "--tasks",
                "builtin:identity",
                "--num_prompts",
                "3",
                "--n",
                "2",
                "--max_new_tokens",
                "4",
                "--output_dir",
                str(tmp_path),
            ],
        )
    assert info.value.code == 2
    assert "no pairs to write: all 3 prompts were skipped" in capsys.readouterr().err
    assert not out.exists() and leftovers(tmp_path) == []


def test_cli_scores_free_form_prompts_with_a_reward_model(tiny_chat_model, tmp_path, write_prompts, capsys):
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from posttrain.models.reward import RewardModel

    rm_path = tmp_path / "rm"
    LlamaForSequenceClassification.from_pretrained(str(tiny_chat_model), num_labels=1).save_pretrained(rm_path)
    AutoTokenizer.from_pretrained(str(tiny_chat_model)).save_pretrained(rm_path)
    prompts = write_prompts([{"prompt": f"Tell me something about the number {i}."} for i in range(4)])
    out = tmp_path / "rm-pairs" / "pairs.jsonl"
    assert (
        run_stage(
            "pairs",
            [
                "--model_name_or_path",
                str(tiny_chat_model),
                "--prompts",
                str(prompts),
                "--reward_model",
                str(rm_path),
                "--n",
                "3",
                "--max_new_tokens",
                "5",
                "--require_finished",
                "false",
                "--output_dir",
                str(out.parent),
            ],
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4  # a random reward head never ties
    rm = RewardModel.load(str(rm_path))
    for row in rows:
        chosen, rejected = rm.score([[*row["prompt"], *row["chosen"]], [*row["prompt"], *row["rejected"]]])
        assert row["chosen_score"] > row["rejected_score"]
        assert (chosen, rejected) == pytest.approx((row["chosen_score"], row["rejected_score"]), abs=1e-4)
