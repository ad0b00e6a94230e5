"""Configuration: posttrain's own fields in one place, on top of TRL's config dataclasses.

Every recipe is parsed by TRL's :class:`~trl.TrlParser` from ``(PosttrainArguments, <Stage>Config, ModelConfig)``:
one YAML file per run (``--config``), command-line flags override it. posttrain adds:

* :class:`PosttrainArguments` -- the fields TRL has no notion of (data sources with built-in tasks, identity of the
  assistant, system prompt, chat template choice). They live here and nowhere else; :class:`IdentityArguments` (the
  assistant's name and creator) is mixed into the other configs that generate built-in tasks too.
* :class:`HardwareDefaultsMixin` -- mixed into each TRL training config so one YAML runs on CPU and GPU unchanged:
  bf16 where the hardware has it (GPUs with bf16, CPUs with AVX512-BF16/AMX), else fp32; ``use_cpu`` without CUDA.
* :func:`parse_args` -- rejects unknown YAML keys with the key's name (TRL's scripts silently ignore them) and runs
  the recipe's default config when no ``--config`` is given, on a fresh :class:`PosttrainParser` over the stage
  parser's dataclasses (TRL's parser with posttrain's error messages and data-source rules).
* the ``fast_paths`` setting (:data:`FAST_PATHS`, :func:`parse_fast_paths`), checked at parse time; the paths
  themselves are :mod:`posttrain.training.fast_paths`.

TRL's command-line conventions work too: ``--dataset_name D`` (with ``--dataset_config``/``--dataset_train_split``)
is one source, ``datasets: [{path: D, ...}]``, and ``--datasets`` takes paths or JSON/YAML mappings. A data source
given on the command line replaces the config file's (the default config's built-in tasks, say) as a whole.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trl
import yaml

from posttrain.chat_templates import load_template
from posttrain.data.spec import DatasetSpec, Identity, spec_from_text
from posttrain.data.validation import DataError
from posttrain.errors import ConfigError
from posttrain.precision import resolve_training_precision

#: The embedded default model (see :mod:`posttrain.models.registry`).
DEFAULT_MODEL = "smollm2-135m-instruct"


#: the training fast paths by name, in the order they install (:mod:`posttrain.training.fast_paths` implements each)
FAST_PATHS = ("varlen_attention", "fused_lora", "compact_lm_head", "shared_dropout")


class FastPathError(ConfigError):
    """A fast path asked for by name cannot run (model, device or library version), or the setting is malformed."""


@dataclass(frozen=True)
class FastPathSelection:
    """What the ``fast_paths`` setting asks for: ``auto`` (per device), ``all`` (every path where it can run) and/or
    named paths (which must run)."""

    auto: bool = False
    all: bool = False
    named: tuple[str, ...] = ()

    def wants(self, path, device_type: str) -> bool:
        """Whether ``path`` (a :class:`~posttrain.training.fast_paths.FastPath`) is asked for on ``device_type``."""
        return path.name in self.named or self.all or (self.auto and device_type in path.auto_devices)


def parse_fast_paths(value: str | None) -> FastPathSelection:
    """``auto`` | ``all`` | ``none`` | a comma list of :data:`FAST_PATHS` (optionally with ``auto``); anything else
    is a :class:`FastPathError` naming the unknown entries."""
    parts = [part.strip().lower() for part in (value or "auto").split(",") if part.strip()] or ["auto"]
    unknown = [part for part in parts if part not in (*FAST_PATHS, "auto", "all", "none")]
    if unknown:
        raise FastPathError(
            f"fast_paths: unknown fast path(s) {', '.join(unknown)}: choose auto, all, none or from "
            f"{', '.join(FAST_PATHS)}"
        )
    if "none" in parts:
        if len(parts) > 1:
            raise FastPathError(f"fast_paths: 'none' cannot be combined with other entries ({value!r})")
        return FastPathSelection()
    return FastPathSelection(auto="auto" in parts, all="all" in parts, named=tuple(p for p in parts if p in FAST_PATHS))


@dataclass(kw_only=True)
class IdentityArguments:
    """Who the assistant is (mixed into every config with a built-in ``identity`` task: training data, pairs,
    evaluation): the name and creator its prompts use and its answers are checked against."""

    assistant_name: str = field(
        default=Identity.name,
        metadata={"help": "Name the assistant gives for itself in the built-in `identity` task."},
    )
    assistant_creator: str = field(
        default=Identity.creator,
        metadata={"help": "Creator the assistant names in the built-in `identity` task."},
    )

    @property
    def identity(self) -> Identity:
        return Identity(name=self.assistant_name, creator=self.assistant_creator)


@dataclass
class PosttrainArguments(IdentityArguments):
    """posttrain's own settings, shared by every recipe."""

    datasets: list[DatasetSpec] = field(
        default_factory=list,
        metadata={
            "help": "Data sources, each a mapping with `path` (hub name, local .json/.jsonl/.parquet/.csv file or "
            "folder, `builtin:<task>` or `chitchat`) and optional `name` (the Hub dataset's config), `split`, "
            "`format`, `num_samples`, `fraction`. On the command line one value per source, a path or a JSON/YAML "
            "mapping: `--datasets builtin:identity data/train.jsonl '{path: chitchat, num_samples: 8}'`."
        },
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Path or name of the dataset to load (TRL's `--dataset_name`): one source, short for `datasets: "
            "[{path: <dataset_name>, name: <dataset_config>, split: <dataset_train_split>}]`, any `path` above. "
            "Giving `datasets` as well (both in the file or both on the command line) is an error; either one on "
            "the command line replaces the config file's data."
        },
    )
    dataset_config: str | None = field(
        default=None,
        metadata={
            "help": "Dataset configuration name of `dataset_name`. Corresponds to the `name` argument of the "
            "`datasets.load_dataset` function."
        },
    )
    dataset_train_split: str = field(
        default="train",
        metadata={"help": "Dataset split of `dataset_name` to use for training (local files have no splits)."},
    )
    test_split_size: float | None = field(
        default=None,
        metadata={"help": "Held-out share (0-1) or row count for a `test` split; None keeps all rows for training."},
    )
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "System message added to every conversation that has none; exported to the Ollama Modelfile."
        },
    )
    chat_template: str = field(
        default="auto",
        metadata={
            "help": "`auto`: the tokenizer's own Jinja template, ChatML when it has none; `chatml`: force ChatML; "
            "or a path to a .jinja file."
        },
    )
    overlong_samples: str = field(
        default="error",
        metadata={
            "help": "SFT conversations, or preference pairs (reward, DPO: prompt + chosen or prompt + rejected as the "
            "trainer tokenizes them), longer than `max_length` tokens: `error` (name them and stop), `drop` them, or "
            "`truncate` them to `max_length` (the end is not trained; DPO drops a pair whose chosen reply would lose "
            "its end-of-turn token, and RewardTrainer cannot cut a pair, so reward drops them)."
        },
    )
    show_example: bool = field(
        default=True,
        metadata={"help": "Print one rendered training example with its loss mask before training."},
    )
    fast_paths: str = field(
        default="auto",
        metadata={
            "help": "Training fast paths (`posttrain.training.fast_paths`). `auto`: the paths that compute exactly "
            "stock training and were measured faster on this device (on a CPU: `varlen_attention`, `fused_lora`, "
            "`compact_lm_head`; on CUDA none yet); `all`: every path where it can run; `none`; or a comma list of "
            "names, which must run (an error names the path and the reason otherwise), optionally with `auto`: "
            "`varlen_attention` (packed sequences attend one by one), `fused_lora` (LoRA added by one addmm), "
            "`compact_lm_head` (TRL's fused LM head scores labelled positions only on CPUs too), `shared_dropout` "
            "(q/k/v share one LoRA dropout mask: a different regulariser from peft's, never chosen by `auto`)."
        },
    )

    def __post_init__(self) -> None:
        self.datasets = self._data_sources()
        if self.overlong_samples not in ("error", "drop", "truncate"):
            raise ConfigError(f"overlong_samples must be error, drop or truncate (got {self.overlong_samples!r})")
        if self.chat_template != "auto":
            load_template(self.chat_template)  # fail at parse time, before any model is loaded
        parse_fast_paths(self.fast_paths)  # FastPathError (a ConfigError) naming the unknown entries

    def _data_sources(self) -> list[DatasetSpec]:
        """``datasets`` as specs, with the ``dataset_name`` shorthand folded in and reset to its defaults, so that
        ``datasets`` alone says where the data comes from (in the run manifest too)."""
        sources = self.datasets
        if isinstance(sources, (str, Mapping, DatasetSpec)):  # one source: `datasets: builtin:identity`
            sources = [sources]
        sources = list(sources or [])
        if self.dataset_name is not None:
            if sources:
                raise ConfigError(
                    "'datasets' and 'dataset_name' both name the training data; give one of them "
                    f"(dataset_name: {self.dataset_name} is short for datasets: [{{path: {self.dataset_name}}}])"
                )
            try:
                spec = DatasetSpec(path=self.dataset_name, name=self.dataset_config, split=self.dataset_train_split)
            except DataError as err:
                raise ConfigError(f"dataset_name {self.dataset_name!r}: {err.problem}") from None
            self.dataset_name, self.dataset_config, self.dataset_train_split = None, None, "train"
            return [spec]
        for key, default, entry_key in (("dataset_config", None, "name"), ("dataset_train_split", "train", "split")):
            if getattr(self, key) != default:
                raise ConfigError(
                    f"{key} ({getattr(self, key)!r}) applies to dataset_name only, which is not given; "
                    f"with 'datasets', set '{entry_key}' on the entry"
                )
        specs = []
        for i, spec in enumerate(sources):
            try:
                if isinstance(spec, str):
                    spec = spec_from_text(spec)
                elif isinstance(spec, Mapping):
                    spec = DatasetSpec(**spec)
                elif not isinstance(spec, DatasetSpec):
                    raise TypeError(f"expected a path or a mapping with 'path', got {type(spec).__name__}")
            except TypeError as err:
                raise ConfigError(f"datasets[{i}]: {err}") from None
            except DataError as err:
                if not isinstance(sources[i], str):
                    raise
                raise ConfigError(f"datasets[{i}]: {err}") from None
            specs.append(spec)
        return specs


