"""The memory and time terms of one training step, from a model's shape and a stage's parsed config.

Every term is in bytes and names the setting that shrinks it; docs/plan.md gives the formulas and the measured check
(tests/planning/test_measured.py). Conventions:

* weights: the linear layers of the decoder in 4-bit NF4 (0.5 byte per weight) plus bitsandbytes' quantization
  constants (one absmax per 64 weights: fp32, or 8-bit plus one fp32 per 256 blocks with nested quantization) when
  ``load_in_4bit``; embeddings, norms and the head stay in the compute dtype (``dtype``, ``auto``: bf16 when the run
  trains in bf16, else fp32); without 4-bit everything is in the compute dtype.
* LoRA: r*(in+out) parameters per targeted linear layer, each with an fp32 value, gradient and AdamW's two moments:
  16 bytes per trainable parameter.
* activations: what autograd keeps per token per layer for a Llama block (RMSNorm, q/k/v/o, SDPA, gated MLP) with
  frozen base weights and LoRA -- the count of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models", sbh(34 + 5as/h) bytes in 16-bit) redone for this block without dropout:
  ``6h + 2*kv_dim + 4*intermediate + 7r`` elements (+ ``2*heads*seq`` with eager attention, which materializes the
  scores and probabilities), in the compute dtype. With gradient checkpointing only each layer's input (h) is kept,
  plus one layer's full set while it is recomputed (:data:`CHECKPOINT_LAYERS`); resident memory is the saved set
  times :data:`WORKSPACE` (1: the live peak; see there for glibc's arenas).
* logits: tokens x vocab in fp32, times the number of such buffers alive at the peak (:data:`LOGIT_BUFFERS`: logits,
  their log-softmax, its gradient, ...); posttrain's ``compact_lm_head`` fast path scores only labelled (completion)
  positions, and GRPO/RLOO compute completion logits only (TRL's ``logits_to_keep``).
* time: training FLOPs ``2*N*T`` forward plus ``2*N*T`` backward with frozen weights (LoRA: no weight gradients, as
  in the LoRA paper's and QLoRA's accounting; ``6*N*T`` for full fine-tuning) plus attention ``4*L*seq*d_attn`` per
  token forward; generation ``2*N`` per token; N counts the linear weights and the head (not the embedding lookup),
  divided by the measured matmul peak times :data:`UTILISATION`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from posttrain.planning.model_shape import ModelShape, read_shape

#: the fraction of the measured matmul peak a training step reaches (kernels smaller than the benchmark's, elementwise
#: work, the optimizer): stated, not measured per model
UTILISATION = 0.4

#: resident memory per byte of saved activations. autograd's saved tensors match the per-layer count below within 1%
#: (counted with ``torch.autograd.graph.saved_tensors_hooks``) and the live peak is that set (tests/planning/
#: test_measured.py, run with ``MALLOC_MMAP_THRESHOLD_=131072``). With glibc's default dynamic mmap threshold, freed
#: forward temporaries can stay in the heap's arenas: the same runs then measured 1.0-1.5x the live peak, varying run
#: to run -- set that variable (or jemalloc/tcmalloc) to get the live peak on a CPU; CUDA's caching allocator reuses
#: them within the step
WORKSPACE = {"cpu": 1.0, "cuda": 1.0}

#: with gradient checkpointing, the layer-sized activation sets alive at once besides each layer's kept input: the
#: layer being recomputed in the backward (the standard accounting; measured to match)
CHECKPOINT_LAYERS = 1

#: what a training run holds beyond its imports and its model (tokenizer, datasets and their Arrow buffers, the
#: trainer, thread pools, the first optimizer step's bookkeeping): measured once on this machine as the constant part of
#: the measured peaks (53-64 MiB over seven runs)
RUN_WORKING_SET = 60 * 2**20

#: how a stage runs, by name: DPO-shaped stages (kto, orpo, simpo) are added by one entry here
STAGE_KINDS = {
    "sft": "sft",
    "reward": "reward",
    "dpo": "pairs",
    "kto": "unpaired",
    "orpo": "pairs",
    "simpo": "pairs",
    "ppo": "ppo",
    "grpo": "group",
    "rloo": "group",
}

#: fp32 vocab-sized buffers alive at the peak of the loss and its backward, by kind: the logits upcast to fp32, the
#: log-softmax kept for the backward, the logits' gradient (and for SFT TRL's entropy/accuracy metrics on the logits)
LOGIT_BUFFERS = {"sft": 4.0, "pairs": 4.0, "unpaired": 4.0, "ppo": 4.0, "group": 4.0, "reward": 0.0}

#: a stage's reference model: ``adapter`` (the same weights with the LoRA adapter disabled: no memory), as posttrain
#: runs DPO, PPO, GRPO and RLOO
REFERENCE = "adapter disabled (no extra weights)"

#: DPO-shaped stages that score a reference (the adapter disabled) besides the policy; ORPO and SimPO have none
REFERENCE_FORWARD = {"dpo", "kto"}

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

#: what shrinks each term, in the order to try
ADVICE = {
    "weights": ["load_in_4bit: true", "a smaller model"],
    "lora": ["lora_r", "lora_target_modules"],
    "activations": ["gradient_checkpointing: true", "per_device_train_batch_size", "max_length"],
    "logits": ["per_device_train_batch_size", "max_length", "fast_paths: compact_lm_head (SFT)"],
    "generation": ["generation_batch_size", "num_generations", "max_completion_length"],
    "reward_model": ["a smaller reward model", "rule rewards only"],
    "scoring": ["forward_batch_size", "max_completion_length"],
}


@dataclass
class Term:
    name: str
    bytes: float
    formula: str
    advice: list[str] = field(default_factory=list)


@dataclass
class Plan:
    stage: str
    model: str
    shape: ModelShape
    compute_dtype: str
    terms: list[Term]
    overhead: Term | None
    step_flops: float
    peak_flops: float
    budget_bytes: float | None = None
    budget_source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def estimated_bytes(self) -> float:
        """The sum of the model-dependent terms (without the runtime overhead)."""
        return sum(t.bytes for t in self.terms)

    @property
    def peak_bytes(self) -> float:
        return self.estimated_bytes + (self.overhead.bytes if self.overhead else 0)

    @property
    def largest(self) -> Term:
        return max(self.terms, key=lambda t: t.bytes)

    @property
    def step_seconds(self) -> float:
        return self.step_flops / (self.peak_flops * UTILISATION)

    @property
    def fits(self) -> bool | None:
        return None if self.budget_bytes is None else self.peak_bytes <= self.budget_bytes


def compute_dtype(training_args, model_args) -> str:
    dtype = getattr(model_args, "dtype", "auto") or "auto"
    if dtype == "auto":
        return (
            "bfloat16"
            if getattr(training_args, "bf16", False)
            else ("float16" if getattr(training_args, "fp16", False) else "float32")
        )
    return dtype


def _targets(shape: ModelShape, model_args) -> list[tuple[str, int, int]]:
    targets = getattr(model_args, "lora_target_modules", None)
    linear = shape.linear_shapes()
    if targets is None or targets == "all-linear" or targets == ["all-linear"]:
        return linear
    names = [targets] if isinstance(targets, str) else list(targets)
    return [t for t in linear if any(t[0] == n or t[0].endswith(n) for n in names)]


def weight_bytes(
    shape: ModelShape, *, four_bit: bool, dtype_bytes: int, nested: bool, head_params: int
) -> tuple[float, str]:
    linear = shape.num_layers * shape.layer_linear_params
    rest = shape.embedding_params + head_params + shape.norm_params
    if four_bit:
        constants = (1 / 64 + 4 / (64 * 256)) if nested else 4 / 64
        return (
            linear * (0.5 + constants) + rest * dtype_bytes,
            f"{linear / 1e6:.1f}M linear x (0.5 + {constants:.4f} quant constants) B + {rest / 1e6:.1f}M x {dtype_bytes} B",
        )
    return (linear + rest) * dtype_bytes, f"{(linear + rest) / 1e6:.1f}M params x {dtype_bytes} B"


def activation_elements_per_token_layer(shape: ModelShape, lora_r: int, n_targets: int, seq: int, eager: bool) -> int:
    kv_dim = shape.num_kv_heads * shape.head_dim
    mlp = 4 * shape.intermediate_size if shape.gated_mlp else 2 * shape.intermediate_size
    return 6 * shape.hidden_size + 2 * kv_dim + mlp + n_targets * lora_r + (2 * shape.num_heads * seq if eager else 0)


def _activations(
    shape, dtype_bytes, sequences, seq, checkpointing, lora_r, n_targets, eager, workspace
) -> tuple[float, str]:
    per = activation_elements_per_token_layer(shape, lora_r, n_targets, seq, eager)
    tokens = sequences * seq
    full = tokens * shape.num_layers * per * dtype_bytes * workspace
    with_ckpt = tokens * (shape.num_layers * shape.hidden_size + CHECKPOINT_LAYERS * per) * dtype_bytes * workspace
    if checkpointing:
        return with_ckpt, (
            f"{tokens} tokens x ({shape.num_layers} layers x h + {CHECKPOINT_LAYERS} x {per}) x {dtype_bytes} B x {workspace:g} workspace "
            f"(checkpointed; {full / 2**20:.0f} MiB without)"
        )
    return full, (
        f"{tokens} tokens x {shape.num_layers} layers x {per} x {dtype_bytes} B x {workspace:g} workspace "
        f"({with_ckpt / 2**20:.0f} MiB with gradient_checkpointing)"
    )


def _get(config, key, default=None):
    value = getattr(config, key, default)
    return default if value is None else value


def _reward_model_paths(training_args) -> list[str]:
    paths = []
    for entry in _get(training_args, "rewards", []) or []:
        name = entry.get("name") if isinstance(entry, dict) else getattr(entry, "name", entry)
        path = entry.get("path") if isinstance(entry, dict) else getattr(entry, "path", None)
        if name == "reward_model" and path:
            paths.append(str(path))
    return paths


@dataclass
class _Setup:
    """The parsed settings the terms read: the stage, its model's shape and the precision, LoRA and batch settings."""

    stage: str
    kind: str
    shape: ModelShape
    dtype: str
    db: int
    four_bit: bool
    nested: bool
    use_peft: bool
    r: int
    checkpointing: bool
    eager: bool
    b: int
    accum: int
    targets: list[tuple[str, int, int]]
    device: str


