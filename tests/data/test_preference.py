"""load_preferences: every accepted row form, located validation errors, builtin pairs, mixtures, splits and
fingerprints."""

from __future__ import annotations

import csv
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posttrain.checks import mentions_identity, says_i_dont_know
from posttrain.data import (
    DataError,
    DatasetSpec,
    DataValidationError,
    Identity,
    PreferenceSpec,
    detect_preference_form,
    fingerprint,
    load_conversations,
    load_preferences,
    preference_fingerprint,
    to_preference,
    validate_preference,
    validate_prompt,
)
from posttrain.tasks import (
    BASE_MODEL_IDENTITY,
    TASKS,
    TOOL_TASKS,
    TaskExample,
    base_identity_response,
    check_task,
    generate_task,
    task_to_preference,
)


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


SYSTEM = {"role": "system", "content": "Be brief."}


def load_rows(path, **kwargs):
    ds = load_preferences([{"path": str(path)}], **kwargs)
    assert ds["train"].column_names == ["prompt", "chosen", "rejected"]
    return ds["train"].to_list()


# ----------------------------------------------------------------------------------------------- accepted forms

FORMS = [
    pytest.param(
        {"prompt": [user("q")], "chosen": [bot("good")], "rejected": [bot("bad")]},
        {"prompt": [user("q")], "chosen": [bot("good")], "rejected": [bot("bad")]},
        id="a-explicit-conversational",
    ),
    pytest.param(
        {"prompt": [SYSTEM, user("q1"), bot("a1"), user("q2")], "chosen": [bot("good")], "rejected": [bot("bad")]},
        {"prompt": [SYSTEM, user("q1"), bot("a1"), user("q2")], "chosen": [bot("good")], "rejected": [bot("bad")]},
        id="a-multi-turn-with-system",
    ),
    pytest.param(
        {
            "prompt": [{"role": "user", "content": "q", "name": "x"}],
            "chosen": [{**bot("good"), "weight": 1}],
            "rejected": [bot("bad")],
            "source": "extra columns are ignored",
        },
        {"prompt": [user("q")], "chosen": [bot("good")], "rejected": [bot("bad")]},
        id="a-extra-keys-dropped",
    ),
    pytest.param(
        {"prompt": "q", "chosen": "good", "rejected": "bad"},
        {"prompt": [user("q")], "chosen": [bot("good")], "rejected": [bot("bad")]},
        id="b-plain-strings",
    ),
    pytest.param(
        {"prompt": [SYSTEM, user("q")], "chosen": "good", "rejected": [bot("bad")]},
        {"prompt": [SYSTEM, user("q")], "chosen": [bot("good")], "rejected": [bot("bad")]},
        id="b-mixed-list-prompt-string-reply",
    ),
    pytest.param(
        {"chosen": [user("q"), bot("good")], "rejected": [user("q"), bot("bad")]},
        {"prompt": [user("q")], "chosen": [bot("good")], "rejected": [bot("bad")]},
        id="c-implicit",
    ),
    pytest.param(
        {
            "chosen": [SYSTEM, user("q1"), bot("a1"), user("q2"), bot("good")],
            "rejected": [SYSTEM, user("q1"), bot("a1"), user("q2"), bot("bad")],
        },
        {"prompt": [SYSTEM, user("q1"), bot("a1"), user("q2")], "chosen": [bot("good")], "rejected": [bot("bad")]},
        id="c-implicit-multi-turn",
    ),
]


@pytest.mark.parametrize(("row", "expected"), FORMS)
def test_each_form_normalizes(row, expected, write_jsonl):
    assert load_rows(write_jsonl("p.jsonl", [row])) == [expected]
    assert validate_preference(row) == expected
    form = "explicit" if "prompt" in row else "implicit"
    assert to_preference(row, form, source="x", row_index=0) == expected


def test_form_detection():
    assert detect_preference_form(["prompt", "chosen", "rejected", "id"]) == "explicit"
    assert detect_preference_form(["chosen", "rejected"]) == "implicit"
    assert detect_preference_form(["chosen", "rejected"], fmt="preference") == "implicit"
    with pytest.raises(DataError, match="not a preference format"):
        detect_preference_form(["prompt", "chosen", "rejected"], fmt="messages")


