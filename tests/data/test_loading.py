"""load_conversations end to end on real files in tmp_path, builtin tasks and chit-chat; mixtures; fingerprints."""

from __future__ import annotations

import collections
import csv
import hashlib
import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posttrain.data import (
    SUPPORTED_EXTENSIONS,
    DataError,
    DatasetSpec,
    DataValidationError,
    Identity,
    fingerprint,
    load_conversations,
    looks_local,
    mixture_sizes,
)
from posttrain.tasks import TASKS, generate_task


def load(*specs: DatasetSpec, **kwargs):
    return load_conversations(list(specs), **kwargs)


def contents(split) -> list[str]:
    return [messages[0]["content"] for messages in split["messages"]]


# ------------------------------------------------------------------------------------------------ local files


def test_jsonl_messages_load(write_jsonl, chat):
    path = write_jsonl("train.jsonl", [chat(i) for i in range(5)] + [chat(5, system=True)])
    ds = load(DatasetSpec(path=str(path)))
    assert list(ds) == ["train"]
    assert ds["train"].column_names == ["messages"]
    assert len(ds["train"]) == 6
    assert ds["train"][0]["messages"] == chat(0)["messages"]
    assert ds["train"][5]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_each_format_and_file_type_loads(tmp_path, write_jsonl, write_json):
    write_json("a_list.json", [{"conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"}]}])
    write_json("b_data.json", {"data": [{"instruction": "q2", "input": "ctx", "output": "a2"}]})
    write_json("c_rows.json", {"rows": [{"prompt": "q3", "completion": "a3"}]})
    write_jsonl("d.jsonl", [{"messages": [{"role": "user", "content": "q4"}, {"role": "assistant", "content": "a4"}]}])
    with (tmp_path / "e.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "input", "output"])
        writer.writerow(["q5, with comma", "", "42"])
    pq.write_table(pa.Table.from_pylist([{"prompt": "q6", "completion": "a6"}]), tmp_path / "f.parquet")
    (tmp_path / "notes.md").write_text("ignored")
    (tmp_path / ".hidden.jsonl").write_text("not json")

    ds = load(DatasetSpec(path=str(tmp_path)))  # a folder: every supported file, sorted by name
    rows = ds["train"]["messages"]
    assert [r[0]["content"] for r in rows] == ["q1", "q2\n\nctx", "q3", "q4", "q5, with comma", "q6"]
    assert [r[1]["content"] for r in rows] == ["a1", "a2", "a3", "a4", "42", "a6"]  # CSV "42" stays a string


def test_single_file_per_type(tmp_path, chat):
    rows = [chat(i) for i in range(4)]
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "t.parquet")
    with (tmp_path / "t.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["messages", "note"])
        for row in rows:
            writer.writerow([json.dumps(row["messages"]), "x"])
    for name in ("t.parquet", "t.csv"):
        ds = load(DatasetSpec(path=str(tmp_path / name), num_samples=3))
        assert ds["train"]["messages"] == [r["messages"] for r in rows[:3]], name


def test_relative_paths_and_builder_style_data_files(chdir_tmp, write_jsonl, chat):
    write_jsonl("data/part1.jsonl", [chat(1)])
    write_jsonl("data/part2.jsonl", [chat(2)])
    assert contents(load(DatasetSpec(path="data/part1.jsonl"))["train"]) == ["question 1"]
    assert contents(load(DatasetSpec(path="./data"))["train"]) == ["question 1", "question 2"]
    assert contents(load(DatasetSpec(path="json", data_files=["data/part2.jsonl"]))["train"]) == ["question 2"]
    spec = DatasetSpec(path="data", data_files={"train": "part2.jsonl", "test": "part1.jsonl"}, split="test")
    assert contents(load(spec)["train"]) == ["question 1"]


def test_num_samples_caps_across_files_of_a_folder(tmp_path, write_jsonl, chat):
    write_jsonl("a.jsonl", [chat(i) for i in range(3)])
    write_jsonl("b.jsonl", [chat(i) for i in range(3, 6)] + ["{broken"])  # never read: beyond the cap
    ds = load(DatasetSpec(path=str(tmp_path), num_samples=4))
    assert contents(ds["train"]) == [f"question {i}" for i in range(4)]


def test_json_file_holding_jsonl_is_read_line_by_line(write_json, tmp_path, chat):
    path = tmp_path / "lines.json"
    path.write_text("\n".join(json.dumps(chat(i)) for i in range(3)) + "\n")
    assert len(load(DatasetSpec(path=str(path)))["train"]) == 3


def test_columns_selects_the_format(write_jsonl):
    row = {"messages": "corrupt", "instruction": "q", "output": "a"}
    path = write_jsonl("mixed.jsonl", [row])
    ds = load(DatasetSpec(path=str(path), columns=["instruction", "output"]))
    assert ds["train"][0]["messages"] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(DataValidationError, match=r"column\(s\) 'input' not found; available: 'messages'"):
        load(DatasetSpec(path=str(path), columns=["input"]))


# ------------------------------------------------------------------------------------------------ errors


def test_malformed_jsonl_reports_every_bad_line(write_jsonl, chat):
    path = write_jsonl(
        "train.jsonl",
        [
            chat(1),
            "",
            '{"messages": [',
            chat(2),
            "[1, 2]",
            "   ",
            '{"messages": "x"} trailing',
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
        ],
    )
    with pytest.raises(DataValidationError) as info:
        load(DatasetSpec(path=str(path)))
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0] == "4 problems found in the training data:"
    assert f"{path} line 3: invalid JSON: Expecting value (column 15)" in message
    assert f"{path} line 5: expected a JSON object, got an array" in message
    assert f"{path} line 7: invalid JSON: Extra data" in message
    assert f"{path} line 8: message 2 has empty content" in message


