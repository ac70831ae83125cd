"""The output directory's filesystem as a resource: is there room to start a run, and is it there at all?

A full disk is the fault a shared training box really has (checkpoints pile up). Below the threshold the
service starts no run (they stay queued, with this module's reason), answers submissions with 507 and
reports itself degraded; all of it lifts by itself once space is back. The same holds while the output
directory is gone or unwritable (an unmounted volume, a permissions change).

``check()`` is a ``stat``, an ``access`` and a ``statvfs`` call (microseconds): it runs on submissions, on
dispatch and on ``/healthz``, never on the polling path.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DiskState:
    ok: bool
    free_bytes: int | None
    total_bytes: int | None
    min_free_bytes: int
    min_free_percent: float
    reason: str | None = None  # why runs do not start now (None when ok)


class DiskGuard:
    def __init__(self, output_dir: Path, min_free_bytes: int, min_free_percent: float) -> None:
        self.output_dir = output_dir
        self.min_free_bytes = min_free_bytes
        self.min_free_percent = min_free_percent

    def check(self) -> DiskState:
        return self._measure()

    def _state(self, ok: bool, free: int | None, total: int | None, reason: str | None = None) -> DiskState:
        return DiskState(ok, free, total, self.min_free_bytes, self.min_free_percent, reason=reason)

    def _measure(self) -> DiskState:
        where = self.output_dir
        if not where.is_dir():
            return self._state(False, None, None, reason=f"the output directory {where} is gone")
        if not os.access(where, os.W_OK | os.X_OK):
            return self._state(False, None, None, reason=f"the output directory {where} is not writable")
        try:
            st = os.statvfs(where)
        except OSError as exc:
            return self._state(False, None, None, reason=f"the output directory {where}: {exc.strerror}")
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        percent = 100.0 * free / total if total else 0.0
        if free < self.min_free_bytes or percent < self.min_free_percent:
            reason = (
                f"the output directory's disk is nearly full: {human(free)} free ({percent:.1f}%), "
                f"runs start only with at least {human(self.min_free_bytes)} and {self.min_free_percent:g}% free"
            )
            return self._state(False, free, total, reason=reason)
        return self._state(True, free, total)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def size_on_disk(*paths: Path) -> int:
    """Bytes the files under ``paths`` take (allocated blocks; links are not followed)."""
    total = 0
    stack = [str(p) for p in paths]
    while stack:
        path = stack.pop()
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        continue
        except NotADirectoryError:
            with contextlib.suppress(OSError):
                total += os.lstat(path).st_blocks * 512
        except OSError:
            continue
    return total