def test_every_file_type_and_forced_format(tmp_path, write_json):
    write_json("a.json", {"data": [{"prompt": "q1", "chosen": "good1", "rejected": "bad1"}]})
    with (tmp_path / "b.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "chosen", "rejected"])
        writer.writerow(["q2, with comma", "42", "41"])
    rows = [{"chosen": [user("q3"), bot("good3")], "rejected": [user("q3"), bot("bad3")]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"prompt": [user("q4")], "chosen": [bot("good4")], "rejected": [bot("bad4")]}) + "\n"
    )
    for spec in (
        {"path": str(tmp_path)},
        {"path": str(tmp_path), "format": "preference"},
        PreferenceSpec(path=str(tmp_path), format="preference"),
    ):
        got = load_preferences([spec])["train"].to_list()
        assert [r["prompt"][-1]["content"] for r in got] == ["q1", "q2, with comma", "q3", "q4"]
        assert [r["chosen"] for r in got] == [[bot("good1")], [bot("42")], [bot("good3")], [bot("good4")]]
        assert [r["rejected"][0]["content"] for r in got] == ["bad1", "41", "bad3", "bad4"]


def test_columns_selects_the_pair_columns(write_jsonl):
    path = write_jsonl("p.jsonl", [{"question": "x", "prompt": "q", "chosen": "good", "rejected": "bad"}])
    ds = load_preferences([{"path": str(path), "columns": ["prompt", "chosen", "rejected"]}])
    assert ds["train"].to_list() == [{"prompt": [user("q")], "chosen": [bot("good")], "rejected": [bot("bad")]}]


def test_spec_formats():
    with pytest.raises(DataError, match="unknown preference format 'alpaca'"):
        PreferenceSpec(path="x.jsonl", format="alpaca")
    with pytest.raises(DataError, match="unknown preference format"):
        load_preferences([{"path": "builtin:arithmetic", "format": "bogus"}])
    with pytest.raises(DataError, match="non-empty string"):
        PreferenceSpec(path="")


def test_sft_format_on_a_preference_source_is_reported(write_jsonl):
    path = write_jsonl("p.jsonl", [{"prompt": "q", "chosen": "good", "rejected": "bad"}])
    with pytest.raises(DataValidationError, match="'messages' is not a preference format"):
        load_preferences([DatasetSpec(path=str(path), format="messages")])


# ---------------------------------------------------------------------------------------------- validation

GOOD = {"prompt": "fine", "chosen": "yes", "rejected": "no"}

