"""Quantization quality as llama.cpp's ``llama-perplexity --kl-divergence`` measures it, and importance matrices.

**Metrics.** A held-out text set (built-in tasks' ``validation`` pool, rendered through the chat template: never
training data) is tokenized, cut into chunks of ``n_ctx`` tokens (BOS first where the GGUF adds one) and run
through a reference (the float32 HF model, or the f16 GGUF) and through each GGUF. As llama.cpp does, the first
half of every chunk is context only; at every later position the next-token distributions are compared:

* ``kl``: KL(reference || GGUF), mean ± standard error, median, 99th and 99.9th percentile, maximum;
* ``same_top``: share of positions where both models' most likely token is the same (llama.cpp's "Same top p");
* perplexity of each model on the true next tokens, ``ln(PPL(Q)/PPL(base))`` ± standard error, and the RMS of
  the change of the true token's probability (``Δp``).

llama.cpp's own figures for LLaMA 3 8B (``tools/perplexity/README.md`` of the pinned llama.cpp, base f16 logits
stored in 16 bits): f16 KLD 0.00055, q8_0 0.00136, q6_K 0.0055, Q4_K_M 0.031 (0.028 with an imatrix). Small models
quantize worse (see :data:`posttrain.export.config.DEFAULT_GATES` for the defaults measured on SmolLM2-135M).

**Tensor fallbacks.** K-quants (and IQ types) pack 256 columns per block; a weight whose row length is not a
multiple of 256 is written in another type by llama.cpp's quantizer (SmolLM2's 576-wide projections for Q4_K_M).
:func:`tensor_types` counts them from the GGUF itself.

**Importance matrix.** :func:`collect_imatrix` is llama.cpp's ``llama-imatrix`` statistic computed by llama.cpp:
the f16 GGUF runs through llama-cpp-python with ggml's graph evaluation callback (``cb_eval``, as
``tools/imatrix/imatrix.cpp`` does), and for every matrix multiplication by a ``blk.*`` weight with at least 16
tokens the squared input activations are summed per column. :func:`write_imatrix_gguf` saves them in llama.cpp's
GGUF imatrix format (usable with ``llama-quantize --imatrix``) and :func:`imatrix_means` gives the per-column means
``llama_model_quantize`` takes through its C array ``llama_model_imatrix_data`` (llama.cpp ≥ b7000; no C++ tool
needs to be built).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from posttrain.export.verify import ExportCheck

#: types whose tensors are written in 256-column super-blocks
SUPERBLOCK = 256


# ------------------------------------------------------------------------------------------------ texts


def _render(tokenizer, conversation: list[dict], tools=None, template_kwargs=None) -> str:
    if tokenizer.chat_template:
        from posttrain.chat_templates import render

        return render(tokenizer, conversation, tools=tools, template_kwargs=template_kwargs)
    return "\n".join(m["content"] for m in conversation) + "\n"


def heldout_texts(tokenizer, n: int = 200, *, seed: int = 7) -> list[str]:
    """Conversations of the built-in tasks' ``validation`` pool (disjoint from the training and test pools) rendered as the
    model sees them."""
    from posttrain.tasks import SELECTION_POOL, generate_task, task_to_messages

    return [_render(tokenizer, task_to_messages(e)) for e in generate_task("all", n, seed=seed, pool=SELECTION_POOL)]


def calibration_texts(tokenizer, datasets=None, n: int = 400, *, seed: int = 42, identity=None) -> list[str]:
    """Training conversations for the importance matrix: the run's ``datasets`` when given, else the built-in
    tasks' ``train`` pool (what the default SFT trains on)."""
    if datasets:
        from posttrain.data.loading import load_conversations
        from posttrain.data.tools import Conversation

        rows = load_conversations(datasets, seed=seed, identity=identity)["train"]
        conversations = [Conversation.from_row(row) for row in rows.select(range(min(n, len(rows))))]
        return [_render(tokenizer, c.messages, c.tools, c.chat_template_kwargs) for c in conversations]
    from posttrain.tasks import generate_task, task_to_messages

    return [_render(tokenizer, task_to_messages(e)) for e in generate_task("all", n, seed=seed, identity=identity)]


