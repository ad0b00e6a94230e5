"""The contract every fast path keeps, and what they share: where training runs, version checks, call counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

import torch


class Refused(Exception):
    """Raised by :meth:`FastPath.install` when a probe of the real model shows the path would not be exact; the
    install has undone itself and the message says why."""


@dataclass(frozen=True)
class Context:
    """Where training runs, as far as a fast path needs to know.

    ``device``: the device the trainer computes on. ``padding_free``: batches arrive packed into one row with
    restarting ``position_ids``. ``sharded``: why parameters are sharded across ranks (DeepSpeed ZeRO-3, FSDP), asked of
    accelerate, or None.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    padding_free: bool = False
    sharded: str | None = None


class Calls:
    """How often a path ran its fast code and how often it handed a call to the stock code, by reason."""

    def __init__(self) -> None:
        self.fast = 0
        self.stock: Counter[str] = Counter()

    def reset(self) -> None:
        self.fast = 0
        self.stock.clear()

    def fell_back(self, reason: str) -> None:
        self.stock[reason] += 1

    def summary(self) -> str:
        total = self.fast + sum(self.stock.values())
        if not total:
            return "never called"
        text = f"{self.fast} of {total} calls fast"
        if self.stock:
            text += " (stock: " + ", ".join(f"{n} {why}" for why, n in self.stock.most_common()) + ")"
        return text


class FastPath:
    """One fast path: the same training as the stock libraries, less work.

    * ``supported(model, ctx)`` -> why the path cannot run here, or None (cheap, static checks).
    * ``install(model, ctx)`` -> a function that undoes the install; raises :class:`Refused` (after undoing itself)
      when a probe of the real model shows the path would not be exact.
    * ``verified``: the library versions the path was proven against (``packaging`` specifiers); outside them it
      stays off.
    * ``exact``: the path computes stock training's forward and gradients; only exact paths may be chosen by ``auto``.
    * ``auto_devices``: device types where ``auto`` turns the path on: measured faster *and* equal there.
    * ``calls``: counted by the patched code, printed at the end of training.
    """

    name: str = ""
    summary: str = ""
    exact: bool = True
    auto_devices: frozenset[str] = frozenset()
    verified: dict[str, str] = {}

    def __init__(self) -> None:
        self.calls = Calls()

    def supported(self, model, ctx: Context) -> str | None:
        return None

    def install(self, model, ctx: Context) -> Callable[[], None]:
        raise NotImplementedError


def version_problem(verified: dict[str, str]) -> str | None:
    """None when every installed package satisfies its specifier; else e.g. ``transformers 5.24.0 (verified: ==5.23.*)``."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    for package, spec in verified.items():
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            return f"{package} is not installed (verified: {spec})"
        if Version(installed) not in SpecifierSet(spec):
            return f"{package} {installed} is outside the versions this path was verified with ({spec})"
    return None


def base_model(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def autocast_on(device_type: str) -> bool:
    """Autocast active for ``device_type`` (``torch.is_autocast_enabled()`` without an argument asks about CUDA only)."""
    return torch.is_autocast_enabled(device_type)  # torch >= 2.4, every path's verified range
