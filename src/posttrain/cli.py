"""``posttrain <command>``: every stage of :data:`posttrain.stages.STAGES` behind one command.

    posttrain sft --config recipes/configs/smollm2-135m/sft.yaml [--key value ...]
    posttrain model smollm2-135m-instruct      # materialize an embedded model, print its folder

A stage that trains starts under ``accelerate launch`` (as ``trl <command>`` does): its config is parsed and checked
here first, then ``accelerate launch [--config_file F] -m posttrain.stages <stage> ...`` runs it. ``--accelerate_config
F`` (or ``POSTTRAIN_ACCELERATE_CONFIG``) chooses accelerate's config file; without one, accelerate uses its own default
(``accelerate config``). ``POSTTRAIN_LAUNCHER=none`` runs training stages in this process instead (what a process
already started by accelerate or torchrun does by itself).

Errors a user can fix (bad config key, bad data row, missing model, unusable chat template) are printed as one
``posttrain: error: ...`` line and exit with status 2; nothing is written before inputs are validated.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from posttrain.errors import ConfigError, exit_on_user_error
from posttrain.stages import ALIASES, STAGES, get, run_stage

LAUNCHER_ENV = "POSTTRAIN_LAUNCHER"
ACCELERATE_CONFIG_ENV = "POSTTRAIN_ACCELERATE_CONFIG"
#: set by torchrun/accelerate in the processes they start
_LAUNCHED_MARKERS = ("LOCAL_RANK", "ACCELERATE_LAUNCHED")


def usage() -> str:
    width = max(map(len, STAGES)) + 1
    lines = [
        f"  {name:<{width}}{stage.summary}" + (f" (alias: {', '.join(stage.aliases)})" if stage.aliases else "")
        for name, stage in STAGES.items()
    ]
    return (
        "usage: posttrain <command> [--config FILE.yaml] [--key value ...]\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\nTraining commands start under `accelerate launch` (--accelerate_config FILE picks its config).\n"
    )


def _launched() -> bool:
    return os.environ.get(LAUNCHER_ENV, "").lower() == "none" or any(k in os.environ for k in _LAUNCHED_MARKERS)


def launch_command(stage: str, argv: Sequence[str], accelerate_config: str | None = None) -> list[str]:
    """The ``accelerate launch`` command line that runs ``stage`` with ``argv`` (through :mod:`posttrain.launcher`,
    which passes the stage's exit status on)."""
    config = accelerate_config or os.environ.get(ACCELERATE_CONFIG_ENV)
    return [
        sys.executable,
        "-m",
        "posttrain.launcher",
        *(["--config_file", config] if config else []),
        "-m",
        "posttrain.stages",
        stage,
        *argv,
    ]


def _split_accelerate_config(argv: list[str]) -> tuple[list[str], str | None]:
    if "--accelerate_config" not in argv:
        return argv, None
    index = argv.index("--accelerate_config")
    if index + 1 >= len(argv):
        raise ConfigError("--accelerate_config needs a path to an accelerate config YAML")
    config = argv[index + 1]
    if not os.path.isfile(config):
        raise ConfigError(f"--accelerate_config: file not found: {config}")
    return argv[:index] + argv[index + 2 :], config


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in STAGES and command not in ALIASES:
        print(f"posttrain: error: unknown command '{command}'\n\n{usage()}", file=sys.stderr)
        return 2
    stage = get(command)
    if stage.trains and not _launched():
        from posttrain.configs import parse_args

        with exit_on_user_error():
            rest, accelerate_config = _split_accelerate_config(rest)
            parse_args(stage.load().make_parser(), rest)  # a bad config fails here, before accelerate starts
        env = {**os.environ, LAUNCHER_ENV: "none"}
        return subprocess.run(launch_command(stage.name, rest, accelerate_config), env=env, check=False).returncode
    result = run_stage(stage.name, rest)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
