"""Publishing an export: its files moved from the work folder into ``output_dir`` (an earlier export's files
removed first, the user's own files kept), and the commands that run what was published."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from posttrain.export.build import IMATRIX_FILE, gguf_name
from posttrain.export.config import ExportArguments
from posttrain.export.modelfile import ollama_commands

#: what an export writes into its output folder (removed before a new export moves in: runs never mix)
EXPORT_ARTIFACTS = ("model.*.gguf", "Modelfile", "verification.json", "verification.md", "served", "hf", IMATRIX_FILE)


def move_into_place(work: Path, output_dir: Path, names: list[str]) -> None:
    """Replace an earlier export's files in ``output_dir`` by ``names`` from ``work``; the manifest goes first, so
    the folder never claims a finished export while files change (the new manifest is written last)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "run_manifest.json").unlink(missing_ok=True)
    for pattern in EXPORT_ARTIFACTS:
        for stale in output_dir.glob(pattern):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    for name in names:
        source, target = work / name, output_dir / name
        if target.is_dir() and source.is_dir():
            shutil.rmtree(target)
        source.replace(target)


def run_commands(args: ExportArguments, output_dir: Path, system_prompt: str | None) -> list[str]:
    """The exact commands to run the exported model in Ollama and in llama.cpp (for the manifest and reports)."""
    gguf = output_dir / gguf_name(args.modelfile_type)
    chat = ["python", "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", "8000"]
    cli = ["llama-cli", "-m", str(gguf), "-cnv"] + (["-sys", system_prompt] if system_prompt else [])
    return [
        *ollama_commands(args.ollama_name, output_dir / "Modelfile"),
        "# llama.cpp: interactive chat (the GGUF's own chat template), or an OpenAI-compatible server",
        shlex.join(cli),
        shlex.join(chat),
    ]
