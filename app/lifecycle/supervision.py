"""Supervision: following running runs until they end, and recording how they ended.

Runs are followed by one thread each (``Launcher.wait``), or, for a launcher with ``batch_polling``, by one
thread asking the engine about all of them in one query per interval (``poll_loop``). No thread dies: a
store that refuses a write (a full disk) is retried with backoff until the outcome is recorded, and
meanwhile the decision is in the live state, which the API shows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.diskspace import size_on_disk
from app.errors import EngineUnavailable
from app.fairshare import FairShare
from app.launchers.base import Outcome
from app.lifecycle.live import ENGINE_RETRY_S, MAX_BACKOFF_S, Context, Ending
from app.models import RunRecord, RunStatus
from app.runfiles import record_tail

if TYPE_CHECKING:
    from app.lifecycle.timekeeper import TimeKeeper

log = logging.getLogger("labrun.lifecycle")
NO_SPACE = ("No space left on device", "[Errno 28]", "database or disk is full")


@dataclass(frozen=True)
class _Seen:
    """What an ended run's files and record said, read before the decision takes the lock."""

    log_tail: str | None
    record: RunRecord | None
    no_space: bool  # it failed, and its log or the disk says the disk was full
    time_limit: str | None = None  # it ended for its time limit: the reason to record


