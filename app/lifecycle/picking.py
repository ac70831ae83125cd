"""Picking: which queued runs start now, given the queue and the free resources. No I/O, no side effects:
the dispatcher (``dispatch.py``) reserves, records and launches what a policy picks.

A policy is one object with two methods: ``order`` (the queue in the order it would take runs, which is
also what the API shows as queue positions) and ``pick`` (what to start in one round). ``FairSharePicking``
is today's: fair share across users (``app/fairshare.py``), FIFO within a user, per pool; a user at their
GPU cap is passed over; a GPU run that does not fit holds back the GPU runs behind it (so a big run is not
starved by small ones), never the CPU runs. Priorities, preemption and reservations are further policies
(or wrappers of this one) that the dispatcher takes as they are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.fairshare import FairShare
from app.scheduling import Slots
from app.store import QueueEntry


@dataclass(frozen=True)
class Round:
    """What one dispatch round knows."""

    queued: Sequence[QueueEntry]  # oldest first
    running: Sequence[QueueEntry]
    slots: Slots  # a scratch copy of the free resources: the policy reserves on it as it picks
    starting: frozenset[str]  # being launched already (a launch that failed half-way is retried later)
    gpu_cap: Callable[[str], int | None]  # owner -> the most GPUs they may use at once (None: no cap)
    inventory: int | None  # GPUs this server has (None: the engine places runs itself)
    # GPUs busy outside labrun (a process no run started holds them: app/gpus/): never handed out
    outside: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Start:
    entry: QueueEntry
    gpus: tuple[int, ...]  # the GPUs it gets (none for a CPU run, or when the engine places runs)


@dataclass(frozen=True)
class Refusal:
    entry: QueueEntry
    reason: str  # why it can never start here: it fails with this reason


@dataclass
class Picks:
    start: list[Start] = field(default_factory=list)
    refuse: list[Refusal] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)  # runs that wait for GPUs busy outside labrun


class PickingPolicy(Protocol):
    def order(self, queued: Sequence[QueueEntry], running: Sequence[QueueEntry]) -> list[QueueEntry]: ...

    def pick(self, round_: Round) -> Picks: ...


class FairSharePicking:
    def __init__(self, fair: FairShare) -> None:
        self.fair = fair

    def order(self, queued: Sequence[QueueEntry], running: Sequence[QueueEntry]) -> list[QueueEntry]:
        return self.fair.order(queued, running)

    def pick(self, round_: Round) -> Picks:
        picks = Picks()
        gpu_blocked = False
        outside_blocked = False  # the GPU run that holds back the others waits for GPUs busy outside labrun
        round_.slots.set_aside(round_.outside)
        in_use: dict[str, int] = defaultdict(int)  # GPUs each owner has going (and picked in this round)
        for r in round_.running:
            in_use[r.owner or ""] += r.gpu_need
        for entry in self.order(round_.queued, round_.running):
            owner = entry.owner or ""
            cap = round_.gpu_cap(owner) if entry.gpu_need else None
            if cap is not None and in_use[owner] + entry.gpu_need > cap:
                continue  # this user has their share of GPUs in use; others' runs may go first
            if entry.name in round_.starting or (entry.gpu_need and gpu_blocked):
                if entry.gpu_need and gpu_blocked and outside_blocked:
                    picks.outside.append(entry.name)
                continue
            if round_.inventory is not None and entry.gpu_need > round_.inventory:  # the inventory shrank
                reason = (
                    f"could not start: needs {entry.gpu_need} GPU(s), this server now has {round_.inventory}"
                )
                picks.refuse.append(Refusal(entry, reason))
                continue
            gpus = round_.slots.take(entry.name, entry.gpu_need)
            if gpus is None:
                gpu_blocked = gpu_blocked or entry.gpu_need > 0
                if entry.gpu_need and round_.slots.would_fit(entry.gpu_need, round_.outside):
                    outside_blocked = True
                    picks.outside.append(entry.name)
                continue
            in_use[owner] += entry.gpu_need
            picks.start.append(Start(entry, tuple(gpus)))
        return picks
