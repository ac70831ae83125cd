"""Stopping runs: a cancel by request (a queued run at once; a running one with SIGTERM, a grace period,
then SIGKILL), and a cancel recorded by an earlier service and not yet seen through. The watcher records the
end (``supervision.py``). (A run at its time limit is stopped with a checkpoint: ``timekeeper.py``.)"""

from __future__ import annotations

import logging
import threading

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
        """Carry out a cancel in the background (a recorded one after a restart, or a stall's)."""
        with self.live.cond:
            self.live.cancelling.add(name)

        def carry_out() -> None:
            try:
                self.ctx.launcher.cancel(name, handle, self.ctx.settings.cancel_grace_s)
            except Exception:  # e.g. the engine is down: the next start tries again (still recorded)
                log.exception("carrying out the recorded cancel of %s failed", name)

        log.info("run %s: carrying out its recorded cancel", name)
        threading.Thread(target=carry_out, daemon=True, name=f"labrun-cancel-{name[:40]}").start()
