"""Prometheus metrics (``GET /metrics``), with the official client library.

Everything about runs is read from the store when Prometheus scrapes, never counted along the way: the
lifecycle stays free of metrics code, a restart loses nothing that the store knows, and polling
(``GET /runs/{name}``) carries nothing at all.

    labrun_queue_length{pool}              queued runs, pool = gpu (needs GPUs) or cpu
    labrun_runs_running{pool}              running runs
    labrun_gpus{state}                     the service's GPUs, state = busy (a labrun run), outside (busy
                                           outside labrun: app/gpus/) or free
    labrun_runs_finished_total{status}     runs that ended, by final status (the store's whole history)
    labrun_user_runs{owner, status}        queued and running runs per owner
    labrun_submission_seconds{outcome}     POST /runs, request to answer; outcome = queued or refused
    labrun_dispatch_seconds{pool}          a run's wait from submission to start (started_at - created_at)
    labrun_runs_stalled                    running runs that stopped making progress (the lifecycle's live
                                           state, app/lifecycle/stalls.py: not in the store)
    labrun_runs_by_priority{priority, status}  queued and running runs per class (docs/priorities.md)
    labrun_preemptions_total{priority}     attempts that ended preempted, by the class of the run preempted
    labrun_budget_used_hours{user, pool}   GPU-hours (pool gpu) or CPU run-hours (pool cpu) used within the
                                           budget window, running runs up to now (app/budgets.py)
    labrun_budget_hours{user, pool}        the user's budget per window, where they have one

plus the client library's ``process_*`` and ``python_gc_*`` metrics. The dispatch histogram observes each
run that starts while the service is up, once: every scrape reads the runs started since a watermark on
``seq`` (below it every run has left the queue), so a scrape reads the recent rows, not the history.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from fastapi import Request
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from app.models import TERMINAL, RunRecord
from app.store import RunStore

SUBMISSION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DISPATCH_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 7 * 86400)
ANONYMOUS = "anonymous"


def _pool(record: RunRecord) -> str:
    return "gpu" if record.gpu_need > 0 else "cpu"


def _owner(record: RunRecord) -> str:
    return getattr(record, "owner", None) or ANONYMOUS


def _priorities(store: RunStore, going: list[RunRecord]) -> Iterator[Metric]:
    """Queued and running runs per class, and the preemptions so far per class of the run preempted."""
    per_class = GaugeMetricFamily(
        "labrun_runs_by_priority", "Queued and running runs per priority class", labels=["priority", "status"]
    )
    counts = Counter((str(r.priority), r.status.value) for r in going)
    for (priority, state), n in sorted(counts.items()):
        per_class.add_metric([priority, state], n)
    yield per_class
    preempted = CounterMetricFamily(
        "labrun_preemptions",
        "Attempts that ended preempted, by the class of the run preempted",
        labels=["priority"],
    )
    for priority, n in sorted(store.preemption_counts().items()):
        preempted.add_metric([priority], n)
    yield preempted


class RunStoreCollector(Collector):
    """The gauges and counters above, computed from the store at each scrape; it also feeds the dispatch
    histogram (which it collects itself, so a scrape observes the new starts before it reports them)."""

    def __init__(
        self,
        store: RunStore,
        gpus: tuple[int, ...],
        outside: Callable[[], Iterable[int]] = tuple,
    ) -> None:
        """``outside``: the GPUs busy outside labrun now (the GPU guard's last look)."""
        self.store = store
        self.gpus = tuple(gpus)
        self.outside = outside
        self.dispatch = Histogram(
            "labrun_dispatch_seconds",
            "Seconds from submission to start, per run started while the service is up",
            ["pool"],
            buckets=DISPATCH_BUCKETS,
            registry=None,
        )
        for pool in ("cpu", "gpu"):
            self.dispatch.labels(pool)
        self._lock = threading.Lock()
        self._mark, self._seen = self._watermark(first=True)

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            queued, running = self.store.queued(), self.store.running()
            self._observe_starts(queued)
            finished = {status: self.store.count([status]) for status in TERMINAL}
        queue_length = GaugeMetricFamily("labrun_queue_length", "Queued runs per pool", labels=["pool"])
        running_runs = GaugeMetricFamily("labrun_runs_running", "Running runs per pool", labels=["pool"])
        for family, records in ((queue_length, queued), (running_runs, running)):
            pools = Counter(_pool(r) for r in records)
            for pool in ("cpu", "gpu"):
                family.add_metric([pool], pools[pool])
        yield queue_length
        yield running_runs

        # A queued run with GPUs assigned is being launched on them: they are taken already.
        busy = {g for r in running + queued for g in r.gpus} & set(self.gpus)
        outside = (set(self.outside()) & set(self.gpus)) - busy
        gpus = GaugeMetricFamily(
            "labrun_gpus",
            "The service's GPUs: busy (a labrun run), outside (busy outside labrun) or free",
            labels=["state"],
        )
        gpus.add_metric(["busy"], len(busy))
        gpus.add_metric(["outside"], len(outside))
        gpus.add_metric(["free"], len(self.gpus) - len(busy) - len(outside))
        yield gpus

        done = CounterMetricFamily(
            "labrun_runs_finished", "Runs that ended, by final status", labels=["status"]
        )
        for status in sorted(TERMINAL):
            done.add_metric([status.value], finished[status])
        yield done

        per_user = GaugeMetricFamily(
            "labrun_user_runs", "Queued and running runs per owner", labels=["owner", "status"]
        )
        counts = Counter((_owner(r), r.status.value) for r in queued + running)
        for (owner, state), n in sorted(counts.items()):
            per_user.add_metric([owner, state], n)
        yield per_user
        yield from _priorities(self.store, queued + running)
        yield from self.dispatch.collect()

    # --- the dispatch histogram's watermark ---------------------------------------------------------------

    def _started_since(self, mark: int) -> list[tuple[int, float, float, int]]:
        return self.store.started_since(mark)

    def _watermark(self, first: bool = False) -> tuple[int, set[int]]:
        """Every run at or below the mark has left the queue; ``seen``: the started ones above it that were
        observed already. At the first call (the service starting) every run already started counts as
        seen: the histogram is about the runs this service dispatches."""
        queued = self.store.queued()
        mark = queued[0].seq - 1 if queued else self.store.last_seq()
        seen = {row[0] for row in self._started_since(mark)} if first else set()
        return mark, seen

    def _observe_starts(self, queued: list[RunRecord]) -> None:
        for seq, created_at, started_at, gpu_need in self._started_since(self._mark):
            if seq in self._seen:
                continue
            self._seen.add(seq)
            self.dispatch.labels("gpu" if gpu_need > 0 else "cpu").observe(max(0.0, started_at - created_at))
        mark = queued[0].seq - 1 if queued else max([self._mark, *self._seen])
        self._seen = {seq for seq in self._seen if seq > mark}
        self._mark = mark


class StalledRunsCollector(Collector):
    """``labrun_runs_stalled``: how many running runs are stalled now (asked at each scrape)."""

    def __init__(self, count: Callable[[], int]) -> None:
        self.count = count

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "labrun_runs_stalled",
            "Running runs with no progress and no output for their stall limit",
            self.count(),
        )


