"""``accelerate launch`` as posttrain's CLI starts it: the same launcher, with the stage's exit status passed on.

accelerate's launcher turns a child that exits non-zero into its own traceback and exit status 1. A stage that refuses
its input prints one ``posttrain: error:`` line and exits with 2 (docs/bad-inputs.md); this wrapper keeps that: the
child's status is returned as is, and accelerate's traceback is not printed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser

    args = launch_command_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        launch_command(args)
    except subprocess.CalledProcessError as err:  # one process: the child's own status
        return err.returncode
    except Exception as err:  # several processes (torch's elastic launcher): its summary names the failed rank
        if type(err).__name__ != "ChildFailedError":
            raise
        print(f"posttrain: a training process failed: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
