"""Errors a user can fix, and how every entry point reports them.

Every such error derives from :class:`UserError` (a bad config key, a bad data row, a missing model, an unusable chat
template, an export that cannot be done as configured). The message names the file, row or key; the entry points
turn it into one ``posttrain: error: ...`` line and exit status 2 through :func:`exit_on_user_error`, so no module
needs to import the CLI to report one. Full disks and permission errors are reported the same way.
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator


class UserError(Exception):
    """An error the user can fix; the message says what and where (file, row, key)."""


class ConfigError(UserError, ValueError):
    """A config file or flag that cannot be used; the message names the file and key."""


#: OS errors about the place things are written or read (full disk, size limit, permissions), reported in one line
STORAGE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def storage_error(err: BaseException) -> str | None:
    """The one-line message for a full disk / size limit / permission error, or None for any other error."""
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    # raised from safetensors' Rust writer
    if type(err).__name__ == "SafetensorError" and ("I/O error" in str(err) or "IoError" in str(err)):
        return f"writing safetensors failed: {err}"
    return None


@contextlib.contextmanager
def exit_on_user_error(output_dir: str | None = None) -> Iterator[None]:
    """Turn the errors a user can fix into one clear line and exit status 2 (no traceback)."""
    try:
        yield
    except UserError as err:
        print(f"posttrain: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except Exception as err:
        message = storage_error(err)
        if message is None:
            raise
        target = f" (output_dir {output_dir})" if output_dir else ""
        print(
            f"posttrain: error: {message}{target}; free space or fix permissions and run again",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2) from None