BAD_ROWS = [
    pytest.param(
        {"prompt": "q", "chosen": "same", "rejected": "same"}, "chosen and rejected are identical", id="identical"
    ),
    pytest.param(
        {"prompt": "q", "chosen": "same", "rejected": "  same\n"},
        "chosen and rejected are identical",
        id="identical-up-to-whitespace",
    ),
    pytest.param(
        {"chosen": [user("q"), bot("same")], "rejected": [user("q"), bot("same")]},
        "chosen and rejected are identical",
        id="identical-implicit",
    ),
    pytest.param({"prompt": "q", "chosen": "   ", "rejected": "no"}, "chosen has empty content", id="empty-chosen"),
    pytest.param(
        {"prompt": [user("q")], "chosen": [bot("yes")], "rejected": [bot("")]},
        "rejected has empty content",
        id="empty-rejected-message",
    ),
    pytest.param({"prompt": " ", "chosen": "yes", "rejected": "no"}, "prompt is empty", id="empty-prompt"),
    pytest.param(
        {"prompt": [], "chosen": "yes", "rejected": "no"}, r"prompt is empty \(no messages\)", id="empty-prompt-list"
    ),
    pytest.param({"prompt": "q", "chosen": "yes"}, "preference row has no 'rejected' field", id="row-missing-column"),
    pytest.param(
        {"prompt": [user("q"), bot("a")], "chosen": [bot("yes")], "rejected": [bot("no")]},
        r"prompt must end with a user turn \(its last message, message 2, has role 'assistant'\)",
        id="prompt-ends-on-assistant",
    ),
    pytest.param(
        {"prompt": [SYSTEM], "chosen": "yes", "rejected": "no"},
        "prompt must end with a user turn",
        id="prompt-only-system",
    ),
    pytest.param(
        {"prompt": [user("q"), user("q2")], "chosen": "yes", "rejected": "no"},
        "prompt message 2 has role 'user' but 'assistant' was expected",
        id="prompt-order",
    ),
    pytest.param(
        {"prompt": [{"role": "bot", "content": "q"}], "chosen": "yes", "rejected": "no"},
        "prompt message 1 has unknown role 'bot'",
        id="prompt-bad-role",
    ),
    pytest.param(
        {"prompt": [user("q"), {"role": "assistant"}, user("q")], "chosen": "yes", "rejected": "no"},
        "prompt message 2 is missing 'content'",
        id="prompt-message-missing-content",
    ),
    pytest.param(
        {"chosen": [user("q"), bot("yes")], "rejected": [user("other"), bot("no")]},
        "chosen and rejected share no prompt",
        id="implicit-no-shared-prefix",
    ),
    pytest.param(
        {
            "chosen": [user("q"), bot("a"), user("q2"), bot("yes")],
            "rejected": [user("q"), bot("b"), user("q2"), bot("no")],
        },
        "chosen continues with 3 and rejected with 3 message",
        id="implicit-differs-early",
    ),
    pytest.param(
        {"chosen": [user("q"), bot("a")], "rejected": [user("q"), bot("a"), user("q2"), bot("no")]},
        "chosen continues with 0 and rejected with 2 message",
        id="implicit-prefix-of-other",
    ),
    pytest.param(
        {"chosen": [user("q"), bot("yes"), user("more")], "rejected": [user("q"), bot("no")]},
        "chosen conversation ends with a user turn",
        id="implicit-invalid-conversation",
    ),
    pytest.param(
        {"chosen": "yes", "rejected": "no"},
        "chosen has the wrong type: without a 'prompt' field, chosen and rejected must be full",
        id="implicit-strings",
    ),
    pytest.param(
        {"prompt": 7, "chosen": "yes", "rejected": "no"},
        "prompt has the wrong type: expected a string or a list of messages, got int",
        id="prompt-int",
    ),
    pytest.param(
        {"prompt": "q", "chosen": {"role": "assistant", "content": "yes"}, "rejected": "no"},
        "chosen has the wrong type: expected a string or a list with one assistant message, got dict",
        id="chosen-dict",
    ),
    pytest.param(
        {"prompt": "q", "chosen": "yes", "rejected": None}, "rejected has the wrong type.*got null", id="rejected-null"
    ),
    pytest.param(
        {"prompt": "q", "chosen": [bot(1)], "rejected": "no"},
        "chosen has the wrong type: content is int",
        id="content-int",
    ),
    pytest.param(
        {"prompt": "q", "chosen": ["yes"], "rejected": "no"},
        "chosen message is not an object with 'role' and 'content' \\(got str\\)",
        id="message-not-object",
    ),
    pytest.param(
        {"prompt": [user("q")], "chosen": [user("q"), bot("yes")], "rejected": [bot("no")]},
        r"chosen must hold exactly one assistant message \(got 2\) \(for full conversations, leave out",
        id="explicit-full-conversation",
    ),
    pytest.param(
        {"prompt": "q", "chosen": [user("yes")], "rejected": "no"},
        "chosen message has role 'user'; it must be the 'assistant' reply",
        id="chosen-role-user",
    ),
]


@pytest.mark.parametrize(("row", "problem"), BAD_ROWS)
def test_invalid_row_is_located_by_file_and_line(row, problem, write_jsonl):
    path = write_jsonl("pairs.jsonl", [GOOD, "", row])  # the blank line counts: the bad row is on line 3
    with pytest.raises(DataValidationError) as info:
        load_preferences([{"path": str(path)}])
    assert info.value.total == 1
    [error] = info.value.errors
    assert (error.source, error.line) == (str(path), 3)
    assert re.search(problem, error.problem), error.problem
    assert str(error).startswith(f"{path} line 3: ")


