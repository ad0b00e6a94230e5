"""``posttrain export`` / ``recipes/export.py``: HF folder → GGUF (llama.cpp's converter and quantizer) → Ollama
Modelfile → verification of what ships → the served GGUF answering an evaluation suite.

Order of work: settings and inputs are checked first (architecture convertible by the pinned llama.cpp, free disk
space, chat template), then everything is written into a temporary folder beside ``output_dir`` and moved into
place only when complete. A failed verification leaves the files in place for inspection, writes the report, no
run manifest, and exits with status 1. The machinery is in :mod:`posttrain.export` (``build``, ``verify_build``,
``publish``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from posttrain.configs import PosttrainArguments
from posttrain.export import llama_cpp
from posttrain.export.build import build_export, resolve_source
from posttrain.export.config import ExportArguments
from posttrain.export.modelfile import ollama_commands, ollama_create
from posttrain.export.publish import move_into_place, run_commands
from posttrain.export.verify_build import check_served, verify_build, write_verification
from posttrain.log import get_logger
from posttrain.manifest import write_manifest

logger = get_logger(__name__)


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, ExportArguments))


def main(pt_args: PosttrainArguments, args: ExportArguments):
    """resolve → check → convert/quantize → Modelfile → verify → move into place → serve → ollama create → manifest."""
    output_dir = Path(args.output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    converter = llama_cpp.converter_dir(args.llama_cpp_dir)
    source = resolve_source(args.model_name_or_path, args.base_model)
    architecture = llama_cpp.check_architecture(source.root_dir, converter)  # before any work

    with tempfile.TemporaryDirectory(
        prefix=f".{output_dir.name}-export-", dir=output_dir.parent, ignore_cleanup_errors=True
    ) as work:
        build = build_export(source, args, pt_args, converter, Path(work))
        checks = verify_build(build, args) if args.verify else []
        move_into_place(build.work, output_dir, build.names)
    if args.verify and args.serve:
        checks.append(check_served(output_dir, args, pt_args, build.modelfile.num_ctx))

    facts = {
        "architecture": architecture,
        "gguf": build.gguf,
        "converter": llama_cpp.converter_info(converter),
        "pre_tokenizer_fallback": build.pre_tokenizer_fallback,
    }
    report = None
    if checks:
        title = f"Export verification: {args.model_name_or_path}"
        report = write_verification(checks, output_dir, title=title, extra={**facts, "imatrix": build.imatrix_info})
    if report is not None and not report["passed"]:
        failed = [c["name"] for c in report["checks"] if c["status"] == "FAIL"]
        logger.error("export verification failed (%s); see %s", ", ".join(failed), output_dir / "verification.md")
        raise SystemExit(1)

    if args.ollama_create:
        ollama_create(args.ollama_name, output_dir / "Modelfile")
    else:
        commands = ollama_commands(args.ollama_name, output_dir / "Modelfile")
        logger.info("posttrain: to serve it with Ollama:\n  %s", "\n  ".join(commands))
    write_manifest(
        output_dir,
        stage="export",
        configs=(pt_args, args),
        base_model=args.model_name_or_path,
        **facts,
        modelfile_template="go" if build.modelfile.template else "gguf-jinja",
        verification=report,
        commands=run_commands(args, output_dir, pt_args.system_prompt),
    )
    logger.info("posttrain: export written to %s", output_dir)
    return report
