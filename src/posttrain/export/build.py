"""Building an export in a work folder: the HF folder to convert (an adapter chain merged first), the free-disk check,
the GGUF files (llama.cpp's converter and quantizer, with an importance matrix), and the Ollama Modelfile.

:func:`resolve_source` says once what the export converts (the stage checks its architecture before any work);
:func:`build_export` writes every file into the work folder and returns an :class:`ExportBuild`, what verification
(:mod:`~posttrain.export.verify_build`), publishing (:mod:`~posttrain.export.publish`) and the manifest read.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.chat_templates import has_generation_tags, strip_generation_tags
from posttrain.configs import PosttrainArguments
from posttrain.export import ExportError, llama_cpp
from posttrain.export import quant_quality as qq
from posttrain.export.config import ExportArguments
from posttrain.export.llama_cpp import CONVERTER_TYPES
from posttrain.export.modelfile import Modelfile, choose_template, default_num_ctx
from posttrain.log import get_logger
from posttrain.models.adapters import is_adapter
from posttrain.models.merge import adapter_chain, merge_adapters, save_merged
from posttrain.models.resolve import resolve_model

logger = get_logger(__name__)

#: bytes per parameter of each GGUF type (upper estimates, for the free-disk check)
BYTES_PER_PARAM = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.07}
QUANTIZED_BYTES_PER_PARAM = 0.75  # Q2..Q6 K-quants and friends are smaller; rounded up
DISK_MARGIN = 1.15
IMATRIX_FILE = "imatrix.gguf"


@dataclass
class ExportSource:
    """What an export converts, resolved once: a model (embedded alias, HF folder, hub id), or an adapter chain that
    is merged first."""

    root: str  # the model, or the chain's root base
    root_dir: Path  # ``root`` resolved: its config.json decides the architecture
    adapters: list[Path]  # the chain's adapters, applied first to last (empty for a model)


def resolve_source(name_or_path: str, base_model: str | None = None) -> ExportSource:
    """The model ``name_or_path`` names; for an adapter folder its chain (``base_model`` overrides the root base)."""
    path = Path(name_or_path).expanduser()
    if path.exists() and is_adapter(path):
        root, adapters = adapter_chain(str(path), base_model)
        return ExportSource(root, Path(resolve_model(root)), adapters)
    return ExportSource(name_or_path, Path(resolve_model(name_or_path)), [])


@dataclass
class ExportBuild:
    """The files :func:`build_export` wrote into ``work`` and what verification and the manifest need of them."""

    work: Path
    model_dir: Path  # the HF folder converted (``work/hf`` when an adapter chain was merged)
    tokenizer: Any
    config: dict  # the model's config.json
    files: dict[str, Path]  # GGUF type -> file, in ``gguf_types`` order
    plain_files: dict[str, Path]  # quantized without the importance matrix, for the side-by-side comparison
    imatrix_info: dict | None
    pre_tokenizer_fallback: str | None
    bos_id: int | None  # the GGUF's BOS id (quality chunks start with it)
    modelfile: Modelfile
    modelfile_text: str
    template_note: str | None  # why the Modelfile has no TEMPLATE (None when it has one)
    n_ctx: int  # llama.cpp's context for verification

    @property
    def names(self) -> list[str]:
        """What goes into the output folder."""
        names = [path.name for path in self.files.values()] + ["Modelfile"]
        if self.imatrix_info:
            names.append(IMATRIX_FILE)
        if (self.work / "hf").is_dir():
            names.append("hf")
        return names

    @property
    def gguf(self) -> dict[str, str]:
        return {gtype: path.name for gtype, path in self.files.items()}


def build_export(
    source: ExportSource, args: ExportArguments, pt_args: PosttrainArguments, converter: Path, work: Path
) -> ExportBuild:
    """HF folder → disk check → tokenizer → GGUF files → Modelfile, all written into ``work``."""
    model_dir = hf_folder(source, work)
    check_disk(work.parent, required_bytes(count_parameters(model_dir), args.gguf_types))
    tokenizer = load_tokenizer(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    files, plain_files, imatrix_info, fallback = build_ggufs(model_dir, tokenizer, args, pt_args, converter, work)
    modelfile, note = build_modelfile(tokenizer, config, args, pt_args)
    modelfile_text = modelfile.render()
    (work / "Modelfile").write_text(modelfile_text, encoding="utf-8")
    return ExportBuild(
        work=work,
        model_dir=model_dir,
        tokenizer=tokenizer,
        config=config,
        files=files,
        plain_files=plain_files,
        imatrix_info=imatrix_info,
        pre_tokenizer_fallback=fallback,
        bos_id=qq.gguf_bos(next(iter(files.values()))),
        modelfile=modelfile,
        modelfile_text=modelfile_text,
        template_note=note,
        n_ctx=min(1024, int(config.get("max_position_embeddings") or 1024)),
    )


def hf_folder(source: ExportSource, work: Path) -> Path:
    """The HF folder to convert: the model as is; an adapter chain merged in float32 into ``work/hf``."""
    if not source.adapters:
        return source.root_dir
    model, tokenizer, report = merge_adapters(source.root, source.adapters)
    if report.max_drift > 1e-3:
        raise ExportError(f"merging {source.adapters[-1]} changed the logits by up to {report.max_drift:.3g}")
    return save_merged(model, tokenizer, work / "hf", report)


def count_parameters(model_dir: Path) -> int:
    """Parameter count from the safetensors headers (nothing is loaded)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 -- a safetensors handle, not a dict
                n = 1
                for dim in handle.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total