@dataclass
class _Batch:
    """The sequences of one micro-batch, their length, the positions whose vocabulary logits are computed and (RL
    stages) the completion length."""

    sequences: int
    seq: int
    logit_tokens: int
    completion: int = 0


@dataclass
class _Rollout:
    """PPO/GRPO/RLOO: the replies generated together, those of one rollout, the sequences scored together and the
    tokens generated per rollout."""

    gen_batch: int
    rollout: int
    scoring: int
    gen_tokens: int


def _setup(stage: str, training_args, model_args, shape: ModelShape | None) -> _Setup:
    from posttrain.errors import ConfigError

    kind = STAGE_KINDS.get(stage)
    if kind is None:
        raise ConfigError(f"--stage {stage!r}: no estimate for this stage (one of {', '.join(STAGE_KINDS)})")
    shape = shape or read_shape(model_args.model_name_or_path)
    dtype = compute_dtype(training_args, model_args)
    use_peft = bool(getattr(model_args, "use_peft", True))
    return _Setup(
        stage=stage,
        kind=kind,
        shape=shape,
        dtype=dtype,
        db=BYTES.get(dtype, 4),
        four_bit=bool(getattr(model_args, "load_in_4bit", False)),
        nested=bool(getattr(model_args, "use_bnb_nested_quant", False)),
        use_peft=use_peft,
        r=int(_get(model_args, "lora_r", 16)),
        checkpointing=bool(getattr(training_args, "gradient_checkpointing", False)),
        eager=getattr(model_args, "attn_implementation", None) == "eager",
        b=int(training_args.per_device_train_batch_size),
        accum=int(_get(training_args, "gradient_accumulation_steps", 1)),
        targets=_targets(shape, model_args) if use_peft else [],
        device=_device(training_args),
    )


