"""``posttrain export`` / ``recipes/export.py``: HF folder → GGUF (llama.cpp's converter and quantizer) → Ollama
Modelfile → verification of what ships → the served GGUF answering an evaluation suite.

Order of work: settings and inputs are checked first (architecture convertible by the pinned llama.cpp, free disk
space, chat template), then everything is written into a temporary folder beside ``output_dir`` and moved into
place only when complete. A failed verification leaves the files in place for inspection, writes the report, no
run manifest, and exits with status 1.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from posttrain.chat_templates import has_generation_tags, strip_generation_tags
from posttrain.configs import PosttrainArguments
from posttrain.export import ExportError, llama_cpp, verify
from posttrain.export import quant_quality as qq
from posttrain.export.config import ExportArguments
from posttrain.export.llama_cpp import CONVERTER_TYPES
from posttrain.export.modelfile import (
    Modelfile,
    choose_template,
    default_num_ctx,
    ollama_commands,
    ollama_create,
)
from posttrain.export.serve import ServeError, serve_and_evaluate, server_available
from posttrain.export.special_tokens import end_of_turn_ids
from posttrain.manifest import write_manifest
from posttrain.models.adapters import is_adapter
from posttrain.models.merge import adapter_chain, merge_chain, save_merged
from posttrain.models.resolve import resolve_model

#: bytes per parameter of each GGUF type (upper estimates, for the free-disk check)
BYTES_PER_PARAM = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.07}
QUANTIZED_BYTES_PER_PARAM = 0.75  # Q2..Q6 K-quants and friends are smaller; rounded up
DISK_MARGIN = 1.15


def make_parser():
    from trl import TrlParser

    return TrlParser((PosttrainArguments, ExportArguments))


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


def resolve_source(args: ExportArguments, work: Path) -> Path:
    """The HF folder to convert: a merged/plain folder or alias as is; an adapter chain merged first."""

    path = Path(args.model_name_or_path).expanduser()
    if path.exists() and is_adapter(path):
        model, tokenizer, report = merge_chain(str(path), base_model=args.base_model)
        if report.max_drift > 1e-3:
            raise ExportError(f"merging {path} changed the logits by up to {report.max_drift:.3g}")
        return save_merged(model, tokenizer, work / "hf", report)
    return Path(resolve_model(args.model_name_or_path))


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
        print(f"posttrain: warning: {choice.note}; the Modelfile relies on the Jinja template in the GGUF", flush=True)
    elif choice.note:
        for line in choice.note.splitlines():
            print(f"posttrain: note: {line}", flush=True)
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


def gguf_name(gtype: str) -> str:
    return f"model.{gtype}.gguf"


def run_verification(
    model_dir: Path,
    work: Path,
    files: dict[str, Path],
    modelfile,
    modelfile_text: str,
    note: str | None,
    args: ExportArguments,
    tokenizer,
    n_ctx: int,
    *,
    plain_files: dict[str, Path] | None = None,
    imatrix_info: dict | None = None,
    bos_id: int | None = None,
):
    """Tokenization, greedy generations and quantization quality (KL divergence, top-1 agreement, perplexity on
    held-out text, llama.cpp's measures) per GGUF type, Go template and end-of-turn checks."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    checks = [verify.check_go_template(tokenizer, modelfile.template, translation_error=note, system=modelfile.system)]
    conversations = verify.default_generation_conversations(args.verify_prompts)
    stops = end_of_turn_ids(tokenizer)
    if tokenizer.chat_template:
        prompts = [verify.chat_prompt_ids(tokenizer, c) for c in conversations]
    else:
        prompts = [tokenizer(c[-1]["content"], add_special_tokens=False)["input_ids"] for c in conversations]
    print(f"posttrain: verify: greedy replies of the HF model (float32) on {len(prompts)} prompts", flush=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    reference_replies = [
        verify.greedy_hf(model, p, max_new_tokens=args.verify_max_new_tokens, stops=stops) for p in prompts
    ]
    generation_config = GenerationConfig.from_pretrained(model_dir)
    reference = quality_reference(model, files, args, tokenizer, n_ctx, bos_id)
    gates = {
        "f32": (args.max_kl_f16, args.min_top1_f16),
        "f16": (args.max_kl_f16, args.min_top1_f16),
        "bf16": (args.max_kl_f16, args.min_top1_f16),
        "q8_0": (args.max_kl_q8_0, args.min_top1_q8_0),
    }
    measured: dict[str, dict] = {}
    for gtype, path in files.items():
        llm = verify.load_gguf(path, n_ctx=n_ctx, threads=args.threads)
        if gtype == args.modelfile_type or gtype == next(iter(files)):
            checks.append(verify.check_tokenization(tokenizer, llm, label=gtype))
        if gtype == args.modelfile_type:
            checks.append(verify.check_end_of_turn(tokenizer, generation_config, path, llm, modelfile_text))
        print(f"posttrain: verify: greedy replies of {path.name} (llama.cpp)", flush=True)
        replies = [verify.greedy_llama(llm, p, max_new_tokens=args.verify_max_new_tokens, stops=stops) for p in prompts]
        threshold = {
            "f32": args.min_agreement_f16,
            "f16": args.min_agreement_f16,
            "bf16": args.min_agreement_f16,
            "q8_0": args.min_agreement_q8_0,
        }.get(gtype)
        margins = verify.divergence_margins(model, prompts, reference_replies, replies)
        checks.append(
            verify.check_generations(
                gtype,
                reference_replies,
                replies,
                threshold=threshold,
                margins=margins,
                tie_margin=args.verify_tie_margin,
            )
        )
        if reference is not None:
            print(
                f"posttrain: verify: KL divergence of {path.name} from {reference.label} on held-out text", flush=True
            )
            measured[gtype] = qq.measure(reference, qq.gguf_logits(llm))
            max_kl, min_top1 = gates.get(gtype, (None, None))
            extra = {"imatrix": bool(imatrix_info)} if gtype not in CONVERTER_TYPES else {}
            if gtype not in CONVERTER_TYPES:
                extra.update(qq.tensor_types(path))
            checks.append(
                qq.check_quality(
                    gtype, measured[gtype], max_kl=max_kl, min_top1=min_top1, reference=reference.label, extra=extra
                )
            )
        llm.close()
    if reference is not None and plain_files:
        rows = {}
        for gtype, path in plain_files.items():
            llm = verify.load_gguf(path, n_ctx=n_ctx, threads=args.threads)
            print(f"posttrain: verify: KL divergence of {gtype} quantized without the importance matrix", flush=True)
            rows[gtype] = (measured[gtype], qq.measure(reference, qq.gguf_logits(llm)))
            llm.close()
        checks.append(qq.imatrix_comparison_check(rows, imatrix_info or {}))
    del model
    return checks


def quality_reference(model, files: dict[str, Path], args: ExportArguments, tokenizer, n_ctx: int, bos_id):
    """The reference next-token distributions on held-out text (None when ``quality_chunks`` is 0)."""
    if not args.quality_chunks:
        return None
    ctx = min(args.quality_ctx, n_ctx)
    texts = qq.heldout_texts(tokenizer, max(50, args.quality_chunks * ctx // 10))
    chunks = qq.token_chunks(tokenizer, texts, ctx, args.quality_chunks, bos_id=bos_id)
    if args.quality_reference == "f16":
        llm = verify.load_gguf(files["f16"], n_ctx=n_ctx, threads=args.threads)
        try:
            return qq.Reference.build(chunks, qq.gguf_logits(llm), label="f16")
        finally:
            llm.close()
    return qq.Reference.build(chunks, qq.hf_logits(model), label="hf")


def build_imatrix(f16: Path, tokenizer, pt_args: PosttrainArguments, args: ExportArguments, work: Path, bos_id):
    """llama.cpp's importance matrix of the f16 GGUF over training conversations; written to imatrix.gguf."""
    import time

    source = [str(s.path) for s in pt_args.datasets] if pt_args.datasets else ["builtin tasks (train pool)"]
    n_texts = max(64, args.imatrix_chunks * args.imatrix_ctx // 12)
    texts = qq.calibration_texts(tokenizer, pt_args.datasets or None, n_texts, identity=pt_args.identity)
    chunks = qq.token_chunks(tokenizer, texts, args.imatrix_ctx, args.imatrix_chunks, bos_id=bos_id)
    print(
        f"posttrain: importance matrix: {len(chunks)} chunks of {args.imatrix_ctx} tokens from {', '.join(source)}",
        flush=True,
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


#: what an export writes into its output folder (removed before a new export moves in: runs never mix)
EXPORT_ARTIFACTS = ("model.*.gguf", "Modelfile", "verification.json", "verification.md", "served", "hf", "imatrix.gguf")
IMATRIX_FILE = "imatrix.gguf"


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


def run_commands(args, output_dir: Path, system_prompt: str | None) -> list[str]:
    """The exact commands to run the exported model in Ollama and in llama.cpp (for the manifest and reports)."""
    import shlex

    gguf = output_dir / gguf_name(args.modelfile_type)
    chat = ["python", "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", "8000"]
    cli = ["llama-cli", "-m", str(gguf), "-cnv"] + (["-sys", system_prompt] if system_prompt else [])
    return [
        *ollama_commands(args.ollama_name, output_dir / "Modelfile"),
        "# llama.cpp: interactive chat (the GGUF's own chat template), or an OpenAI-compatible server",
        shlex.join(cli),
        shlex.join(chat),
    ]


def main(pt_args: PosttrainArguments, args: ExportArguments):
    """check → convert/quantize → Modelfile → verify → move into place → serve → ollama create → manifest."""
    from transformers import AutoTokenizer

    output_dir = Path(args.output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    converter = llama_cpp.converter_dir(args.llama_cpp_dir)
    source = Path(args.model_name_or_path).expanduser()

    if source.exists() and is_adapter(source):  # the chain's root base decides the architecture
        root = adapter_chain(str(source), args.base_model)[0]
        llama_cpp.check_architecture(Path(resolve_model(root)), converter)
    else:
        llama_cpp.check_architecture(Path(resolve_model(args.model_name_or_path)), converter)
    work = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-export-", dir=output_dir.parent))
    try:
        model_dir = resolve_source(args, work)
        architecture = llama_cpp.check_architecture(model_dir, converter)
        n_params = count_parameters(model_dir)
        check_disk(output_dir.parent, required_bytes(n_params, args.gguf_types))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if has_generation_tags(tokenizer.chat_template):  # the GGUF gets the same (llama_cpp._convert_runner)
            tokenizer.chat_template = strip_generation_tags(tokenizer.chat_template)
            print(
                "posttrain: note: the chat template is a TRL training template; the GGUF and the Modelfile get its "
                "inference template (the {% generation %} markers removed, which renders the same text)",
                flush=True,
            )
        config = json.loads((model_dir / "config.json").read_text())
        if not tokenizer.chat_template:
            print("posttrain: warning: the model has no chat template; the Modelfile and GGUF carry none", flush=True)

        files: dict[str, Path] = {}
        plain_files: dict[str, Path] = {}
        imatrix_info = None
        conversions = []
        quantized = [t for t in args.gguf_types if t not in llama_cpp.CONVERTER_TYPES]
        for gtype in args.gguf_types:
            if gtype in llama_cpp.CONVERTER_TYPES:
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
            bos_id = qq.gguf_bos(f16)
            if args.imatrix:
                means, imatrix_info = build_imatrix(f16, tokenizer, pt_args, args, work, bos_id)
            for gtype in quantized:
                files[gtype] = work / gguf_name(gtype)
                llama_cpp.quantize(f16, files[gtype], gtype, threads=args.threads, imatrix=means)
                if means is not None and args.verify and args.quality_chunks:  # the side-by-side comparison
                    plain_files[gtype] = work / f"plain.{gtype}.gguf"
                    llama_cpp.quantize(f16, plain_files[gtype], gtype, threads=args.threads)
            if "f16" not in files:
                f16.unlink()
        files = {t: files[t] for t in args.gguf_types}
        bos_id = qq.gguf_bos(next(iter(files.values())))
        fallback = next((c["pre_tokenizer_fallback"] for c in conversions if c["pre_tokenizer_fallback"]), None)

        modelfile, note = build_modelfile(tokenizer, config, args, pt_args)
        modelfile_text = modelfile.render()
        (work / "Modelfile").write_text(modelfile_text, encoding="utf-8")
        n_ctx = min(1024, int(config.get("max_position_embeddings") or 1024))

        checks = []
        if args.verify:
            checks = run_verification(
                model_dir,
                work,
                files,
                modelfile,
                modelfile_text,
                note,
                args,
                tokenizer,
                n_ctx,
                plain_files=plain_files,
                imatrix_info=imatrix_info,
                bos_id=bos_id,
            )
        names = [path.name for path in files.values()] + ["Modelfile"]
        if imatrix_info:
            names.append(IMATRIX_FILE)
        if (work / "hf").is_dir():
            names.append("hf")
        move_into_place(work, output_dir, names)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    served = None
    if args.verify and args.serve:
        if not server_available():
            checks.append(verify.Check("served", None, "skipped: pip install 'llama-cpp-python[server]'"))
        else:
            try:
                served = serve_and_evaluate(
                    output_dir / gguf_name(args.modelfile_type),
                    output_dir / "served",
                    alias=args.ollama_name,
                    n_ctx=min(modelfile.num_ctx, 4096),
                    suite=args.serve_suite,
                    max_samples=args.serve_max_samples,
                    system_prompt=pt_args.system_prompt,
                    max_new_tokens=args.serve_max_new_tokens,
                    identity=pt_args.identity,
                    threads=args.threads,
                )
                ok = served["status"] == "complete" and served["answered"] == served["samples"] > 0
                scores = ", ".join(f"{k} {v:.0%}" for k, v in served["scores"].items()) or "no scores"
                checks.append(
                    verify.Check(
                        "served",
                        ok,
                        f"{served['answered']}/{served['samples']} {args.serve_suite} samples answered by "
                        f"the served {gguf_name(args.modelfile_type)} ({served['finished']} ended with end of turn); "
                        f"{scores}",
                        served,
                    )
                )
            except (ServeError, OSError) as err:
                checks.append(verify.Check("served", False, f"serving failed: {err}"))

    report = None
    if checks:
        verify.print_checks(checks)
        report = verify.write_report(
            checks,
            output_dir / "verification.json",
            output_dir / "verification.md",
            title=f"Export verification: {args.model_name_or_path}",
            extra={
                "architecture": architecture,
                "gguf": {t: p.name for t, p in files.items()},
                "converter": llama_cpp.converter_info(converter),
                "pre_tokenizer_fallback": fallback,
                "imatrix": imatrix_info,
            },
        )
        qq.append_markdown(output_dir / "verification.md", checks)
    if report is not None and not report["passed"]:
        failed = [c["name"] for c in report["checks"] if c["status"] == "FAIL"]
        print(
            f"posttrain: error: export verification failed ({', '.join(failed)}); see {output_dir / 'verification.md'}",
            flush=True,
        )
        raise SystemExit(1)
    if args.ollama_create:
        ollama_create(args.ollama_name, output_dir / "Modelfile")
    else:
        print(
            "posttrain: to serve it with Ollama:\n  "
            + "\n  ".join(ollama_commands(args.ollama_name, output_dir / "Modelfile"))
        )
    write_manifest(
        output_dir,
        stage="export",
        configs=(pt_args, args),
        base_model=args.model_name_or_path,
        architecture=architecture,
        gguf={t: p.name for t, p in files.items()},
        converter=llama_cpp.converter_info(converter),
        pre_tokenizer_fallback=fallback,
        modelfile_template="go" if modelfile.template else "gguf-jinja",
        verification=report,
        commands=run_commands(args, output_dir, pt_args.system_prompt),
    )
    print(f"posttrain: export written to {output_dir}", flush=True)
    return report
