"""Held-out discipline: the prompts a stage trains on, its held-out prompts, and their overlap with evaluation.

A score measured on prompts a model trained on is a defect, so every stage's training prompts can be rendered
without loading a model (:func:`stage_prompts`), from a config or from a finished run's ``run_manifest.json``
(:func:`manifest_prompts`), and compared with an evaluation suite's prompts, exactly and after
:func:`normalize_prompt` (case, Unicode form, punctuation and spacing ignored). The shipped configs and suites are
checked by ``tests/tasks/test_heldout.py``; ``posttrain evaluate`` checks the models it evaluates and states the result in
its report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.data import load_conversations, load_preferences
from posttrain.data.formats import normalize_prompt, user_texts
from posttrain.data.preference import load_unpaired
from posttrain.data.spec import DatasetSpec, Identity
from posttrain.log import get_logger
from posttrain.manifest import read_manifest
from posttrain.rl.prompt_items import task_prompts
from posttrain.rl.prompts import load_prompts

logger = get_logger(__name__)

#: how each stage's data is loaded: conversations, preference pairs or prompts
_KIND = {"sft": "conversations", "reward": "preferences", "dpo": "preferences", "orpo": "preferences",
         "simpo": "preferences", "kto": "unpaired", "ppo": "prompts", "grpo": "prompts", "rloo": "prompts"}  # fmt: skip


@dataclass
class StagePrompts:
    """A stage's user prompts: what it trains on and what it holds out."""

    stage: str
    train: set[str] = field(default_factory=set)
    heldout: set[str] = field(default_factory=set)
    #: why the prompts could not be rendered (the run's training data is gone): its overlap is not checked
    unchecked: str | None = None


def stage_prompts(stage: str, datasets: list, *, seed: int = 42, test_split_size=None, identity: Identity | None = None,
                  system_prompt: str | None = None, from_pairs: bool = False) -> StagePrompts:  # fmt: skip
    """The training and held-out user prompts of a training stage, rendered from its data settings (``from_pairs``:
    KTO's rows derived from preference pairs, ``kto_from_pairs``)."""
    specs = [d if isinstance(d, DatasetSpec) else DatasetSpec(**d) for d in datasets]
    identity = identity or Identity()
    kind = "preferences" if from_pairs else _KIND[stage]
    if kind == "conversations":
        data = load_conversations(specs, test_split_size=test_split_size, seed=seed, identity=identity)
        column = "messages"
    elif kind == "preferences":
        data = load_preferences(specs, test_split_size=test_split_size, seed=seed, identity=identity)
        column = "prompt"
    elif kind == "unpaired":
        data = load_unpaired(specs, test_split_size=test_split_size, seed=seed)
        column = "prompt"
    else:
        data = load_prompts(specs, test_split_size=test_split_size, seed=seed, identity=identity,
                            system_prompt=system_prompt)  # fmt: skip
        column = "prompt"
    result = StagePrompts(stage)
    for split, target in (("train", result.train), ("test", result.heldout)):
        if split in data:
            for row in data[split][column]:
                target.update(user_texts(row))
    return result


def pairs_prompts(
    tasks: str | None, num_prompts: int, *, seed: int = 42, identity: Identity | None = None
) -> StagePrompts:
    """The prompts ``posttrain pairs`` samples from (they become DPO training prompts)."""
    names = (tasks or "builtin:all").split(",")
    items = task_prompts(names, num_prompts, seed=seed, identity=identity or Identity())
    return StagePrompts("pairs", train={text for item in items for text in user_texts(item.messages)})


def _resolved(value: Any, working_dir: str | None) -> Any:
    """A relative local path of a run's config as the run saw it: against the run's ``working_dir`` (recorded in its
    manifest), so a finished run can be checked from any folder."""
    if not working_dir or not isinstance(value, str) or not value or Path(value).is_absolute():
        return value
    candidate = Path(working_dir) / value
    return str(candidate) if candidate.exists() and not Path(value).exists() else value


def _resolved_datasets(datasets: list, working_dir: str | None) -> list:
    out = []
    for spec in datasets:
        if isinstance(spec, dict):
            spec = {**spec, "path": _resolved(spec.get("path"), working_dir)}
            files = spec.get("data_files")
            if isinstance(files, str):
                spec["data_files"] = _resolved(files, working_dir)
            elif isinstance(files, list):
                spec["data_files"] = [_resolved(f, working_dir) for f in files]
        out.append(spec)
    return out


