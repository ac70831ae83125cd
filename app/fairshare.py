"""Fair share: which queued run goes next when a slot frees up, across users.

The rule (Slurm's fair-share factor, without its weight): each user's *recent usage* is what their runs
used — GPU-seconds in the GPU pool (a 2-GPU run counts twice), run-seconds in the CPU pool — with every
second's weight halving every ``half_life`` seconds. The next run comes from the user with the least
recent usage in that pool (no history: first), FIFO within a user. Within one dispatch round, every run
already given to a user counts against them (``running + picked``), so free slots alternate between
users of equal usage.

Usage is computed from the store's records at start-up (runs that ended within the last 20 half-lives)
and kept up to date in memory as runs end; running runs add what they have used so far. Nothing is lost
by a kill -9: the records are the source.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from app.models import RunRecord
from app.store import QueueEntry

Entry = TypeVar("Entry", RunRecord, QueueEntry)

GPU, CPU = "gpu", "cpu"


def pool_of(record: RunRecord | QueueEntry) -> str:
    return GPU if record.gpu_need else CPU


def weight(record: RunRecord | QueueEntry) -> int:
    return record.gpu_need or 1


class FairShare:
    def __init__(self, half_life_s: float, clock: Callable[[], float] = time.time) -> None:
        """``clock``: what time it is (a simulation plays the queue in its own time)."""
        self.half_life = half_life_s
        self.clock = clock
        self._rate = math.log(2) / half_life_s
        self._usage: dict[tuple[str, str], tuple[float, float]] = {}  # (owner, pool) -> (value, as_of)
        self._lock = threading.Lock()

    # --- usage ------------------------------------------------------------------------------------------

    def _interval(self, start: float, end: float, now: float) -> float:
        """The decayed weight at ``now`` of one unit used from ``start`` to ``end``."""
        start, end = min(start, now), min(end, now)
        if end <= start:
            return 0.0
        return (math.exp(-self._rate * (now - end)) - math.exp(-self._rate * (now - start))) / self._rate

    def add(self, record: RunRecord, now: float | None = None) -> None:
        """Count an ended run."""
        if record.started_at is None or record.owner is None:
            return
        now = now or time.time()
        end = record.finished_at or now
        amount = weight(record) * self._interval(record.started_at, end, now)
        key = (record.owner, pool_of(record))
        with self._lock:
            value, as_of = self._usage.get(key, (0.0, now))
            self._usage[key] = (value * math.exp(-self._rate * (now - as_of)) + amount, now)

    def add_use(
        self, owner: str, pool: str, units: int, start: float, end: float, now: float | None = None
    ) -> None:
        """Count use that was not a run of the queue: GPUs a mapped user's own processes held outside it
        (``app/gpus/``), ``units`` of them from ``start`` to ``end``."""
        now = now or time.time()
        amount = units * self._interval(start, end, now)
        if amount <= 0:
            return
        with self._lock:
            value, as_of = self._usage.get((owner, pool), (0.0, now))
            self._usage[(owner, pool)] = (value * math.exp(-self._rate * (now - as_of)) + amount, now)

    def load(self, ended: Iterable[RunRecord]) -> None:
        now = time.time()
        for record in ended:
            self.add(record, now)

    def usage(
        self, owner: str, pool: str, running: Sequence[RunRecord | QueueEntry] = (), now: float | None = None
    ) -> float:
        """Recent usage of ``owner`` in ``pool``: ended runs, plus what their running runs used so far."""
        now = now or time.time()
        with self._lock:
            value, as_of = self._usage.get((owner, pool), (0.0, now))
        total = value * math.exp(-self._rate * (now - as_of))
        for r in running:
            if r.owner == owner and pool_of(r) == pool and r.started_at is not None:
                total += weight(r) * self._interval(r.started_at, now, now)
        return total

    def owners(self) -> set[str]:
        with self._lock:
            return {owner for owner, _ in self._usage}

    # --- order ------------------------------------------------------------------------------------------

    def order(self, queued: Sequence[Entry], running: Sequence[RunRecord | QueueEntry]) -> list[Entry]:
        """The queued runs in the order the dispatcher takes them: per pool, the user with the least
        (recent usage, runs running or already placed in this order, oldest queued run) first."""
        now = self.clock()
        ordered: list[Entry] = []
        for pool in (CPU, GPU):
            mine = [r for r in queued if pool_of(r) == pool]
            per_user: dict[str, deque[Entry]] = defaultdict(deque)
            for r in mine:  # queued() is oldest first: FIFO within a user
                per_user[r.owner or ""].append(r)
            taken: dict[str, int] = defaultdict(int)
            for going in running:
                if pool_of(going) == pool:
                    taken[going.owner or ""] += 1
            usage = {u: self.usage(u, pool, running, now) for u in per_user}
            # A heap of each user's (usage, taken, oldest queued seq): taking a user's run changes only
            # that user's key. A scan of every user per run was O(runs x users): 5,000 runs of 50 users
            # took ~40 ms a round. seq is unique, so no two keys tie and the order is the scan's.
            heap = [(usage[u], taken[u], runs[0].seq, u) for u, runs in per_user.items()]
            heapq.heapify(heap)
            while heap:
                _, _, _, user = heapq.heappop(heap)
                runs = per_user[user]
                ordered.append(runs.popleft())
                taken[user] += 1
                if runs:
                    heapq.heappush(heap, (usage[user], taken[user], runs[0].seq, user))
        return ordered
