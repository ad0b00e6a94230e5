"""Files shipped inside installed PyPI packages (the embedded model, evaluation data, the embedding model, chit-chat
conversations), found on disk through the package metadata: nothing is imported and nothing is downloaded."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path


def package_file(
    distribution: str, relative: str, *, install: str, error: Callable[[str], Exception], folder: bool = False
) -> Path:
    """The installed file (``folder``: directory) ``relative`` of ``distribution``.

    Raises ``error(message)``: the package is not installed (the message says ``pip install --no-deps <install>``),
    or it is installed without that file (reinstall it).
    """
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise error(f"needs the package {distribution}: pip install --no-deps '{install}'") from None
    path = Path(dist.locate_file(relative))
    if not (path.is_dir() if folder else path.is_file()):
        raise error(
            f"{distribution} is installed but {path} is missing; reinstall it (pip install --no-deps "
            f"--force-reinstall '{install}')"
        )
    return path