def _device(training_args) -> str:
    import torch

    return "cuda" if torch.cuda.is_available() and not getattr(training_args, "use_cpu", False) else "cpu"


def _batch(s: _Setup, pt_args, training_args, prompt_length: int | None, notes: list[str]) -> _Batch:
    """The sequences of one micro-batch and their length; SFT's compact_lm_head fast path adds a note."""
    if s.kind == "sft":
        seq = int(_get(training_args, "max_length", 1024))
        logit_tokens = s.b * seq
        fast = str(getattr(pt_args, "fast_paths", "auto"))
        if ("compact_lm_head" in fast or fast in ("auto", "all")) and (fast != "auto" or s.device == "cpu"):
            logit_tokens = s.b * seq // 2
            notes.append("compact_lm_head (fast_paths): logits of labelled positions only, taken as half the tokens")
        return _Batch(sequences=s.b, seq=seq, logit_tokens=logit_tokens)
    if s.kind in ("reward", "pairs"):
        seq = int(_get(training_args, "max_length", 1024))
        sequences = 2 * s.b  # chosen and rejected in one batch
        return _Batch(sequences=sequences, seq=seq, logit_tokens=0 if s.kind == "reward" else sequences * seq)
    if s.kind == "unpaired":  # KTO: one reply per row; its KL estimate is a no-grad forward of as many rows
        seq = int(_get(training_args, "max_length", 1024))
        notes.append("KTO: one sequence per row; the KL estimate's no-grad forward of mismatched rows is transient")
        return _Batch(sequences=s.b, seq=seq, logit_tokens=s.b * seq)
    completion = int(_get(training_args, "max_completion_length", 256))
    prompt = prompt_length or int(_get(training_args, "max_prompt_length", 0) or 256)
    seq = prompt + completion
    logit_tokens = s.b * (completion if s.kind == "group" else seq)
    return _Batch(sequences=s.b, seq=seq, logit_tokens=logit_tokens, completion=completion)


