"""This machine: its measured matmul peak (a short timed torch matmul, fp32 and bf16, cached per process), its
available memory, and whether the CPU has native bf16 (AVX512-BF16 / AMX)."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path


def available_memory_bytes() -> int:
    """``MemAvailable`` from /proc/meminfo (what a new process may use without swapping); physical memory otherwise."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def matmul_peak_flops(dtype: str = "float32", size: int = 512, seconds: float = 0.25) -> float:
    """FLOP/s of a square ``size`` matmul in ``dtype`` on this machine's default device (CUDA when there is one),
    best of repeated timings within about ``seconds``; measured once per process."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, dtype)
    a = torch.randn(size, size, device=device).to(torch_dtype)
    b = torch.randn(size, size, device=device).to(torch_dtype)
    flops = 2 * size**3
    best = float("inf")
    a @ b  # warm-up
    deadline = time.perf_counter() + seconds
    while True:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return flops / best


@functools.cache
def runtime_overhead_bytes() -> int:
    """Resident memory a training process holds before any model exists: this process's resident size once torch,
    transformers, TRL and peft are imported (what the plan imports to parse a config, as a stage does), measured once.
    """
    import importlib

    for name in ("torch", "transformers", "trl", "peft"):
        importlib.import_module(name)
    for line in Path("/proc/self/status").read_text().splitlines() if Path("/proc/self/status").is_file() else []:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
