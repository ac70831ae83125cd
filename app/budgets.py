"""GPU-hour budgets (docs/budgets-and-estimates.md): what each user ran over a rolling window, against what
an admin allows them.

- Usage is per pool, as fair share counts it: GPU-hours in the GPU pool (a 2-GPU run counts twice),
  run-hours for CPU-only runs, each pool its own budget (``LABRUN_BUDGET_GPU_HOURS``,
  ``LABRUN_BUDGET_CPU_HOURS``, or a user's own: ``users limits --gpu-hours/--cpu-hours``; 0: none). Every
  attempt counts, with every launcher, for the part of it inside the window (``LABRUN_BUDGET_WINDOW_DAYS``);
  running runs up to now.
- Cheap: the dispatcher asks every round and ``GET /queue`` on every build. The ``Ledger`` keeps the
  attempts that ended within the window in memory, read once at start-up and then only what ended since the
  last look (``store.ledger``, through an index); the totals are kept per store version for at most a few
  seconds.
- A user over a pool's budget still queues; their runs of that pool start as ``low`` (``runs_as``): decided
  at each pick, so a user back under budget gets their class back for the runs that have not started yet.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from app.core.config import Settings
from app.fairshare import CPU, GPU, pool_of
from app.models import Priority, RunStatus
from app.store import QueueEntry, RunStore
from app.store.ledger import Ran
from app.users import Users

HOUR_S = 3600.0
DAY_S = 86400.0
KEPT_S = 5.0  # the totals are computed again after this long (running runs add up), or after a write...
MIN_S = 0.5  # ... but not more often than this (a busy store writes many times a second)
SLACK_S = 600.0  # a look reads again what ended this long before the last one (an end recorded late)
RELOAD_S = 3600.0  # and the whole window is read again this often (what a look may still have missed)


@dataclass(frozen=True)
class Balance:
    """One user's use of one pool within the window, and their budget for it."""

    pool: str  # gpu or cpu
    used_hours: float
    budget_hours: float | None  # None: no budget
    window_days: float

    @property
    def over(self) -> bool:
        return self.budget_hours is not None and self.used_hours >= self.budget_hours

    @property
    def unit(self) -> str:
        return "GPU-hours" if self.pool == GPU else "CPU-hours"

    def describe(self) -> str:
        """e.g. ``512.3 of 500 GPU-hours used in the last 30 days``."""
        budget = "no budget" if self.budget_hours is None else f"{self.budget_hours:g}"
        return f"{self.used_hours:.1f} of {budget} {self.unit} used in the last {self.window_days:g} days"


def over_budget_reason(balance: Balance) -> str:
    return f"over budget: runs as low ({balance.describe()})"