class BudgetCollector(Collector):
    """``labrun_budget_used_hours`` and ``labrun_budget_hours`` per user and pool (asked at each scrape;
    the budgets keep their totals, ``app/budgets.py``)."""

    def __init__(self, report: Callable[[], Iterable[tuple[str, Any]]]) -> None:
        self.report = report

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "labrun_budget_used_hours",
            "GPU-hours (pool gpu) or CPU run-hours (pool cpu) used within the budget window",
            labels=["user", "pool"],
        )
        budget = GaugeMetricFamily(
            "labrun_budget_hours",
            "The user's budget per window, where they have one",
            labels=["user", "pool"],
        )
        for user, balance in self.report():
            used.add_metric([user, balance.pool], balance.used_hours)
            if balance.budget_hours is not None:
                budget.add_metric([user, balance.pool], balance.budget_hours)
        yield used
        yield budget


class ServiceMetrics:
    """One app's registry: the store collector, the submission histogram, process and GC metrics. Made in
    the app's start-up (``lifespan``) so that the dispatch watermark starts there."""

    def __init__(
        self,
        store: RunStore,
        gpus: tuple[int, ...],
        outside: Callable[[], Iterable[int]] = tuple,
        stalled: Callable[[], int] | None = None,
        budgets: Callable[[], Iterable[tuple[str, Any]]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.runs = RunStoreCollector(store, gpus, outside)
        self.registry.register(self.runs)
        if stalled is not None:
            self.registry.register(StalledRunsCollector(stalled))
        if budgets is not None:
            self.registry.register(BudgetCollector(budgets))
        self.submission = Histogram(
            "labrun_submission_seconds",
            "POST /runs: seconds from the request to its answer",
            ["outcome"],
            buckets=SUBMISSION_BUCKETS,
            registry=self.registry,
        )
        for outcome in ("queued", "refused"):
            self.submission.labels(outcome)
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)


def service_metrics(app: Any) -> ServiceMetrics | None:
    return getattr(app.state, "prometheus", None)


async def time_submission(request: Request) -> AsyncIterator[None]:
    """A route dependency for POST /runs alone: the submission latency, labelled by its outcome (a 422 or a
    409 is "refused"). The rest of the API never sees it."""
    started = time.perf_counter()
    outcome = "refused"
    try:
        yield
        outcome = "queued"
    finally:
        found = service_metrics(request.app)
        if found is not None:
            found.submission.labels(outcome).observe(time.perf_counter() - started)