def _rollout(s: _Setup, batch: _Batch, training_args, notes: list[str]) -> _Rollout:
    """PPO/GRPO/RLOO's generation and scoring batch sizes; GRPO/RLOO add a note on the replies generated together."""
    if s.kind == "ppo":
        gen_batch = int(_get(training_args, "generation_batch_size", s.b))
        rollout = int(_get(training_args, "rollout_batch_size", s.b))
        scoring = int(_get(training_args, "forward_batch_size", s.b))
    else:
        steps_per_gen = int(_get(training_args, "steps_per_generation", s.accum))
        gen_batch = int(_get(training_args, "generation_batch_size", s.b * steps_per_gen))
        rollout = gen_batch
        scoring = s.b
        n = int(_get(training_args, "num_generations", 8))
        notes.append(
            f"num_generations {n}: {gen_batch} replies ({gen_batch // max(n, 1)} prompts x {n}) generated together"
        )
    return _Rollout(gen_batch=gen_batch, rollout=rollout, scoring=scoring, gen_tokens=rollout * batch.completion)


def _weights_term(s: _Setup) -> Term:
    head_params = s.shape.head_params if s.kind != "reward" else s.shape.hidden_size  # the reward model's score head
    w, formula = weight_bytes(s.shape, four_bit=s.four_bit, dtype_bytes=s.db, nested=s.nested, head_params=head_params)
    return Term(
        "weights",
        w,
        f"base weights ({'NF4' if s.four_bit else s.dtype}): {formula}",
        ADVICE["weights"] if not s.four_bit else ADVICE["weights"][1:],
    )


def _trainable_term(s: _Setup) -> Term:
    """The trainable parameters with their gradients and AdamW's moments: the LoRA adapter, or all the weights."""
    if s.use_peft:
        lora_params = s.shape.num_layers * sum(s.r * (din + dout) for _, din, dout in s.targets)
        return Term(
            "lora",
            lora_params * 16,
            f"{lora_params / 1e6:.2f}M LoRA params x (4 value + 4 grad + 8 AdamW) B",
            ADVICE["lora"],
        )
    trainable = s.shape.params
    return Term(
        "lora",
        trainable * 12,
        f"full fine-tuning: {trainable / 1e6:.1f}M params x (4 grad + 8 AdamW) B",
        ["use_peft: true"],
    )


def _activations_term(s: _Setup, batch: _Batch) -> Term:
    act, formula = _activations(
        s.shape, s.db, batch.sequences, batch.seq, s.checkpointing, s.r, len(s.targets), s.eager, WORKSPACE[s.device]
    )
    advice = [a for a in ADVICE["activations"] if not (s.checkpointing and a.startswith("gradient_checkpointing"))]
    if s.kind not in ("sft", "reward", "pairs", "unpaired"):
        advice = [a.replace("max_length", "max_completion_length") for a in advice]
    return Term("activations", act, formula + (" [eager attention: + scores]" if s.eager else ""), advice)


def _dequant_terms(s: _Setup) -> list[Term]:
    """One decoder layer's dequantized weights while it runs (4-bit), in the compute dtype."""
    if not s.four_bit:
        return []
    largest = max(din * dout for _, din, dout in s.shape.linear_shapes())
    return [Term("dequant", 2 * largest * s.db, "two dequantized linear weights in flight", [])]


