"""Stalled runs: running runs that stopped making progress, and their end.

A running run is **stalled** when, for its stall limit, neither its ``progress.json`` changed (the trainer's
step, or the phase it reports through every long phase: building its data cache, validating, saving a
checkpoint; ``trainer/heartbeat.py``) nor its log grew. A run that keeps writing to its log is never
stalled by this rule: a hang (a deadlocked data loader, a wedged collective, a ``pdb`` left open) is what
it catches. ``LABRUN_STALL_GRACE_S`` later it is cancelled (SIGTERM, the grace period, SIGKILL) with a
reason that says for how long and where it stopped, unless its owner or an admin extended it meanwhile.

The GPU rule: where the GPU guard reads NVML (``app/gpus/``), a run whose GPUs all stayed at 0% for its
limit while its trainer said it was ``training`` (not building data, validating or saving) is stalled too,
however much it logs. The guard's one pass per interval notes when each GPU last worked
(``GuardView.active_at``); this watcher reads that, never NVML.

The limit is the run's own (asked for at submission, up to ``LABRUN_MAX_STALL_AFTER_S``), else its owner's
(``UserLimits.stall_after_s``), else ``LABRUN_STALL_AFTER_S``; 0 means never.

Only an executing run can stall: one its engine requeued (a preemption: it waits to run again) or one still
pending in a cluster's queue is not executing, and its clock starts again when it runs. A run's clock
starts when this service first sees it executing. A restart keeps it (``stall_clock.py``): the run's last
activity is read back from its files' modification times (never before its clock's start, kept on disk), a
GPU stall from what was kept of it, and a cancel already decided is carried out with its reason.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.errors import InvalidRun, RunConflict
from app.gpus import GuardView
from app.lifecycle.live import Context, Stall
from app.lifecycle.stall_clock import StallClock
from app.lifecycle.stall_clock import load as load_clock
from app.lifecycle.stall_clock import save as save_clock
from app.models import RunRecord, RunStatus
from app.runfiles import RunFiles

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.lifecycle.cancel import Canceller

log = logging.getLogger("labrun.lifecycle")
CHECK_MAX_S = 5.0  # the longest wait between two looks (shorter for short limits: a tenth of the limit)
TRAINING = "training"  # the trainer's phase while it trains (trainer/heartbeat.py): the GPU rule applies


def check_stall_limit(seconds: float | None, settings: Settings) -> None:
    """A run's own stall limit, as a request asks for it: InvalidRun (422) naming the field and the bound."""
    if seconds is None:
        return
    if not seconds > 0 or seconds > settings.max_stall_after_s:
        raise InvalidRun(
            f"stall_after_s={seconds:g}: a run's stall limit is a number of seconds above 0 and at most "
            f"{settings.max_stall_after_s:g} (LABRUN_MAX_STALL_AFTER_S); leave it out for the default"
        )


@dataclass(frozen=True)
class _Files:
    """One look at a run's files: ``stat`` calls, plus a parse of progress.json when it changed."""

    signature: tuple[object, ...]  # what changes when the run makes progress or writes output
    step: int | None
    phase: str | None
    progress_written: float | None  # progress.json's modification time
    last_write: float | None  # the later of the two files' modification times


@dataclass
class _Seen:
    """What was last seen of a run, and since when it stayed so."""

    signature: tuple[object, ...]
    changed_at: float  # the last change seen in its progress or its log
    step: int | None
    step_at: float | None
    clock: StallClock  # what is kept on disk (stall_clock.py)
    phase: str | None = None
    training_since: float | None = None  # since when its phase has been "training" (None: it is not)
    gpu_floor: float | None = None  # a GPU stall kept from before a restart: its GPUs idle since then


