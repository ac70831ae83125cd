"""Start estimates, kept: what ``estimates.py`` needs is gathered here (the queue and the running runs as the
policy sees them, progress.json of each running run, time limits, durations of similar runs, budgets,
GPUs busy outside labrun) and the answer kept until the store changes (at most every ``MIN_S``) or
``KEPT_S`` passed (progress moves without a write). The API only looks up the kept answer: a poll never
plays the queue forward itself. A thread of the manager refreshes it (``loop``); a test calls ``refresh``.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any

from app.budgets import Budgets, over_budget_reason, runs_as
from app.lifecycle import timelimits
from app.lifecycle.estimates import Ending, Estimate, Situation, Sureness, Waiting, estimate
from app.lifecycle.limits import UserLimits
from app.models import Priority, RunStatus
from app.runfiles import RunFiles
from app.store.ledger import Took

if TYPE_CHECKING:
    from app.lifecycle.live import Context
    from app.lifecycle.picking import PickingPolicy
    from app.lifecycle.preemption import Preempter

log = logging.getLogger("labrun.lifecycle")

KEPT_S = 10.0  # computed again at least this often (running runs move on)...
MIN_S = 2.0  # ... and after a write, but not more often than this
HISTORY_RUNS = 5000  # succeeded runs read at start-up for their durations
PER_KIND = 25  # durations kept per kind of run (the latest)
MIN_FRACTION = 0.02  # progress below this says too little about the rest


class Durations:
    """How long runs like this one took: the median of the latest succeeded runs of the same request
    (config and overrides), else of the same config; None: none known."""

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], deque[float]] = defaultdict(lambda: deque(maxlen=PER_KIND))
        self._config: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=PER_KIND))
        self._seen: set[str] = set()
        self.seen_to: float | None = None

    def add(self, took: list[Took]) -> None:
        for t in took:
            if t.name in self._seen or t.ran_s is None or t.ran_s <= 0:
                continue
            self._seen.add(t.name)
            self._exact[(t.config_name, t.overrides)].append(t.ran_s)
            self._config[t.config_name].append(t.ran_s)
            self.seen_to = max(self.seen_to or 0.0, t.finished_at)

    def of(self, config_name: str, overrides: str) -> float | None:
        exact = self._exact.get((config_name, overrides))
        if exact:
            return statistics.median(exact)
        same = self._config.get(config_name)
        return statistics.median(same) if same else None


class StartEstimates:
    def __init__(
        self,
        ctx: Context,
        policy: PickingPolicy,
        budgets: Budgets | None,
        preempter: Preempter | None,
    ) -> None:
        self.ctx, self.policy, self.budgets, self.preempter = ctx, policy, budgets, preempter
        self.files = RunFiles(ctx.state)  # its own parse cache of progress.json
        self.durations = Durations()
        self._kept: dict[str, Estimate] = {}
        self._low: dict[str, str] = {}  # run -> why it starts (or runs) as low: its owner is over budget
        self._at: tuple[int, float] | None = None  # (store version, monotonic) of what is kept
        self._lock = threading.Lock()
        self._cost = 0.0  # seconds the last computation took

    def of(self, name: str) -> Estimate | None:
        """The kept estimate of a queued run (None: none yet, or not queued)."""
        return self._kept.get(name)

    def all(self) -> dict[str, Estimate]:
        return self._kept

    def runs_as_low(self, name: str) -> str | None:
        """Why a run of another class starts (queued) or runs as low: its owner is over budget; else None."""
        return self._low.get(name)

    def loop(self) -> None:
        stopping = self.ctx.live.stopping
        while not stopping.is_set():
            try:
                self.refresh()
            except Exception as exc:  # never let the thread die: the last estimates stay shown
                log.warning("estimating start times failed: %s", exc)
            stopping.wait(0.5)

    def refresh(self, force: bool = False) -> bool:
        """Compute the estimates again if they may have changed; True if it did."""
        store, mono = self.ctx.store, time.monotonic()
        at = self._at
        if not force and at is not None:
            age = mono - at[1]
            # a long queue costs more to play: then no more than a twentieth of the time goes to it (it holds
            # the interpreter while it plays: submissions wait for it on a small machine)
            if age < max(MIN_S, 20 * self._cost) or (at[0] == store.version and age < KEPT_S):
                return False
        with self._lock:
            began = time.perf_counter()
            version = store.version  # read before the store: a write meanwhile leaves it stale
            situation = self.situation()
            self._kept = estimate(situation, self.policy)
            self._low = {w.entry.name: w.note for w in situation.queued if w.note} | {
                e.entry.name: "started as low: its owner was over budget"
                for e in situation.running
                if e.entry.name in self.ctx.live.budget_low
            }
            self._at = (version, time.monotonic())
            self._cost = time.perf_counter() - began
        return True

    def situation(self, now: float | None = None) -> Situation:
        ctx, live = self.ctx, self.ctx.live
        now = time.time() if now is None else now
        self._read_durations()
        store = ctx.store
        queued, running = store.entries(RunStatus.QUEUED), store.entries(RunStatus.RUNNING)
        held = live.after_waiting  # runs that wait for others (dependencies.py): their reason says what for
        queued = [e for e in queued if e.name not in held]
        requests = store.ledger.waiting_requests() if queued or running else {}
        over = self.budgets.over() if self.budgets is not None else (lambda _o, _p: None)
        waiting = []
        for e in queued:
            seen = runs_as(e, over)
            balance = over(e.owner or "", "gpu" if e.gpu_need else "cpu") if seen is not e else None
            note = over_budget_reason(balance) if balance is not None else None
            waiting.append(Waiting(seen, self._length(e, requests.get(e.name), now), note))
        records = {r.name: r for r in store.running()}
        endings = []
        low = live.budget_low
        for e in running:
            seen = e._replace(priority=Priority.LOW.value) if e.name in low else e
            record = records.get(e.name)
            endings.append(self._ending(seen, record.run_dir if record else None, requests.get(e.name), now))
        guard = ctx.guard.view() if ctx.guard is not None else None
        slots = live.slots
        known: dict[str, UserLimits] = {}

        def limits(owner: str) -> UserLimits:  # read once per owner: the play asks at every round
            if owner not in known:
                known[owner] = ctx.limits.of(owner)
            return known[owner]

        return Situation(
            now=now,
            queued=waiting,
            running=endings,
            gpus=slots.gpus,
            max_cpu_runs=slots.max_cpu_runs,
            places_runs=slots.unlimited,
            outside=frozenset(guard.busy) if guard is not None else frozenset(),
            gpu_cap=lambda owner: limits(owner).max_gpus,
            high_cap=lambda owner: limits(owner).high_gpus,
            preemptible=self.preempter.preemptible() if self.preempter is not None else frozenset(),
        )

    def _read_durations(self) -> None:
        seen_to = self.durations.seen_to
        since = 0.0 if seen_to is None else seen_to - 600.0  # an end recorded late is read again
        self.durations.add(self.ctx.store.ledger.succeeded_since(since, HISTORY_RUNS))
        if self.durations.seen_to is None:
            self.durations.seen_to = time.time()  # nothing yet: later looks read only what is new

    def _length(self, entry: Any, request: tuple[str, str] | None, now: float) -> float | None:
        return expected_length(entry, self.durations.of(*request) if request is not None else None, now)

    def _ending(self, entry: Any, run_dir: str | None, request: tuple[str, str] | None, now: float) -> Ending:
        progress = (self.files.progress(run_dir) or {}).get("progress") or {} if run_dir else {}
        typical = self.durations.of(*request) if request is not None else None
        return expected_end(entry, progress, typical, now)


def expected_end(entry: Any, progress: dict[str, Any], typical: float | None, now: float) -> Ending:
    """When a running run is expected to end: from its progress (the time it took so far for the fraction
    done), else like similar runs (``typical``: their running time); never after its time limit."""
    ran = timelimits.running_time(entry, now)
    fraction = progress.get("fraction")
    ends_in: float | None = None
    why, sure = "", Sureness.NONE
    if isinstance(fraction, int | float) and MIN_FRACTION <= fraction < 1:
        ends_in = ran * (1 - fraction) / fraction
        epoch, total = progress.get("epoch"), progress.get("max_epochs")
        why = f"epoch {epoch + 1} of {total}" if epoch is not None and total else f"{fraction:.0%} done"
        sure = Sureness.HIGH if fraction >= 0.1 else Sureness.MEDIUM
    elif typical is not None:
        ends_in, why, sure = max(0.0, typical - ran), "like similar runs", Sureness.LOW
    left = timelimits.remaining(entry, now)
    if left is not None and (ends_in is None or left < ends_in):
        ends_in, why, sure = left, "its time limit", Sureness.MEDIUM
    return Ending(entry, ends_in, why, sure)


def expected_length(entry: Any, typical: float | None, now: float) -> float | None:
    """How long a queued run is expected to run: like similar runs (less what it ran before a preemption),
    at most what its time limit leaves."""
    if typical is not None:
        typical = max(0.0, typical - entry.ran_s)
    left = timelimits.remaining(entry, now)
    if left is None:
        return typical
    return left if typical is None else min(typical, left)
