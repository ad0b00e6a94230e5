"""Verifying a built export: every check of :mod:`~posttrain.export.verify` and
:mod:`~posttrain.export.quant_quality` run against the files of an :class:`~posttrain.export.build.ExportBuild`, the
served GGUF answering an evaluation suite (:mod:`~posttrain.export.serve`), and the report they make
(``verification.json`` and ``verification.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.chat_templates.stops import end_of_turn_ids
from posttrain.configs import PosttrainArguments
from posttrain.export import quant_quality as qq
from posttrain.export import verify
from posttrain.export.build import ExportBuild, gguf_name
from posttrain.export.config import ExportArguments
from posttrain.export.llama_cpp import CONVERTER_TYPES
from posttrain.export.serve import ServeError, serve_and_evaluate, server_available
from posttrain.export.verify import ExportCheck
from posttrain.log import get_logger

logger = get_logger(__name__)


@dataclass
class HFReference:
    """What each GGUF is compared with: the HF model (float32), its greedy replies to the verification prompts, its
    generation config, and its next-token distributions on held-out text (None when ``quality_chunks`` is 0)."""

    model: Any
    prompts: list[list[int]]
    replies: list[list[int]]
    stops: list[int]
    generation_config: Any
    quality: qq.Reference | None


def verify_build(build: ExportBuild, args: ExportArguments) -> list[ExportCheck]:
    """Tokenization, greedy generations and quantization quality (KL divergence, top-1 agreement, perplexity on
    held-out text, llama.cpp's measures) per GGUF type, Go template and end-of-turn checks."""
    checks = [
        verify.check_go_template(
            build.tokenizer,
            build.modelfile.template,
            translation_error=build.template_note,
            system=build.modelfile.system,
        )
    ]
    reference = hf_reference(build, args)
    measured: dict[str, dict] = {}
    for gtype, path in build.files.items():
        llm = verify.load_gguf(path, n_ctx=build.n_ctx, threads=args.threads)
        checks += gguf_checks(build, args, reference, gtype, llm, measured)
        llm.close()
    if reference.quality is not None and build.plain_files:
        rows = {}
        for gtype, path in build.plain_files.items():
            llm = verify.load_gguf(path, n_ctx=build.n_ctx, threads=args.threads)
            logger.info("posttrain: verify: KL divergence of %s quantized without the importance matrix", gtype)
            rows[gtype] = (measured[gtype], qq.measure(reference.quality, qq.gguf_logits(llm)))
            llm.close()
        checks.append(qq.imatrix_comparison_check(rows, build.imatrix_info or {}))
    return checks


def hf_reference(build: ExportBuild, args: ExportArguments) -> HFReference:
    """The HF model's greedy replies to the verification prompts (chat-rendered when there is a chat template) and
    its quality reference."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = build.tokenizer
    conversations = verify.default_generation_conversations(args.verify_prompts)
    stops = end_of_turn_ids(tokenizer)
    if tokenizer.chat_template:
        prompts = [verify.chat_prompt_ids(tokenizer, c) for c in conversations]
    else:
        prompts = [tokenizer(c[-1]["content"], add_special_tokens=False)["input_ids"] for c in conversations]
    logger.info("posttrain: verify: greedy replies of the HF model (float32) on %d prompts", len(prompts))
    model = AutoModelForCausalLM.from_pretrained(build.model_dir, dtype=torch.float32)
    model.eval()
    replies = [verify.greedy_hf(model, p, max_new_tokens=args.verify_max_new_tokens, stops=stops) for p in prompts]
    generation_config = GenerationConfig.from_pretrained(build.model_dir)
    quality = quality_reference(model, build, args)
    return HFReference(model, prompts, replies, stops, generation_config, quality)


def quality_reference(model, build: ExportBuild, args: ExportArguments) -> qq.Reference | None:
    """The reference next-token distributions on held-out text (None when ``quality_chunks`` is 0)."""
    if not args.quality_chunks:
        return None
    ctx = min(args.quality_ctx, build.n_ctx)
    texts = qq.heldout_texts(build.tokenizer, max(50, args.quality_chunks * ctx // 10))
    chunks = qq.token_chunks(build.tokenizer, texts, ctx, args.quality_chunks, bos_id=build.bos_id)
    if args.quality_reference == "f16":
        llm = verify.load_gguf(build.files["f16"], n_ctx=build.n_ctx, threads=args.threads)
        try:
            return qq.Reference.build(chunks, qq.gguf_logits(llm), label="f16")
        finally:
            llm.close()
    return qq.Reference.build(chunks, qq.hf_logits(model), label="hf")


def _gates(args: ExportArguments, gtype: str) -> tuple[tuple[float | None, float | None], float | None]:
    """``((max KL divergence, min top-1 agreement), min greedy agreement)`` of a GGUF type; types below 8 bits are
    measured and reported, not gated."""
    if gtype in ("f32", "f16", "bf16"):
        return (args.max_kl_f16, args.min_top1_f16), args.min_agreement_f16
    if gtype == "q8_0":
        return (args.max_kl_q8_0, args.min_top1_q8_0), args.min_agreement_q8_0
    return (None, None), None


def gguf_checks(
    build: ExportBuild, args: ExportArguments, reference: HFReference, gtype: str, llm, measured: dict[str, dict]
) -> list[ExportCheck]:
    """The checks of one GGUF (loaded as ``llm``); its quality measures are added to ``measured``."""
    path = build.files[gtype]
    tokenizer = build.tokenizer
    checks = []
    if gtype == args.modelfile_type or gtype == next(iter(build.files)):
        checks.append(verify.check_tokenization(tokenizer, llm, label=gtype))
    if gtype == args.modelfile_type:
        checks.append(verify.check_end_of_turn(tokenizer, reference.generation_config, path, llm, build.modelfile_text))
    logger.info("posttrain: verify: greedy replies of %s (llama.cpp)", path.name)
    replies = [
        verify.greedy_llama(llm, p, max_new_tokens=args.verify_max_new_tokens, stops=reference.stops)
        for p in reference.prompts
    ]
    (max_kl, min_top1), threshold = _gates(args, gtype)
    margins = verify.divergence_margins(reference.model, reference.prompts, reference.replies, replies)
    checks.append(
        verify.check_generations(
            gtype, reference.replies, replies, threshold=threshold, margins=margins, tie_margin=args.verify_tie_margin
        )
    )
    if reference.quality is not None:
        logger.info(
            "posttrain: verify: KL divergence of %s from %s on held-out text", path.name, reference.quality.label
        )
        measured[gtype] = qq.measure(reference.quality, qq.gguf_logits(llm))
        extra = {}
        if gtype not in CONVERTER_TYPES:
            extra = {"imatrix": bool(build.imatrix_info), **qq.tensor_types(path)}
        checks.append(
            qq.check_quality(
                gtype, measured[gtype], max_kl=max_kl, min_top1=min_top1, reference=reference.quality.label, extra=extra
            )
        )
    return checks


def check_served(output_dir: Path, args: ExportArguments, pt_args: PosttrainArguments, num_ctx: int) -> ExportCheck:
    """The published GGUF served by llama.cpp's OpenAI-compatible server, answering ``args.serve_suite``."""
    if not server_available():
        return ExportCheck("served", None, "skipped: pip install 'llama-cpp-python[server]'")
    try:
        served = serve_and_evaluate(
            output_dir / gguf_name(args.modelfile_type),
            output_dir / "served",
            alias=args.ollama_name,
            n_ctx=min(num_ctx, 4096),
            suite=args.serve_suite,
            max_samples=args.serve_max_samples,
            system_prompt=pt_args.system_prompt,
            max_new_tokens=args.serve_max_new_tokens,
            identity=pt_args.identity,
            threads=args.threads,
        )
    except (ServeError, OSError) as err:
        return ExportCheck("served", False, f"serving failed: {err}")
    ok = served["status"] == "complete" and served["answered"] == served["samples"] > 0
    scores = ", ".join(f"{k} {v:.0%}" for k, v in served["scores"].items()) or "no scores"
    return ExportCheck(
        "served",
        ok,
        f"{served['answered']}/{served['samples']} {args.serve_suite} samples answered by "
        f"the served {gguf_name(args.modelfile_type)} ({served['finished']} ended with end of turn); {scores}",
        served,
    )


def write_verification(checks: list[ExportCheck], output_dir: Path, *, title: str, extra: dict) -> dict:
    """Log the checks, write ``verification.json`` and ``verification.md`` (with the quality table) into
    ``output_dir``; returns the report."""
    verify.print_checks(checks)
    report = verify.write_report(
        checks, output_dir / "verification.json", output_dir / "verification.md", title=title, extra=extra
    )
    qq.append_markdown(output_dir / "verification.md", checks)
    return report
