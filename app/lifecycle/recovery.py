"""Recovery: what start-up does before the first request, after a restart or a kill -9.

GPUs are noted in the store, then the launcher starts the run, then queued -> running is recorded with its
handle. A kill -9 anywhere in between is repaired here: the launcher finds every run it started by name,
so nothing runs twice and nothing is lost.
"""

from __future__ import annotations

import logging
import time

from app.errors import EngineUnavailable
from app.fairshare import FairShare
from app.lifecycle.cancel import Canceller
from app.lifecycle.live import Context
from app.lifecycle.preemption import Preempter
from app.lifecycle.supervision import Supervisor
from app.models import RunRecord

log = logging.getLogger("labrun.lifecycle")


class Recovery:
    def __init__(
        self,
        ctx: Context,
        fair: FairShare,
        supervisor: Supervisor,
        canceller: Canceller,
        preempter: Preempter | None = None,
    ) -> None:
        self.ctx, self.fair, self.supervisor, self.canceller = ctx, fair, supervisor, canceller
        self.store, self.launcher, self.preempter = ctx.store, ctx.launcher, preempter

    def reconcile(self) -> None:
        """Recover every unfinished run before accepting new work."""
        settings = self.ctx.settings
        self.store.set_owner_of_unowned(settings.legacy_owner)
        self.fair.load(self.store.ended_since(time.time() - 20 * settings.fair_share_half_life_s))
        self._running(self.store.running())
        for record in self.store.queued():
            self._queued(record)
        self._release_leftovers()

    def _running(self, running: list[RunRecord]) -> None:
        try:  # one question for all of them
            outcomes = self.launcher.poll_many({r.name: r.handle or "" for r in running})
        except EngineUnavailable:
            outcomes = {}  # the watchers keep asking until the engine answers
        for record in running:
            handle = record.handle or ""
            outcome = outcomes.get(record.name)
            if outcome is not None:  # it ended while the service was down
                self.supervisor.recorded_later(record.name, handle, outcome)
                continue
            self.supervisor.adopt(record, handle)
            if record.cancel_requested:  # a cancel the last service recorded but did not see through
                self.canceller.resume_cancel(record.name, handle)
            elif record.preempted_by is not None and self.preempter is not None:  # a preemption, likewise
                self.preempter.resume_stop(record)

    def _queued(self, record: RunRecord) -> None:
        live = self.ctx.live
        live.unreconciled.add(record.name)
        try:
            self.supervisor.reattach_queued(record)
        except EngineUnavailable:  # asked again before it starts or is cancelled; until then it keeps
            # the GPUs it was given before the restart: it may be running on them already
            if record.gpus and all(g in live.slots.free_gpus for g in record.gpus):
                live.slots.hold(record.name, record.gpu_need, record.gpus)

    def _release_leftovers(self) -> None:
        """Free what the engine still keeps for runs whose outcome is recorded (a container left by a
        service that died between recording a run's end and releasing it)."""
        try:
            leftovers = self.launcher.leftovers()
        except EngineUnavailable:
            return  # nothing is lost: they are found again at the next start
        for name, handle in leftovers.items():
            record = self.store.get(name)
            if record is not None and record.status.is_terminal():
                try:
                    self.launcher.release(name, handle)
                except Exception:
                    log.exception("releasing %s failed", name)