def test_problems_from_several_sources_are_reported_together(tmp_path, write_jsonl, write_json):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    first = write_jsonl("one.jsonl", [good, {"messages": [{"role": "user", "content": "q"}]}])
    second = write_json("two.json", [{"prompt": "q", "completion": "a"}, {"prompt": "q", "completion": 3}])
    with pytest.raises(DataValidationError) as info:
        load(DatasetSpec(path=str(first)), DatasetSpec(path=str(second), format="prompt_completion"))
    assert info.value.total == 2
    assert [str(e) for e in info.value] == [
        f"{first} line 2: conversation has no assistant turn to learn from",
        f"{second} row 2: message 2 has the wrong type: content is int",
    ]


def test_invalid_json_document_reports_line(write_json, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"messages": []},\n  {"messages": ]\n]\n')
    with pytest.raises(DataValidationError, match=rf"{path} line 3: invalid JSON: Expecting value"):
        load(DatasetSpec(path=str(path)))


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (
            {"items": []},
            "expected a JSON array of rows or an object with a 'data' or 'rows' array (found an object "
            "with keys 'items')",
        ),
        ("text", "expected a JSON array of rows, got a string"),
        ([1], "row 1: expected a JSON object, got a number"),
    ],
)
def test_unexpected_json_shapes(write_json, document, problem):
    path = write_json("shape.json", document)
    with pytest.raises(DataValidationError) as info:
        load(DatasetSpec(path=str(path)))
    assert f"{path}{'' if problem.startswith('row') else ':'} {problem}" in str(info.value)


def test_unknown_layout_names_columns(write_jsonl):
    path = write_jsonl("odd.jsonl", [{"text": "hello", "label": 1}])
    with pytest.raises(
        DataValidationError,
        match=r"odd\.jsonl: cannot tell the data format from the columns found "
        r"\('text', 'label'\)",
    ):
        load(DatasetSpec(path=str(path)))


@pytest.mark.parametrize("path", ["missing.jsonl", "./nowhere", "data/sub/train", "/abs/file.csv", "typo.parquet"])
def test_missing_local_path(chdir_tmp, path):
    assert looks_local(path)
    with pytest.raises(DataError) as info:
        load(DatasetSpec(path=path))
    assert str(info.value).startswith(f"{path}: local file or folder not found (resolved to ")
    assert "Hub" in str(info.value)


def test_hub_name_offline_gives_clear_error(monkeypatch):
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    assert not looks_local("some-org/some-dataset")
    with pytest.raises(DataError) as info:
        load(DatasetSpec(path="some-org/some-dataset"))
    message = str(info.value)
    assert message.startswith("some-org/some-dataset: cannot load this Hugging Face Hub dataset: offline mode is on")
    assert "use a local .jsonl" in message.lower()
    assert "\n" not in message


def test_other_hub_failures_are_wrapped(monkeypatch):
    import datasets
    from huggingface_hub import constants

    def fail(*args, **kwargs):
        raise FileNotFoundError("Dataset 'org/typo' doesn't exist on the Hub\nmore detail")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(DataError) as info:
        load(DatasetSpec(path="org/typo"))
    assert str(info.value).startswith(
        "org/typo: cannot load this Hugging Face Hub dataset (FileNotFoundError: Dataset 'org/typo' doesn't exist on "
        "the Hub). It is not a local file or folder either"
    )
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("hello")
    with pytest.raises(DataError) as info:
        load(DatasetSpec(path=str(path)))
    assert str(info.value) == f"{path}: unsupported file type '.txt'; supported: {', '.join(SUPPORTED_EXTENSIONS)}"


