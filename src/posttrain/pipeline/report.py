"""The pipeline's final report: ``report.md`` and ``report.html`` in the pipeline's ``output_dir``.

Built only from what the stages wrote (``run_manifest.json`` of every stage, the evaluation's ``results.json``):
a line saying which stages ran with smoke-sized settings (a profile other than ``full``) and how to run the full
profile, the stage-by-stage scores per suite with their 95% intervals and a few held-out prompts with every stage's
reply side by side (the evaluation report's own pieces), training curves (loss, reward, KL, ...; charts from
:mod:`posttrain.evaluation.charts`), export verification results and the exact commands to run the model in Ollama and
llama.cpp. Re-render any time::

    python -m posttrain.pipeline.report recipes/configs/smollm2-135m/pipeline.yaml

Rendered from the Jinja2 templates ``pipeline.md.j2`` and ``pipeline.html.j2`` (beside the evaluation report's, in
``posttrain/evaluation/templates``) with one context, :func:`build_context`.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from posttrain.evaluation.charts import PALETTE, line_chart
from posttrain.evaluation.report import build_context as evaluation_context
from posttrain.evaluation.report import render_template
from posttrain.manifest import read_manifest
from posttrain.storage import atomic_write_text

__all__ = ["build_context", "collect", "render_html", "render_markdown", "write_pipeline_report"]

REPORT_MD, REPORT_HTML = "report.md", "report.html"


def _curves(manifest: dict[str, Any]) -> dict[str, list[float]]:
    curves = {}
    if manifest.get("loss_curve"):
        curves["loss"] = manifest["loss_curve"]
    for key, values in manifest.items():  # reward_curve, kl_curve, ... (see the stages' finish_run fields)
        if key.endswith("_curve") and key != "loss_curve" and isinstance(values, list) and values:
            curves[key[: -len("_curve")]] = values
    return {k: [float(v) for v in vals if isinstance(v, (int, float))] for k, vals in curves.items()}


FULL_PROFILE = "full"
MAKE_FULL = "make pipeline-full"
MAKE_CONFIG = "recipes/configs/smollm2-135m/pipeline.yaml"  # the config `make pipeline-full` runs


def profile_overrides(pipeline) -> dict[str, dict[str, Any]] | None:
    """What the pipeline's profile changed, per stage: the overrides of ``profiles.<profile>`` in its YAML (a
    ``<name>-fp32`` variant on top of ``<name>``'s, as :func:`~posttrain.pipeline.config.load_pipeline` applies them).
    Empty without a profile, None when the YAML cannot be read."""
    if not pipeline.profile:
        return {}
    try:
        profiles = (yaml.safe_load(Path(pipeline.source).read_text(encoding="utf-8")) or {}).get("profiles") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    names = [pipeline.profile]
    if pipeline.profile.endswith("-fp32") and pipeline.profile[: -len("-fp32")] in profiles:
        names.insert(0, pipeline.profile[: -len("-fp32")])
    shortened: dict[str, dict[str, Any]] = {}
    for name in names:
        for stage, overrides in (profiles.get(name) or {}).items():
            if isinstance(overrides, dict) and overrides:
                shortened.setdefault(str(stage), {}).update(overrides)
    order = {stage.name: i for i, stage in enumerate(pipeline.stages)}  # in the order the stages run
    return dict(sorted(shortened.items(), key=lambda item: order.get(item[0], len(order))))


def _setting(value: Any) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


def smoke_line(config: str, profile: str | None, shortened: dict[str, dict[str, Any]] | None) -> dict | None:
    """The report's one line on run size: which stages the profile shortened (smoke-sized settings) and the command
    for the full profile. None for the full profile, without a profile, or when the profile changed nothing."""
    if not profile or profile == FULL_PROFILE or (shortened is not None and not shortened):
        return None
    command = f"posttrain pipeline --config {shlex.quote(config)} --profile {FULL_PROFILE}"
    commands = [MAKE_FULL, command] if Path(config).as_posix().endswith(MAKE_CONFIG) else [command]
    stages = [
        {"name": name, "settings": ", ".join(f"{k}={_setting(v)}" for k, v in overrides.items())}
        for name, overrides in (shortened or {}).items()
    ]
    return {"profile": profile, "stages": stages, "commands": commands}


def collect(pipeline) -> dict[str, Any]:
    """Everything the report shows, read from the stages' outputs (missing pieces are simply left out)."""
    from posttrain.pipeline.state import read_state

    state = read_state(pipeline)
    stages, evaluations, exports = [], [], []
    for stage in pipeline.stages:
        out = stage.output_dir
        manifest = read_manifest(out) or {}
        record = {
            "name": stage.name,
            "stage": stage.stage,
            "output_dir": str(out),
            "wall_time_s": state.get("stages", {}).get(stage.name, {}).get("wall_time_s"),
            "done": bool(manifest),
            "curves": _curves(manifest),
            "metrics": manifest.get("metrics") or {},
        }
        stages.append(record)
        results = out / "results.json"
        if stage.stage in ("evaluate", "eval") and results.is_file():
            evaluations.append({"name": stage.name, "results": json.loads(results.read_text(encoding="utf-8"))})
        if manifest.get("verification") or manifest.get("commands"):
            exports.append(
                {
                    "name": stage.name,
                    "verification": manifest.get("verification") or {},
                    "commands": manifest.get("commands") or [],
                    "files": manifest.get("files") or {},
                }
            )
    return {
        "config": str(pipeline.source),
        "profile": pipeline.profile,
        "shortened": profile_overrides(pipeline),
        "stages": stages,
        "evaluations": evaluations,
        "exports": exports,
    }


