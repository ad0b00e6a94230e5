"""The README's promises: every command in it is run by a test or by CI, the make targets it names run what it says,
and the generated config reference is current."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from test_readme_walkthrough import MAIN, WALKTHROUGH

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PIPELINE = "recipes/configs/smollm2-135m/pipeline.yaml"

#: README commands CI runs itself (.ci/run: `make setup`, `make lint`, `make test`; `make test-fast` is a subset of
#: `make test`)
CI = {"make test", "make setup", "make test-fast", "make lint"}
#: README commands with the Ollama binary, which does not exist here: the walkthrough checks the export prints them
OLLAMA = {"ollama create posttrain -f outputs/smollm2-135m/export/Modelfile", "ollama run posttrain"}


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", README.read_text(), flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(line.split("  #")[0].split())
            if command:
                commands.append(command)
    return commands


def pipeline_commands(tmp_path, monkeypatch, capsys, *extra) -> list[str]:
    """The stage commands ``posttrain pipeline`` runs (``--dry_run`` in a scratch checkout), launcher path stripped
    and ``python -m posttrain.cli`` written as the ``posttrain`` it is."""
    from posttrain.stages import run_stage

    def main(argv):
        return run_stage("pipeline", argv)

    for name in ("recipes", "accelerate_configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    assert main(["--config", PIPELINE, "--dry_run", "--force", "all", *extra]) == 0
    lines = re.findall(r"^\[\d+/\d+\] [\w-]+: (.*)$", capsys.readouterr().out, flags=re.M)
    commands = []
    for line in lines:
        argv = shlex.split(line)
        argv[0] = Path(argv[0]).name
        if argv[1:3] == ["-m", "posttrain.cli"]:
            argv = ["posttrain", *argv[3:]]
        commands.append(shlex.join(argv))
    return commands


def test_every_readme_command_is_run_by_a_test_or_ci(tmp_path, monkeypatch, capsys):
    by_pipeline = pipeline_commands(tmp_path, monkeypatch, capsys)
    walked = {command for command, _ in WALKTHROUGH}
    unexplained = []
    for command in readme_commands():
        if command in walked or command in CI or command in OLLAMA:
            continue
        if command == "make pipeline-full":  # the full profile: the same stages, dry-run below, timed by hand
            continue
        # a stage command the pipeline runs (then with its quick-profile overrides appended)
        normalized = command
        if command.startswith("python recipes/"):  # python recipes/merge.py ... is posttrain merge ...
            normalized = "posttrain " + command.removeprefix("python recipes/").replace(".py ", " ", 1)
        if any(c == normalized or c.startswith(normalized + " ") for c in by_pipeline):
            continue
        unexplained.append(command)
    assert not unexplained, f"README commands no test or CI runs: {unexplained}"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\nmake setup\n" in ci and "\nmake test\n" in ci and "\nmake lint\n" in ci


def test_the_full_profile_plans_every_stage(tmp_path, monkeypatch, capsys):
    commands = pipeline_commands(tmp_path, monkeypatch, capsys, "--profile", "full")
    assert len(commands) == 9 and not any("--max_steps" in c for c in commands)  # the stage configs as written


@pytest.mark.parametrize(
    "target, expected",
    [
        ("pipeline", MAIN),
        ("pipeline-full", MAIN + " --profile full"),
        ("test", "python -m pytest"),
        ("test-fast", 'python -m pytest -m "not slow"'),
    ],
)
def test_make_targets_run_what_the_readme_says(target, expected):
    proc = subprocess.run(
        ["make", "-n", "-o", ".venv/.posttrain-installed", target], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert any(line.replace(".venv/bin/", "").endswith(expected) for line in proc.stdout.splitlines()), proc.stdout


def test_the_config_reference_is_current():
    from posttrain.reference import render

    assert (ROOT / "docs" / "config-reference.md").read_text() == render(), (
        "docs/config-reference.md is stale: python -m posttrain.reference > docs/config-reference.md"
    )