def required_bytes(n_params: int, gguf_types: list[str]) -> int:
    """Upper estimate of the disk space the GGUF files of ``gguf_types`` take (the quantizer's f16 input included)."""
    per_param = sum(BYTES_PER_PARAM.get(t, QUANTIZED_BYTES_PER_PARAM) for t in gguf_types)
    if any(t not in CONVERTER_TYPES for t in gguf_types) and "f16" not in gguf_types:
        per_param += BYTES_PER_PARAM["f16"]  # the quantizer's temporary f16 input
    return int(n_params * per_param * DISK_MARGIN) + 64 * 2**20


def check_disk(target: Path, needed: int) -> None:
    probe = target
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise ExportError(
            f"not enough free disk space in {probe} for the export: about {needed / 2**30:.2f} GiB "
            f"needed, {free / 2**30:.2f} GiB free (fewer gguf_types, or another output_dir)"
        )


def load_tokenizer(model_dir: Path):
    """The model's tokenizer, with the inference template of a TRL training template (as the GGUF gets it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if has_generation_tags(tokenizer.chat_template):  # the GGUF gets the same (llama_cpp._convert_runner)
        tokenizer.chat_template = strip_generation_tags(tokenizer.chat_template)
        logger.info(
            "posttrain: note: the chat template is a TRL training template; the GGUF and the Modelfile get its "
            "inference template (the {% generation %} markers removed, which renders the same text)"
        )
    if not tokenizer.chat_template:
        logger.warning("the model has no chat template; the Modelfile and GGUF carry none")
    return tokenizer


def gguf_name(gtype: str) -> str:
    return f"model.{gtype}.gguf"


def build_ggufs(model_dir: Path, tokenizer, args: ExportArguments, pt_args: PosttrainArguments, converter, work: Path):
    """Every GGUF of ``args.gguf_types`` in ``work``: converter types straight from the HF folder, quantized types
    from an f16 GGUF (a temporary one when f16 is not wanted), with the importance matrix when ``args.imatrix``.
    Returns ``(files, plain_files, imatrix_info, pre_tokenizer_fallback)``."""
    files: dict[str, Path] = {}
    plain_files: dict[str, Path] = {}
    imatrix_info = None
    conversions = []
    quantized = [t for t in args.gguf_types if t not in CONVERTER_TYPES]
    for gtype in args.gguf_types:
        if gtype in CONVERTER_TYPES:
            files[gtype] = work / gguf_name(gtype)
            conversions.append(
                llama_cpp.convert(model_dir, files[gtype], gtype, llama_cpp=converter, threads=args.threads)
            )
    if quantized:
        f16 = files.get("f16")
        if f16 is None:
            f16 = work / "tmp.f16.gguf"
            conversions.append(llama_cpp.convert(model_dir, f16, "f16", llama_cpp=converter, threads=args.threads))
        means = None
        if args.imatrix:
            means, imatrix_info = build_imatrix(f16, tokenizer, pt_args, args, work, qq.gguf_bos(f16))
        for gtype in quantized:
            files[gtype] = work / gguf_name(gtype)
            llama_cpp.quantize(f16, files[gtype], gtype, threads=args.threads, imatrix=means)
            if means is not None and args.verify and args.quality_chunks:  # the side-by-side comparison
                plain_files[gtype] = work / f"plain.{gtype}.gguf"
                llama_cpp.quantize(f16, plain_files[gtype], gtype, threads=args.threads)
        if "f16" not in files:
            f16.unlink()
    fallback = next((c["pre_tokenizer_fallback"] for c in conversions if c["pre_tokenizer_fallback"]), None)
    return {t: files[t] for t in args.gguf_types}, plain_files, imatrix_info, fallback


def build_imatrix(f16: Path, tokenizer, pt_args: PosttrainArguments, args: ExportArguments, work: Path, bos_id):
    """llama.cpp's importance matrix of the f16 GGUF over training conversations; written to imatrix.gguf."""
    source = [str(s.path) for s in pt_args.datasets] if pt_args.datasets else ["builtin tasks (train pool)"]
    n_texts = max(64, args.imatrix_chunks * args.imatrix_ctx // 12)
    texts = qq.calibration_texts(tokenizer, pt_args.datasets or None, n_texts, identity=pt_args.identity)
    chunks = qq.token_chunks(tokenizer, texts, args.imatrix_ctx, args.imatrix_chunks, bos_id=bos_id)
    logger.info(
        "posttrain: importance matrix: %d chunks of %d tokens from %s", len(chunks), args.imatrix_ctx, ", ".join(source)
    )
    start = time.perf_counter()
    imatrix = qq.collect_imatrix(f16, chunks, threads=args.threads)
    qq.write_imatrix_gguf(work / IMATRIX_FILE, imatrix, datasets=source)
    info = {
        "file": IMATRIX_FILE,
        "datasets": source,
        "chunks": imatrix.chunks,
        "chunk_size": imatrix.chunk_size,
        "tokens": imatrix.tokens,
        "weights": len(imatrix.sums),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return qq.imatrix_means(imatrix), info


def special_constants(tokenizer) -> dict[str, str]:
    constants = {}
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, str):
            constants[name] = value
    return constants


def build_modelfile(tokenizer, config: dict, args: ExportArguments, pt_args: PosttrainArguments):
    """The Modelfile, and why it has no TEMPLATE (None when it has one): known family template first, AST
    translation otherwise (``modelfile.choose_template``)."""
    choice = choose_template(tokenizer, special_constants(tokenizer))
    if choice.template is None and tokenizer.chat_template:
        logger.warning("%s; the Modelfile relies on the Jinja template in the GGUF", choice.note)
    elif choice.note:
        for line in choice.note.splitlines():
            logger.info("posttrain: note: %s", line)
    modelfile = Modelfile(
        gguf=f"./{gguf_name(args.modelfile_type)}",
        template=choice.template,
        stops=choice.stops,
        system=pt_args.system_prompt,
        num_ctx=default_num_ctx(config, args.num_ctx),
        template_note=choice.note,
        template_source=choice.source,
        adds_bos=choice.adds_bos,
        capabilities=choice.capabilities,
    )
    return modelfile, (choice.note if choice.template is None else None)