def token_chunks(tokenizer, texts: list[str], n_ctx: int, n_chunks: int, *, bos_id: int | None = None):
    """llama.cpp's chunking: the texts' tokens end to end, ``n_chunks`` chunks of ``n_ctx``, BOS first if given."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= n_ctx * n_chunks:
            break
    chunks = [ids[i * n_ctx : (i + 1) * n_ctx] for i in range(min(n_chunks, len(ids) // n_ctx))]
    if bos_id is not None:
        chunks = [[bos_id] + c[1:] for c in chunks]
    if not chunks:
        raise ValueError(f"the text set has {len(ids)} tokens, fewer than one chunk of {n_ctx}")
    return chunks


# ------------------------------------------------------------------------------------------------ logits


def gguf_logits(llm) -> Callable[[list[int]], np.ndarray]:
    """Logits at every position of a chunk from a llama-cpp-python ``Llama`` loaded with ``logits_all=True``."""

    def run(chunk: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(chunk)
        return np.array(llm.scores[: len(chunk)], dtype=np.float32)

    return run


def hf_logits(model) -> Callable[[list[int]], np.ndarray]:
    import torch

    def run(chunk: list[int]) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor([chunk])).logits[0].float().numpy()

    return run


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32) - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@dataclass
class Reference:
    """The reference model's log-probabilities at the scored positions of every chunk (llama.cpp's .kld file)."""

    chunks: list[list[int]]
    logprobs: list[np.ndarray]
    first: int
    label: str

    @classmethod
    def build(cls, chunks: list[list[int]], logits: Callable, *, label: str) -> Reference:
        first = len(chunks[0]) // 2
        return cls(chunks, [_log_softmax(logits(c)[first:-1]) for c in chunks], first, label)

    @property
    def positions(self) -> int:
        return sum(len(lp) for lp in self.logprobs)


def compare(reference: Reference, logits: Callable) -> dict[str, np.ndarray]:
    """Per scored position: KL(reference || candidate), top-1 agreement, both models' probability of the true
    next token."""
    kl, same, p_ref, p_q = [], [], [], []
    for chunk, base in zip(reference.chunks, reference.logprobs):
        lq = _log_softmax(logits(chunk)[reference.first : -1])
        targets = np.asarray(chunk[reference.first + 1 :])
        rows = np.arange(len(targets))
        kl.append(np.maximum((np.exp(base) * (base - lq)).sum(-1, dtype=np.float64), 0.0))
        same.append(base.argmax(-1) == lq.argmax(-1))
        p_ref.append(np.exp(base[rows, targets].astype(np.float64)))
        p_q.append(np.exp(lq[rows, targets].astype(np.float64)))
    return {k: np.concatenate(v) for k, v in (("kl", kl), ("same_top", same), ("p_ref", p_ref), ("p_q", p_q))}


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def summarize(per_position: dict[str, np.ndarray]) -> dict[str, Any]:
    """llama.cpp's ``--kl-divergence`` statistics (``perplexity.cpp``: mean ± standard error, percentiles)."""
    kl = per_position["kl"]
    same = per_position["same_top"].astype(np.float64)
    nll_ref = -np.log(np.maximum(per_position["p_ref"], 1e-300))
    nll_q = -np.log(np.maximum(per_position["p_q"], 1e-300))
    n = len(kl)
    kl_mean, kl_se = _mean_se(kl)
    ln_ratio, ln_ratio_se = _mean_se(nll_q - nll_ref)
    nll_q_mean, nll_q_se = _mean_se(nll_q)
    nll_ref_mean, nll_ref_se = _mean_se(nll_ref)
    top = float(same.mean())
    dp = per_position["p_q"] - per_position["p_ref"]
    return {
        "positions": n,
        "kl_mean": kl_mean,
        "kl_se": kl_se,
        "kl_median": float(np.median(kl)),
        "kl_p99": float(np.percentile(kl, 99)),
        "kl_p99_9": float(np.percentile(kl, 99.9)),
        "kl_max": float(kl.max()),
        "same_top": top,
        "same_top_se": math.sqrt(max(top * (1 - top), 0.0) / max(n - 1, 1)),
        "ppl": math.exp(nll_q_mean),
        "ppl_se": math.exp(nll_q_mean) * nll_q_se,
        "ppl_reference": math.exp(nll_ref_mean),
        "ppl_reference_se": math.exp(nll_ref_mean) * nll_ref_se,
        "ln_ppl_ratio": ln_ratio,
        "ln_ppl_ratio_se": ln_ratio_se,
        "rms_dp": float(np.sqrt((dp**2).mean())),
    }