class StallWatch:
    def __init__(self, ctx: Context, canceller: Canceller) -> None:
        self.ctx, self.canceller = ctx, canceller
        self.store, self.live, self.settings = ctx.store, ctx.live, ctx.settings
        self.files = RunFiles(ctx.state)  # its own parse cache of progress.json
        self._seen: dict[str, _Seen] = {}
        self._fresh: set[str] = set()  # not executing when last looked at: a new clock when they run again
        self._restored: set[str] = set()  # stall cancels decided before a restart, not yet carried out
        self._lock = threading.Lock()  # one decision at a time: a look, or an extension

    def interval(self) -> float:
        after = self.settings.stall_after_s or 10 * CHECK_MAX_S
        return min(CHECK_MAX_S, max(0.1, after / 10))

    def restore(self) -> None:
        """At start-up, before recovery: the stall cancels that an earlier service decided. A run that ended
        while the service was down is recorded with that reason; one that still runs is cancelled at the
        first look."""
        for record in self.store.running():
            clock = load_clock(self.ctx.state.files(record.name), record.attempts)
            if clock.cancel is not None:
                with self.live.cond:
                    self.live.stalled_out[record.name] = clock.cancel
                self._restored.add(record.name)

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
            self._fresh &= running.keys()
            self._restored &= running.keys()  # ended while the service was down: recorded with the reason
        view = self.ctx.guard.view() if self.ctx.guard is not None else None
        for record in running.values():
            if record.name in self._restored:
                self._carry_out_restored(record)
            else:
                self._look(record, now, view)

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

    def _files_of(self, record: RunRecord) -> _Files:
        progress_path = os.path.join(self.settings.output_dir, record.run_dir, "progress.json")
        parts: list[object] = []
        written = last = None
        for path in (progress_path, self.ctx.state.log(record.name)):
            try:
                st = os.stat(path)
            except OSError:
                parts.append(None)
                continue
            parts.append((st.st_mtime_ns, st.st_size))
            written = st.st_mtime if path == progress_path else written
            last = st.st_mtime if last is None else max(last, st.st_mtime)
        parsed = (
            (self.files.progress(record.run_dir) or {}).get("progress", {}) if written is not None else {}
        )
        step, phase = parsed.get("step"), parsed.get("phase")
        return _Files(
            tuple(parts),
            step if isinstance(step, int) else None,
            phase if isinstance(phase, str) else None,
            written,
            last,
        )

    def _look(self, record: RunRecord, now: float, view: GuardView | None) -> None:
        name = record.name
        limit = self.limit_of(record)
        with self._lock:
            if name in self.live.stalled_out:
                return
            if limit is None or not self._executing(name):
                self._seen.pop(name, None)
                self._fresh.add(name)  # its clock starts again when it runs (again)
                self._clear(name)
                return
            seen = self._follow(record, now)
            stall = self._stall_of(record, seen, limit, view, now)
            if stall is None:
                self._clear(name)
                return
            reason = self._publish(name, stall, now)
            if reason is None:
                return
            seen.clock.cancel = reason  # kept first: a restart carries the cancel out
            save_clock(self.ctx.state.files(name), seen.clock)
        log.warning("run %s: %s", name, reason)
        self.canceller.resume_cancel(name, record.handle or "")

    def _follow(self, record: RunRecord, now: float) -> _Seen:
        """What is seen of the run now, against what was seen before (its first sight: its kept clock)."""
        files, seen = self._files_of(record), self._seen.get(record.name)
        if seen is None:
            seen = self._seen[record.name] = self._first_sight(record, files, now)
        elif seen.signature != files.signature:
            seen.signature, seen.changed_at = files.signature, now
            if files.step != seen.step:
                seen.step, seen.step_at = files.step, files.progress_written or now
        if files.phase != seen.phase:
            seen.phase, seen.gpu_floor = files.phase, None
            seen.training_since = now if files.phase == TRAINING else None
        return seen

    def _first_sight(self, record: RunRecord, files: _Files, now: float) -> _Seen:
        """A run's first look in this attempt (a new clock, kept on disk), or after a restart (the kept
        clock: its last activity from its files' modification times, one look's interval later, as this
        watcher would have seen them; never before its clock started)."""
        state = self.ctx.state.files(record.name)
        clock = StallClock(record.attempts)
        if record.name not in self._fresh:
            clock = load_clock(state, record.attempts)
        self._fresh.discard(record.name)
        if clock.clock_from is None:
            clock = StallClock(record.attempts, clock_from=now)
            save_clock(state, clock)
        last = clock.clock_from or now
        if files.last_write is not None:
            last = max(last, min(now, files.last_write + self.interval()))
        seen = _Seen(files.signature, last, files.step, files.progress_written or now, clock, files.phase)
        if files.phase == TRAINING:
            seen.training_since = now
            if clock.gpu_idle_from is not None:  # it was stalled by the GPU rule: idle since before
                seen.training_since = seen.gpu_floor = clock.gpu_idle_from
        return seen

    def _stall_of(
        self, record: RunRecord, seen: _Seen, limit: float, view: GuardView | None, now: float
    ) -> Stall | None:
        """The run's stall, by whichever rule caught it first; None while it is not stalled."""
        grace = self.settings.stall_grace_s
        found: list[Stall] = []
        if now - seen.changed_at >= limit:
            since = seen.changed_at + limit
            found.append(Stall(seen.changed_at, since, since + grace, limit, seen.step, seen.step_at))
        idle_from = self._gpus_idle_from(record, seen, view)
        if idle_from is not None and now - idle_from >= limit:
            since = idle_from + limit
            found.append(
                Stall(idle_from, since, since + grace, limit, seen.step, seen.step_at, tuple(record.gpus))
            )
        gpu_idle_from = idle_from if idle_from is not None and now - idle_from >= limit else None
        if seen.clock.gpu_idle_from != gpu_idle_from:  # kept while stalled by the GPU rule, for a restart
            seen.clock.gpu_idle_from = gpu_idle_from
            save_clock(self.ctx.state.files(record.name), seen.clock)
        return min(found, key=lambda stall: stall.since, default=None)

    def _gpus_idle_from(self, record: RunRecord, seen: _Seen, view: GuardView | None) -> float | None:
        """Since when the run's GPUs have all been at 0% while it said it was training; None when the rule
        does not apply (no GPUs, no NVML, not training)."""
        if view is None or seen.training_since is None or not record.gpus:
            return None
        idle = view.idle_since(record.gpus)
        if idle is None:
            return None
        if seen.gpu_floor is not None and view.watching_since is not None and idle <= view.watching_since:
            idle = seen.gpu_floor  # not seen working since the guard started: idle since before the restart
        return max(idle, seen.training_since, seen.clock.clock_from or 0.0)

    def _publish(self, name: str, stall: Stall, now: float) -> str | None:
        """Show the run as stalled; past its grace period, the reason it is cancelled with (None: not yet,
        or it ends otherwise)."""
        with self.live.cond:
            if name in self.live.stalled_out or name not in self.live.active:
                return None
            if self.live.stalls.get(name) != stall:
                self.live.stalls[name] = stall
                log.warning("run %s is stalled: %s", name, describe(stall, now))
            if now < stall.cancel_at:
                return None
            reason = f"cancelled: stalled, {describe(stall, now)}"
            self.live.stalled_out[name] = reason
            return reason

    def _carry_out_restored(self, record: RunRecord) -> None:
        """A stall cancel an earlier service decided (``restore``), once the run is followed again."""
        name = record.name
        with self._lock, self.live.cond:
            if name not in self.live.active or name in self.live.cancelling:
                return
            self._restored.discard(name)
            reason = self.live.stalled_out.get(name)
        log.warning("run %s: carrying out the stall cancel decided before the restart: %s", name, reason)
        self.canceller.resume_cancel(name, record.handle or "")

    def _clear(self, name: str) -> None:
        if name in self.live.stalls:
            with self.live.cond:
                self.live.stalls.pop(name, None)

    def extend(self, name: str, stall_after_s: float | None = None) -> RunRecord:
        """Its owner or an admin vouches for a running run: its clock starts again now (kept on disk), and
        with ``stall_after_s`` its own limit becomes that (up to the server's maximum). 409 unless it runs."""
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
            now = time.time()
            seen = self._seen.get(name)
            if seen is not None:
                seen.changed_at = now
                seen.gpu_floor = None
                seen.clock.clock_from, seen.clock.gpu_idle_from = now, None
                save_clock(self.ctx.state.files(name), seen.clock)
        log.info("run %s: stall extended%s", name, f" (limit {stall_after_s:g} s)" if stall_after_s else "")
        return self.ctx.get(name)


def describe(stall: Stall, now: float) -> str:
    """E.g. ``no progress and no output for 45 min (last step 1234 at 10:02)``, or by the GPU rule
    ``GPU 2 at 0% for 45 min while training (last step 1234 at 10:02)``."""
    if stall.last_step is None:
        where = "no training step reported"
    else:
        at = f" at {_clock(stall.last_step_at, now)}" if stall.last_step_at is not None else ""
        where = f"last step {stall.last_step}{at}"
    idle = duration(now - stall.last_activity)
    if stall.idle_gpus:
        gpus = ", ".join(str(g) for g in stall.idle_gpus)
        return (
            f"GPU{'s' if len(stall.idle_gpus) > 1 else ''} {gpus} at 0% for {idle} while training ({where})"
        )
    return f"no progress and no output for {idle} ({where})"


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