def test_invalid_csv_and_parquet_rows_are_located_by_row(tmp_path):
    with (tmp_path / "p.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "chosen", "rejected"])
        writer.writerows([["q", "yes", "no"], ["q", "same", "same"]])
    pq.write_table(
        pa.Table.from_pylist([GOOD, GOOD, {"prompt": "q", "chosen": "yes", "rejected": " "}]), tmp_path / "p.parquet"
    )
    with pytest.raises(DataValidationError) as info:
        load_preferences([{"path": str(tmp_path / "p.csv")}, {"path": str(tmp_path / "p.parquet")}])
    assert [(e.source, e.row, e.line) for e in info.value.errors] == [
        (str(tmp_path / "p.csv"), 2, None),
        (str(tmp_path / "p.parquet"), 3, None),
    ]
    assert [e.problem for e in info.value.errors] == ["chosen and rejected are identical", "rejected has empty content"]
    assert "p.csv row 2: chosen and rejected are identical" in str(info.value)


def test_every_problem_is_collected(write_jsonl):
    bad = [
        GOOD,
        {"prompt": "q", "chosen": "x", "rejected": "x"},
        "{not json",
        {"prompt": "q", "chosen": "", "rejected": "no"},
        GOOD,
        {"prompt": 3, "chosen": "a", "rejected": "b"},
    ]
    path = write_jsonl("many.jsonl", bad)
    with pytest.raises(DataValidationError) as info:
        load_preferences([{"path": str(path)}])
    assert sorted(e.line for e in info.value.errors) == [2, 3, 4, 6]  # unreadable lines are reported first
    assert info.value.total == 4 and str(info.value).startswith("4 problems found")


@pytest.mark.parametrize(
    ("rows", "missing"),
    [
        pytest.param([{"prompt": "q", "chosen": "yes"}], "'rejected'", id="no-rejected"),
        pytest.param([{"prompt": "q", "completion": "yes"}], "'chosen', 'rejected'", id="sft-layout"),
    ],
)
def test_missing_columns_name_them_and_the_accepted_forms(rows, missing, write_jsonl):
    path = write_jsonl("p.jsonl", rows)
    with pytest.raises(DataValidationError) as info:
        load_preferences([{"path": str(path)}])
    [error] = info.value.errors
    assert error.source == str(path)
    assert f"missing column(s) {missing} for preference pairs" in error.problem
    assert "accepted forms: 'prompt' + 'chosen' + 'rejected'" in error.problem
    assert "'chosen' + 'rejected' alone" in error.problem
    if "completion" in rows[0]:
        assert "looks like SFT data in the 'prompt_completion' format" in error.problem


def test_validate_preference_and_prompt_locate_errors():
    with pytest.raises(DataError, match=r"^out.jsonl line 5: chosen and rejected are identical$"):
        validate_preference({"prompt": "q", "chosen": "a", "rejected": "a"}, source="out.jsonl", line=5)
    with pytest.raises(DataError, match=r"^out.jsonl row 2: missing column\(s\) 'rejected'"):
        validate_preference({"prompt": "q", "chosen": "a"}, source="out.jsonl", row=2)
    with pytest.raises(DataError, match="expected an object with named fields, got list"):
        validate_preference([1, 2])  # type: ignore[arg-type]
    assert validate_prompt([SYSTEM, {**user("q"), "x": 1}]) == [SYSTEM, user("q")]
    with pytest.raises(DataError, match="prompt must end with a user turn"):
        validate_prompt([user("q"), bot("a")])


# ------------------------------------------------------------------------------------------------- builtin


@pytest.mark.parametrize("task", sorted(set(TASKS) - TOOL_TASKS))  # tool tasks are refused (test_tool_task.py)
def test_builtin_pairs_chosen_passes_and_rejected_fails_the_check(task):
    rows = load_preferences([{"path": f"builtin:{task}", "num_samples": 40}], seed=7)["train"].to_list()
    examples = generate_task(task, 40, seed=7)
    assert len(rows) == 40
    for row, ex in zip(rows, examples, strict=True):
        assert row["prompt"] == [user(ex.prompt)]
        assert row["chosen"] == [bot(ex.response)]
        assert check_task(ex, row["chosen"][0]["content"]), row
        assert not check_task(ex, row["rejected"][0]["content"]), row


def test_builtin_all_and_default_size():
    rows = load_preferences([{"path": "builtin:all", "num_samples": 25}])["train"].to_list()
    assert len(rows) == 25
    assert len(load_preferences([{"path": "builtin:letter_count"}])["train"]) == 200


def test_identity_rejected_is_the_base_models_old_identity():
    identity = Identity(name="Wren", creator="Acme Labs")
    rows = load_preferences([{"path": "builtin:identity", "num_samples": 30}], identity=identity)["train"]
    examples = generate_task("identity", 30, identity=identity)
    for row, ex in zip(rows, examples, strict=True):
        rejected = row["rejected"][0]["content"]
        assert mentions_identity(rejected, "SmolLM", "Hugging Face"), rejected
        assert mentions_identity(row["chosen"][0]["content"], "Wren", "Acme Labs")
        assert not check_task(ex, rejected)
    assert len({row["rejected"][0]["content"] for row in rows}) > 2  # several phrasings
    chatgpt = TaskExample(
        "identity",
        "Are you ChatGPT?",
        "Wren",
        "No, I'm not ChatGPT. I'm Wren.",
        "I'm Llama.",
        {"asks": "name", "name": "Wren", "creator": "Acme Labs"},
    )
    reply = base_identity_response(chatgpt)  # keeps the question's opening
    assert reply.startswith("No, I'm not ChatGPT. ") and "SmolLM" in reply


def test_identity_rejected_never_names_the_configured_assistant():
    for ex in generate_task("identity", 30, identity=Identity(name="SmolLM", creator="Me")):
        pair = task_to_preference(ex)
        assert "smollm" not in pair["rejected"].lower() and not check_task(ex, pair["rejected"])
    ex = generate_task("identity", 1)[0]
    other = Identity(name="Llama", creator="Meta AI")
    assert mentions_identity(base_identity_response(ex, other), "Llama", "Meta AI")
    assert Identity(name="SmolLM", creator="Hugging Face") == BASE_MODEL_IDENTITY
    with pytest.raises(ValueError, match="identity"):
        base_identity_response(generate_task("arithmetic", 1)[0])


def test_unknown_entity_pairs_admit_ignorance_against_a_fabrication():
    rows = load_preferences([{"path": "builtin:unknown_entity", "num_samples": 20}])["train"]
    for row in rows:
        assert says_i_dont_know(row["chosen"][0]["content"])
        assert not says_i_dont_know(row["rejected"][0]["content"])


def test_bad_builtin_sources():
    with pytest.raises(DataError, match="unknown builtin task 'nope'; available: identity"):
        load_preferences([{"path": "builtin:nope"}])
    with pytest.raises(DataError, match="chitchat holds single conversations, not preference pairs"):
        load_preferences([{"path": "chitchat"}])


def test_sft_loading_is_unchanged_by_builtin_helpers():
    ds = load_conversations([{"path": "builtin:identity", "num_samples": 3}])
    assert ds["train"].column_names == ["messages"]
    assert [m[1]["content"] for m in ds["train"]["messages"]] == [e.response for e in generate_task("identity", 3)]


# ------------------------------------------------------------------------------------- mixtures and splits


def test_fractions_mix_sources(write_jsonl):
    path = write_jsonl("p.jsonl", [{"prompt": f"q{i}", "chosen": f"y{i}", "rejected": f"n{i}"} for i in range(30)])
    specs = [{"path": str(path), "fraction": 0.5}, {"path": "builtin:arithmetic", "num_samples": 10, "fraction": 0.5}]
    rows = load_preferences(specs)["train"].to_list()
    assert len(rows) == 20
    assert sum(r["prompt"][0]["content"].startswith("q") for r in rows) == 10


def test_split_is_deterministic_in_seed(write_jsonl):
    path = write_jsonl("p.jsonl", [{"prompt": f"q{i}", "chosen": f"y{i}", "rejected": f"n{i}"} for i in range(40)])
    specs = [{"path": str(path)}]
    first = load_preferences(specs, test_split_size=0.25, seed=1)
    again = load_preferences(specs, test_split_size=0.25, seed=1)
    other = load_preferences(specs, test_split_size=0.25, seed=2)
    assert {k: len(v) for k, v in first.items()} == {"train": 30, "test": 10}
    assert first["test"].to_list() == again["test"].to_list() and first["train"].to_list() == again["train"].to_list()
    assert first["test"]["prompt"] != other["test"]["prompt"]
    assert len(load_preferences(specs, test_split_size=4)["test"]) == 4
    with pytest.raises(DataError, match="test_split_size"):
        load_preferences(specs, test_split_size=1.5)


def test_builtin_pairs_are_deterministic_in_seed():
    spec = [{"path": "builtin:all", "num_samples": 20}]
    assert load_preferences(spec, seed=3)["train"].to_list() == load_preferences(spec, seed=3)["train"].to_list()
    assert load_preferences(spec, seed=3)["train"]["prompt"] != load_preferences(spec, seed=4)["train"]["prompt"]


def test_fingerprint_covers_every_column(write_jsonl):
    rows = [{"prompt": f"q{i}", "chosen": f"y{i}", "rejected": f"n{i}"} for i in range(6)]
    path = write_jsonl("p.jsonl", rows)
    specs = [{"path": str(path), "format": "preference"}]
    first = preference_fingerprint(load_preferences(specs), specs)
    assert first == preference_fingerprint(load_preferences(specs), specs)
    json.dumps(first)
    assert first["sources"][0]["kind"] == "local" and first["sources"][0]["format"] == "preference"
    rows[3]["rejected"] = "a different rejected reply"
    write_jsonl("p.jsonl", rows)
    changed = preference_fingerprint(load_preferences(specs), specs)
    assert changed["splits"]["train"]["sha256"] != first["splits"]["train"]["sha256"]
    plain = [{"path": str(path)}]
    assert fingerprint(load_preferences(plain), plain)["splits"] == changed["splits"]


# ---------------------------------------------------------------------------------------------------- lengths

# A pair is measured as TRL's DPOTrainer / RewardTrainer tokenize it (prompt + chosen, prompt + rejected, with the
# chat template) and held against max_length with overlong_samples (posttrain.data.preference.check_pair_lengths).

LONG = "The quick brown fox jumps over the lazy dog. " * 4


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_chat_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_chat_model)