def manifest_prompts(folder: str | Path) -> list[StagePrompts]:
    """The training prompts of the run in ``folder`` and of the runs it started from (its ``model_name_or_path``
    chain of posttrain output folders), from their ``run_manifest.json``; [] for a folder without one.

    Relative paths in a run's config are read against the folder the run was started in (``working_dir`` in its
    manifest). A run whose training data is gone gives a :class:`StagePrompts` with ``unchecked`` set (and a
    warning) instead of failing the evaluation."""
    from posttrain.errors import UserError

    found: list[StagePrompts] = []
    seen: set[Path] = set()
    current = Path(folder)
    while current.is_dir() and current.resolve() not in seen:
        seen.add(current.resolve())
        manifest = read_manifest(current)
        if manifest is None or manifest.get("stage") not in _KIND:
            break
        working_dir = manifest.get("working_dir")
        config = manifest.get("config", {})
        pt_args = config.get("PosttrainArguments", {})
        training = next((v for k, v in config.items() if k.endswith("Config") and "seed" in v), {})
        model = next((v.get("model_name_or_path") for v in config.values() if isinstance(v, dict)
                      and v.get("model_name_or_path")), None)  # fmt: skip
        identity = Identity(name=pt_args.get("assistant_name", Identity.name),
                            creator=pt_args.get("assistant_creator", Identity.creator))  # fmt: skip
        datasets = _resolved_datasets(pt_args.get("datasets") or [], working_dir)
        try:
            found.append(stage_prompts(manifest["stage"], datasets, seed=training.get("seed", 42),
                                       test_split_size=pt_args.get("test_split_size"), identity=identity,
                                       system_prompt=pt_args.get("system_prompt"),
                                       from_pairs=bool(training.get("kto_from_pairs"))))  # fmt: skip
        except (UserError, OSError) as error:
            reason = f"the training data of {current} could not be read ({error})"
            logger.warning(f"{reason}; its overlap with the evaluation prompts is not checked")
            found.append(StagePrompts(manifest["stage"], unchecked=reason))
        if not model:
            break
        current = Path(_resolved(model, working_dir))
    return found


@dataclass
class Overlap:
    """How many of ``prompts`` also occur in ``against``: exactly, and after :func:`normalize_prompt`."""

    checked: int
    exact: list[str]
    normalized: list[str]

    @property
    def clean(self) -> bool:
        return not self.exact and not self.normalized


def overlap(prompts: Iterable[str], against: Iterable[str]) -> Overlap:
    prompts = list(prompts)
    against = set(against)
    normalized_against = {normalize_prompt(p) for p in against}
    exact = sorted({p for p in prompts if p in against})
    normalized = sorted({p for p in prompts if normalize_prompt(p) in normalized_against})
    return Overlap(len(prompts), exact, normalized)


def overlap_line(check: dict[str, Any] | None) -> str:
    """The report's one line about the overlap checked (``results["overlap"]``)."""
    if not check:
        return "Held-out check: none of the evaluated models is a posttrain training run, so no overlap was checked."
    missing = f" Not checked (training data gone): {'; '.join(check['unchecked'])}." if check.get("unchecked") else ""
    if not check["checked_against"]:
        if missing:
            return "Held-out check:" + missing
        return "Held-out check: no evaluated model has training prompts on record (no run_manifest.json)."
    found = sum(s["normalized"] for s in check["suites"].values())
    total = sum(s["prompts"] for s in check["suites"].values())
    against = ", ".join(check["checked_against"])
    verdict = "none of them" if not found else f"{found} of them (see results.json)"
    return (
        f"Held-out check: {total} suite prompts compared with the {check['training_prompts']} training prompts of "
        f"{against} (exact and normalized): {verdict} occur in training.{missing}"
    )


def suite_overlap(model_paths: Iterable[str], suites: Iterable[Any]) -> dict[str, Any]:
    """How many prompts of each suite also occur among the training prompts of the evaluated models' runs."""
    trained: set[str] = set()
    checked: list[str] = []
    unchecked: list[str] = []
    for path in model_paths:
        if not path or not Path(path).is_dir():
            continue
        for rendered in manifest_prompts(path):
            if rendered.unchecked:
                unchecked.append(f"{rendered.stage} ({path}): {rendered.unchecked}")
                continue
            checked.append(f"{rendered.stage} ({path})")
            trained |= rendered.train
    result: dict[str, Any] = {"checked_against": checked, "training_prompts": len(trained), "suites": {}}
    if unchecked:
        result["unchecked"] = unchecked
    for suite in suites:
        prompts = [text for sample in suite.samples for text in user_texts(sample.messages)]
        found = overlap(prompts, trained)
        result["suites"][suite.name] = {"prompts": found.checked, "exact": len(found.exact),
                                        "normalized": len(found.normalized), "examples": found.normalized[:5]}  # fmt: skip
    return result


def warn_overlap(check: dict[str, Any]) -> None:
    """A warning per suite with prompts that also occur in training (``check``: :func:`suite_overlap`'s)."""
    for name, found in check["suites"].items():
        if found["normalized"]:
            logger.warning(
                f"suites: {found['normalized']} prompts of suite '{name}' also occur in the training prompts of "
                f"{', '.join(check['checked_against'])}; their scores measure recall, not generalization "
                f"(e.g. {found['examples'][0]!r})"
            )
