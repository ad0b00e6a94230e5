"""``posttrain evaluate`` settings: which models (stages), which suites, generation, judge and report settings.

Parsed by TRL's ``TrlParser`` from one YAML (plus command-line overrides) like every other stage; unknown keys are
errors. Models are mappings, each with a ``label`` (the stage name in reports: base, sft, dpo, ppo...) and one
source:

    models:
      - {label: base, path: smollm2-135m-instruct}             # embedded alias, HF folder or hub id
      - {label: sft, path: outputs/smollm2-135m/sft}            # a LoRA adapter folder
      - {label: merged, path: outputs/smollm2-135m/merged}      # a merged model folder
      - {label: q4, path: outputs/smollm2-135m/model.Q4_K_M.gguf}   # a GGUF file, run by llama.cpp
      - {label: ollama, model: posttrain, endpoint: http://localhost:11434/v1, api_key_env: null}

``chat_template_kwargs`` (global, and per model, whose keys win) are extra chat-template variables, so one thinking
model can be evaluated twice, with thinking on and off:

    models:
      - {label: think, path: Qwen/Qwen3-0.6B}
      - {label: no-think, path: Qwen/Qwen3-0.6B, chat_template_kwargs: {enable_thinking: false}}
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from posttrain.configs import IdentityArguments
from posttrain.data.tools import _normalize_template_kwargs, _Problem
from posttrain.errors import ConfigError
from posttrain.evaluation.backends import resolve_dtype

__all__ = ["EvalArguments", "JudgeSpec", "ModelSpec", "parse_template_kwargs"]


def parse_template_kwargs(value: Any, where: str) -> dict[str, Any] | None:
    """``chat_template_kwargs`` checked as training data's are (a mapping of string keys, none of the names posttrain
    passes itself; null values left out); a ConfigError names ``where``."""
    try:
        return _normalize_template_kwargs(value)
    except _Problem as problem:
        raise ConfigError(f"{where}: {problem}") from None


@dataclass
class ModelSpec:
    """One model to evaluate (or to judge with).

    Exactly one source: ``path`` (embedded alias, HF folder, LoRA adapter folder, merged folder, hub id, or a
    ``.gguf`` file) or ``model`` (the model name an OpenAI-compatible ``endpoint`` serves; ``endpoint`` defaults to
    Ollama on localhost). ``api_key_env`` names the environment variable holding the endpoint's API key.
    ``chat_template_kwargs``: extra chat-template variables for this model (``{enable_thinking: false}``), over the
    run's global ones; endpoints get them as the request's ``chat_template_kwargs`` (vLLM, llama.cpp's server).
    """

    label: str = ""
    stage: str | None = None
    path: str | None = None
    endpoint: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    chat_template: str = "auto"
    chat_template_kwargs: dict | None = None

    @property
    def kind(self) -> str:
        if self.path is None:
            return "endpoint"
        return "gguf" if str(self.path).lower().endswith(".gguf") else "hf"

    def describe(self) -> dict[str, Any]:
        """What results.json records about the model (never an API key: only the variable's name)."""
        source = {"hf": self.path, "gguf": self.path, "endpoint": f"{self.model} @ {self.endpoint or 'default'}"}
        return {
            "label": self.label,
            "stage": self.stage or self.label,
            "kind": self.kind,
            "source": source[self.kind],
            "api_key_env": self.api_key_env,
        }

    @classmethod
    def parse(cls, value: Any, where: str, *, needs_label: bool = True):
        if isinstance(value, str) and not needs_label:
            value = {"path": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a mapping such as {{label: sft, path: outputs/sft}}, got {value!r}")
        known = {f.name for f in fields(cls)} - (set() if needs_label else {"label", "stage"})
        unknown = set(value) - known
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; expected {', '.join(sorted(known))}"
            )
        spec = cls(**value)
        if needs_label and isinstance(spec.label, bool):  # YAML reads off/on/no/yes as booleans
            raise ConfigError(f"{where}: label {spec.label!r} is a YAML boolean (off/on/no/yes): quote it, e.g. 'off'")
        if needs_label and not (isinstance(spec.label, str) and spec.label.strip()):
            raise ConfigError(f"{where}: needs a 'label' (the stage name shown in reports, e.g. base, sft, dpo)")
        if (spec.path is None) == (spec.model is None):
            raise ConfigError(
                f"{where}: needs exactly one of 'path' (model folder, adapter, alias or .gguf file) "
                "or 'model' (the name an OpenAI-compatible endpoint serves)"
            )
        if spec.endpoint is not None and spec.path is not None:
            raise ConfigError(f"{where}: 'endpoint' goes with 'model', not with 'path'")
        if spec.endpoint is not None and not str(spec.endpoint).startswith(("http://", "https://")):
            raise ConfigError(f"{where}: endpoint must be an http(s) URL such as http://localhost:11434/v1")
        spec.chat_template_kwargs = parse_template_kwargs(spec.chat_template_kwargs, f"{where}.chat_template_kwargs")
        return spec


@dataclass
class JudgeSpec(ModelSpec):
    """The judge model: a ``path`` (local HF model or alias) or an endpoint ``model``; ``max_new_tokens`` bounds its
    explanation plus verdict."""

    max_new_tokens: int = 384


@dataclass
class EvalArguments(IdentityArguments):
    """Settings of an evaluation run (with the assistant's identity, checked by the built-in ``identity`` task)."""

    models: list[dict] = field(
        default_factory=list,
        metadata={
            "help": "Models to evaluate, in stage order: mappings with `label` and `path` (alias, HF folder, "
            "adapter, merged folder or .gguf) or `model` (+ `endpoint`, `api_key_env`) for an OpenAI-compatible "
            "server; optional `chat_template`, `chat_template_kwargs` (e.g. {enable_thinking: false})."
        },
    )
    suites: list[str] = field(
        default_factory=lambda: ["builtin"],
        metadata={
            "help": "Suite YAML files, or names of shipped suites (builtin, ifeval, ifbench, mmlu, "
            "truthfulqa, mtbench, reward)."
        },
    )
    output_dir: str = field(
        default="outputs/eval", metadata={"help": "Where results.json, report.md and report.html are written."}
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Generation cache (default: <output_dir>/cache). Outputs are keyed by model fingerprint, "
            "prompt and generation settings, so re-scoring never regenerates."
        },
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Generation budget for every suite; unset, each suite's own (256 for suites without one)."},
    )
    batch_size: int = field(default=16, metadata={"help": "Prompts per batch for local HF models."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Precision of local HF models (and the judge): `auto` follows POSTTRAIN_PRECISION, else the "
            "hardware (bfloat16 on GPUs with bf16 and on CPUs with AVX512-BF16/AMX, float32 elsewhere), or "
            "float32/bfloat16/float16."
        },
    )
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (with do_sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (with do_sample)."})
    seed: int = field(default=42, metadata={"help": "Sampling seed (and bootstrap seed)."})
    max_samples: int | None = field(default=None, metadata={"help": "At most this many samples per data source."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message for suites that set none."})
    chat_template_kwargs: dict | None = field(
        default=None,
        metadata={
            "help": "Extra chat-template variables for every model, e.g. {enable_thinking: false}; a model's own "
            "`chat_template_kwargs` win. Keys a template never mentions get a warning (they change nothing)."
        },
    )
    baseline: str | None = field(
        default=None,
        metadata={"help": "Label of the model the `pairwise` scorer compares against (default: the first model)."},
    )
    judge: dict | None = field(
        default=None,
        metadata={
            "help": "Judge model for the `judge` and `pairwise` scorers: {path: ...} (local HF model) or "
            "{model: ..., endpoint: ..., api_key_env: ...}; optional max_new_tokens, chat_template, "
            "chat_template_kwargs (its own only: the run's global ones are for the evaluated models)."
        },
    )
    reward_model: str | None = field(
        default=None, metadata={"help": "Reward model folder for the `reward_model` scorer (posttrain.models.reward)."}
    )
    embedding_model: str = field(
        default="all-minilm-l6-v2", metadata={"help": "Encoder for the `embedding` scorer: alias or local folder."}
    )
    request_timeout: float = field(default=120.0, metadata={"help": "Seconds before an endpoint request times out."})
    max_retries: int = field(default=4, metadata={"help": "Endpoint retries (exponential backoff) before failing."})
    retry_backoff: float = field(default=1.0, metadata={"help": "First backoff delay in seconds (doubles each time)."})
    concurrency: int = field(default=4, metadata={"help": "Endpoint requests in flight at once."})
    bootstrap_samples: int = field(default=2000, metadata={"help": "Bootstrap resamples for confidence intervals."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        if not isinstance(self.models, list) or not self.models:
            raise ConfigError("models: list at least one model, e.g. [{label: base, path: smollm2-135m-instruct}]")
        self.models = [
            m if isinstance(m, ModelSpec) else ModelSpec.parse(m, f"models[{i}]") for i, m in enumerate(self.models)
        ]
        labels = [m.label for m in self.models]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ConfigError(f"models: labels must be unique (repeated: {', '.join(duplicates)})")
        if self.baseline is not None and self.baseline not in labels:
            raise ConfigError(f"baseline '{self.baseline}' is not the label of a model ({', '.join(labels)})")
        if self.judge is not None and not isinstance(self.judge, JudgeSpec):
            self.judge = JudgeSpec.parse(self.judge, "judge", needs_label=False)
            self.judge.label = self.judge.label or "judge"
        if not self.suites:
            raise ConfigError("suites: list at least one suite")
        for name in ("max_new_tokens", "batch_size", "bootstrap_samples", "concurrency"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1 (got {getattr(self, name)})")

        resolve_dtype(self.dtype)  # a ConfigError naming the choices
        self.chat_template_kwargs = parse_template_kwargs(self.chat_template_kwargs, "chat_template_kwargs")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"max_samples must be at least 1 (got {self.max_samples})")

    def template_kwargs(self, spec: ModelSpec) -> dict[str, Any]:
        """The chat-template variables ``spec`` is generated with: the global ones, then the model's own."""
        return {**(self.chat_template_kwargs or {}), **(spec.chat_template_kwargs or {})}

    @property
    def baseline_label(self) -> str:
        return self.baseline or self.models[0].label