@dataclass
class HardwareDefaultsMixin:
    """Fills hardware-dependent defaults before the TRL config validates itself.

    ``bf16`` left unset (TRL defaults it to True, which is emulated and slow on AVX2-only CPUs) becomes what
    :func:`posttrain.precision.use_bf16` decides (``POSTTRAIN_PRECISION``, else the hardware); an explicit
    ``bf16: true`` on a CPU that only emulates bf16 is kept with a warning. ``use_cpu`` becomes True when no CUDA
    device exists.
    """

    def __post_init__(self) -> None:
        import torch

        if not torch.cuda.is_available():
            self.use_cpu = True
        resolve_training_precision(self)
        check_training_values(self)
        super().__post_init__()


#: (key, test, what it must be): values no run can train with, refused before anything loads
_IMPOSSIBLE = (
    ("learning_rate", lambda v: v > 0, "a positive number"),
    ("per_device_train_batch_size", lambda v: v >= 1, "at least 1"),
    ("gradient_accumulation_steps", lambda v: v >= 1, "at least 1"),
    ("max_steps", lambda v: v == -1 or v >= 1, "at least 1 (or -1: use num_train_epochs)"),
    ("num_train_epochs", lambda v: v > 0, "positive"),
    ("max_length", lambda v: v is None or v >= 8, "at least 8 tokens (or null)"),
    ("warmup_steps", lambda v: v >= 0, "0 or more"),
    ("weight_decay", lambda v: v >= 0, "0 or more"),
    ("max_grad_norm", lambda v: v is None or v >= 0, "0 or more"),
    ("beta", lambda v: v >= 0, "0 or more"),  # 0 turns GRPO/RLOO's KL term off; DPOConfig needs it positive
    ("lora_r", lambda v: v >= 1, "at least 1"),
    ("lora_alpha", lambda v: v > 0, "positive"),
    ("lora_dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
)


def check_training_values(config) -> None:
    """Raise a ConfigError naming the key for values that cannot train (negative learning rate, lora_r 0, ...)."""
    for key, ok, expected in _IMPOSSIBLE:
        value = getattr(config, key, None)
        if value is None and key not in ("max_length", "max_grad_norm"):
            continue
        try:
            good = ok(value)
        except TypeError:
            good = False
        if not good:
            raise ConfigError(f"{key} must be {expected}, got {value!r}")


@dataclass
class SFTConfig(HardwareDefaultsMixin, trl.SFTConfig):
    __doc__ = trl.SFTConfig.__doc__

    # posttrain's SFT loss (posttrain.training.sft): what these TRL keys mean here
    completion_only_loss: bool | None = field(
        default=None,
        metadata={
            "help": "Unset or `true`: every conversation, prompt-completion rows included, is trained on its "
            "assistant turns only (posttrain's chat-template loss masks). `false` (TRL: train the prompt too) is "
            "refused."
        },
    )
    assistant_only_loss: bool = field(
        default=False,
        metadata={
            "help": "posttrain's SFT always trains the assistant turns only (chat-template loss masks, "
            "`chat_template`); `true` is accepted and changes nothing, `false` (TRL's default) trains no prompt "
            "either."
        },
    )
    loss_type: str = field(
        default="nll",
        metadata={
            "help": "`nll` or `dft` (Dynamic Fine-Tuning, https://huggingface.co/papers/2508.05629), as in TRL, "
            "computed at the trained positions only; `label_smoothing_factor` (with `nll`), the MoE load-balancing "
            "loss (`router_aux_loss_coef`) and the logged `mean_token_accuracy`, `entropy`, `num_tokens` (and "
            "`aux_loss`) are TRL's too. `chunked_nll` is refused (it reads `lm_head.weight` directly and would skip "
            "the trained new-token rows).",
            "choices": ["nll", "dft", "chunked_nll"],
        },
    )


@dataclass
class RewardConfig(HardwareDefaultsMixin, trl.RewardConfig):
    __doc__ = trl.RewardConfig.__doc__

    validation_pairs: str | None = field(
        default=None,
        metadata={
            "help": "Held-out preference pairs the reward model is measured on after training (never trained on): a "
            "JSONL file or a folder with `pairs.jsonl`, e.g. on-policy pairs written by `posttrain pairs --pool "
            "validation` (the policy's own replies to validation-pool prompts, ranked by the rule checks). Pairs "
            "whose `chosen_score` equals their `rejected_score` (ties) and pairs whose prompt is also a training "
            "prompt are left out. Its pairwise accuracy, with a 95% (Wilson) interval, overall and per `task`, goes "
            "to the run manifest's `validation_pairwise`; when the interval reaches 0.5 the stage warns, and PPO, "
            "GRPO and RLOO warn when given this reward model. Unset: the `test_split_size` split is measured so."
        },
    )


@dataclass
class DPOConfig(HardwareDefaultsMixin, trl.DPOConfig):
    __doc__ = trl.DPOConfig.__doc__

    def __post_init__(self) -> None:
        if self.beta <= 0:  # beta scales the log-ratio margin: at 0 the loss is constant and nothing is learned
            raise ConfigError(f"beta must be positive, got {self.beta!r}")
        super().__post_init__()


def _check_beta(config) -> None:
    if config.beta <= 0:  # beta scales the log-ratio margin: at 0 the loss is constant and nothing is learned
        raise ConfigError(f"beta must be positive, got {config.beta!r}")


@dataclass
class KTOConfig(HardwareDefaultsMixin, trl.KTOConfig):
    __doc__ = trl.KTOConfig.__doc__

    kto_from_pairs: bool = field(
        default=False,
        metadata={
            "help": "posttrain: `false` (default): the data are unpaired rows, `prompt` + `completion` + `label` "
            "(true: desirable, false: undesirable); preference pairs are refused naming the source. `true`: the data "
            "are preference pairs (files, `builtin:<task>`, `posttrain pairs` output) and each pair becomes two "
            "rows, its chosen reply desirable and its rejected reply undesirable; unpaired rows are refused."
        },
    )

    def __post_init__(self) -> None:
        _check_beta(self)
        super().__post_init__()


def _experimental_config(name: str):
    """A TRL config class that TRL 1.16 keeps under ``trl.experimental`` (ORPO, CPO)."""
    import importlib
    import warnings

    module, cls = {"orpo": ("trl.experimental.orpo", "ORPOConfig"), "cpo": ("trl.experimental.cpo", "CPOConfig")}[name]
    with warnings.catch_warnings():  # TRLExperimentalWarning: posttrain pins TRL 1.16 and says so in its docs
        warnings.filterwarnings("ignore", message=".*trl.experimental.*")
        return getattr(importlib.import_module(module), cls)


@dataclass
class ORPOConfig(HardwareDefaultsMixin, _experimental_config("orpo")):
    __doc__ = _experimental_config("orpo").__doc__

    def __post_init__(self) -> None:
        _check_beta(self)
        super().__post_init__()


@dataclass
class SimPOConfig(HardwareDefaultsMixin, _experimental_config("cpo")):
    """TRL's ``CPOConfig`` run as SimPO (Meng et al. 2024): ``loss_type: simpo`` and ``cpo_alpha: 0`` (no NLL term),
    the settings TRL's documentation gives for SimPO; ``beta`` and ``simpo_gamma`` are SimPO's beta and gamma.
    Other ``loss_type``/``cpo_alpha`` values are refused (they are CPO, not SimPO)."""

    loss_type: str = field(
        default="simpo",
        metadata={"help": "SimPO's loss (`simpo`, the only value this stage accepts).", "choices": ["simpo"]},
    )
    cpo_alpha: float = field(
        default=0.0,
        metadata={"help": "Weight of CPO's NLL term on the chosen replies: 0 for SimPO (the only value accepted)."},
    )
    beta: float = field(
        default=2.0,
        metadata={"help": "SimPO's beta: scale of the length-normalized log-probability reward (paper: 2.0-2.5)."},
    )

    def __post_init__(self) -> None:
        _check_beta(self)
        if self.loss_type != "simpo":
            raise ConfigError(f"loss_type must be simpo for the simpo stage, got {self.loss_type!r}")
        if self.cpo_alpha != 0:
            raise ConfigError(f"cpo_alpha must be 0 for SimPO (no NLL term), got {self.cpo_alpha!r}")
        super().__post_init__()


@dataclass
class ModelConfig(trl.ModelConfig):
    __doc__ = trl.ModelConfig.__doc__

    # TRL defaults to float32, which would also make the 4-bit compute dtype fp32 even where training runs in bf16.
    dtype: str | None = field(
        default="auto",
        metadata={
            "help": "dtype to load the model in. `auto` (default): the training precision (`bf16`, which follows "
            "POSTTRAIN_PRECISION or the hardware: bf16 on GPUs with bf16 and AVX512-BF16 CPUs, else fp32), also used "
            "as the 4-bit compute dtype.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "LoRA target modules. Unset (and no `lora_target_parameters`): every linear layer except the "
            "output head (`all-linear`), for every architecture, as the log says."
        },
    )

    def __post_init__(self) -> None:
        if self.model_name_or_path is None:
            self.model_name_or_path = DEFAULT_MODEL
        check_training_values(self)
        super().__post_init__()


def known_keys(parser: trl.TrlParser) -> set[str]:
    return {action.dest for action in parser._actions} | {"env"}


def check_config_keys(parser: trl.TrlParser, config_path: str | os.PathLike) -> dict:
    """Load a YAML config and reject keys no dataclass of ``parser`` declares, naming the key and file."""
    path = Path(config_path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: must be a YAML mapping of config keys, got {type(config).__name__}")
    known = known_keys(parser)
    for key in config:
        if key not in known:
            hints = difflib.get_close_matches(str(key), sorted(known), n=3)
            suggestion = f" (did you mean {' or '.join(repr(h) for h in hints)}?)" if hints else ""
            raise ConfigError(f"{path}: unknown config key '{key}'{suggestion}")
    return config


#: the keys of :class:`PosttrainArguments` that name the training data: ``datasets`` or its one-source shorthand
DATA_SOURCE_KEYS = ("datasets", "dataset_name")
#: everything a data source is made of; a source on the command line replaces all of these from the config file
_DATA_KEYS = ("datasets", "dataset_name", "dataset_config", "dataset_train_split")


def dataset_value(text: str) -> DatasetSpec:
    """The argparse ``type`` of ``--datasets``: one source per value, a path or a JSON/YAML mapping."""
    try:
        return spec_from_text(text)
    except DataError as err:
        raise argparse.ArgumentTypeError(f"cannot use {text!r} as a data source: {err.problem}") from None


def _flags_given(parser: trl.TrlParser, argv: Sequence[str], dests: Sequence[str]) -> dict[str, str]:
    """``{dest: flag as typed}`` for the options of ``dests`` that ``argv`` gives (``--flag v`` or ``--flag=v``)."""
    given = {}
    for action in parser._actions:
        if action.dest in dests:
            for token in argv:
                if any(token == flag or token.startswith(flag + "=") for flag in action.option_strings):
                    given[action.dest] = token.split("=", 1)[0]
    return given


class PosttrainParser(trl.TrlParser):
    """TRL's parser with posttrain's rules, made afresh for each parse by :func:`parse_args` (TRL's parser keeps a
    config file's values as its defaults): ``--datasets`` takes one source per value (a path or a JSON/YAML mapping),
    a data source on the command line (``replace_data``) replaces the config file's data keys as a whole, and a bad
    value is a :class:`ConfigError` naming where it came from (the command line or the config file ``source``)
    instead of argparse's usage text and exit."""

    def __init__(self, dataclass_types, *, argv: Sequence[str], source: str, replace_data: bool) -> None:
        super().__init__(dataclass_types)
        self.argv, self.source, self.replace_data = list(argv), source, replace_data
        for action in self._actions:
            if action.dest == "datasets" and action.type is DatasetSpec:
                action.type = dataset_value

    def set_defaults_with_config(self, **config) -> list[str]:
        if self.replace_data:  # the command line's source replaces the file's: its data keys never become defaults
            config = {key: value for key, value in config.items() if key not in _DATA_KEYS}
        return super().set_defaults_with_config(**config)

    def error(self, message: str):
        message = message.replace("argument ", "", 1)
        flags = [f for f in message.split(": ", 1)[0].split("/") if f.startswith("--")]
        # a bad value of a flag that is on the command line comes from there, not from the config file
        where = (
            "command line" if any(t == f or t.startswith(f + "=") for t in self.argv for f in flags) else self.source
        )
        raise ConfigError(f"{where}: {message}")


def parse_args(
    parser: trl.TrlParser, argv: Sequence[str] | None = None, default_config: str | os.PathLike | None = None
) -> tuple:
    """Parse ``--config`` YAML plus CLI overrides into the dataclasses of ``parser`` (a stage's ``make_parser()``,
    which is left as it is: the parse runs on a :class:`PosttrainParser` over the same dataclasses).

    Without ``--config`` the recipe's ``default_config`` is used, so a bare ``accelerate launch recipes/sft.py``
    trains the default model. Unknown YAML keys raise :class:`ConfigError`; unknown flags exit via argparse.
    A data source on the command line (``--datasets`` or ``--dataset_name``) replaces the config file's data keys
    as a whole; ``datasets`` and ``dataset_name`` together, in the file or on the command line, are an error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv and default_config is not None:
        argv = ["--config", str(default_config), *argv]
    source = "command line"
    config: dict = {}
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise ConfigError("--config needs a path to a YAML file")
        config = check_config_keys(parser, argv[index + 1])
        source = argv[index + 1]

    cli_data = _flags_given(parser, argv, DATA_SOURCE_KEYS)
    if len(cli_data) > 1:
        raise ConfigError(
            f"command line: {cli_data['datasets']} and {cli_data['dataset_name']} both name the "
            "training data; give one of them"
        )
    if not cli_data and config.get("datasets") and config.get("dataset_name") is not None:
        raise ConfigError(f"{source}: 'datasets' and 'dataset_name' both name the training data; give one of them")
    parser = PosttrainParser(parser.dataclass_types, argv=argv, source=source, replace_data=bool(cli_data))
    try:
        return parser.parse_args_and_config(argv, fail_with_unknown_args=True)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            if str(err).startswith((source, "command line")):
                raise
            key = str(err).split(" ", 1)[0].strip("'`:")  # the messages start with the key they are about
            where = "command line" if _flags_given(parser, argv, [key]) else source
            raise ConfigError(f"{where}: {err}") from None
        message = str(err)
        if "not used by the HfArgumentParser" in message:
            message = "unknown command-line arguments: " + message.split(":", 1)[1].strip()
        raise ConfigError(message) from err