def trl_dpo_rows(tokenizer, ds):
    """prompt_ids / chosen_ids / rejected_ids exactly as TRL 1.16's DPOTrainer prepares them (no max_length)."""
    from types import SimpleNamespace

    from trl import DPOTrainer

    args = SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start")
    return DPOTrainer._prepare_dataset(SimpleNamespace(_tokenizer=tokenizer), ds, tokenizer, args, "t").to_list()


@pytest.fixture
def length_pairs(write_jsonl):
    """Line 1 short; line 2 a long chosen reply; line 3 a long rejected reply only."""
    return write_jsonl(
        "lengths.jsonl",
        [
            {"prompt": "Which is larger, 9.11 or 9.9?", "chosen": "9.9", "rejected": "9.11"},
            {"prompt": "Which is larger, 9.11 or 9.9?", "chosen": "9.9. " + LONG, "rejected": "9.11"},
            {"prompt": "Which is larger, 9.11 or 9.9?", "chosen": "9.9", "rejected": "9.11. " + LONG},
        ],
    )


def test_with_origin_names_each_pairs_file_and_line(length_pairs):
    from posttrain.data.preference import ORIGIN_COLUMN

    plain = load_preferences([{"path": str(length_pairs)}])
    assert plain["train"].column_names == ["prompt", "chosen", "rejected"]
    located = load_preferences(
        [{"path": str(length_pairs)}, {"path": "builtin:arithmetic", "num_samples": 2}], with_origin=True
    )
    assert located["train"].column_names == ["prompt", "chosen", "rejected", ORIGIN_COLUMN]
    assert located["train"][ORIGIN_COLUMN] == [
        {"source": str(length_pairs), "row": 1, "line": 1},
        {"source": str(length_pairs), "row": 2, "line": 2},
        {"source": str(length_pairs), "row": 3, "line": 3},
        {"source": "builtin:arithmetic", "row": 1, "line": None},
        {"source": "builtin:arithmetic", "row": 2, "line": None},
    ]
    assert (
        located["train"].remove_columns(ORIGIN_COLUMN).to_list()
        == load_preferences([{"path": str(length_pairs)}, {"path": "builtin:arithmetic", "num_samples": 2}])[
            "train"
        ].to_list()
    )