def measure(reference: Reference, logits: Callable) -> dict[str, Any]:
    return summarize(compare(reference, logits))


# ------------------------------------------------------------------------------------------------ checks


def check_quality(
    gtype: str,
    stats: dict[str, Any],
    *,
    max_kl: float | None,
    min_top1: float | None,
    reference: str = "hf",
    label: str | None = None,
    extra: dict | None = None,
) -> ExportCheck:
    """Pass/fail on mean KL and top-1 agreement where gated (f16, q8_0); report only otherwise."""
    problems = []
    if max_kl is not None and not stats["kl_mean"] <= max_kl:
        problems.append(f"mean KL {stats['kl_mean']:.4g} nats exceeds max_kl {max_kl:g}")
    if min_top1 is not None and not stats["same_top"] >= min_top1:
        problems.append(f"top-1 agreement {stats['same_top']:.2%} is below min_top1 {min_top1:.0%}")
    gated = max_kl is not None or min_top1 is not None
    passed = (not problems) if gated else None
    summary = (
        f"KL vs {reference} {stats['kl_mean']:.4g} ± {stats['kl_se']:.2g} (median {stats['kl_median']:.3g}, "
        f"p99 {stats['kl_p99']:.3g}, max {stats['kl_max']:.3g}); same top-1 {stats['same_top']:.2%} "
        f"± {stats['same_top_se']:.2%}; PPL {stats['ppl']:.3f} ± {stats['ppl_se']:.3f} vs "
        f"{stats['ppl_reference']:.3f}; {stats['positions']} positions"
    )
    if extra and extra.get("fallback_summary"):
        summary += f"; {extra['fallback_summary']}"
    if problems:
        summary = "; ".join(problems) + f" -- {summary}"
    elif gated:
        summary += f" (gates: KL ≤ {max_kl:g}, top-1 ≥ {min_top1:.0%})"
    details = {**stats, "reference": reference, "max_kl": max_kl, "min_top1": min_top1, **(extra or {})}
    return ExportCheck(f"quant_quality[{label or gtype}]", passed, summary, details)


def imatrix_comparison_check(rows: dict[str, tuple[dict, dict]], info: dict) -> ExportCheck:
    """Side by side, per quantized type: KL and top-1 with the importance matrix and without."""
    parts, table = [], []
    for gtype, (with_imatrix, plain) in rows.items():
        parts.append(
            f"{gtype}: KL {with_imatrix['kl_mean']:.4g} with imatrix vs {plain['kl_mean']:.4g} plain, "
            f"top-1 {with_imatrix['same_top']:.2%} vs {plain['same_top']:.2%}"
        )
        table.append(
            {
                "type": gtype,
                "kl_imatrix": with_imatrix["kl_mean"],
                "kl_plain": plain["kl_mean"],
                "kl_se_imatrix": with_imatrix["kl_se"],
                "kl_se_plain": plain["kl_se"],
                "same_top_imatrix": with_imatrix["same_top"],
                "same_top_plain": plain["same_top"],
                "ppl_imatrix": with_imatrix["ppl"],
                "ppl_plain": plain["ppl"],
            }
        )
    return ExportCheck("imatrix", None, "; ".join(parts) or "no quantized type", {"comparison": table, **info})


# ------------------------------------------------------------------------------------------------ tensor types