def _logits_term(s: _Setup, batch: _Batch) -> Term:
    buffers = LOGIT_BUFFERS[s.kind]
    if not (batch.logit_tokens and buffers):
        return Term("logits", 0.0, "one score per sequence (no vocabulary logits)", [])
    lb = batch.logit_tokens * s.shape.vocab_size * 4 * buffers
    advice = (
        ADVICE["logits"]
        if s.kind == "sft"
        else [
            a.replace("max_length", "max_length" if s.kind in ("pairs", "unpaired") else "max_completion_length")
            for a in ADVICE["logits"][:2]
        ]
    )
    return Term(
        "logits", lb, f"{batch.logit_tokens} tokens x {s.shape.vocab_size} vocab x 4 B x {buffers:g} buffers", advice
    )


def _generation_term(s: _Setup, batch: _Batch, rollout: _Rollout) -> Term:
    """The KV cache of the replies generated together and their last-token logits."""
    kv_dim = s.shape.num_kv_heads * s.shape.head_dim
    kv = 2 * s.shape.num_layers * kv_dim * batch.seq * rollout.gen_batch * s.db
    gen_logits = rollout.gen_batch * s.shape.vocab_size * 4 * 2
    return Term(
        "generation",
        kv + gen_logits,
        f"KV cache 2 x {s.shape.num_layers} layers x {kv_dim} x {batch.seq} tokens x {rollout.gen_batch} replies x "
        f"{s.db} B + last-token logits",
        ADVICE["generation"],
    )


def _scoring_term(s: _Setup, batch: _Batch, rollout: _Rollout) -> Term:
    """PPO's no-grad scoring of the rollout's sequences and its value head."""
    value = (s.shape.hidden_size + 1) * 16
    score = rollout.scoring * batch.seq * s.shape.vocab_size * 4 * 2
    return Term(
        "scoring",
        score + value,
        f"no-grad scoring of {rollout.scoring} sequences x {batch.seq} x {s.shape.vocab_size} x 4 B x 2 + value head "
        "(fp32, AdamW)",
        ADVICE["scoring"],
    )


def _reward_model_terms(s: _Setup, training_args, models: dict[str, str] | None) -> list[Term]:
    terms = []
    for path in _reward_model_paths(training_args):
        rshape = read_shape((models or {}).get(str(Path(path)), path))  # an earlier stage's output: its model
        rw, _ = weight_bytes(
            rshape, four_bit=s.four_bit, dtype_bytes=s.db, nested=s.nested, head_params=rshape.hidden_size
        )
        terms.append(
            Term("reward_model", rw, f"reward model {path}: {rshape.params / 1e6:.1f}M params", ADVICE["reward_model"])
        )
    return terms


def _rl_terms(
    s: _Setup, batch: _Batch, rollout: _Rollout | None, training_args, models: dict[str, str] | None
) -> list[Term]:
    """PPO/GRPO/RLOO: generation, PPO's scoring and the reward models; none for the other stages."""
    if rollout is None:
        return []
    scoring = [_scoring_term(s, batch, rollout)] if s.kind == "ppo" else []
    return [_generation_term(s, batch, rollout), *scoring, *_reward_model_terms(s, training_args, models)]


def _step_flops(s: _Setup, batch: _Batch, rollout: _Rollout | None, training_args) -> float:
    """Training FLOPs of one optimizer step (module docstring: time)."""
    shape, seq = s.shape, batch.seq
    n_flop_params = shape.num_layers * shape.layer_linear_params + shape.vocab_size * shape.hidden_size
    tokens = batch.sequences * seq * s.accum
    attn = 4 * shape.num_layers * seq * shape.num_heads * shape.head_dim
    train_factor = 4 if s.use_peft else 6
    flops = train_factor * n_flop_params * tokens + 3 * attn * tokens
    if s.stage in REFERENCE_FORWARD:
        flops += 2 * n_flop_params * tokens  # the reference forward (adapter disabled)
    if s.kind == "ppo":
        epochs = int(_get(training_args, "num_ppo_epochs", 4))
        flops = (
            train_factor * n_flop_params + 3 * attn
        ) * rollout.rollout * seq * epochs + 2 * n_flop_params * rollout.rollout * seq * 2
        flops += 2 * n_flop_params * rollout.gen_tokens
    if s.kind == "group":
        steps_per_gen = int(_get(training_args, "steps_per_generation", s.accum))
        flops += 2 * n_flop_params * rollout.gen_tokens / max(steps_per_gen, 1)
        if float(_get(training_args, "beta", 0.0)) > 0:
            flops += 2 * n_flop_params * tokens
    return flops