def _threshold(tokenizer, ds):
    """(TRL's lengths of prompt + chosen / prompt + rejected per row, a max_length the short pair fits exactly)."""
    rows = trl_dpo_rows(tokenizer, ds)
    lengths = [
        (len(r["prompt_ids"]) + len(r["chosen_ids"]), len(r["prompt_ids"]) + len(r["rejected_ids"])) for r in rows
    ]
    return lengths, max(lengths[0])


def test_overlong_pairs_are_an_error_naming_file_line_and_lengths(chat_tokenizer, length_pairs):
    from posttrain.data.preference import check_pair_lengths

    ds = load_preferences([{"path": str(length_pairs)}], with_origin=True)["train"]
    lengths, fits = _threshold(chat_tokenizer, ds)
    assert lengths[1][0] > fits and lengths[2][1] > fits  # lines 2 and 3 are longer, each on one side
    with pytest.raises(DataError) as info:
        check_pair_lengths(ds, chat_tokenizer, fits, "error", stop_token_ids=[chat_tokenizer.eos_token_id])
    error = info.value
    assert (error.source, error.line) == (str(length_pairs), 2)
    # the token counts are TRL's own
    assert f"max_length {fits}: prompt + chosen {lengths[1][0]} tokens, prompt + rejected {lengths[1][1]}" in str(error)
    assert f"2 of 3 train pairs are longer (also {length_pairs} line 3 (prompt + chosen {lengths[2][0]}" in str(error)
    assert "overlong_samples: drop" in str(error)
    fitted, note = check_pair_lengths(ds, chat_tokenizer, max(max(pair) for pair in lengths), "error")
    assert note is None and fitted.column_names == ["prompt", "chosen", "rejected"] and len(fitted) == 3
    assert check_pair_lengths(ds, chat_tokenizer, None, "error")[0].to_list() == fitted.to_list()


