"""Run stages one after another in this process and print each one's peak resident memory above a baseline taken
after the imports and before its model loads: ``python measure_peak.py NAME STAGE CONFIG [...]`` prints one
``peak-delta NAME: {json}`` line per run.

After importing everything a stage imports (torch, transformers, peft, TRL and its trainers, posttrain), and before
each run, the process's high-water mark is reset (``echo 5 > /proc/self/clear_refs``) and the resident size taken as the baseline;
the delta is the high-water mark (``VmHWM``) at the end minus it: what the run itself added at its peak. Where
clear_refs cannot be written, ``ru_maxrss`` before and after is used (a delta of high-water marks: it undercounts by
whatever the imports held transiently).
"""

import gc
import json
import resource
import sys
from pathlib import Path


def status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


def measure(stage: str, config: str) -> dict:
    """Run ``stage`` on ``config`` in this process; its peak resident memory above the resident size before it."""
    from posttrain.stages import run_stage

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        baseline, method = status_bytes("VmRSS"), "VmHWM after clear_refs"
    except OSError:
        baseline, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"
    run_stage(stage, ["--config", config])
    peak = status_bytes("VmHWM") if method != "ru_maxrss" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"baseline": baseline, "peak": peak, "delta": peak - baseline, "method": method}


def main():
    """``measure_peak.py NAME STAGE CONFIG [NAME STAGE CONFIG ...]``: one ``peak-delta NAME: {json}`` line each."""
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401
    from trl import DPOTrainer, GRPOTrainer, RewardTrainer, RLOOTrainer, SFTTrainer  # noqa: F401

    import posttrain.rl.ppo
    import posttrain.training.common  # noqa: F401
    from posttrain.stages import get

    args = sys.argv[1:]
    runs = [args[i : i + 3] for i in range(0, len(args), 3)]
    for _, stage, _ in runs:
        get(stage).load()
    for name, stage, config in runs:
        print(f"peak-delta {name}: " + json.dumps(measure(stage, config)), flush=True)


if __name__ == "__main__":
    main()