def test_folder_without_data_files(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(DataError, match=r"folder has no data files with a supported extension .*found: readme\.md"):
        load(DatasetSpec(path=str(tmp_path)))


def test_empty_file(write_jsonl):
    path = write_jsonl("empty.jsonl", ["", "  "])
    with pytest.raises(DataError, match=rf"^{path}: dataset is empty"):
        load(DatasetSpec(path=str(path)))


def test_unknown_builtin_task_lists_available():
    with pytest.raises(DataError) as info:
        load(DatasetSpec(path="builtin:sudoku"))
    message = str(info.value)
    assert message.startswith("builtin:sudoku: unknown builtin task 'sudoku'; available: ")
    for name in [*TASKS, "all"]:
        assert name in message


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"format": "csv"}, "unknown format 'csv'"),
        ({"num_samples": 0}, "num_samples must be a positive integer"),
        ({"fraction": -0.5}, "fraction must be a number >= 0"),
    ],
)
def test_spec_rejects_bad_settings(kwargs, problem):
    with pytest.raises(DataError, match=problem):
        DatasetSpec(path="x.jsonl", **kwargs)


def test_specs_may_be_plain_dicts(write_jsonl, chat):
    path = str(write_jsonl("d.jsonl", [chat(i) for i in range(3)]))
    ds = load_conversations([{"path": path, "num_samples": 2}])
    assert contents(ds["train"]) == ["question 0", "question 1"]
    assert fingerprint(ds, [{"path": path}])["sources"][0]["kind"] == "local"


def test_no_specs():
    with pytest.raises(DataError, match="no datasets given"):
        load_conversations([])


# ------------------------------------------------------------------------------------------------ builtin & chitchat


def test_builtin_tasks_default_to_200_valid_conversations():
    ds = load(DatasetSpec(path="builtin:decimal_compare"), DatasetSpec(path="builtin:all", num_samples=10))
    rows = ds["train"]["messages"]
    assert len(rows) == 210
    assert all([m["role"] for m in r] == ["user", "assistant"] for r in rows)


def test_builtin_identity_uses_given_identity():
    ds = load(DatasetSpec(path="builtin:identity", num_samples=20), identity=Identity(name="Wren", creator="Acme Labs"))
    assert all("Wren" in r[1]["content"] and "Acme Labs" in r[1]["content"] for r in ds["train"]["messages"])


def _raw_chitchat() -> dict:
    origin = importlib.util.find_spec("chitchat_dataset").origin
    return json.loads((Path(origin).parent / "dataset.json").read_text(encoding="utf-8"))