def test_overlong_pairs_drop(chat_tokenizer, length_pairs):
    from posttrain.data.preference import check_pair_lengths

    ds = load_preferences([{"path": str(length_pairs)}], with_origin=True)["train"]
    _, fits = _threshold(chat_tokenizer, ds)
    for trainer in ("dpo", "reward"):
        kept, note = check_pair_lengths(ds, chat_tokenizer, fits, "drop", trainer=trainer)
        assert kept.to_list() == ds.remove_columns("origin").select([0]).to_list()
        assert note == f"train data: dropped 2 of 3 pairs longer than max_length {fits} tokens"
    with pytest.raises(DataError, match="would leave no train pair to train on: all 3 are longer") as info:
        check_pair_lengths(ds, chat_tokenizer, fits - 1, "drop")
    assert info.value.line == 1


def test_truncate_never_trains_a_chosen_reply_cut_before_its_end_of_turn(chat_tokenizer, length_pairs):
    """DPOTrainer (keep_start) cuts prompt + chosen at max_length: the long chosen reply of line 2 would lose its
    <|im_end|> and be trained as a finished reply. truncate drops that pair and leaves the others, whose chosen reply
    keeps its end-of-turn token after TRL's cut (line 3: only the rejected reply is cut)."""
    from posttrain.data.preference import check_pair_lengths

    ds = load_preferences([{"path": str(length_pairs)}], with_origin=True)["train"]
    _, fits = _threshold(chat_tokenizer, ds)
    end = chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    stops = [chat_tokenizer.eos_token_id]
    assert stops == [end]

    def chosen_keeps_its_end(rows, max_length):
        return [end in (r["prompt_ids"] + r["chosen_ids"])[:max_length][len(r["prompt_ids"]) :] for r in rows]

    plain = ds.remove_columns("origin")
    assert chosen_keeps_its_end(trl_dpo_rows(chat_tokenizer, plain), fits) == [True, False, True]  # the defect
    kept, note = check_pair_lengths(ds, chat_tokenizer, fits, "truncate", stop_token_ids=stops)
    assert kept.to_list() == plain.select([0, 2]).to_list()
    assert all(chosen_keeps_its_end(trl_dpo_rows(chat_tokenizer, kept), fits))
    assert note.startswith(f"train data: 2 of 3 pairs are longer than max_length {fits} tokens: DPOTrainer cuts them")
    assert "1 of them dropped, whose chosen reply would lose its end-of-turn token" in note
    # a cut after the end-of-turn token (ChatML's newline) leaves the chosen reply finished: the pair is kept
    chosen_len = len(trl_dpo_rows(chat_tokenizer, plain.select([1]))[0]["prompt_ids"]) + len(
        trl_dpo_rows(chat_tokenizer, plain.select([1]))[0]["chosen_ids"]
    )
    kept, _ = check_pair_lengths(ds.select([1]), chat_tokenizer, chosen_len - 1, "truncate", stop_token_ids=stops)
    assert len(kept) == 1
    with pytest.raises(DataError, match="would lose its chosen reply's end-of-turn token") as info:
        check_pair_lengths(ds.select([1]), chat_tokenizer, chosen_len - 2, "truncate", stop_token_ids=stops)
    assert info.value.line == 2
    # RewardTrainer cannot cut a pair: truncate drops every overlong one, and says so
    kept, note = check_pair_lengths(ds, chat_tokenizer, fits, "truncate", trainer="reward")
    assert len(kept) == 1 and "RewardTrainer cannot cut a pair" in note


