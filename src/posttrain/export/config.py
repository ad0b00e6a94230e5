"""Settings of ``posttrain merge`` and ``posttrain export`` (parsed by TRL's parser like every other stage)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from posttrain.errors import ConfigError
from posttrain.export.llama_cpp import CONVERTER_TYPES, quantize_types

#: default quantization-quality gates (mean KL in nats, top-1 agreement) per gated type. Measured with the float32
#: HF model as reference on 1016 held-out positions (quality_chunks 8; the default 4 scores 508), on an AMD EPYC with
#: AVX2 and no AVX512-BF16: SmolLM2-135M-Instruct f16 5.6e-6 / 100%, q8_0 0.0041 / 96.7%, Q4_K_M 0.092 / 89.2%
#: (0.063 / 89.7% with the imatrix); the tests' tiny random Llama (flat logits, many near ties) f16 1e-5 / 99.7%,
#: q8_0 0.0026 / 92.7% (92.9% on 508 positions). llama.cpp's LLaMA 3 8B: f16 0.00055, q8_0 0.00136. f16 allows
#: ~1000x its measured KL (a bf16 GGUF rounds more) and q8_0 ~5x SmolLM2's.
DEFAULT_GATES = {"f16": (0.005, 0.97), "q8_0": (0.02, 0.90)}

DTYPES = ("float32", "bfloat16", "float16")


def output_dir_for(args, suffix: str) -> str:
    """``args.output_dir``, by default ``<model_name_or_path>-<suffix>`` beside the input; a ConfigError when
    ``model_name_or_path`` (required) is missing."""
    if not args.model_name_or_path:
        raise ConfigError(
            "model_name_or_path is required: the adapter or model folder (or embedded alias) to "
            f"{'merge' if suffix == 'merged' else 'export'}"
        )
    return args.output_dir or f"{Path(str(args.model_name_or_path))}-{suffix}"


@dataclass
class MergeArguments:
    """Merge an adapter chain into full-precision weights."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Required. The last adapter of the chain (e.g. the DPO or PPO output); earlier adapters (SFT) "
            "and the base are found from it. A plain model folder is re-saved unchanged."
        },
    )
    base_model: str | None = field(
        default=None, metadata={"help": "Override the chain's root base model (alias, folder or hub id)."}
    )
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where the merged HF folder is written (default: `<model_name_or_path>-merged`)."},
    )
    dtype: str = field(
        default="float32",
        metadata={
            "help": "Precision of the merge and of the saved weights: "
            "float32 (default) or bfloat16/float16; never 4-bit."
        },
    )
    max_logit_drift: float | None = field(
        default=None,
        metadata={
            "help": "Fail when adapter-on vs merged logits differ by more (default: 1e-3 in float32, 1.0 in "
            "bfloat16/float16)."
        },
    )

    def __post_init__(self) -> None:
        self.output_dir = output_dir_for(self, "merged")
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"dtype must be one of {', '.join(DTYPES)} (got {self.dtype!r}); a merge is never "
                "done into 4-bit weights"
            )

    @property
    def drift_limit(self) -> float:
        if self.max_logit_drift is not None:
            return self.max_logit_drift
        return 1e-3 if self.dtype == "float32" else 1.0