def test_chitchat_loads_real_alternating_conversations():
    ds = load(DatasetSpec(path="chitchat", num_samples=300))
    rows = ds["train"]["messages"]
    assert len(rows) == 300
    for messages in rows:
        roles = [m["role"] for m in messages]
        assert len(roles) >= 2 and roles[-1] == "assistant"
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        assert all(m["content"].strip() == m["content"] and m["content"] for m in messages)
    # The first conversation that has at least two turns, recomputed from the raw file.
    raw = next(c for c in _raw_chitchat().values() if len(c["messages"]) >= 2)
    turns = [" ".join(u["text"].strip() for u in group) for group in raw["messages"]]
    turns = turns[: len(turns) // 2 * 2]  # drop a trailing user turn
    assert [m["content"] for m in rows[0]] == turns
    assert raw["messages"][0][0]["sender"] != raw["messages"][1][0]["sender"]


# ------------------------------------------------------------------------------------------------ mixture & split


@pytest.mark.parametrize(
    ("sizes", "fractions", "expected"),
    [
        ([100, 100], [None, None], [100, 100]),
        ([100, 100], [0.75, 0.25], [100, 33]),
        ([10, 1000], [0.5, 0.5], [10, 10]),
        ([50, 50, 50], [1, 1, 2], [25, 25, 50]),
        ([30, 7], [1.0, 0.0], [30, 0]),
        ([37, 120, 9], [0.2, 0.5, 0.3], [6, 15, 9]),
    ],
)
def test_mixture_sizes(sizes, fractions, expected):
    assert mixture_sizes(sizes, fractions) == expected


@pytest.mark.parametrize(
    ("fractions", "problem"),
    [([0.5, None], "must be set for either all datasets"), ([0.0, 0.0], "not all zero"), ([1.0, -1.0], ">= 0")],
)
def test_mixture_rejects_bad_fractions(fractions, problem):
    with pytest.raises(DataError, match=problem):
        mixture_sizes([10, 10], fractions)


def test_mixture_matches_trl_get_dataset(tmp_path, write_jsonl, monkeypatch):
    import datasets
    from trl.scripts.utils import DatasetConfig, DatasetMixtureConfig, get_dataset

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    sizes, fractions = [37, 120, 9], [0.2, 0.5, 0.3]
    files = [write_jsonl(f"{i}.jsonl", [{"k": i}] * n) for i, n in enumerate(sizes)]
    config = DatasetMixtureConfig(
        datasets=[DatasetConfig(path="json", data_files=str(f), fraction=x) for f, x in zip(files, fractions)]
    )
    counts = collections.Counter(get_dataset(config)["train"]["k"])
    assert [counts[i] for i in range(3)] == mixture_sizes(sizes, fractions)


def test_fractions_give_expected_proportions():
    specs = [
        DatasetSpec(path="builtin:arithmetic", num_samples=100, fraction=0.75),
        DatasetSpec(path="builtin:letter_count", num_samples=100, fraction=0.25),
    ]
    prompts = [r[0]["content"] for r in load(*specs, seed=5)["train"]["messages"]]
    arithmetic = [ex.prompt for ex in generate_task("arithmetic", 100, seed=5)]
    letters = [ex.prompt for ex in generate_task("letter_count", 100, seed=5)]
    assert prompts == arithmetic + letters[:33]  # shares 0.75/0.25 without oversampling: 100 + 33 rows


def test_partial_fractions_are_rejected():
    with pytest.raises(DataError, match="fraction"):
        load(DatasetSpec(path="builtin:arithmetic", fraction=0.5), DatasetSpec(path="builtin:identity"))


@pytest.fixture
def hundred(write_jsonl, chat):
    return DatasetSpec(path=str(write_jsonl("hundred.jsonl", [chat(i) for i in range(100)])))


@pytest.mark.parametrize(
    ("size", "n_train", "n_test"), [(0.2, 80, 20), (0.05, 95, 5), (10, 90, 10), (1, 99, 1), (10.0, 90, 10)]
)
def test_split_sizes(hundred, size, n_train, n_test):
    ds = load(hundred, test_split_size=size)
    assert (len(ds["train"]), len(ds["test"])) == (n_train, n_test)
    assert sorted(contents(ds["train"]) + contents(ds["test"])) == sorted(f"question {i}" for i in range(100))


def test_split_is_deterministic_in_seed(hundred):
    first = load(hundred, test_split_size=0.2, seed=1)
    again = load(hundred, test_split_size=0.2, seed=1)
    other = load(hundred, test_split_size=0.2, seed=2)
    assert contents(first["test"]) == contents(again["test"])
    assert contents(first["train"]) == contents(again["train"])
    assert contents(first["test"]) != contents(other["test"])


@pytest.mark.parametrize("size", [0.0, -0.1, 1.5, 0, 100, 100.0, 250, "10%", True])
def test_bad_split_sizes(hundred, size):
    with pytest.raises(DataError, match="test_split_size"):
        load(hundred, test_split_size=size)


# ------------------------------------------------------------------------------------------------ fingerprint


def test_fingerprint_is_stable_and_tracks_every_row(tmp_path, write_jsonl, chat):
    rows = [chat(i) for i in range(20)]
    path = write_jsonl("fp.jsonl", rows)
    specs = [DatasetSpec(path=str(path)), DatasetSpec(path="builtin:arithmetic", num_samples=5)]
    first = fingerprint(load_conversations(specs, test_split_size=0.25), specs)
    second = fingerprint(load_conversations(specs, test_split_size=0.25), specs)
    assert first == second
    json.dumps(first)  # serialisable for the manifest
    assert {name: split["rows"] for name, split in first["splits"].items()} == {"train": 18, "test": 7}
    local, builtin = first["sources"]
    assert local["kind"] == "local" and builtin["kind"] == "builtin"
    assert local["files"] == [
        {"path": str(path), "bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    ]

    rows[7]["messages"][1]["content"] = "a different answer"
    write_jsonl("fp.jsonl", rows)
    changed = fingerprint(load_conversations(specs, test_split_size=0.25), specs)
    assert changed["sources"][0]["files"][0]["sha256"] != local["files"][0]["sha256"]
    assert [changed["splits"][s]["sha256"] != first["splits"][s]["sha256"] for s in ("train", "test")].count(True) == 1


def test_fingerprint_is_order_sensitive(write_jsonl, chat):
    forward = DatasetSpec(path=str(write_jsonl("f.jsonl", [chat(0), chat(1)])))
    backward = DatasetSpec(path=str(write_jsonl("b.jsonl", [chat(1), chat(0)])))
    digest = [fingerprint(load(s), [s])["splits"]["train"]["sha256"] for s in (forward, backward)]
    assert digest[0] != digest[1]
