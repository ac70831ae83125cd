"""Opening a file that a run wrote, in its own directory. A run's code is untrusted: the service must not
follow a link it left there (``metrics.csv`` -> the store, or any file the service may read) nor block on
a pipe or device it made in place of a file (a read that never ends holds a service thread for ever)."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO


def open_run_file(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file and not a link (OSError otherwise:
    callers read a missing or refused file alike, as nothing to show)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{os.fspath(path)} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
