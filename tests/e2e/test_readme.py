"""The README's promises: it starts with the two set-up commands and stays short, every command in it and in the
docs pages it links to is run by a test or by CI, its links resolve, the make targets it names run what it says, and
the generated config reference is current."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from test_readme_walkthrough import MAIN, WALKTHROUGH, ollama_lines

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PIPELINE = "recipes/configs/smollm2-135m/pipeline.yaml"
#: the README's length limit: what posttrain is, set-up, concepts, stages, configs, links; details live in docs/
MAX_README_LINES = 250

#: README commands CI runs itself (.ci/run: `make setup`, `make lint`, `make test`; `make test-fast` is a subset of
#: `make test`)
CI = {"make test", "make setup", "make test-fast", "make lint"}
#: README commands with the Ollama binary, which does not exist here: the walkthrough checks the export prints them
OLLAMA = {"ollama create posttrain -f outputs/smollm2-135m/export/Modelfile", "ollama run posttrain"}


def bash_commands(path: Path) -> list[str]:
    """The commands of a Markdown file's ``bash`` blocks, one per line (continuations joined, comments dropped)."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", path.read_text(), flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(line.split("  #")[0].split())
            if command:
                commands.append(command)
    return commands


def readme_commands() -> list[str]:
    """The commands of the README and of the docs pages (walkthroughs moved there from the README)."""
    return [command for path in (README, *DOCS) for command in bash_commands(path)]


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
    assert not unexplained, f"README/docs commands no test or CI runs: {unexplained}"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\nmake setup\n" in ci and "\nmake test\n" in ci and "\nmake lint\n" in ci


def test_every_walkthrough_command_is_in_the_readme_or_docs():
    """The walkthrough runs the commands the README and docs show, not commands of its own."""
    shown = set(readme_commands())
    missing = [command for command, _ in WALKTHROUGH if command not in shown]
    assert not missing, f"tests/e2e/test_readme_walkthrough.py runs commands no README/docs block shows: {missing}"
    ollama = ollama_lines()
    assert set(ollama) == OLLAMA, ollama  # what the walkthrough checks the export prints


def test_the_readme_starts_with_the_two_set_up_commands():
    text = README.read_text()
    first_block = re.search(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    assert first_block and first_block.group(1) == "bash"
    assert "\n## " not in text[: first_block.start()], "the set-up commands come before any section"
    commands = [" ".join(line.split("  #")[0].split()) for line in first_block.group(2).splitlines()]
    assert commands == ["make pipeline", "make test"], commands  # the main job on the default model, then the tests


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES}): move details to docs/"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces to hyphens)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, n = slug, 1
        while anchor in anchors:
            anchor, n = f"{slug}-{n}", n + 1
        anchors.add(anchor)
    return anchors


def test_relative_links_in_the_readme_and_docs_resolve():
    broken = []
    for path in (README, *DOCS):
        text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)  # code blocks hold no links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


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