def _expected_base(file_type: int) -> str | None:
    """The main tensor type of a llama.cpp ftype (``Q4_K_M`` → ``Q4_K``), None for non-superblock types."""
    from posttrain.export.llama_cpp import quantize_types

    name = next((k for k, v in quantize_types().items() if v == file_type), "")
    if "_K" in name:
        return name.split("_K")[0] + "_K"
    if name.startswith(("IQ", "TQ")):
        return name
    return None


def tensor_types(path: Path) -> dict[str, Any]:
    """Tensor types of a GGUF and its fallbacks: 2-D weights of a K/IQ-quant file whose rows are not a multiple
    of 256 and so are written in another (non-superblock) type by llama.cpp's quantizer."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    field_ = reader.fields.get("general.file_type")
    file_type = int(field_.contents()) if field_ is not None else None
    counts: dict[str, int] = {}
    fallbacks: list[dict] = []
    base = _expected_base(file_type) if file_type is not None else None
    weights = 0
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        counts[kind] = counts.get(kind, 0) + 1
        if len(tensor.shape) < 2:
            continue
        weights += 1
        columns = int(tensor.shape[0])
        if base and columns % SUPERBLOCK:
            fallbacks.append({"tensor": tensor.name, "columns": columns, "type": kind})
    out = {"tensors": len(reader.tensors), "weights": weights, "types": counts, "fallbacks": len(fallbacks)}
    out["fallback_examples"] = fallbacks[:4]
    if base and fallbacks:
        used = sorted({f["type"] for f in fallbacks})
        out["fallback_summary"] = (
            f"{len(fallbacks)} of {len(reader.tensors)} tensors fall back from {base} to {'/'.join(used)} "
            f"(rows of {sorted({f['columns'] for f in fallbacks})} columns are not a multiple of {SUPERBLOCK})"
        )
    return out


# ------------------------------------------------------------------------------------------------ imatrix


class ImatrixError(RuntimeError):
    pass


class _GGMLTensor(ctypes.Structure):
    pass


_GGMLTensor._fields_ = [  # ggml.h `struct ggml_tensor` of the pinned llama.cpp (GGML_MAX_DIMS 4, MAX_SRC 10)
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * 4),
    ("nb", ctypes.c_size_t * 4),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * 16),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(_GGMLTensor) * 10),
    ("view_src", ctypes.POINTER(_GGMLTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * 64),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]


def _ggml_op(name: str) -> int:
    from llama_cpp._ggml import libggml

    libggml.ggml_op_name.restype = ctypes.c_char_p
    libggml.ggml_op_name.argtypes = [ctypes.c_int]
    for op in range(200):
        if libggml.ggml_op_name(op) == name.encode():
            return op
    raise ImatrixError(f"ggml has no op {name}")


@dataclass
class Imatrix:
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    chunk_size: int = 0
    tokens: int = 0


def collect_imatrix(gguf_path: Path, chunks: list[list[int]], *, threads: int | None = None) -> Imatrix:
    """llama-imatrix's statistic over ``chunks`` (``imatrix.cpp::collect_imatrix``, dense models): per ``blk.*``
    weight, the sum over tokens of each input column's squared activation, from llama.cpp's own forward pass."""
    import os

    import llama_cpp as L

    mul_mat, mul_mat_id = _ggml_op("MUL_MAT"), _ggml_op("MUL_MAT_ID")
    f32 = 0  # GGML_TYPE_F32
    result = Imatrix(chunk_size=len(chunks[0]))
    errors: list[str] = []

    def callback(tensor_p, ask, _user):
        t = ctypes.cast(tensor_p, ctypes.POINTER(_GGMLTensor)).contents
        if t.op == mul_mat_id:
            if ask:
                errors.append("mixture-of-experts (MUL_MAT_ID) weights are not supported")
            return False
        if t.op != mul_mat:
            return False
        src0, src1 = t.src[0].contents, t.src[1].contents
        name = src0.name.decode(errors="replace")
        name = name.split("#")[1] if "#" in name else name
        if ask:
            return bool(src1.ne[1] >= 16 and src1.type == f32 and name.startswith("blk."))
        if not src1.data or src1.nb[0] != 4:
            errors.append(f"{name}: activations not readable on the host")
            return True
        rows = int(src1.ne[1] * src1.ne[2] * src1.ne[3])
        if src1.nb[1] != 4 * src1.ne[0] or (src1.ne[2] * src1.ne[3] > 1 and src1.nb[2] != src1.nb[1] * src1.ne[1]):
            errors.append(f"{name}: non-contiguous activations")
            return True
        x = np.ctypeslib.as_array(ctypes.cast(src1.data, ctypes.POINTER(ctypes.c_float)), shape=(rows, src1.ne[0]))
        n_mat = int(src0.ne[2] * src0.ne[3])
        if n_mat != 1:
            errors.append(f"{name}: 3-D weights are not supported")
            return True
        acc = result.sums.get(name)
        sq = np.einsum("ij,ij->j", x, x).astype(np.float64)
        result.sums[name] = sq if acc is None else acc + sq
        result.counts[name] = result.counts.get(name, 0) + rows
        return True

    cb = L.ggml_backend_sched_eval_callback(callback)
    mparams = L.llama_model_default_params()
    model = L.llama_model_load_from_file(str(gguf_path).encode(), mparams)
    if not model:
        raise ImatrixError(f"llama.cpp could not load {gguf_path}")
    n_ctx = len(chunks[0])
    cparams = L.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = n_ctx
    cparams.n_threads = cparams.n_threads_batch = threads or max(1, os.cpu_count() or 1)
    cparams.cb_eval = cb
    cparams.cb_eval_user_data = None
    ctx = L.llama_init_from_model(model, cparams)
    try:
        if not ctx:
            raise ImatrixError("llama.cpp could not create a context for the importance matrix")
        batch = L.llama_batch_init(n_ctx, 0, 1)
        try:
            for chunk in chunks:
                L.llama_memory_clear(L.llama_get_memory(ctx), True)
                # logits at every position, as llama-imatrix asks: else the last layer runs on the last token only
                batch.n_tokens = len(chunk)
                for i, token in enumerate(chunk):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, True
                    batch.seq_id[i][0] = 0
                if L.llama_decode(ctx, batch) != 0:
                    raise ImatrixError("llama_decode failed while collecting the importance matrix")
                result.chunks += 1
                result.tokens += len(chunk)
        finally:
            L.llama_batch_free(batch)
        if errors:
            raise ImatrixError(f"importance matrix of {gguf_path.name}: {errors[0]}")
        if not result.sums:
            raise ImatrixError(f"no matrix multiplications by blk.* weights were seen in {gguf_path.name}")
    finally:
        if ctx:
            L.llama_free(ctx)
        L.llama_model_free(model)
    del cb
    return result


def imatrix_means(imatrix: Imatrix) -> dict[str, np.ndarray]:
    """Per weight: the mean squared activation per input column (what llama-quantize passes on)."""
    return {name: (s / max(imatrix.counts[name], 1)).astype(np.float32) for name, s in imatrix.sums.items()}


def write_imatrix_gguf(path: Path, imatrix: Imatrix, *, datasets: list[str]) -> Path:
    """llama.cpp's GGUF imatrix file (``imatrix.cpp::save_imatrix``): ``<weight>.in_sum2`` and ``<weight>.counts``."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", datasets)
    writer.add_uint32("imatrix.chunk_count", imatrix.chunks)
    writer.add_uint32("imatrix.chunk_size", imatrix.chunk_size)
    for name in sorted(imatrix.sums):
        writer.add_tensor(f"{name}.in_sum2", imatrix.sums[name].astype(np.float32).reshape(1, -1))
        writer.add_tensor(f"{name}.counts", np.array([[float(imatrix.counts[name])]], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# ------------------------------------------------------------------------------------------------ test helper


def corrupt_gguf(source: Path, target: Path, *, tensor: str | None = None, seed: int = 0) -> str:
    """Copy a GGUF and overwrite one weight's data with noise of its own scale (for the KL gate's tests)."""
    import shutil

    from gguf import GGUFReader

    shutil.copyfile(source, target)
    reader = GGUFReader(str(target), "r+")
    candidates = [t for t in reader.tensors if len(t.shape) >= 2 and t.tensor_type.name in ("F16", "F32", "BF16")]
    chosen = next((t for t in candidates if t.name == tensor), None) if tensor else candidates[0]
    if chosen is None:
        raise ValueError(f"no float tensor {tensor} in {source}")
    data = chosen.data
    rng = np.random.default_rng(seed)
    scale = float(np.abs(data.astype(np.float32)).mean()) or 1.0
    data[...] = (rng.standard_normal(data.shape) * scale * 4).astype(data.dtype)
    reader.data.flush()
    return chosen.name


def gguf_bos(path: Path) -> int | None:
    """The BOS id llama.cpp puts first in every chunk (as ``llama-perplexity`` does), None when the GGUF adds none."""
    from posttrain.export.verify import gguf_metadata

    metadata = gguf_metadata(path)
    if metadata.get("tokenizer.ggml.add_bos_token"):
        return metadata.get("tokenizer.ggml.bos_token_id")
    return None


def quality_rows(checks: list[ExportCheck]) -> list[dict[str, Any]]:
    """The quant_quality checks as table rows (verification.md and the pipeline report)."""
    rows = []
    for check in checks:
        d = check.details if isinstance(check, ExportCheck) else check.get("details", {})
        name = check.name if isinstance(check, ExportCheck) else check.get("name", "")
        status = check.status if isinstance(check, ExportCheck) else check.get("status", "")
        if not name.startswith("quant_quality[") or "kl_mean" not in d:
            continue
        gate = "–" if d.get("max_kl") is None else f"KL ≤ {d['max_kl']:g}, top-1 ≥ {d['min_top1']:.0%}"
        rows.append(
            {
                "type": name[len("quant_quality[") : -1],
                "status": status,
                "kl": f"{d['kl_mean']:.4g} ± {d['kl_se']:.2g}",
                "kl_median": f"{d['kl_median']:.3g}",
                "kl_p99": f"{d['kl_p99']:.3g}",
                "kl_max": f"{d['kl_max']:.3g}",
                "same_top": f"{d['same_top']:.2%} ± {d['same_top_se']:.2%}",
                "ppl": f"{d['ppl']:.3f} ± {d['ppl_se']:.3f}",
                "ppl_reference": f"{d['ppl_reference']:.3f}",
                "rms_dp": f"{d['rms_dp']:.2%}",
                "fallbacks": d.get("fallback_summary") or ("none" if "fallbacks" in d else "–"),
                "gate": gate,
                "reference": d.get("reference", ""),
            }
        )
    return rows


def append_markdown(path: Path, checks: list[ExportCheck]) -> None:
    """A quantization-quality table (llama.cpp's --kl-divergence figures) after verification.md's check table."""
    rows = quality_rows(checks)
    if not rows:
        return
    lines = [
        "",
        f"## Quantization quality (reference: {rows[0]['reference']}; llama.cpp's `perplexity --kl-divergence` measures)",
        "",
        "| type | status | mean KL | median KL | p99 KL | max KL | same top-1 | PPL | PPL ref | RMS Δp | gate | fallbacks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['type']} | {r['status']} | {r['kl']} | {r['kl_median']} | {r['kl_p99']} | {r['kl_max']} | "
            f"{r['same_top']} | {r['ppl']} | {r['ppl_reference']} | {r['rms_dp']} | {r['gate']} | {r['fallbacks']} |"
        )
    for check in checks:
        if check.name == "imatrix" and check.details.get("comparison"):
            lines += [
                "",
                "| type | KL with imatrix | KL plain | top-1 with imatrix | top-1 plain |",
                "|---|---|---|---|---|",
            ]
            for c in check.details["comparison"]:
                lines.append(
                    f"| {c['type']} | {c['kl_imatrix']:.4g} ± {c['kl_se_imatrix']:.2g} | {c['kl_plain']:.4g} ± "
                    f"{c['kl_se_plain']:.2g} | {c['same_top_imatrix']:.2%} | {c['same_top_plain']:.2%} |"
                )
    with open(path, "a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
