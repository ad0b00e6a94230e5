"""Weighted mixtures of data sources, with the same rule as :func:`trl.scripts.utils.get_dataset`.

``fraction`` is the target share of a source in the final mixture. Shares are normalised to sum to one, and the
mixture size ``N`` is the largest one for which no source would have to be oversampled
(``N = min(size_i / share_i)`` over sources with a positive share). Each source then contributes its first
``round(share_i * N)`` rows. Without fractions every source is used in full.
"""

from __future__ import annotations

from collections.abc import Sequence

from .validation import DataError

__all__ = ["MIXTURE_SOURCE", "mixture_sizes"]

MIXTURE_SOURCE = "dataset mixture"
"""The ``source`` named by errors about the mixture as a whole."""


def mixture_sizes(sizes: Sequence[int], fractions: Sequence[float | None]) -> list[int]:
    """How many rows (from the start) of each source go into the mixture.

    Args:
        sizes: Number of rows available in each source.
        fractions: Each source's ``fraction``; all ``None`` to use every row of every source.

    Raises:
        DataError: If fractions are set for some sources but not all, are negative, or are all zero.

    >>> mixture_sizes([100, 100], [0.75, 0.25])
    [100, 33]
    """
    if len(sizes) != len(fractions):
        raise ValueError("sizes and fractions must have the same length")
    if all(fraction is None for fraction in fractions):
        return list(sizes)
    if any(fraction is None for fraction in fractions):
        raise DataError(MIXTURE_SOURCE, "`fraction` must be set for either all datasets in the mixture or none of them")
    shares = [float(fraction) for fraction in fractions]  # type: ignore[arg-type]
    if any(share < 0 for share in shares) or sum(shares) <= 0:
        raise DataError(MIXTURE_SOURCE, f"fractions must be >= 0 and not all zero (got {shares})")
    weights = [share / sum(shares) for share in shares]
    total = min(size / weight for size, weight in zip(sizes, weights, strict=True) if weight > 0)
    return [min(size, round(weight * total)) for size, weight in zip(sizes, weights, strict=True)]
