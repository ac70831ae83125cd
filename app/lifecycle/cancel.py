"""Stopping runs: a cancel by request (a queued run at once; a running one with SIGTERM, a grace period,
then SIGKILL), a cancel recorded by an earlier service and not yet seen through, and the time limit (a run
past its owner's maximum run time is cancelled). The watcher records the end (``supervision.py``)."""

from __future__ import annotations

import logging
import threading
import time

from app.errors import RunConflict
from app.lifecycle.live import Context
from app.lifecycle.supervision import Supervisor
from app.models import RunRecord, RunStatus
from app.users import LOCAL

log = logging.getLogger("labrun.lifecycle")


class Canceller:
    def __init__(self, ctx: Context, supervisor: Supervisor) -> None:
        self.ctx, self.supervisor = ctx, supervisor
        self.store, self.live = ctx.store, ctx.live

    def cancel(self, name: str, by: str = LOCAL) -> RunRecord:
        """Cancel a run (``by``: who asked, recorded with it; may they? the API layer decides)."""
        live = self.live
        with live.cond:
            live.cond.wait_for(lambda: name not in live.starting, timeout=60)
            record = self.ctx.get(name)
            if record.status == RunStatus.QUEUED and name in live.unreconciled:
                record = self.supervisor.reattach_queued(
                    record
                )  # it may run: the engine was down at start-up
            if record.status.is_terminal():
                raise RunConflict(f"run {name!r} already finished ({record.status.value}); nothing to cancel")
            if record.status == RunStatus.QUEUED:
                return self._cancel_queued(name, by)
            live.cancelling.add(name)
            self.store.request_cancel(name, by=by)
            handle = record.handle or ""
        try:
            self.ctx.launcher.cancel(name, handle, self.ctx.settings.cancel_grace_s)
        except BaseException:
            with live.cond:  # not cancelled after all (engine down, ...): a later natural end is not a cancel
                live.cancelling.discard(name)
                self.store.request_cancel(name, requested=False)
            raise
        with live.cond:  # the watcher records the outcome; wait for it so the answer is final
            live.cond.wait_for(lambda: name not in live.active and name not in live.ended, timeout=10)
        return self.ctx.get(name)

    def _cancel_queued(self, name: str, by: str) -> RunRecord:
        """(Under the lock.) A queued run ends at once."""
        self.store.finish(
            name, [RunStatus.QUEUED], RunStatus.CANCELLED, reason="cancelled while queued", cancelled_by=by
        )
        self.live.order_dirty = True
        self.live.unreconciled.discard(name)
        self.live.slots.free(name)  # held if a launch of it failed half-way
        return self.ctx.get(name)

    def resume_cancel(self, name: str, handle: str) -> None:
        """Carry out a cancel in the background (a recorded one after a restart, or a time limit)."""
        with self.live.cond:
            self.live.cancelling.add(name)

        def carry_out() -> None:
            try:
                self.ctx.launcher.cancel(name, handle, self.ctx.settings.cancel_grace_s)
            except Exception:  # e.g. the engine is down: the next start tries again (still recorded)
                log.exception("carrying out the recorded cancel of %s failed", name)

        log.info("run %s: carrying out its recorded cancel", name)
        threading.Thread(target=carry_out, daemon=True, name=f"labrun-cancel-{name[:40]}").start()

    def time_loop(self) -> None:
        """Cancel runs that pass their owner's maximum run time."""
        while not self.live.stopping.wait(1.0):
            try:
                self.check_times()
            except Exception:
                log.exception("checking run times failed")

    def check_times(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for record in self.store.running():
            limit = self.ctx.limits.of(record.owner or "").max_run_s
            if limit is None or record.started_at is None or now - record.started_at < limit:
                continue
            with self.live.cond:
                if record.name in self.live.timed_out or record.name not in self.live.active:
                    continue
                self.live.timed_out[record.name] = limit
            log.info("run %s ran past its maximum run time (%g s): cancelling it", record.name, limit)
            self.resume_cancel(record.name, record.handle or "")
