"""The time keeper: runs that reach their time limit (docs/time-limits.md) end with a checkpoint.

A run's limit counts its running time over all its attempts (``timelimits.py``). Each second it looks at the
running runs that have one:

- ``LABRUN_TIME_LIMIT_WARN_S`` before the limit its owner is told (the ``time_limit_near`` event, once per
  attempt);
- ``LABRUN_TIME_LIMIT_SAVE_S`` before it the run is stopped as a preemption stops one: SIGTERM without the
  cancel marker, so its trainer (started ``preemptible``: ``dispatch.py``) saves ``ckpt/last.ckpt`` at its
  next safe point and exits; at the limit itself it is killed. The supervisor records it cancelled with the
  reason ``time limit of 6 h reached; resumable from ...`` (``reason``); ``POST /runs/{name}/resume`` may
  continue it with a new limit.

Where the engine places runs (Slurm), the job's own ``--time`` is the remaining limit (``launchers/slurm.py``)
and the cluster stops it; only the warning is the keeper's there.

Nothing here is only in memory: after a restart, a running run past its save point is stopped again, and a
run that ended while the service was down is recognised by its running time (``ended_by_limit``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from app.errors import Forbidden, RunConflict
from app.lifecycle.live import Context
from app.lifecycle.timelimits import describe, extended_limit, remaining, running_time
from app.models import RunRecord, RunStatus
from app.notify.events import EventKind
from app.reservations import Reservation, iso
from app.runfiles import RunFiles
from app.users import LOCAL

log = logging.getLogger("labrun.lifecycle")
TICK_S = 1.0
TIME_LIMIT_NEAR = EventKind.TIME_LIMIT_NEAR.value


class TimeKeeper:
    def __init__(self, ctx: Context) -> None:
        self.ctx, self.store, self.live, self.settings = ctx, ctx.store, ctx.live, ctx.settings
        self.files = RunFiles(ctx.state)  # its own parse cache of progress.json (for the reason's epoch)
        self._warned: set[tuple[str, int]] = set()  # (run, attempt) told already, in this process
        # When a running run must be off its GPUs for a reservation of others (lifecycle/reservations.py)
        self.deadline: Callable[[RunRecord], tuple[float, Reservation] | None] = lambda _run: None

    def loop(self) -> None:
        while not self.live.stopping.wait(TICK_S):
            try:
                self.check()
            except Exception:
                log.exception("checking time limits failed")

    def check(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        running = self.store.running()
        if self._warned:  # only the attempts still running need remembering
            self._warned &= {(r.name, r.attempts) for r in running}
        for record in running:
            left = remaining(record, now)
            if left is None or record.started_at is None:
                continue
            if left <= self.settings.time_limit_warn_s:
                self._warn(record, left, now)
            if left <= self.settings.time_limit_save_s and not self.ctx.launcher.places_runs:
                self._stop(record, left)

    def _warn(self, record: RunRecord, left: float, now: float) -> None:
        key = (record.name, record.attempts)
        if key in self._warned:
            return
        self._warned.add(key)
        if self.store.outbox.has_run_event(TIME_LIMIT_NEAR, record.name, record.attempts):
            return  # told before a restart
        limit = record.time_limit_s or 0.0
        self.store.outbox.add_run_event(
            TIME_LIMIT_NEAR,
            record.name,
            record.owner,
            {
                "run": record.name,
                "status": "running",  # (the message says "is near its time limit": the event's kind)
                "owner": record.owner,
                "reason": f"time limit of {describe(limit)} is near: {describe(left)} left "
                f"(extend it: labrun time-limit {record.name} +2h)",
                "config_name": record.config_name,
                "run_dir": record.run_dir,
                "created_at": record.created_at,
                "started_at": record.started_at,
                "sweep": record.sweep,
                "attempt": record.attempts,
                "time_limit_s": limit,
                "ran_s": running_time(record, now),
                "priority": str(record.priority),
            },
        )

    def _stop(self, record: RunRecord, left: float) -> None:
        live, name = self.live, record.name
        with live.cond:
            handle = live.active.get(name)
            if handle is None or name in live.timed_out or name in live.cancelling or name in live.preempting:
                return  # not followed (yet), or being stopped already (a cancel or preemption wins)
            live.timed_out[name] = record.time_limit_s or 0.0
        grace = max(1.0, left)  # killed at the limit itself
        log.info(
            "run %s: its time limit is near (%s left): it saves a checkpoint and stops", name, describe(left)
        )

        def stop() -> None:
            try:
                self.ctx.launcher.preempt(name, handle, grace)
            except Exception:  # the engine is down: the next tick (or the next start) tries again
                log.exception("stopping %s at its time limit failed", name)
                with live.cond:
                    live.timed_out.pop(name, None)

        threading.Thread(target=stop, daemon=True, name=f"labrun-timelimit-{name[:40]}").start()

    # --- a new limit for a queued or running run -------------------------------------------------------------

    def set_limit(
        self, name: str, new_limit: float | None, by_admin: bool, now: float | None = None
    ) -> RunRecord:
        """Give a queued or running run a new time limit (seconds over all its attempts; None: none, for an
        admin only): its owner up to their maximum of time left, an admin beyond it (``extended_limit``)."""
        now = time.time() if now is None else now
        record = self.ctx.get(name)
        if record.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            raise RunConflict(
                f"run {name!r} is {record.status.value}; a finished run gets a new limit when it is resumed "
                f"(POST /runs/{name}/resume with time_limit)"
            )
        owner = record.owner or LOCAL
        maximum = self.ctx.limits.of(owner).max_run_s
        if new_limit is None:
            if maximum is not None and not by_admin:
                raise Forbidden(
                    f"only an admin may lift the time limit of a run of {owner}'s: they have a maximum"
                )
        else:
            new_limit = extended_limit(record, new_limit, maximum, by_admin, now, owner)
        self._check_reserved(record, new_limit, now)
        with self.live.cond:
            if name in self.live.timed_out:
                raise RunConflict(
                    f"run {name!r} is saving its checkpoint and stopping at its time limit already; resume it "
                    "with a new limit when it has stopped (POST /runs/{name}/resume)"
                )
            if not self.store.set_time_limit(name, new_limit):
                raise RunConflict(f"run {name!r} changed meanwhile; try again")
        log.info("run %s: time limit now %s", name, "none" if new_limit is None else describe(new_limit))
        return self.ctx.get(name)

    def _check_reserved(self, record: RunRecord, new_limit: float | None, now: float) -> None:
        """A run that took GPUs reserved later by others (its limit ended before their window: app/reservations.py)
        may not be given time into that window: it would hold the reservation's GPUs (409)."""
        found = self.deadline(record) if record.status == RunStatus.RUNNING else None
        if found is None:
            return
        by, reservation = found
        ends = None if new_limit is None else now + new_limit - running_time(record, now)
        if ends is None or ends > by:
            gpus = ", ".join(str(g) for g in sorted(set(record.gpus) & set(reservation.gpus)))
            raise RunConflict(
                f"run {record.name!r} holds GPU {gpus}, reserved for {', '.join(reservation.users)} from "
                f"{iso(reservation.start_at)} (reservation {reservation.id}): its time limit may end at most "
                f"{describe(max(0.0, by - now))} from now"
            )

    # --- how the supervisor records the end ------------------------------------------------------------------

    def ended_by_limit(self, record: RunRecord | None, succeeded: bool, now: float) -> bool:
        """Whether a run that ended (not successfully) ended for its time limit: the keeper stopped it, or
        (a restart since) its running time had reached the point where it is stopped."""
        if record is None or succeeded or record.time_limit_s is None:
            return False
        if record.name in self.live.timed_out:
            return True
        return running_time(record, now) >= record.time_limit_s - self.settings.time_limit_save_s - TICK_S

    def reason(self, record: RunRecord) -> str:
        """``time limit of 6 h reached; resumable from its checkpoint (epoch 31 of 50)``, or without one."""
        limit = describe(record.time_limit_s or 0.0)
        ckpt = self.settings.output_dir / record.run_dir / "ckpt" / "last.ckpt"
        if not ckpt.is_file():
            return f"time limit of {limit} reached; no checkpoint yet: a resume starts it over"
        seen = self.files.progress(record.run_dir) or {}
        progress = seen.get("progress") or {}
        epoch, total = progress.get("epoch"), progress.get("max_epochs")
        at = f" (epoch {epoch + 1} of {total})" if epoch is not None and total else ""  # 0-based there
        return f"time limit of {limit} reached; resumable from its checkpoint{at}: POST /runs/{record.name}/resume"
