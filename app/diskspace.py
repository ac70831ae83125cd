"""The output directory's filesystem as a resource: is there room to start a run, and is it there at all?

A full disk is the fault a shared training box really has (checkpoints pile up). Below the threshold the
service starts no run (they stay queued, with this module's reason), answers submissions with 507 and
reports itself degraded; all of it lifts by itself once space is back. The same holds while the output
directory is gone or unwritable (an unmounted volume, a permissions change).

``check()`` is a ``stat``, an ``access`` and a ``statvfs`` call (microseconds): it runs on submissions, on
dispatch and on ``/healthz``, never on the polling path.

Below the threshold, the guard also looks for the run to blame (``watch``: the running runs' files): the
running run whose files (its run directory and its log) take at least the space that is missing, so that
deleting them alone would lift the guard; the largest if several do. Its name goes into the reason (and so
into ``/healthz`` and every queued run's ``waiting_reason``), into ``DiskState.run``, and into that run's
own answer (``warning_for``). Measuring walks those directories: at most once every ``BLAME_EVERY_S``,
and only while the disk is short.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

BLAME_EVERY_S = 10.0  # how often the running runs' files are measured while the disk is short

# The running runs, each as (name, the paths of its files): what the guard may blame.
RunningFiles = Callable[[], Iterable[tuple[str, Sequence[Path]]]]


@dataclass(frozen=True)
class DiskState:
    ok: bool
    free_bytes: int | None
    total_bytes: int | None
    min_free_bytes: int
    min_free_percent: float
    reason: str | None = None  # why runs do not start now (None when ok)
    run: str | None = None  # the running run whose files alone hold the space that is missing
    run_bytes: int | None = None  # ... and what they take

    @property
    def missing_bytes(self) -> int:
        """How much more must be free before runs start again (0 when ok, or when it is not about space)."""
        if self.ok or self.free_bytes is None or self.total_bytes is None:
            return 0
        wanted = max(self.min_free_bytes, math.ceil(self.total_bytes * self.min_free_percent / 100))
        return max(0, wanted - self.free_bytes)


class DiskGuard:
    def __init__(self, output_dir: Path, min_free_bytes: int, min_free_percent: float) -> None:
        self.output_dir = output_dir
        self.min_free_bytes = min_free_bytes
        self.min_free_percent = min_free_percent
        self._running: RunningFiles | None = None
        self._sizes: tuple[float, dict[str, int]] = (-math.inf, {})  # (when measured, run -> bytes)
        self._last: DiskState | None = None
        # Told every state checked (notifications: the disk running low, and clearing); must be quick.
        self.on_check: Callable[[DiskState], None] | None = None

    def watch(self, running: RunningFiles) -> None:
        """Where the running runs' files are: what a short disk may be blamed on."""
        self._running = running

    def check(self) -> DiskState:
        state = self._measure()
        if state.missing_bytes and self._running is not None:
            state = self._blame(state, self._running)
        elif state.ok:
            self._sizes = (-math.inf, {})  # measured again as soon as the disk is short again
        self._last = state
        if self.on_check is not None:
            self.on_check(state)
        return state

    def warning_for(self, run: str) -> str | None:
        """Why the disk is short because of ``run``, as the last check found it; None when it is not."""
        last = self._last
        if last is None or last.run != run or last.run_bytes is None:
            return None
        return (
            f"the output directory's disk is nearly full ({human(last.free_bytes or 0)} free), and this "
            f"run's files take {human(last.run_bytes)} of it: no run starts until space is freed"
        )

    def _blame(self, state: DiskState, running: RunningFiles) -> DiskState:
        """``state`` naming the largest running run that alone holds the missing space, if one does."""
        measured_at, sizes = self._sizes
        if time.monotonic() - measured_at >= BLAME_EVERY_S:
            sizes = {name: size_on_disk(*paths) for name, paths in running()}
            self._sizes = (time.monotonic(), sizes)
        culprits = [(size, name) for name, size in sizes.items() if size >= state.missing_bytes]
        if not culprits:
            return state
        size, name = max(culprits)
        reason = f"{state.reason}; run {name} alone holds {human(size)} of it (its run directory and log)"
        return replace(state, reason=reason, run=name, run_bytes=size)

    def _measure(self) -> DiskState:
        where = self.output_dir
        if not where.is_dir():
            return self._state(None, None, f"the output directory {where} is gone")
        if not os.access(where, os.W_OK | os.X_OK):
            return self._state(None, None, f"the output directory {where} is not writable")
        try:
            st = os.statvfs(where)
        except OSError as exc:
            return self._state(None, None, f"the output directory {where}: {exc.strerror}")
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        percent = 100.0 * free / total if total else 0.0
        if free < self.min_free_bytes or percent < self.min_free_percent:
            reason = (
                f"the output directory's disk is nearly full: {human(free)} free ({percent:.1f}%), "
                f"runs start only with at least {human(self.min_free_bytes)} and {self.min_free_percent:g}% free"
            )
            return self._state(free, total, reason)
        return self._state(free, total, None)

    def _state(self, free: int | None, total: int | None, reason: str | None) -> DiskState:
        """What was measured, with this guard's limits; ``reason``: why runs do not start (None: they may)."""
        return DiskState(reason is None, free, total, self.min_free_bytes, self.min_free_percent, reason)


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
