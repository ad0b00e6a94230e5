"""Held-out discipline: no prompt any shipped config trains on appears (exactly or normalized) in a shipped evaluation
suite or in any stage's held-out set; the built-in tasks' three pools (train, validation, test) are disjoint, and no
selection code path reads the sealed test pool."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from posttrain.configs import parse_args
from posttrain.data.spec import DatasetSpec, Identity
from posttrain.evaluation.overlap import StagePrompts, normalize_prompt, overlap, pairs_prompts, stage_prompts
from posttrain.evaluation.suites import SuiteError, load_suite, shipped_suites
from posttrain.stages import STAGES
from posttrain.tasks import TASKS, generate_task

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"


def _shipped_stage_prompts():
    """Training and held-out prompts of every shipped stage config, rendered the way each stage loads its data. A
    dataset that a shipped ``pairs`` config writes (DPO's on-policy pairs) stands for that config's prompts."""
    parsed_configs = []
    pairs_outputs = {}
    for path in sorted(CONFIGS.glob("*/*.yaml")):
        stage = path.stem.split("-")[0]
        if stage not in STAGES or not (STAGES[stage].trains or stage == "pairs"):
            continue
        parsed = parse_args(STAGES[stage].load().make_parser(), ["--config", str(path)])
        if stage == "pairs":
            args = parsed[0]
            identity = Identity(name=args.assistant_name, creator=args.assistant_creator)
            pairs_outputs[str(args.pairs_file)] = pairs_prompts(
                args.tasks, args.num_prompts, seed=args.seed, identity=identity
            )
        parsed_configs.append((path, stage, parsed))
    rendered = []
    for path, stage, parsed in parsed_configs:
        if stage == "pairs":
            rendered.append((path, pairs_outputs[str(parsed[0].pairs_file)]))
            continue
        pt_args, training = parsed[0], parsed[1]
        sampled = [pairs_outputs[d.path] for d in pt_args.datasets if d.path in pairs_outputs]
        datasets = [d for d in pt_args.datasets if d.path not in pairs_outputs]
        result = stage_prompts(stage, datasets, seed=training.seed, test_split_size=pt_args.test_split_size,
                               identity=pt_args.identity, system_prompt=pt_args.system_prompt) if datasets else \
            StagePrompts(stage)  # fmt: skip
        for prompts in sampled:
            result.train |= prompts.train
        rendered.append((path, result))
    return rendered


@pytest.fixture(scope="module")
def shipped():
    rendered = _shipped_stage_prompts()
    assert {p.stem for p, _ in rendered} >= {"sft", "reward", "dpo", "ppo", "grpo", "rloo", "pairs"}
    return rendered


@pytest.fixture(scope="module")
def suite_prompts():
    prompts = {}
    for name in shipped_suites():
        try:
            suite = load_suite(name)
        except SuiteError as err:  # a suite whose data package is not installed here
            if "pip install" in str(err):
                continue
            raise
        prompts[name] = {m["content"] for s in suite.samples for m in s.messages if m["role"] == "user"}
    assert "builtin" in prompts
    return prompts


def test_no_training_prompt_is_in_a_shipped_suite(shipped, suite_prompts):
    for path, rendered in shipped:
        assert rendered.train, path
        for name, prompts in suite_prompts.items():
            found = overlap(rendered.train, prompts)
            assert found.clean, (
                f"{path.name} trains on {len(found.normalized)} prompts of suite {name}: {found.normalized[:3]}"
            )


def test_no_training_prompt_is_in_any_stages_heldout_set(shipped):
    heldout = {p: r.heldout for p, r in shipped if r.heldout}
    assert {p.stem for p in heldout} >= {"reward", "ppo", "grpo"}  # the configs that hold prompts out
    for path, rendered in shipped:
        for other, prompts in heldout.items():
            found = overlap(rendered.train, prompts)
            assert found.clean, f"{path.name} trains on held-out prompts of {other.name}: {found.normalized[:3]}"


@pytest.mark.parametrize("task", list(TASKS))
def test_each_task_has_three_disjoint_pools_with_variety(task):
    pools = {pool: {e.prompt for e in generate_task(task, 400 if pool == "train" else 200, seed=2, pool=pool)}
             for pool in ("train", "validation", "test")}  # fmt: skip
    assert len(pools["train"]) >= 20  # many phrasings, not one memorisable string
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert overlap(pools[a], pools[b]).clean, (a, b)
        # each held-out pool has its own phrasings: no prompt of another pool shares its first three words with it
        starts = {" ".join(normalize_prompt(p).split()[:3]) for p in pools[a]}
        shared = [p for p in pools[b] if " ".join(normalize_prompt(p).split()[:3]) in starts]
        assert len(shared) <= len(pools[b]) // 4, (a, b, shared[:5])
    for pool in ("validation", "test"):
        assert len(pools[pool]) >= 8


@pytest.mark.parametrize("task", list(TASKS))
def test_held_out_pools_never_repeat_a_prompt(task):
    for pool in ("validation", "test"):
        prompts = [e.prompt for e in generate_task(task, 300, seed=5, pool=pool)]
        assert len(prompts) == len(set(prompts)) and prompts, pool
    # the training pool keeps the size asked for (repeats allowed: identity has 22 phrasings)
    assert len(generate_task(task, 300, seed=5)) == 300


def test_the_builtin_suite_reads_only_the_test_pool_and_has_distinct_prompts():
    test = load_suite("builtin")
    validation = load_suite("builtin-validation")
    assert test.sources[0]["pool"] == "test" and validation.sources[0]["pool"] == "validation"
    for suite in (test, validation):
        prompts = [s.messages[-1]["content"] for s in suite.samples]
        assert len(prompts) == len(set(prompts)) >= 80
    expected = {e.prompt for e in generate_task("all", 100, seed=1234, pool="test")}
    assert {s.messages[-1]["content"] for s in test.samples} == expected
    assert overlap([s.messages[-1]["content"] for s in test.samples],
                   [s.messages[-1]["content"] for s in validation.samples]).clean  # fmt: skip
    # each task's generation budget fits its answers
    assert {s.group: s.max_new_tokens for s in test.samples} == {n: t.max_new_tokens for n, t in TASKS.items()
                                                                 if not t.tools}  # fmt: skip


def test_a_suite_cannot_read_the_training_pool(tmp_path):
    suite = tmp_path / "mine.yaml"
    suite.write_text("data:\n  - builtin: arithmetic\n    pool: train\nscoring: [task]\n")
    with pytest.raises(SuiteError, match="pool must be one of validation, test"):
        load_suite(str(suite))


def test_the_old_eval_pool_name_reads_validation_with_a_warning():
    with pytest.warns(FutureWarning, match="validation"):
        old = generate_task("arithmetic", 5, seed=1, pool="eval")
    assert [e.prompt for e in old] == [e.prompt for e in generate_task("arithmetic", 5, seed=1, pool="validation")]


def test_no_selection_code_path_reads_the_test_pool(monkeypatch, tmp_path):
    """Run every code path that holds data out for a choice (training stages' held-out splits, RL held-out prompts,
    the quantization check's texts, the shipped stage configs' held-out sets) and record which pools they read."""
    import posttrain.tasks as tasks_module
    from posttrain.data.loading import load_conversations
    from posttrain.data.preference import load_preferences
    from posttrain.export.quant_quality import heldout_texts
    from posttrain.rl.prompts import load_prompts

    read = []
    real = tasks_module.generate_task

    def recording(name, n, seed=42, identity=None, pool="train"):
        read.append(pool)
        return real(name, n, seed=seed, identity=identity, pool=pool)

    # every posttrain module that imported the generator reads pools through it
    importers = [
        m
        for name, m in sys.modules.items()
        if name.startswith("posttrain") and getattr(m, "generate_task", None) is real
    ]
    assert len(importers) >= 3, importers
    for module in importers:
        monkeypatch.setattr(module, "generate_task", recording)
    spec = [{"path": "builtin:all", "num_samples": 60}]
    assert "test" in load_conversations(spec, seed=1, test_split_size=12)
    assert "test" in load_preferences(spec, seed=1, test_split_size=12)
    assert "test" in load_prompts([DatasetSpec(path="builtin:all", num_samples=60)], test_split_size=12)

    class Tokenizer:
        chat_template = None

    monkeypatch.setattr("posttrain.export.quant_quality._render", lambda tokenizer, conversation: "x")
    assert heldout_texts(Tokenizer(), 12)
    _shipped_stage_prompts()
    assert "validation" in read and "train" in read
    assert "test" not in read, "a selection code path read the sealed test pool"


def test_no_module_but_the_evaluation_suites_names_the_test_pool():
    """Static guard: outside the evaluation suites (the report path), no source or benchmark module passes the
    test pool to anything."""
    import ast

    root = Path(__file__).resolve().parents[2]
    allowed = {root / "src/posttrain/evaluation/suites.py", root / "src/posttrain/tasks/base.py",
               root / "src/posttrain/tasks/__init__.py"}  # fmt: skip
    offenders = []
    for path in [*(root / "src").rglob("*.py"), *(root / "benchmarks").glob("*.py")]:
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "pool":
                value = node.value
                # a function's own ``pool`` parameter passed on is checked where it is called (the test above)
                # ... as is a config's ``pool`` key (its stage refuses ``test``: tests/stages/test_reward.py)
                passed_on = (isinstance(value, ast.Name) and value.id in ("SELECTION_POOL", "pool")) or (
                    isinstance(value, ast.Attribute) and value.attr == "pool"
                )
                if not passed_on and not (isinstance(value, ast.Constant) and value.value in ("train", "validation")):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
            if isinstance(node, ast.Name) and node.id == "REPORT_POOL":
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not offenders, offenders


def test_normalized_overlap_catches_what_exact_misses():
    found = overlap(["Which is larger, 9.11 or 9.9?"], ["which is LARGER 9 11 or 9 9"])
    assert not found.exact and found.normalized and not found.clean


def test_evaluate_states_the_overlap_with_the_evaluated_runs_training_prompts(tmp_path):
    import json

    from posttrain.evaluation.overlap import overlap_line, suite_overlap

    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "What is 2 + 2?"},
                                             {"role": "assistant", "content": "4"}]}) + "\n")  # fmt: skip
    run = tmp_path / "sft"
    run.mkdir()
    (run / "run_manifest.json").write_text(json.dumps({"stage": "sft", "config": {
        "PosttrainArguments": {"datasets": [{"path": str(data)}]}, "SFTConfig": {"seed": 0},
        "ModelConfig": {"model_name_or_path": "smollm2-135m-instruct"}}}))  # fmt: skip
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        "name: mine\ndata:\n  - samples:\n      - {prompt: 'what is 2+2', answer: '4'}\n"
        "      - {prompt: 'What is 3 + 5?', answer: '8'}\nscoring: [exact_match]\n"
    )
    found = suite_overlap([str(run)], [load_suite(str(suite_file))])
    assert found["checked_against"] == [f"sft ({run})"] and found["training_prompts"] == 1
    assert found["suites"]["mine"] == {"prompts": 2, "exact": 0, "normalized": 1, "examples": ["what is 2+2"]}
    assert "1 of them" in overlap_line(found)
    clean = suite_overlap([str(run)], [load_suite("builtin")])
    assert clean["suites"]["builtin"]["normalized"] == 0 and "none of them" in overlap_line(clean)


def _run_with_relative_data(tmp_path):
    """A finished SFT run started in ``tmp_path/project`` with a relative dataset path, as the pipeline writes it."""
    import json

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]}) + "\n")  # fmt: skip
    run = project / "outputs" / "sft"
    run.mkdir(parents=True)
    (run / "run_manifest.json").write_text(json.dumps({"stage": "sft", "working_dir": str(project), "config": {
        "PosttrainArguments": {"datasets": [{"path": "data/train.jsonl"}]}, "SFTConfig": {"seed": 0},
        "ModelConfig": {"model_name_or_path": "smollm2-135m-instruct"}}}))  # fmt: skip
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: mine\ndata:\n  - samples:\n      - {prompt: 'what is 2+2', answer: '4'}\nscoring: [exact_match]\n"
    )
    return project, run, load_suite(str(suite))


def test_overlap_of_a_finished_run_is_checked_from_another_folder(tmp_path, monkeypatch):
    """Relative training-data paths are read against the folder the run was started in (its manifest's
    ``working_dir``), not the current one."""
    from posttrain.evaluation.overlap import suite_overlap

    _, run, suite = _run_with_relative_data(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    found = suite_overlap([str(run)], [suite])
    assert found["training_prompts"] == 1 and found["suites"]["mine"]["normalized"] == 1
    assert "unchecked" not in found


def test_overlap_with_training_data_gone_warns_instead_of_failing(tmp_path, monkeypatch, capsys):
    from posttrain.evaluation.overlap import overlap_line, suite_overlap

    project, run, suite = _run_with_relative_data(tmp_path)
    (project / "data" / "train.jsonl").unlink()
    monkeypatch.chdir(tmp_path)
    found = suite_overlap([str(run)], [suite])
    assert (
        found["checked_against"] == [] and len(found["unchecked"]) == 1 and "data/train.jsonl" in found["unchecked"][0]
    )
    assert "not checked" in capsys.readouterr().out
    assert "Not checked (training data gone)" in overlap_line(found)


def test_manifest_records_the_working_dir(tmp_path, monkeypatch):
    from posttrain.manifest import read_manifest, write_manifest

    monkeypatch.chdir(tmp_path)
    write_manifest(tmp_path / "run", stage="sft")
    assert read_manifest(tmp_path / "run")["working_dir"] == str(tmp_path)


def test_a_shared_follow_up_does_not_condemn_a_conversation():
    """Multi-turn rows are compared on what the model is asked: each user turn with the turns before it. A generic
    follow-up shared by every conversation ("Are you sure?") keeps held-out rows; a repeated first turn drops one."""
    from posttrain.data.formats import drop_trained_prompts, prompt_keys

    def chat(first, follow_up="Are you sure?"):
        return [{"role": "user", "content": first}, {"role": "assistant", "content": "Yes."},
                {"role": "user", "content": follow_up}, {"role": "assistant", "content": "Quite."}]  # fmt: skip

    assert prompt_keys(chat("Is 9.9 > 9.11?"))[0] == "is 9 9 9 11"
    assert len(prompt_keys(chat("a"))) == 2 and prompt_keys("Hello!") == ["hello"]
    train = [chat(f"Question {i}?") for i in range(8)]
    test = [chat("Another question?"), chat("question 3"), chat("New one?", follow_up="Question 5?")]
    kept = drop_trained_prompts(train, test)
    assert kept == [test[0], test[2]]  # the second repeats a training first turn; the third's follow-up is new here


def test_held_out_split_left_empty_warns_and_training_goes_on(capsys):
    from types import SimpleNamespace

    from posttrain.data.formats import drop_trained_prompts
    from posttrain.training.common import eval_split

    rows = [[{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}]] * 4
    assert drop_trained_prompts(rows[:3], rows[3:]) == []
    assert "no held-out split" in capsys.readouterr().out
    args = SimpleNamespace(eval_strategy="steps")
    assert eval_split({"train": rows}, args) is None and args.eval_strategy == "no"
    assert eval_split({"train": rows, "test": rows}, SimpleNamespace(eval_strategy="steps")) == rows


def test_loading_without_a_held_out_row_left_has_no_test_split(tmp_path):
    import json

    from posttrain.data import DatasetSpec, load_conversations

    data = tmp_path / "same.jsonl"
    row = {"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"}]}
    data.write_text("\n".join(json.dumps(row) for _ in range(10)) + "\n")
    splits = load_conversations([DatasetSpec(path=str(data))], test_split_size=0.2, seed=0)
    assert set(splits) == {"train"} and len(splits["train"]) == 8


def test_overlap_reads_the_prompts_of_kto_orpo_and_simpo_runs(tmp_path):
    """The new preference stages' training prompts are checked too: KTO's unpaired rows, or its pairs with
    ``kto_from_pairs``, and ORPO/SimPO's pairs."""

    rows = tmp_path / "kto.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"question {i}?", "completion": "an answer", "label": i % 2 == 0})
                            + "\n" for i in range(8)))  # fmt: skip
    kto = stage_prompts("kto", [{"path": str(rows)}], test_split_size=2)
    assert len(kto.train) + len(kto.heldout) == 8 and len(kto.heldout) >= 1
    builtin = [{"path": "builtin:arithmetic", "num_samples": 12}]
    for stage in ("orpo", "simpo"):
        assert len(stage_prompts(stage, builtin).train) >= 10, stage
    assert stage_prompts("kto", builtin, from_pairs=True).train == stage_prompts("dpo", builtin).train