def _verification_rows(verification: dict) -> list[tuple[str, str, str]]:
    if isinstance(verification.get("checks"), list):  # posttrain.export.verify's report
        return [(c["name"], c["status"], c.get("summary", "")) for c in verification["checks"]]
    rows = []
    for name, value in verification.items():
        if isinstance(value, dict):
            status = value.get("passed")
            detail = ", ".join(
                f"{k}={v}" for k, v in value.items() if k != "passed" and not isinstance(v, (dict, list))
            )
        else:
            status, detail = None, str(value)
        rows.append((name, "pass" if status is True else "FAIL" if status is False else "–", detail))
    return rows


def _quality(verification: dict) -> dict[str, Any]:
    """Quantization quality rows (KL divergence, top-1, perplexity per GGUF type) and the imatrix comparison."""
    from posttrain.export.quant_quality import quality_rows

    checks = verification.get("checks") if isinstance(verification, dict) else None
    if not isinstance(checks, list):
        return {"quality": [], "imatrix": []}
    imatrix = next((c.get("details", {}).get("comparison") for c in checks if c.get("name") == "imatrix"), None) or []
    return {
        "quality": quality_rows(checks),
        "imatrix": [
            {
                "type": c["type"],
                "kl_imatrix": f"{c['kl_imatrix']:.4g}",
                "kl_plain": f"{c['kl_plain']:.4g}",
                "top1_imatrix": f"{c['same_top_imatrix']:.2%}",
                "top1_plain": f"{c['same_top_plain']:.2%}",
            }
            for c in imatrix
        ],
    }


def build_context(report: dict) -> dict[str, Any]:
    """Everything both pipeline reports show, formatted once (``report`` is :func:`collect`'s)."""
    # each evaluation stage as the evaluation report shows it (scores with intervals, replies side by side): the
    # templates render it with the evaluation report's own pieces (_parts.*.j2)
    evaluations = [{"name": ev["name"], **evaluation_context(ev["results"])} for ev in report["evaluations"]]
    curves, charted = [], 0
    for s in report["stages"]:
        for name, vals in s["curves"].items():
            if not vals:
                continue
            chart = None
            if len(vals) > 1:  # one point is no curve: a table row only
                chart = line_chart(f"{s['name']} · {name}", vals, color=PALETTE[charted % len(PALETTE)])
                charted += 1
            curves.append(
                {
                    "stage": s["name"],
                    "name": name,
                    "first": f"{vals[0]:.4g}",
                    "last": f"{vals[-1]:.4g}",
                    "min": f"{min(vals):.4g}",
                    "max": f"{max(vals):.4g}",
                    "points": len(vals),
                    "chart": chart,
                }
            )
    return {
        "config": str(report["config"]),
        "profile": report["profile"] or None,
        "smoke": smoke_line(str(report["config"]), report["profile"] or None, report.get("shortened")),
        "stages": [
            {
                "name": s["name"],
                "output_dir": s["output_dir"],
                "done": "yes" if s["done"] else "no",
                "wall": f"{s['wall_time_s']} s" if s["wall_time_s"] is not None else "–",
            }
            for s in report["stages"]
        ],
        "evaluations": evaluations,
        "curves": curves,
        "exports": [
            {
                "name": ex["name"],
                "commands": list(ex["commands"]),
                "verification": [
                    {"name": n, "result": r, "detail": d} for n, r, d in _verification_rows(ex["verification"])
                ]
                if ex["verification"]
                else None,
                **_quality(ex["verification"]),
            }
            for ex in report["exports"]
        ],
    }


def render_markdown(report: dict) -> str:
    return render_template("pipeline.md.j2", build_context(report))


def render_html(report: dict) -> str:
    return render_template("pipeline.html.j2", build_context(report))


def write_pipeline_report(pipeline) -> list[Path]:
    context = build_context(collect(pipeline))
    out = Path(pipeline.output_dir)
    return [
        atomic_write_text(out / REPORT_MD, render_template("pipeline.md.j2", context)),
        atomic_write_text(out / REPORT_HTML, render_template("pipeline.html.j2", context)),
    ]


if __name__ == "__main__":
    from posttrain.pipeline.config import load_pipeline

    for p in write_pipeline_report(load_pipeline(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)):
        print(p)
