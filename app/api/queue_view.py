"""``GET /queue`` as an answer: per user, what runs, what is queued (in the fair order), recent usage and
limits; its JSON kept while nothing it shows can have changed.

The JSON is kept while the store has taken no write (every status change, submission, cancel, limit set
through the API is one) and for at most ``QUEUE_KEPT_S``: what the store does not version changes no
faster than that matters (recent usage decays, shown to a tenth; queue positions are recomputed at most
once a second anyway; a limit set from the server's command line shows within that bound). A run's status
is never shown stale: its change is a write. Nor are GPUs busy outside labrun: each pass of the GPU guard
is a new view, and the JSON is kept only for the view it was built from.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from app.api.gpus_public import outside_public
from app.api.public import (
    LimitsPublic,
    QueuedEntry,
    QueuePublic,
    RunningEntry,
    UserQueue,
    budget_public,
    start_estimate,
)
from app.fairshare import CPU, GPU, pool_of
from app.models import Priority

if TYPE_CHECKING:
    from app.gpus.state import GuardView
    from app.lifecycle import RunManager

QUEUE_KEPT_S = 1.0


def queue_public(manager: RunManager) -> QueuePublic:
    running, queued = manager.store.running(), manager.store.queued()
    positions = manager.queue_positions()
    estimates = manager.estimates  # kept by the manager's thread: looked up, never computed here
    owners = sorted({r.owner or "" for r in running + queued} | manager.fair.owners())
    users = {}
    for owner in owners:
        users[owner] = UserQueue(
            running=[
                RunningEntry(
                    name=r.name,
                    gpus=r.gpus,
                    pool=pool_of(r),
                    priority=r.priority,
                    preempting_for=r.preempted_by,
                )
                for r in running
                if r.owner == owner
            ],
            queued=[
                QueuedEntry(
                    name=r.name,
                    pool=pool_of(r),
                    queue_position=positions.get(r.name),
                    priority=r.priority,
                    waiting_reason=manager.live(r.name).waiting_reason,
                    estimate=start_estimate(estimates.of(r.name)),
                    runs_as=Priority.LOW if estimates.runs_as_low(r.name) else None,
                )
                for r in queued
                if r.owner == owner
            ],
            usage={pool: round(manager.fair.usage(owner, pool, running), 1) for pool in (GPU, CPU)},
            limits=LimitsPublic.model_validate(manager.limits(owner)),
            budgets=[budget_public(b) for b in manager.budgets.balances(owner)],
        )
    outside = [outside_public(p) for found in manager.guard.view().busy.values() for p in found]
    return QueuePublic(half_life_s=manager.fair.half_life, users=users, gpus_outside=outside)


class QueueView:
    def __init__(self, manager: RunManager) -> None:
        self.manager = manager
        self._kept: tuple[int, GuardView, float, bytes] | None = (
            None  # (store version, guard pass, when, JSON)
        )
        self._lock = threading.Lock()  # one build at a time: concurrent polls wait for it, not redo it

    def cached(self) -> bytes | None:
        """The JSON, if what was built is still current (cheap: the event loop asks)."""
        kept = self._kept
        if kept is None:
            return None
        version, guard, at, body = kept
        fresh = (
            version == self.manager.store.version
            and guard is self.manager.guard.view()
            and time.monotonic() - at < QUEUE_KEPT_S
        )
        return body if fresh else None

    def json(self) -> bytes:
        """The JSON, built anew unless current (milliseconds with thousands queued: call it off the loop)."""
        with self._lock:
            body = self.cached()
            if body is not None:
                return body
            # The version is read before the store: a write during the build leaves the entry stale.
            version, guard, at = self.manager.store.version, self.manager.guard.view(), time.monotonic()
            body = queue_public(self.manager).model_dump_json().encode()
            self._kept = (version, guard, at, body)
            return body
