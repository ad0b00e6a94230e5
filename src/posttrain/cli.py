"""``posttrain <stage>``: the same parsers and stage functions the recipes use.

    posttrain sft --config recipes/configs/smollm2-135m/sft.yaml [--flag value ...]
    posttrain model smollm2-135m-instruct      # materialize an embedded model, print its folder

Errors a user can fix (bad config key, bad data row, missing model, unusable chat template) are printed as one
``posttrain: error: ...`` line and exit with status 2; nothing is written before inputs are validated.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import sys
from collections.abc import Iterator, Sequence

#: stage name -> module with ``make_parser()`` and ``main(*parsed)``
STAGES = {
    "sft": "posttrain.training.sft",
    "reward": "posttrain.training.reward",
    "dpo": "posttrain.training.dpo",
    "ppo": "posttrain.training.ppo",
    "grpo": "posttrain.training.grpo",
    "rloo": "posttrain.training.rloo",
    "evaluate": "posttrain.evaluation.cli",
    "eval": "posttrain.evaluation.cli",
    "merge": "posttrain.export.stage_merge",
    "export": "posttrain.export.stage_export",
}

USAGE = """usage: posttrain <command> [--config FILE.yaml] [overrides...]

commands:
  sft      supervised fine-tuning with (Q)LoRA and chat templates
  reward   reward model (sequence classification) on preference pairs
  dpo      direct preference optimization on top of the SFT result
  ppo      PPO (posttrain's trainer) on a LoRA adapter: reward model and/or rule rewards, KL to the start model
  grpo     GRPO (TRL) with posttrain's rewards as reward_funcs
  rloo     RLOO (TRL) with posttrain's rewards as reward_funcs
  evaluate rule-based and model-based suites on models, adapters, GGUF files or endpoints (alias: eval)
  merge    merge the adapter chain (SFT -> DPO/PPO) into full-precision weights, report logit drift
  export   GGUF (llama.cpp) + quantized types + Ollama Modelfile, verified; non-zero exit on failure
  pipeline every stage in order (SFT, reward, DPO, PPO, evaluate, merge, export, verify), skipping finished ones
  pairs    on-policy preference pairs: sample n replies, score (rule checks or --reward_model), keep best vs worst
  model    materialize an embedded model alias and print its local folder
"""


def user_errors() -> tuple[type[BaseException], ...]:
    from posttrain.adapters import AdapterError
    from posttrain.chat_templates import ChatTemplateError
    from posttrain.configs import ConfigError
    from posttrain.data.validation import DataError, DataValidationError
    from posttrain.evaluation.backends import BackendError
    from posttrain.export import ExportError
    from posttrain.export.llama_cpp import LlamaCppError
    from posttrain.models import ModelNotFoundError
    from posttrain.reward_model import RewardModelError
    from posttrain.weights import WeightsError

    return (
        ConfigError,
        DataError,
        DataValidationError,
        ModelNotFoundError,
        ChatTemplateError,
        AdapterError,
        RewardModelError,
        BackendError,
        ExportError,
        LlamaCppError,
        WeightsError,
    )


#: OS errors about the place things are written or read (full disk, size limit, permissions), reported in one line
STORAGE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def storage_error(err: BaseException) -> str | None:
    """The one-line message for a full disk / size limit / permission error, or None for any other error."""
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    if type(err).__name__ == "SafetensorError" and ("I/O error" in str(err) or "IoError" in str(err)):  # raised from safetensors' Rust writer
        return f"writing safetensors failed: {err}"
    return None


@contextlib.contextmanager
def exit_on_user_error(output_dir: str | None = None) -> Iterator[None]:
    """Turn the errors a user can fix into one clear line and exit status 2 (no traceback)."""
    try:
        yield
    except user_errors() as err:
        print(f"posttrain: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except Exception as err:
        message = storage_error(err)
        if message is None:
            raise
        target = f" (output_dir {output_dir})" if output_dir else ""
        print(f"posttrain: error: {message}{target}; free space or fix permissions and run again", file=sys.stderr,
              flush=True)  # fmt: skip
        raise SystemExit(2) from None


def run_stage(stage: str, argv: Sequence[str] | None = None, default_config=None):
    """Parse ``argv`` with the stage's parser (``--config`` YAML + overrides) and run the stage."""
    from posttrain.configs import parse_args

    from posttrain.training.common import discard_unfinished_runs

    module = importlib.import_module(STAGES[stage])
    with exit_on_user_error():
        parsed = parse_args(module.make_parser(), argv, default_config=default_config)
    output_dir = next((getattr(p, "output_dir", None) for p in parsed if getattr(p, "output_dir", None)), None)
    try:
        with exit_on_user_error(output_dir):
            return module.main(*parsed)
    except BaseException:
        discard_unfinished_runs()  # nothing half-written stays behind (a checkpoint to resume from does)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in STAGES:
        run_stage(command, rest)
        return 0
    if command == "pipeline":
        return importlib.import_module("posttrain.pipeline").main(rest)
    if command == "pairs":
        return importlib.import_module("posttrain.pairs").main_pairs(rest)
    if command == "model":
        from posttrain.models import EMBEDDED_MODELS, resolve_model

        with exit_on_user_error():
            for name in rest or list(EMBEDDED_MODELS):
                print(resolve_model(name))
        return 0
    print(f"posttrain: error: unknown command '{command}'\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