@dataclass
class ExportArguments:
    """HF folder → GGUF (+ quantized) → Ollama Modelfile, verified."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Required. Merged HF folder (posttrain merge), embedded alias, or an adapter folder (merged "
            "first into <output_dir>/hf)."
        },
    )
    base_model: str | None = field(
        default=None, metadata={"help": "Root base override when model_name_or_path is an adapter."}
    )
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where the GGUF files, Modelfile and reports go (default: `<model_name_or_path>-export`)."},
    )
    gguf_types: list[str] = field(
        default_factory=lambda: ["f16", "q8_0", "Q4_K_M"],
        metadata={
            "help": "f32/f16/bf16/q8_0 (llama.cpp's converter) and quantized types such as Q4_K_M, Q5_K_M, Q6_K "
            "(llama.cpp's quantizer, from the f16 file)."
        },
    )
    modelfile_type: str | None = field(
        default=None, metadata={"help": "The GGUF the Modelfile's FROM names (default: the last of gguf_types)."}
    )
    ollama_name: str = field(default="posttrain", metadata={"help": "Model name for `ollama create`."})
    num_ctx: int | None = field(
        default=None, metadata={"help": "Modelfile num_ctx (default: the model's context length, at most 4096)."}
    )
    ollama_create: bool = field(default=True, metadata={"help": "Run `ollama create` when `ollama` is on PATH."})
    llama_cpp_dir: str | None = field(
        default=None,
        metadata={
            "help": "A llama.cpp checkout with convert_hf_to_gguf.py (also $LLAMA_CPP_DIR); default: the "
            "converter vendored by the pinned llama-cpp-python sdist, fetched once with pip."
        },
    )
    verify: bool = field(
        default=True,
        metadata={
            "help": "Verify tokenization, greedy generations, the Go template "
            "and end-of-turn tokens; a failure exits non-zero."
        },
    )
    verify_prompts: int | None = field(
        default=None, metadata={"help": "Number of generation prompts (default all 20)."}
    )
    verify_max_new_tokens: int = field(default=32, metadata={"help": "Greedy reply length compared per prompt."})
    verify_tie_margin: float = field(
        default=0.1,
        metadata={
            "help": "Replies that part where the HF model prefers "
            "its token by at most this many nats (a near tie that 16-bit rounding can flip) "
            "count as agreeing."
        },
    )
    min_agreement_f16: float = field(
        default=0.98, metadata={"help": "Least share of prompts whose f16/bf16/f32 greedy reply equals HF's."}
    )
    min_agreement_q8_0: float = field(
        default=0.5, metadata={"help": "Least share for q8_0 (other quantized types are reported only)."}
    )
    quality_chunks: int = field(
        default=4,
        metadata={
            "help": "Quantization quality as llama.cpp's `perplexity --kl-divergence` measures it: chunks of held-out "
            "text (built-in tasks' validation pool, never training data) on which every GGUF's next-token distributions are "
            "compared with the reference's (KL divergence, top-1 agreement, perplexity): 4 x 256 tokens score 508 positions; 0 skips it."
        },
    )
    quality_ctx: int = field(
        default=256, metadata={"help": "Tokens per chunk; as in llama.cpp the first half of a chunk is context only."}
    )
    quality_reference: str = field(
        default="hf",
        metadata={
            "help": "Reference distribution: `hf` (the float32 HF model) or `f16` (the f16 GGUF, llama.cpp's base)."
        },
    )
    max_kl_f16: float = field(
        default=DEFAULT_GATES["f16"][0],
        metadata={
            "help": "Largest mean KL divergence (nats) of an f16/bf16/f32 GGUF from the reference (measured: SmolLM2-135M f16 6e-6, q8_0 0.004; see posttrain.export.config.DEFAULT_GATES)."
        },
    )
    min_top1_f16: float = field(
        default=DEFAULT_GATES["f16"][1],
        metadata={"help": "Least share of positions where f16/bf16/f32 and the reference agree on the top token."},
    )
    max_kl_q8_0: float = field(
        default=DEFAULT_GATES["q8_0"][0],
        metadata={"help": "Largest mean KL divergence of q8_0 (lower types are reported, not gated)."},
    )
    min_top1_q8_0: float = field(default=DEFAULT_GATES["q8_0"][1], metadata={"help": "Least top-1 agreement of q8_0."})
    imatrix: bool = field(
        default=False,
        metadata={
            "help": "Quantize with an importance matrix (llama.cpp's imatrix statistic, collected by llama.cpp from "
            "the f16 GGUF over training conversations: the run's `datasets`, else the built-in tasks) and report "
            "its KL beside plain quantization's; written to imatrix.gguf."
        },
    )
    imatrix_chunks: int = field(default=8, metadata={"help": "Chunks of calibration text for the importance matrix."})
    imatrix_ctx: int = field(
        default=512, metadata={"help": "Tokens per importance-matrix chunk (llama-imatrix's default)."}
    )
    serve: bool = field(
        default=True,
        metadata={
            "help": "Serve the Modelfile's GGUF with llama.cpp's "
            "OpenAI-compatible server and run serve_suite against it."
        },
    )
    serve_suite: str = field(default="builtin", metadata={"help": "Evaluation suite run against the server."})
    serve_max_samples: int = field(default=4, metadata={"help": "Samples per suite source for the served check."})
    serve_max_new_tokens: int | None = field(default=64, metadata={"help": "Reply budget for the served check."})
    threads: int | None = field(default=None, metadata={"help": "CPU threads for llama.cpp (default: all cores)."})

    def __post_init__(self) -> None:
        self.output_dir = output_dir_for(self, "export")
        if not self.gguf_types:
            raise ConfigError("gguf_types: list at least one type, e.g. [f16, q8_0, Q4_K_M]")

        quantized = quantize_types()
        known = {t.lower(): t for t in quantized} | {t.lower(): t for t in CONVERTER_TYPES}
        normalized = []
        for gtype in self.gguf_types:
            if str(gtype).lower() not in known:
                hint = "" if quantized else " (quantized types need llama-cpp-python)"
                raise ConfigError(
                    f"gguf_types: unknown GGUF type {gtype!r}; use {', '.join(CONVERTER_TYPES)} or a "
                    f"llama.cpp quantization such as Q4_K_M, Q5_K_M, Q6_K{hint}"
                )
            normalized.append(known[str(gtype).lower()])
        self.gguf_types = list(dict.fromkeys(normalized))
        if self.modelfile_type is None:
            self.modelfile_type = self.gguf_types[-1]
        elif self.modelfile_type.lower() not in {t.lower() for t in self.gguf_types}:
            raise ConfigError(f"modelfile_type {self.modelfile_type!r} is not one of gguf_types {self.gguf_types}")
        else:
            self.modelfile_type = known[self.modelfile_type.lower()]
        for name in ("min_agreement_f16", "min_agreement_q8_0"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be between 0 and 1 (got {getattr(self, name)})")
        for name in ("min_top1_f16", "min_top1_q8_0"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be between 0 and 1 (got {getattr(self, name)})")
        if self.max_kl_f16 < 0 or self.max_kl_q8_0 < 0:
            raise ConfigError("max_kl_f16 and max_kl_q8_0 must be 0 or more")
        if self.quality_reference not in ("hf", "f16"):
            raise ConfigError(f"quality_reference must be hf or f16 (got {self.quality_reference!r})")
        if self.quality_reference == "f16" and "f16" not in self.gguf_types:
            raise ConfigError("quality_reference: f16 needs f16 in gguf_types")
        if self.quality_chunks < 0 or self.quality_ctx < 16 or self.imatrix_chunks < 1 or self.imatrix_ctx < 16:
            raise ConfigError(
                "quality_chunks must be 0 or more, imatrix_chunks 1 or more, quality_ctx/imatrix_ctx 16 or more"
            )
        if self.imatrix and all(t in CONVERTER_TYPES for t in self.gguf_types):
            raise ConfigError(
                f"imatrix: true needs a quantized type in gguf_types (e.g. Q4_K_M); {self.gguf_types} are written by "
                "the converter, which takes no importance matrix"
            )
        if self.verify_tie_margin < 0:
            raise ConfigError(f"verify_tie_margin must be 0 or more (got {self.verify_tie_margin})")
        if self.verify_max_new_tokens < 1 or self.serve_max_samples < 1:
            raise ConfigError("verify_max_new_tokens and serve_max_samples must be at least 1")