class Supervisor:
    def __init__(self, ctx: Context, fair: FairShare) -> None:
        self.ctx, self.fair = ctx, fair
        self.store, self.launcher, self.live = ctx.store, ctx.launcher, ctx.live
        # (name, handle, outcome) -> True where the end was a preemption's, handled there (preemption.py)
        self.preempted: Callable[[str, str, Outcome], bool] | None = None
        self.timekeeper: TimeKeeper | None = None  # how a run at its time limit ends (timekeeper.py)

    def adopt(self, record: RunRecord, handle: str, gpus: Sequence[int] | None = None) -> None:
        """Account for a running run's resources and follow it until it ends."""
        with self.live.cond:
            self.live.slots.hold(record.name, record.gpu_need, list(record.gpus if gpus is None else gpus))
            self.live.active[record.name] = handle
        if self.launcher.batch_polling:
            return  # the poller follows it
        threading.Thread(
            target=self._watch,
            args=(record.name, handle),
            daemon=True,
            name=f"labrun-watch-{record.name[:40]}",
        ).start()

    def reattach_queued(self, record: RunRecord) -> RunRecord:
        """A queued run the launcher already knows was started just before the service died, and never
        recorded as running: record it now and follow it. Raises EngineUnavailable."""
        handle = self.launcher.reattach(record.name)
        self.live.unreconciled.discard(record.name)
        if handle and self.store.mark_running(record.name, handle, record.gpus, launcher=self.launcher.name):
            record = self.store.get(record.name) or record
            self.adopt(record, handle)
        return record

    def _watch(self, name: str, handle: str) -> None:
        stopping = self.live.stopping
        while not stopping.is_set():
            try:
                outcome = self.launcher.wait(name, handle, timeout=5)
            except EngineUnavailable:
                stopping.wait(ENGINE_RETRY_S)
                continue
            except Exception:
                log.exception("watching %s failed; retrying", name)
                stopping.wait(ENGINE_RETRY_S)
                continue
            if stopping.is_set():  # shutting down: the next start re-attaches and records it
                return
            if outcome is not None:
                self.record(name, handle, outcome)
                return

    def poll_loop(self) -> None:
        """One query for every running run per interval (``batch_polling`` launchers)."""
        while not self.live.stopping.wait(self.launcher.poll_interval_s):
            self.poll_once()

    def poll_once(self) -> None:
        with self.live.cond:
            active = dict(self.live.active)
        if not active:
            return
        try:
            outcomes = self.launcher.poll_many(active)
        except EngineUnavailable:
            return
        except Exception:
            log.exception("polling %d run(s) failed; retrying", len(active))
            return
        for name, outcome in outcomes.items():
            if outcome is not None and not self.live.stopping.is_set():
                self.record(name, active[name], outcome)
            elif outcome is None:
                self._note_requeue(name)

    def _note_requeue(self, name: str) -> None:
        """A run the engine requeued (a preemption) stays one run: its attempt count goes up, and while it
        waits to run again the API says so (``requeued``)."""
        try:
            started, waiting = self.launcher.attempts(name)
            if waiting:
                self.live.requeued[name] = started + 1
            else:
                self.live.requeued.pop(name, None)
            if started > 1:
                self.store.set_attempts(name, started)
        except Exception as exc:  # a figure for the API: never a reason to stop polling
            log.warning("reading the attempts of %s failed: %s", name, exc)

    def recorded_later(self, name: str, handle: str, outcome: Outcome) -> None:
        """At start-up: record now, or (the store refuses) keep trying in the background, not blocking."""
        try:
            self._finish(name, handle, outcome)
        except Exception:
            threading.Thread(target=self.record, args=(name, handle, outcome), daemon=True).start()

    def record(self, name: str, handle: str, outcome: Outcome) -> None:
        """``_finish``, retried with backoff until the store takes it (a full disk refuses writes): the run's
        process has ended, so its slot must come back as soon as the outcome can be written."""
        for attempt in range(1, 1_000_000):
            try:
                self._finish(name, handle, outcome)
                return
            except Exception as exc:
                if attempt == 1:
                    log.exception("recording the end of %s failed; retrying until the store takes it", name)
                else:
                    log.warning("recording the end of %s failed again: %s", name, exc)
                if self.live.stopping.wait(min(MAX_BACKOFF_S, 0.1 * 2**attempt)):
                    return  # the next start finds the outcome again (the launcher keeps it)

    def _finish(self, name: str, handle: str, outcome: Outcome) -> None:
        """Decide how the run ended, hand its resources on, record it. Raises when the store refuses the
        write (``record`` retries); meanwhile the decision is in ``live.ended``, which the API shows, so a
        run whose process ended never reads as running for long."""
        live = self.live
        if name not in live.ended and self.preempted is not None and self.preempted(name, handle, outcome):
            return  # back to the queue as its next attempt
        # What the decision reads (the log's tail, the record, the disk) is read before the lock: admission
        # and the dispatcher take it too, and these reads take milliseconds while runs start and end.
        seen = self._look(name, outcome)
        with live.cond:
            ending = live.ended.get(name) or self._decide(name, outcome, seen)
            live.ended[name] = ending
            live.slots.free(name)  # the process is gone: its GPUs are free, recorded or not
            live.active.pop(name, None)
            live.wake(queue_changed=False)
        self.store.finish(  # when it ended, not when the store took the write: fair share charges the owner
            name,  # for the run's own time, not for a store outage
            [RunStatus.RUNNING],
            ending.status,
            ending.exit_code,
            ending.reason,
            ending.log_tail,
            finished_at=ending.finished_at,
        )
        with live.cond:
            live.ended.pop(name, None)
            live.cancelling.discard(name)
            live.timed_out.pop(name, None)
            live.stalls.pop(name, None)
            live.stalled_out.pop(name, None)
            live.requeued.pop(name, None)
            live.order_dirty = True
            live.cond.notify_all()
        recorded = self.store.get(name)
        if recorded is not None:
            self.fair.add(recorded)  # its use counts against its owner from now on
        log.info("run %s %s%s", name, ending.status.value, f": {ending.reason}" if ending.reason else "")
        try:
            self.launcher.release(name, handle)  # only now: the outcome is recorded
        except Exception:
            log.exception("releasing %s failed", name)
        self._measure(name)

    def _look(self, name: str, outcome: Outcome) -> _Seen:
        log_tail = self.log_tail(name)
        no_space = not outcome.succeeded and (_ran_out_of_space(log_tail) or not self.ctx.disk.check().ok)
        record, keeper = self.store.get(name), self.timekeeper
        limit = None
        if (
            keeper is not None
            and record is not None
            and keeper.ended_by_limit(record, outcome.succeeded, time.time())
        ):
            limit = keeper.reason(record)
        return _Seen(log_tail, record, no_space, limit)

    def _decide(self, name: str, outcome: Outcome, seen: _Seen) -> Ending:
        """How the run ended (under the lifecycle's lock: it reads what cancels and limits marked)."""
        log_tail, record = seen.log_tail, seen.record
        # A run the user cancelled ends cancelled, even when its trainer caught SIGTERM and exited 0.
        if name in self.live.stalled_out:  # stalls.py: no progress and no output past the grace period
            status, reason = RunStatus.CANCELLED, self.live.stalled_out[name]
        elif name in self.live.cancelling or (record is not None and record.cancel_requested):
            how = outcome.reason or ""
            if "SIG" not in how:  # a trainer that catches the cancel's SIGTERM exits with its own code (143)
                how = f"exited with code {outcome.exit_code} after SIGTERM"
            status, reason = RunStatus.CANCELLED, f"cancelled by request ({how})"
        elif seen.time_limit is not None:  # stopped with a checkpoint at its time limit (timekeeper.py)
            status, reason = RunStatus.CANCELLED, seen.time_limit
        elif outcome.succeeded:
            status, reason, log_tail = RunStatus.SUCCEEDED, None, None
        else:
            status, reason = RunStatus.FAILED, outcome.reason or "ended without an exit status"
            if seen.no_space:
                reason = f"no space left on device ({reason})"
        return Ending(status, outcome.exit_code, reason, log_tail, time.time())

    def _measure(self, name: str) -> None:
        """Note what an ended run's files take (best effort: a store that refuses it loses only a figure)."""
        record = self.store.get(name)
        if record is None:
            return
        try:
            size = size_on_disk(self.ctx.settings.output_dir / record.run_dir, self.ctx.state.run(name))
            self.store.set_disk_bytes(name, size)
        except Exception as exc:
            log.warning("measuring the disk usage of %s failed: %s", name, exc)

    def log_tail(self, name: str) -> str | None:
        s = self.ctx.settings
        return record_tail(self.ctx.state.log(name), s.log_tail_lines, s.log_tail_bytes)


def _ran_out_of_space(log_tail: str | None) -> bool:
    return bool(log_tail) and any(marker in (log_tail or "") for marker in NO_SPACE)