class Ledger:
    """Attempts that ended within the window (no I/O), with running totals per (owner, pool): a look costs
    what changed since the last one, not every attempt in the window. The window's start only moves on
    (``now`` never goes back): attempts that ended before it are dropped, and the few that straddle it
    (started before it, ended after) are counted for their part inside it at each look."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._ran: dict[tuple[str, int], Ran] = {}  # (name, attempt) -> what it used
        self._whole: dict[tuple[str, str], float] = defaultdict(float)  # unit-seconds of those wholly inside
        self._by_end: list[tuple[float, tuple[str, int]]] = []  # heaps (lazy: an entry may be stale)
        self._by_start: list[tuple[float, tuple[str, int]]] = []
        self._straddling: set[tuple[str, int]] = set()

    def add(self, attempts: Iterable[Ran]) -> None:
        for ran in attempts:
            key = (ran.name, ran.attempt)
            old = self._ran.get(key)
            if old == ran:
                continue  # read again (the look's slack): already counted
            if old is not None:
                self._drop(key, old)
            self._ran[key] = ran
            self._whole[_who(ran)] += _amount(ran)
            heapq.heappush(self._by_end, (ran.finished_at, key))
            heapq.heappush(self._by_start, (ran.started_at, key))

    def prune(self, now: float) -> None:
        self._advance(now - self.window_s)

    def used(self, now: float, running: Sequence[QueueEntry]) -> dict[tuple[str, str], float]:
        """(owner, pool) -> unit-seconds used within the window up to ``now``."""
        since = now - self.window_s
        self._advance(since)
        used: dict[tuple[str, str], float] = defaultdict(float)
        for who, amount in self._whole.items():
            if amount > 1e-6:
                used[who] += amount
        for key in self._straddling:
            r = self._ran[key]
            used[_who(r)] += max(0.0, min(r.finished_at, now) - since) * (r.gpu_need or 1)
        for e in running:
            if e.started_at is not None:
                seconds = now - max(e.started_at, since)
                if seconds > 0:
                    used[(e.owner or "", pool_of(e))] += seconds * (e.gpu_need or 1)
        return dict(used)

    def _advance(self, since: float) -> None:
        """Drop what ended before ``since``; what started before it and ended after now straddles it."""
        while self._by_end and self._by_end[0][0] <= since:
            end, key = heapq.heappop(self._by_end)
            r = self._ran.get(key)
            if r is not None and r.finished_at == end:
                self._drop(key, r)
        while self._by_start and self._by_start[0][0] < since:
            start, key = heapq.heappop(self._by_start)
            r = self._ran.get(key)
            if r is not None and r.started_at == start and key not in self._straddling:
                self._whole[_who(r)] -= _amount(r)
                self._straddling.add(key)

    def _drop(self, key: tuple[str, int], ran: Ran) -> None:
        if key in self._straddling:
            self._straddling.discard(key)
        else:
            self._whole[_who(ran)] -= _amount(ran)
        del self._ran[key]


def _who(ran: Ran) -> tuple[str, str]:
    return (ran.owner or "", GPU if ran.gpu_need else CPU)


def _amount(ran: Ran) -> float:
    return max(0.0, ran.finished_at - ran.started_at) * (ran.gpu_need or 1)


@dataclass(frozen=True)
class _Totals:
    version: int
    at: float  # monotonic
    now: float  # wall clock
    used: dict[tuple[str, str], float]


class Budgets:
    def __init__(
        self, settings: Settings, users: Users, store: RunStore, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings, self.users, self.store, self.clock = settings, users, store, clock
        self.window_s = settings.budget_window_days * DAY_S
        self.ledger = Ledger(self.window_s)
        self._seen_to: float | None = None  # what ended up to this time has been read
        self._loaded_at = 0.0
        self._totals: _Totals | None = None
        self._enabled: tuple[int, bool] | None = None
        self._lock = threading.Lock()

    def enabled(self) -> bool:
        """Whether any budget may be in force (the server's, or any user's own); kept per store version (a
        budget set is a write)."""
        s, version = self.settings, self.store.version
        if s.budget_gpu_hours or s.budget_cpu_hours:
            return True
        kept = self._enabled
        if kept is None or kept[0] != version:
            kept = self._enabled = (
                version,
                any(u.budget_gpu_hours or u.budget_cpu_hours for u in self.users.list()),
            )
        return kept[1]

    def budget_hours(self, owner: str, pool: str) -> float | None:
        user, s = self.users.get(owner), self.settings
        own = None if user is None else (user.budget_gpu_hours if pool == GPU else user.budget_cpu_hours)
        chosen = own if own is not None else (s.budget_gpu_hours if pool == GPU else s.budget_cpu_hours)
        return chosen or None

    def balance(self, owner: str, pool: str) -> Balance:
        used = self._current().used.get((owner, pool), 0.0)
        return Balance(pool, used / HOUR_S, self.budget_hours(owner, pool), self.settings.budget_window_days)

    def balances(self, owner: str) -> list[Balance]:
        return [self.balance(owner, pool) for pool in (GPU, CPU)]

    def used(self) -> dict[tuple[str, str], float]:
        """(owner, pool) -> hours used within the window (every user who used any)."""
        return {key: s / HOUR_S for key, s in self._current().used.items()}

    def report(self) -> list[tuple[str, Balance]]:
        """(user, balance) of every user who used something within the window or has a budget (metrics)."""
        used = self.used()
        owners = {owner for owner, _ in used} | {u.name for u in self.users.list() if u.active}
        window = self.settings.budget_window_days
        return [
            (owner, Balance(pool, used.get((owner, pool), 0.0), self.budget_hours(owner, pool), window))
            for owner in sorted(owners)
            for pool in (GPU, CPU)
        ]

    def over(self) -> Callable[[str, str], Balance | None]:
        """A look-up for one dispatch round: (owner, pool) -> their balance if over budget, else None. Each
        owner's budget is read once per round."""
        if not self.enabled():  # no budget anywhere: the dispatcher's rounds read nothing more
            return _never
        totals, known = self._current(), {}

        def over(owner: str, pool: str) -> Balance | None:
            key = (owner, pool)
            if key not in known:
                hours = self.budget_hours(owner, pool)
                used = totals.used.get(key, 0.0) / HOUR_S
                window = self.settings.budget_window_days
                known[key] = (
                    Balance(pool, used, hours, window) if hours is not None and used >= hours else None
                )
            return known[key]

        return over

    def _current(self) -> _Totals:
        kept, mono = self._totals, time.monotonic()
        version = self.store.version
        if (
            kept is not None
            and mono - kept.at < KEPT_S
            and (kept.version == version or mono - kept.at < MIN_S)
        ):
            return kept
        with self._lock:
            kept = self._totals
            if kept is not None and kept.version == version and time.monotonic() - kept.at < MIN_S:
                return kept
            now = self.clock()
            self._read(now)
            running = self.store.entries(RunStatus.RUNNING)
            self._totals = _Totals(version, time.monotonic(), now, self.ledger.used(now, running))
            return self._totals

    def _read(self, now: float) -> None:
        """(Under the lock.) What ended since the last look; the whole window now and then."""
        if self._seen_to is None or time.monotonic() - self._loaded_at > RELOAD_S:
            self.ledger = Ledger(self.window_s)
            since = now - self.window_s
            self._loaded_at = time.monotonic()
        else:
            since = self._seen_to - SLACK_S
        self.ledger.add(self.store.ledger.ended_since(since))
        self.ledger.prune(now)
        self._seen_to = now


def _never(_owner: str, _pool: str) -> Balance | None:
    return None


def runs_as(entry: QueueEntry, over: Callable[[str, str], Balance | None]) -> QueueEntry:
    """The entry as the policy should see it: ``low`` while its owner is over the budget of its pool."""
    if entry.priority == Priority.LOW.value or over(entry.owner or "", pool_of(entry)) is None:
        return entry
    return entry._replace(priority=Priority.LOW.value)
