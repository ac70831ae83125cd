"""Atomic file replacement: a temporary file in the same directory, then ``os.replace``, so a reader (the
service polling progress.json, a restart reading an exit code, a run loading the data cache) sees the old
file or the new one, never half of one. Standard library only: the local launcher's wrapper imports it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def replace_atomic(
    path: str | os.PathLike[str], write: Callable[[BinaryIO], object], durable: bool = True
) -> None:
    """``write(f)`` into a fresh temporary file, then move it over ``path``. ``durable``: fsync before the
    move (what must survive a power cut: exit codes, the data cache); a file rewritten every few seconds
    (progress.json) skips it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes | str, durable: bool = True) -> None:
    payload = data.encode() if isinstance(data, str) else data
    replace_atomic(path, lambda f: f.write(payload), durable)