def _peak_flops(peak_flops: float | None, dtype: str) -> float:
    """``peak_flops``, or this machine's measured matmul peak in the compute dtype (fp16 measured as fp32)."""
    if peak_flops is not None:
        return peak_flops
    from posttrain.planning.hardware import matmul_peak_flops

    return matmul_peak_flops(dtype if dtype != "float16" else "float32")


def _overhead_term(overhead_bytes: float | None) -> Term | None:
    if overhead_bytes is None:
        return None
    return Term(
        "runtime", float(overhead_bytes), "measured: this process after importing torch/transformers/TRL/peft", []
    )


def estimate(
    stage: str,
    pt_args,
    training_args,
    model_args,
    *,
    shape: ModelShape | None = None,
    models: dict[str, str] | None = None,
    peak_flops: float | None = None,
    overhead_bytes: float | None = None,
    prompt_length: int | None = None,
) -> Plan:
    """The plan of one step of ``stage`` with the parsed configs (what the stage's parser returned): the sum of the
    named memory terms, the FLOPs of an optimizer step and the notes."""
    s = _setup(stage, training_args, model_args, shape)
    notes: list[str] = []
    batch = _batch(s, pt_args, training_args, prompt_length, notes)
    if s.kind in ("ppo", "group") or stage in REFERENCE_FORWARD:
        notes.append(f"reference model: {REFERENCE}")
    rollout = _rollout(s, batch, training_args, notes) if s.kind in ("ppo", "group") else None
    terms = [
        _weights_term(s),
        _trainable_term(s),
        _activations_term(s, batch),
        *_dequant_terms(s),
        _logits_term(s, batch),
        *_rl_terms(s, batch, rollout, training_args, models),
        Term("run", float(RUN_WORKING_SET), "tokenizer, datasets, trainer, thread pools (measured once, constant)", []),
    ]
    flops = _step_flops(s, batch, rollout, training_args)
    return Plan(
        stage=stage,
        model=str(model_args.model_name_or_path),
        shape=s.shape,
        compute_dtype=s.dtype,
        terms=terms,
        overhead=_overhead_term(overhead_bytes),
        step_flops=float(flops),
        peak_flops=float(_peak_flops(peak_flops, s.dtype)),
        notes=notes,
    )


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n < 10 * 2**30 else f"{n / 2**30:,.1f} GiB"


def render(plan: Plan) -> str:
    """The plan as a table: one row per term, the largest named with its advice, fits or not."""
    s = plan.shape
    lines = [
        f"plan: {plan.stage} on {plan.model} ({s.params / 1e6:.1f}M params: {s.num_layers} layers, hidden {s.hidden_size}, "
        f"vocab {s.vocab_size}; compute dtype {plan.compute_dtype}; read from {s.source})",
        "",
        f"{'term':<13} {'memory':>12}  formula",
    ]
    for t in plan.terms + ([plan.overhead] if plan.overhead else []):
        lines.append(f"{t.name:<13} {mib(t.bytes):>12}  {t.formula}")
    lines.append(f"{'peak':<13} {mib(plan.peak_bytes):>12}  sum")
    largest = plan.largest
    lines += [
        "",
        f"largest term: {largest.name} ({mib(largest.bytes)})"
        + (f"; to shrink it: {', '.join(largest.advice)}" if largest.advice else ""),
    ]
    lines.append(
        f"time per optimizer step: {plan.step_seconds:.3g} s ({plan.step_flops:.3g} FLOP at {UTILISATION:g} x measured "
        f"{plan.peak_flops / 1e9:.1f} GFLOP/s {plan.compute_dtype} matmul peak)"
    )
    for note in plan.notes:
        lines.append(f"note: {note}")
    if plan.budget_bytes is not None:
        if plan.fits:
            lines.append(f"fits: {mib(plan.peak_bytes)} of {mib(plan.budget_bytes)} ({plan.budget_source})")
        else:
            lines.append(
                f"WILL NOT FIT: {mib(plan.peak_bytes)} needed, {mib(plan.budget_bytes)} available ({plan.budget_source}); "
                f"shrink {largest.name} first" + (f" ({', '.join(largest.advice)})" if largest.advice else "")
            )
    return "\n".join(lines)
