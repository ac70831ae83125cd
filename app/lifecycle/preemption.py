"""Preemption: a waiting run takes the resources of runs of a strictly lower, preemptible class.

The policy chooses (``picking.py``: who is a victim, and for whom); this room does the rest:

    begin:  the victim's record notes the run it stops for (``preempted_by``: a restart still knows), and
            it gets SIGTERM without the cancel marker: a preemptible run's trainer (``RunEnv.preemptible``)
            writes ``ckpt/last.ckpt`` at its next safe point and exits 75; after LABRUN_PREEMPT_GRACE_S it
            is killed instead.
    end:    however it ended (but for a success, or a cancel someone asked for meanwhile), the victim goes
            back to the queue in one store transaction (``requeue_preempted``): its next attempt, its place
            (its ``seq``), the attempt that ended kept as "preempted" with what it lost. Its next attempt
            resumes from ``last.ckpt`` in the same run directory and WandB run; without one it starts over.

Crash safety: the engine's traces of the ended attempt are dropped (``Launcher.forget``) before the store
moves it to the queue. A kill -9 before that: the restart finds it running with ``preempted_by`` set and
records its end (or, still running, stops it again) as a preemption; a kill -9 in between: the engine knows
nothing of it (lost), which is again recorded as its preemption. It never runs twice.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from app.fairshare import FairShare
from app.launchers.base import Outcome
from app.lifecycle.live import Context
from app.lifecycle.picking import Candidate, Preemption
from app.models import Priority, RunRecord, RunStatus
from app.runfiles import record_tail
from app.store import QueueEntry

log = logging.getLogger("labrun.lifecycle")
HOUR_S = 3600.0
RATE_RECHECK_S = 60.0  # a run preempted too often in the last hour is looked at again this often


class Preempter:
    def __init__(self, ctx: Context, fair: FairShare) -> None:
        self.ctx, self.fair = ctx, fair
        self.store, self.live, self.settings = ctx.store, ctx.live, ctx.settings
        # When a run left out of ``candidates`` (too young, or preempted too often) may be one: the
        # dispatcher looks again then, as nothing else would wake it (a wall-clock time; None: no such run)
        self.recheck_at: float | None = None

    def preemptible(self) -> frozenset[str]:
        """The classes that may be preempted: low, and normal where the server allows it; none where no run
        may be preempted at all (LABRUN_PREEMPT_MAX_PER_HOUR=0: no run may then pass a waiting one either)."""
        if self.settings.preempt_max_per_hour == 0:
            return frozenset()
        classes = {Priority.LOW.value}
        if self.settings.preempt_normal:
            classes.add(Priority.NORMAL.value)
        return frozenset(classes)

    def candidates(self) -> list[Candidate]:
        """Running runs that may be preempted now: of a preemptible class, running for at least
        LABRUN_PREEMPT_MIN_RUN_S, preempted fewer than LABRUN_PREEMPT_MAX_PER_HOUR times in the last hour, and
        not being stopped already; each with the work it would lose (the time since its checkpoint)."""
        s, now, classes = self.settings, time.time(), self.preemptible()
        found = []
        later: list[float] = []
        for r in self.store.running():
            # a run started as low because its owner was over budget (app/budgets.py) is low until it ends
            priority = Priority.LOW.value if r.name in self.live.budget_low else r.priority
            if priority not in classes or r.name in self.live.preempting or r.name not in self.live.active:
                continue
            if r.started_at is None or now - r.started_at < s.preempt_min_run_s:
                later.append((r.started_at or now) + s.preempt_min_run_s)
                continue
            if self.store.preemptions_since(r.name, now - HOUR_S) >= s.preempt_max_per_hour:
                later.append(now + RATE_RECHECK_S)
                continue
            entry = QueueEntry(
                r.seq, r.name, r.owner, r.gpu_need, r.started_at, priority, r.time_limit_s, r.ran_s
            )
            found.append(Candidate(entry, now - self._saved_at(r), r.started_at))
        self.recheck_at = min(later) if later else None
        return found

    def begin(self, preemption: Preemption) -> None:
        """(Under the lock.) Stop each victim for the waiting run: noted first, then signalled."""
        waiter = preemption.waiter
        for victim in preemption.victims:
            handle = self.live.active.get(victim.name)
            if handle is None or not self.store.request_preempt(victim.name, waiter.name):
                continue  # it ended meanwhile: what it held is free already
            self.live.preempting[victim.name] = waiter.name
            log.info(
                "preempting %s (%s) for %s (%s): it saves a checkpoint, then goes back to the queue",
                victim.name,
                victim.priority,
                waiter.name,
                waiter.priority,
            )
            self._stop(victim.name, handle)

    def resume_stop(self, record: RunRecord) -> None:
        """At start-up: a run the last service was preempting, still running: stop it again (the grace
        period starts over: the signal it had may not have been sent)."""
        with self.live.cond:
            self.live.preempting[record.name] = record.preempted_by or ""
        log.info("run %s: carrying on with its preemption for %s", record.name, record.preempted_by)
        self._stop(record.name, record.handle or "")

    def _stop(self, name: str, handle: str) -> None:
        grace = self.settings.preempt_grace_s

        def stop() -> None:
            try:
                self.ctx.launcher.preempt(name, handle, grace)
            except Exception:  # the engine is down: its watcher keeps following it; it is stopped next start
                log.exception("preempting %s failed", name)

        threading.Thread(target=stop, daemon=True, name=f"labrun-preempt-{name[:40]}").start()

    # --- the end of a victim --------------------------------------------------------------------------------

    def ends(self, name: str, handle: str, outcome: Outcome) -> bool:
        """If the run's end is that of a preemption: back to the queue (True). Raises when the store refuses
        the write (the supervisor retries it)."""
        record = self.store.get(name)
        if record is None or not self._is_preemption(record, outcome):
            if name in self.live.preempting:  # it ended otherwise (succeeded, cancelled meanwhile)
                with self.live.cond:
                    self.live.preempting.pop(name, None)
            return False
        live, ended_at = self.live, time.time()
        with live.cond:
            live.slots.free(name)  # the process is gone: the waiting run takes what it held
            live.active.pop(name, None)
        reason = self._reason(record, ended_at)
        s = self.settings
        tail = record_tail(self.ctx.state.log(name), s.log_tail_lines, s.log_tail_bytes)
        self.ctx.launcher.release(name, handle)
        self.ctx.launcher.forget(name)  # first: its next attempt is a new start (see the docstring)
        moved = self.store.requeue_preempted(name, reason, outcome.exit_code, tail, ended_at)
        with live.cond:
            live.preempting.pop(name, None)
            live.order_dirty = True
            live.wake()
        if moved:
            self.fair.add(replace(record, finished_at=ended_at))  # its owner used what it ran
            log.info("run %s %s", name, reason)
        return True

    def _is_preemption(self, record: RunRecord, outcome: Outcome) -> bool:
        live = self.live
        if record.status != RunStatus.RUNNING or outcome.succeeded:
            return False  # a run that finished before its safe point simply succeeded
        if record.name in live.cancelling or record.cancel_requested or record.name in live.timed_out:
            return False  # a cancel asked for meanwhile wins
        return record.preempted_by is not None or record.name in live.preempting

    def _saved_at(self, record: RunRecord) -> float:
        """When the run's work was last saved: its checkpoint's time, or its start (no newer checkpoint)."""
        started = record.started_at or time.time()
        ckpt = self.settings.output_dir / record.run_dir / "ckpt" / "last.ckpt"
        try:
            return max(started, ckpt.stat().st_mtime)
        except OSError:
            return started

    def _reason(self, record: RunRecord, ended_at: float) -> str:
        """What the victim's record says: by which class, whether it was killed, what it lost, what next."""
        waiter = self.store.get(record.preempted_by or self.live.preempting.get(record.name, ""))
        by = f"a {waiter.priority} run ({waiter.name})" if waiter is not None else "a higher-priority run"
        if waiter is None and (record.preempted_by or "").startswith("reservation "):  # its window begins
            by = f"{record.preempted_by} (GPUs booked for a window: docs/reservations.md)"
        killed = self.ctx.launcher.files(record.name).grace_kill() is not None
        how = f"killed after the grace of {self.settings.preempt_grace_s:g} s; " if killed else ""
        lost = max(0.0, ended_at - self._saved_at(record))
        nxt = record.attempts + 1
        if (self.settings.output_dir / record.run_dir / "ckpt" / "last.ckpt").is_file():
            return f"preempted by {by}: {how}lost {lost:.0f} s of work since its checkpoint; resumes from ckpt/last.ckpt as attempt {nxt}"
        return f"preempted by {by}: {how}no checkpoint, lost {lost:.0f} s of work; restarts from the beginning as attempt {nxt}"
