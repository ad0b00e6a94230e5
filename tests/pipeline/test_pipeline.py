"""``posttrain pipeline`` on a tiny model: every stage runs in its own process and leaves outputs that load; a rerun
skips finished stages; ``--force`` reruns one; a failing stage stops the pipeline and leaves earlier outputs intact."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from posttrain.pipeline.config import load_pipeline
from posttrain.pipeline.state import STATE_NAME
from posttrain.stages import run_stage

from tiny import write_sft_config, write_stage_config


def main(argv):
    return run_stage("pipeline", argv)


PAIRS = [{"path": "builtin:decimal_compare", "num_samples": 16}, {"path": "builtin:unknown_entity", "num_samples": 16}]


def write_pipeline(tmp_path, tiny_base_model, *, dpo_overrides=None):
    sft = write_sft_config(tmp_path, tiny_base_model, max_steps=3, output_dir=str(tmp_path / "sft"))
    dpo = write_stage_config(
        tmp_path,
        "dpo",
        {
            "model_name_or_path": str(tmp_path / "sft"),
            "datasets": PAIRS,
            "max_steps": 3,
            "per_device_train_batch_size": 4,
            "learning_rate": 5e-3,
            "max_length": 128,
            "overlong_samples": "truncate",  # some built-in pairs are longer with the tiny tokenizer
        },
    )
    evaluate = tmp_path / "evaluate.yaml"
    evaluate.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"label": "sft", "path": str(tmp_path / "sft")},
                    {"label": "dpo", "path": str(tmp_path / "dpo")},
                ],
                "suites": ["builtin"],
                "max_samples": 2,
                "max_new_tokens": 8,
                "bootstrap_samples": 50,
                "progress": False,
                "output_dir": str(tmp_path / "eval"),
            }
        )
    )
    pipeline = {
        "launcher": sys.executable,
        "output_dir": str(tmp_path / "pipeline"),
        "stages": [
            {"name": "sft", "config": str(sft)},
            {"name": "dpo", "config": str(dpo), **({"overrides": dpo_overrides} if dpo_overrides else {})},
            {"name": "eval", "stage": "evaluate", "config": str(evaluate)},
        ],
        "profiles": {"quick": {"sft": {"max_steps": 2}}},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def manifest(path):
    return json.loads((path / "run_manifest.json").read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_base_model):
    tmp_path = tmp_path_factory.mktemp("pipeline")
    config = write_pipeline(tmp_path, tiny_base_model)
    assert main(["--config", str(config), "--profile", "quick"]) == 0
    return tmp_path, config


def test_every_stage_leaves_outputs_that_load(finished):
    from peft import PeftConfig

    tmp_path, _ = finished
    assert manifest(tmp_path / "sft")["stage"] == "sft"
    assert manifest(tmp_path / "sft")["config"]["SFTConfig"]["max_steps"] == 2  # the quick profile's override
    assert PeftConfig.from_pretrained(tmp_path / "dpo").peft_type.value == "LORA"
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["status"] == "complete" and [m["label"] for m in results["models"]] == ["sft", "dpo"]
    state = json.loads((tmp_path / "pipeline" / STATE_NAME).read_text())
    assert list(state["stages"]) == ["sft", "dpo", "eval"]
    report = (tmp_path / "pipeline" / "report.md").read_text()
    assert "| builtin | task |" in report and "| sft | loss |" in report
    assert "<svg" in (tmp_path / "pipeline" / "report.html").read_text()
    # the quick profile shortened sft: said in one line, with the command for the full profile
    smoke = next(line for line in report.splitlines() if "Smoke-sized run" in line)
    assert "profile `quick` shortened **sft** (max_steps=2)" in smoke and "--profile full`" in smoke
    assert "## Replies side by side (eval)" in report and "`sft`" in report.split("## Replies side by side")[1]


def test_rerun_skips_finished_stages_and_force_reruns_one(finished, capsys):
    tmp_path, config = finished
    before = {name: manifest(tmp_path / name)["finished_at"] for name in ("sft", "dpo", "eval")}
    (tmp_path / "sft" / "run_manifest.json").touch()
    capsys.readouterr()
    assert main(["--config", str(config), "--profile", "quick", "--no_report"]) == 0
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 3, out
    assert main(["--config", str(config), "--profile", "quick", "--force", "eval", "--no_report"]) == 0
    after = {name: manifest(tmp_path / name)["finished_at"] for name in ("sft", "dpo", "eval")}
    assert after["sft"] == before["sft"] and after["dpo"] == before["dpo"]
    assert after["eval"] >= before["eval"] and "eval: done, skipped" not in capsys.readouterr().out


def test_changed_config_reruns_the_stage_and_what_reads_its_output(finished, capsys):
    _, config = finished
    capsys.readouterr()
    assert main(["--config", str(config), "--dry_run"]) == 0  # no profile: sft max_steps differs -> not done
    out = capsys.readouterr().out
    assert "done, skipped" not in out  # dpo trains on sft's output, eval reads both: all three run again
    assert "dpo: " in out and "(reads the output of sft, which runs again)" in out


def test_a_stage_that_reran_makes_its_readers_stale(finished, capsys):
    from posttrain.pipeline.state import reads_output_of

    tmp_path, config = finished
    sft, dpo, evaluate = load_pipeline(config, profile="quick").stages
    assert reads_output_of(dpo, sft) and reads_output_of(evaluate, dpo) and not reads_output_of(sft, dpo)
    state_path = tmp_path / "pipeline" / STATE_NAME
    state = json.loads(state_path.read_text())
    state["stages"]["sft"]["finished_at"] = "2099-01-01T00:00:00+00:00"  # as if sft had rerun in another invocation
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    assert main(["--config", str(config), "--profile", "quick", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "sft: done, skipped" in out and "dpo: done, skipped" not in out and "eval: done, skipped" not in out


def test_a_failing_stage_stops_the_pipeline_and_keeps_earlier_outputs(tmp_path, tiny_base_model, capsys):
    config = write_pipeline(tmp_path, tiny_base_model, dpo_overrides={"learning_rate": -1})
    assert main(["--config", str(config)]) == 2  # the stage's own exit status
    err = capsys.readouterr().err
    assert "stage 'dpo' failed" in err and "earlier stages' outputs are intact" in err
    assert manifest(tmp_path / "sft")["stage"] == "sft"
    assert not (tmp_path / "eval").exists()
    state = json.loads((tmp_path / "pipeline" / STATE_NAME).read_text())
    assert state["failed"]["stage"] == "dpo" and "sft" in state["stages"]


@pytest.mark.parametrize(
    "pipeline, message",
    [
        ({"stages": [{"name": "sft", "config": "nope.yaml"}]}, "stage config not found: nope.yaml"),
        ({"stages": [{"name": "sftt", "config": "CONFIG"}]}, "unknown stage 'sftt'"),
        (
            {"stages": [{"name": "sft", "config": "CONFIG"}], "profiles": {"quick": {"dpo": {}}}, "profile": "quick"},
            "names stage 'dpo'",
        ),
        ({"stages": [{"name": "sft", "config": "CONFIG"}], "stagse": []}, "unknown key(s) stagse"),
        ({"stages": []}, "non-empty list"),
        (
            {"stages": [{"name": "sft", "config": "CONFIG"}], "launcher": "no-such-launcher --x"},
            "launcher 'no-such-launcher' is neither next to",
        ),
    ],
)
def test_bad_pipeline_configs_are_named_errors(tmp_path, tiny_base_model, capsys, pipeline, message):
    sft = write_sft_config(tmp_path, tiny_base_model)
    for stage in pipeline["stages"]:
        stage["config"] = str(sft) if stage["config"] == "CONFIG" else stage["config"]
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "pipeline").exists() and not (tmp_path / "out").exists()


def test_unknown_force_stage_is_refused(tmp_path, tiny_base_model, capsys):
    config = write_pipeline(tmp_path, tiny_base_model)
    with pytest.raises(SystemExit):
        main(["--config", str(config), "--force", "ppo"])
    assert "no stage named 'ppo'" in capsys.readouterr().err


def test_every_shipped_pipeline_config_loads():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "recipes" / "configs").glob("*/pipeline.yaml"))
    assert configs  # not vacuous: the glob is anchored at the repository, not the working directory
    for path in configs:
        for profile in (None, *(yaml.safe_load(path.read_text()).get("profiles") or {})):
            assert load_pipeline(path, profile).stages


@pytest.mark.parametrize(
    ("precision", "expected_profile", "sft_steps"), [("fp32", "quick-fp32", 6), ("bf16", "quick", 12)]
)
def test_fp32_training_gets_the_smaller_quick_profile(monkeypatch, capsys, precision, expected_profile, sft_steps):
    from pathlib import Path

    monkeypatch.setenv("POSTTRAIN_PRECISION", precision)
    path = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "smollm2-135m" / "pipeline.yaml"
    pipeline = load_pipeline(path)
    assert pipeline.profile == expected_profile
    assert pipeline.stage("sft").overrides["max_steps"] == sft_steps
    assert pipeline.stage("eval").overrides["suites"] == ["builtin"]  # the rest of `quick` still applies
    said = capsys.readouterr().out
    assert ("reduced by 'quick-fp32'" in said) is (precision == "fp32")
    assert load_pipeline(path, "full").stage("sft").overrides == {}  # other profiles have no fp32 variant


def test_a_cpu_without_avx512_bf16_gets_the_smaller_profile_unasked(monkeypatch, capsys):
    from pathlib import Path

    from posttrain import precision

    monkeypatch.delenv("POSTTRAIN_PRECISION", raising=False)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    path = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "smollm2-135m" / "pipeline.yaml"
    assert load_pipeline(path).profile == "quick-fp32"
    assert "this CPU has no AVX512-BF16" in capsys.readouterr().out


def _report(profile, shortened):
    return {
        "config": "recipes/configs/smollm2-135m/pipeline.yaml",
        "profile": profile,
        "shortened": shortened,
        "stages": [],
        "evaluations": [],
        "exports": [],
    }


def test_report_says_which_stages_were_smoke_sized_and_how_to_run_full(tmp_path):
    from posttrain.pipeline.config import Pipeline
    from posttrain.pipeline.report import profile_overrides, render_html, render_markdown

    source = tmp_path / "pipeline.yaml"
    source.write_text(
        yaml.safe_dump(
            {
                "profiles": {
                    "quick": {"sft": {"max_steps": 12}, "eval": {"max_samples": 20, "suites": ["builtin"]}},
                    "quick-fp32": {"sft": {"max_steps": 6}, "dpo": {"max_steps": 3}},
                    "full": {},
                }
            },
            sort_keys=False,
        )
    )
    fp32 = profile_overrides(Pipeline(source, tmp_path, [], [], "quick-fp32"))  # quick's overrides, then fp32's
    assert fp32 == {
        "sft": {"max_steps": 6},
        "eval": {"max_samples": 20, "suites": ["builtin"]},
        "dpo": {"max_steps": 3},
    }
    assert profile_overrides(Pipeline(source, tmp_path, [], [], "full")) == {}
    assert profile_overrides(Pipeline(source, tmp_path, [], [], None)) == {}

    md, page = render_markdown(_report("quick-fp32", fp32)), render_html(_report("quick-fp32", fp32))
    line = next(line for line in md.splitlines() if "Smoke-sized run" in line)
    assert "**sft** (max_steps=6), **eval** (max_samples=20, suites=[builtin]), **dpo** (max_steps=3)" in line
    assert "`make pipeline-full`" in line
    assert "`posttrain pipeline --config recipes/configs/smollm2-135m/pipeline.yaml --profile full`" in line
    assert "Smoke-sized run" in page and "<code>make pipeline-full</code>" in page
    for profile, shortened in (("full", {}), ("full", {"sft": {"max_steps": 1000}}), (None, {})):
        md, page = render_markdown(_report(profile, shortened)), render_html(_report(profile, shortened))
        assert "Smoke-sized" not in md and "Smoke-sized" not in page and "pipeline-full" not in md
    # another pipeline's config: no make target, its own command
    other = {**_report("quick", {"sft": {"max_steps": 2}}), "config": "my pipe.yaml"}
    line = next(line for line in render_markdown(other).splitlines() if "Smoke-sized run" in line)
    assert "make" not in line and "`posttrain pipeline --config 'my pipe.yaml' --profile full`" in line
