"""Stalled runs: running runs that stopped making progress, and their end.

A running run is **stalled** when, for its stall limit, neither its ``progress.json`` changed (the trainer's
step, or the phase it reports through every long phase: building its data cache, validating, saving a
checkpoint; ``trainer/heartbeat.py``) nor its log grew. A run that keeps writing to its log is never
stalled by this rule: a hang (a deadlocked data loader, a wedged collective, a ``pdb`` left open) is what
it catches. ``LABRUN_STALL_GRACE_S`` later it is cancelled (SIGTERM, the grace period, SIGKILL) with a
reason that says for how long and where it stopped, unless its owner or an admin extended it meanwhile.

The limit is the run's own (asked for at submission, up to ``LABRUN_MAX_STALL_AFTER_S``), else its owner's
(``UserLimits.stall_after_s``), else ``LABRUN_STALL_AFTER_S``; 0 means never.

Only an executing run can stall: one its engine requeued (a preemption: it waits to run again) or one still
pending in a cluster's queue is not executing, and its clock starts again when it runs. A run's clock also
starts when this service first sees it running (after a restart: from then on).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.errors import InvalidRun, RunConflict
from app.lifecycle.live import Context, Stall
from app.models import RunRecord, RunStatus
from app.runfiles import RunFiles

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.lifecycle.cancel import Canceller

log = logging.getLogger("labrun.lifecycle")
CHECK_MAX_S = 5.0  # the longest wait between two looks (shorter for short limits: a tenth of the limit)


def check_stall_limit(seconds: float | None, settings: Settings) -> None:
    """A run's own stall limit, as a request asks for it: InvalidRun (422) naming the field and the bound."""
    if seconds is None:
        return
    if not seconds > 0 or seconds > settings.max_stall_after_s:
        raise InvalidRun(
            f"stall_after_s={seconds:g}: a run's stall limit is a number of seconds above 0 and at most "
            f"{settings.max_stall_after_s:g} (LABRUN_MAX_STALL_AFTER_S); leave it out for the default"
        )


@dataclass
class _Seen:
    """What was last seen of a run's files, and when it last changed."""

    signature: tuple[object, ...]
    changed_at: float
    step: int | None
    step_at: float | None