def test_reward_lengths_are_reward_trainers(chat_tokenizer, length_pairs):
    from types import SimpleNamespace

    from trl import RewardTrainer

    from posttrain.data.preference import _measure

    ds = load_preferences([{"path": str(length_pairs)}])["train"]
    args = SimpleNamespace(dataset_num_proc=None, max_length=None)
    trl_rows = RewardTrainer._prepare_dataset(None, ds, chat_tokenizer, args, "t").to_list()
    ours = _measure(chat_tokenizer, ds.to_list(), set())
    assert [(m.chosen, m.rejected) for m in ours] == [(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in trl_rows]


@pytest.mark.parametrize(
    ("row", "named"),
    [
        (
            {"prompt": "2+3?", "chosen": [{**bot("5"), "reasoning_content": "2+3=5"}], "rejected": "6"},
            "chosen message 1",
        ),
        (
            {
                "chosen": [
                    {"role": "user", "content": "2+3?"},
                    {**bot(""), "tool_calls": [{"function": {"name": "a"}}]},
                ],
                "rejected": [{"role": "user", "content": "2+3?"}, bot("6")],
            },
            "chosen message 2",
        ),
    ],
    ids=["reasoning-in-reply", "tool-call-in-conversation"],
)
def test_tool_and_reasoning_fields_in_pairs_are_refused_by_name(tmp_path, row, named):
    """Preference pairs are role/content turns: a field SFT data carries is refused by name, never dropped."""
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(
        DataValidationError, match=rf"pairs\.jsonl line 1: {named} has '(reasoning_content|tool_calls)'"
    ):
        load_preferences([{"path": str(path)}])