class StallWatch:
    def __init__(self, ctx: Context, canceller: Canceller) -> None:
        self.ctx, self.canceller = ctx, canceller
        self.store, self.live, self.settings = ctx.store, ctx.live, ctx.settings
        self.files = RunFiles(ctx.state)  # its own parse cache of progress.json
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()  # one decision at a time: a look, or an extension

    def interval(self) -> float:
        after = self.settings.stall_after_s or 10 * CHECK_MAX_S
        return min(CHECK_MAX_S, max(0.1, after / 10))

    def loop(self) -> None:
        while not self.live.stopping.wait(self.interval()):
            try:
                self.check()
            except Exception:
                log.exception("looking for stalled runs failed")

    def check(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        running = {r.name: r for r in self.store.running()}
        with self._lock:
            for gone in [name for name in self._seen if name not in running]:
                del self._seen[gone]
        for record in running.values():
            self._look(record, now)

    def limit_of(self, record: RunRecord) -> float | None:
        """The run's stall limit in seconds (None: it never stalls)."""
        if record.stall_after_s is not None:
            return record.stall_after_s or None
        return self.ctx.limits.of(record.owner or "").stall_after_s

    def stalled(self) -> int:
        """How many running runs are stalled now (Prometheus)."""
        return len(self.live.stalls)

    def _executing(self, name: str) -> bool:
        live = self.live
        if name not in live.active or name in live.requeued or name in live.cancelling or name in live.ended:
            return False
        if not self.ctx.launcher.places_runs:
            return True
        try:  # a cluster: executing once an attempt started and it does not wait to run again
            started, waiting = self.ctx.launcher.attempts(name)
        except Exception:
            return False
        return started > 0 and not waiting

    def _signature(self, record: RunRecord) -> tuple[tuple[object, ...], int | None, float | None]:
        """(what changes when the run makes progress or writes output, its step, when progress.json was
        written). ``stat`` calls only, plus a parse of progress.json when it changed."""
        progress_path = os.path.join(self.settings.output_dir, record.run_dir, "progress.json")
        parts: list[object] = []
        written = None
        for path in (progress_path, self.ctx.state.log(record.name)):
            try:
                st = os.stat(path)
                parts.append((st.st_mtime_ns, st.st_size))
                written = st.st_mtime if path == progress_path else written
            except OSError:
                parts.append(None)
        parsed = self.files.progress(record.run_dir) if written is not None else None
        step = (parsed or {}).get("progress", {}).get("step")
        return tuple(parts), step if isinstance(step, int) else None, written

    def _look(self, record: RunRecord, now: float) -> None:
        name = record.name
        limit = self.limit_of(record)
        with self._lock:
            if limit is None or not self._executing(name):
                self._seen.pop(name, None)  # its clock starts again when it runs (again)
                self._clear(name)
                return
            signature, step, written = self._signature(record)
            seen = self._seen.get(name)
            if seen is None or seen.signature != signature:
                moved = seen is None or step != seen.step
                step_at = seen.step_at if seen is not None and not moved else (written or now)
                self._seen[name] = _Seen(signature, now, step, step_at)
                self._clear(name)
                return
            if now - seen.changed_at < limit:
                self._clear(name)  # e.g. a limit raised by an extension
                return
            since = seen.changed_at + limit
            stall = Stall(
                seen.changed_at, since, since + self.settings.stall_grace_s, limit, seen.step, seen.step_at
            )
            with self.live.cond:
                if name in self.live.stalled_out or name not in self.live.active:
                    return
                if self.live.stalls.get(name) != stall:
                    self.live.stalls[name] = stall
                    log.warning("run %s is stalled: %s", name, describe(stall, now))
                if now < stall.cancel_at:
                    return
                reason = f"cancelled: stalled, {describe(stall, now)}"
                self.live.stalled_out[name] = reason
        log.warning("run %s: %s", name, reason)
        self.canceller.resume_cancel(name, record.handle or "")

    def _clear(self, name: str) -> None:
        if name in self.live.stalls:
            with self.live.cond:
                self.live.stalls.pop(name, None)

    def extend(self, name: str, stall_after_s: float | None = None) -> RunRecord:
        """Its owner or an admin vouches for a running run: its clock starts again now, and with
        ``stall_after_s`` its own limit becomes that (up to the server's maximum). 409 unless it runs."""
        check_stall_limit(stall_after_s, self.settings)
        record = self.ctx.get(name)
        if record.status != RunStatus.RUNNING:
            raise RunConflict(
                f"run {name!r} is {record.status.value}; only a running run's stall can be extended"
            )
        with self._lock:
            with self.live.cond:
                if name in self.live.stalled_out:
                    raise RunConflict(f"run {name!r} is already being cancelled for its stall")
                self.live.stalls.pop(name, None)
            if stall_after_s is not None:
                self.store.set_stall_after(name, stall_after_s)
            seen = self._seen.get(name)
            if seen is not None:
                seen.changed_at = time.time()
        log.info("run %s: stall extended%s", name, f" (limit {stall_after_s:g} s)" if stall_after_s else "")
        return self.ctx.get(name)


def describe(stall: Stall, now: float) -> str:
    """E.g. ``no progress and no output for 45 min (last step 1234 at 10:02)``."""
    if stall.last_step is None:
        where = "no training step reported"
    else:
        at = f" at {_clock(stall.last_step_at, now)}" if stall.last_step_at is not None else ""
        where = f"last step {stall.last_step}{at}"
    return f"no progress and no output for {duration(now - stall.last_activity)} ({where})"


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clock(at: float, now: float) -> str:
    """The server's local time of day; with the date when it is not today."""
    here = time.localtime(at)
    return time.strftime("%H:%M" if here[:3] == time.localtime(now)[:3] else "%Y-%m-%d %H:%M", here)
