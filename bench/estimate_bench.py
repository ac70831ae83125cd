"""How good are the start estimates? A simulated day of runs (docs/budgets-and-estimates.md).

A simulated clock; a day of submissions by six users (Poisson arrivals, four kinds of run with their own
typical length and GPU need, log-normal noise around it; a few high and low ones) on 8 GPUs. The real
picking policy (``FairSharePicking`` over a ``FairShare`` on the simulated clock) plays the day forward:
that gives each run's actual start. At each submission the real estimator (``estimates.estimate``, fed
as the service feeds it: running runs' progress, similar runs' durations) says when the new run will
start. The error is |estimate - actual| as a fraction of the run's actual wait (at least ``FLOOR_S``).

    python -m bench.estimate_bench [--quick]
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.fairshare import FairShare
from app.lifecycle.estimates import Situation, Waiting, estimate
from app.lifecycle.estimating import expected_end, expected_length
from app.lifecycle.picking import Candidate, FairSharePicking, Round
from app.scheduling import Slots
from app.store import QueueEntry

DAY_S = 86400.0
FLOOR_S = 600.0  # waits shorter than this are measured against this (a 10 s error on a 5 s wait is fine)
GPUS = 8
EPOCHS = 50
# kind -> (typical seconds, GPUs); the noise around the typical length is log-normal
KINDS = {"small": (1200.0, 1), "medium": (3600.0, 1), "wide": (2700.0, 2), "big": (3 * 3600.0, 4)}
NOISE = 0.25
USERS = ("ana", "ben", "cai", "dee", "eli", "fay")


@dataclass
class SimRun:
    entry: QueueEntry
    kind: str
    length: float  # how long it really runs
    submitted: float
    started: float | None = None
    left: float = 0.0  # what it has left to run (a preempted run queues again with this)
    attempt_start: float | None = None
    estimate: float | None = None  # made at submission
    sure: str = ""


@dataclass
class Day:
    now: float = 0.0
    runs: dict[str, SimRun] = field(default_factory=dict)
    queued: list[str] = field(default_factory=list)
    running: dict[str, tuple[float, list[int]]] = field(default_factory=dict)  # name -> (end, gpus)


def simulate_day(seed: int = 1, arrivals_per_hour: float = 5.5, hours: float = 24.0) -> list[SimRun]:
    rng = random.Random(seed)
    day = Day()
    fair = FairShare(7 * DAY_S, clock=lambda: day.now)
    policy = FairSharePicking(fair)
    history = {kind: [_noisy(rng, typical) for _ in range(15)] for kind, (typical, _) in KINDS.items()}
    submissions = _submissions(rng, arrivals_per_hour, hours)
    ends: list[tuple[float, str]] = []
    slots = Slots(range(GPUS), max_cpu_runs=2)
    for seq, (at, user, kind, priority) in enumerate(submissions, start=1):
        _advance(day, ends, slots, fair, policy, until=at)
        typical, gpus = KINDS[kind]
        name = f"r{seq}"
        entry = QueueEntry(seq, name, user, gpus, None, priority)
        length = _noisy(rng, typical)
        day.runs[name] = SimRun(entry, kind, length, at, left=length)
        day.queued.append(name)
        _dispatch(day, ends, slots, fair, policy)
        if name in day.queued:
            found = estimate(_situation(day, history), policy).get(name)
            run = day.runs[name]
            run.estimate = None if found is None else found.start_at
            run.sure = "" if found is None else found.sure.value
        else:
            day.runs[name].estimate, day.runs[name].sure = at, "started"  # it started at once: not measured
        history[kind].append(length)  # (the store learns lengths as runs end; close enough for a day)
    _advance(day, ends, slots, fair, policy, until=math.inf)
    return list(day.runs.values())


def _noisy(rng: random.Random, typical: float) -> float:
    return typical * math.exp(rng.gauss(0.0, NOISE))


def _submissions(rng: random.Random, per_hour: float, hours: float) -> list[tuple[float, str, str, str]]:
    out, t = [], 0.0
    kinds = list(KINDS)
    while True:
        t += rng.expovariate(per_hour / 3600.0)
        if t > hours * 3600.0:
            return out
        draw = rng.random()
        priority = "high" if draw < 0.08 else "low" if draw < 0.25 else "normal"
        out.append((t, rng.choice(USERS), rng.choices(kinds, weights=(4, 3, 2, 1))[0], priority))


def _advance(
    day: Day, ends: list, slots: Slots, fair: FairShare, policy: FairSharePicking, until: float
) -> None:
    """Play the day up to ``until``: each end frees its GPUs, and the policy picks again."""
    while ends and ends[0][0] <= until:
        at, name = heapq.heappop(ends)
        if name not in day.running or day.running[name][0] != at:
            continue  # preempted meanwhile
        day.now = at
        _end(day, slots, fair, name)
        _dispatch(day, ends, slots, fair, policy)
    if until != math.inf:
        day.now = until


def _end(day: Day, slots: Slots, fair: FairShare, name: str) -> None:
    run = day.runs[name]
    del day.running[name]
    slots.free(name)
    start = run.attempt_start or day.now
    fair.add_use(run.entry.owner or "", "gpu", run.entry.gpu_need, start, day.now, day.now)


def _dispatch(day: Day, ends: list, slots: Slots, fair: FairShare, policy: FairSharePicking) -> None:
    for _ in range(50):  # a preemption frees GPUs at once: pick again
        queued = [day.runs[n].entry for n in day.queued]
        running = [day.runs[n].entry for n in day.running]
        candidates = [
            Candidate(day.runs[n].entry, 0.0, day.runs[n].attempt_start or 0.0) for n in day.running
        ]
        picks = policy.pick(Round(queued, running, slots.copy(), frozenset(), lambda _o: None, GPUS,
                                  candidates=lambda c=candidates: c))  # fmt: skip
        for p in picks.preempt:
            for victim in p.victims:
                run = day.runs[victim.name]
                run.left = max(0.0, day.running[victim.name][0] - day.now)
                _end(day, slots, fair, victim.name)
                day.queued.append(victim.name)
        for start in picks.start:
            name = start.entry.name
            run = day.runs[name]
            slots.hold(name, start.entry.gpu_need, start.gpus)
            day.queued.remove(name)
            run.started = day.now if run.started is None else run.started
            run.attempt_start = day.now
            run.entry = run.entry._replace(started_at=day.now)
            end = day.now + run.left
            day.running[name] = (end, list(start.gpus))
            heapq.heappush(ends, (end, name))
        if not picks.preempt:
            return


def _situation(day: Day, history: dict[str, list[float]]) -> Situation:
    """What the service would know now: each running run's progress (epoch k of N after its time so far),
    similar runs' median length; nothing of the future."""
    endings = []
    for name in day.running:
        run = day.runs[name]
        done = (run.length - run.left) + (day.now - (run.attempt_start or day.now))
        fraction = min(0.999, done / run.length)
        progress = {"fraction": fraction, "epoch": int(fraction * EPOCHS), "max_epochs": EPOCHS}
        entry = run.entry._replace(started_at=run.attempt_start, ran_s=run.length - run.left)
        endings.append(expected_end(entry, progress, statistics.median(history[run.kind]), day.now))
    waiting = []
    for name in day.queued:
        run = day.runs[name]
        typical = statistics.median(history[run.kind])
        waiting.append(Waiting(run.entry, expected_length(run.entry, typical, day.now)))
    waiting.sort(key=lambda w: w.entry.seq)
    return Situation(day.now, waiting, endings, tuple(range(GPUS)), 2)


def errors(runs: list[SimRun]) -> dict[str, float]:
    """Median and p90 of |estimate - actual start| as a fraction of the actual wait (at least FLOOR_S)."""
    fractions, minutes, unknown = [], [], 0
    for run in runs:
        if run.started is None or run.sure == "started":
            continue
        if run.estimate is None:
            unknown += 1
            continue
        wait = run.started - run.submitted
        error = abs(run.estimate - run.started)
        fractions.append(error / max(wait, FLOOR_S))
        minutes.append(error / 60.0)
    fractions.sort()
    minutes.sort()

    def p(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else math.nan

    waited = [r.started - r.submitted for r in runs if r.started is not None and r.sure != "started"]
    return {
        "runs": len(runs),
        "estimated": len(fractions),
        "unknown": unknown,
        "median_fraction": p(fractions, 0.5),
        "p90_fraction": p(fractions, 0.9),
        "median_minutes": p(minutes, 0.5),
        "p90_minutes": p(minutes, 0.9),
        "median_wait_minutes": statistics.median(waited) / 60.0 if waited else math.nan,
    }


def budget_cost(n: int) -> dict[str, float]:
    """What a budget look costs with ``n`` runs stored, ended over the last 60 days: the first (the window read
    once), then one after a run ended (only what ended since), then one at the same store version."""
    import tempfile

    from app.budgets import Budgets
    from app.core.config import Settings
    from app.models import RunRecord, RunStatus
    from app.store import RunStore
    from app.users import Users

    now = time.time()
    with tempfile.TemporaryDirectory(prefix="labrun-budget-bench-") as tmp:
        store = RunStore(Path(tmp) / "runs.db")
        records = [
            RunRecord(
                seq=0,
                name=f"r{i:06d}",
                status=RunStatus.QUEUED,
                config_name="neuraloperator",
                overrides=["model=fno"],
                run_dir=f"d/r{i:06d}",
                gpu_need=1 + i % 2,
                created_at=now,
                owner=USERS[i % len(USERS)],
            )  # fmt: skip
            for i in range(n)
        ]
        for start in range(0, n, 5000):
            store.insert_runs(records[start : start + 5000])
        with store._db.transaction() as conn:  # ended over the last 60 days, an hour each
            conn.execute(
                "UPDATE runs SET status = 'succeeded', started_at = ? - (seq * ?) - 3600, finished_at = ? - (seq * ?)",
                (now, 60 * DAY_S / n, now, 60 * DAY_S / n),
            )
        settings = Settings(output_dir=Path(tmp), budget_gpu_hours=500.0)
        budgets = Budgets(settings, Users(store), store)
        began = time.perf_counter()
        budgets.over()("ana", "gpu")
        first = time.perf_counter() - began
        store._db.write("UPDATE runs SET finished_at = ? WHERE seq = 1", (now,))  # a run that ended: a write
        time.sleep(0.6)  # past the shortest keep
        began = time.perf_counter()
        budgets.over()("ana", "gpu")
        after_write = time.perf_counter() - began
        began = time.perf_counter()
        for _ in range(100):
            budgets.over()("ana", "gpu")
        kept = (time.perf_counter() - began) / 100
        store.close()
    return {"budget_runs": n, "budget_first_ms": first * 1000, "budget_after_end_ms": after_write * 1000,
            "budget_kept_ms": kept * 1000}  # fmt: skip


def main(argv: list[str]) -> dict[str, float]:
    seeds = (1,) if "--quick" in argv else (1, 2, 3)
    print("== Start estimates (a simulated day: 6 users, 8 GPUs, the real policy and estimator)")
    runs: list[SimRun] = []
    started = time.perf_counter()
    for seed in seeds:
        runs.extend(simulate_day(seed))
    took = time.perf_counter() - started
    e = errors(runs)
    print(
        f"  {e['runs']:.0f} runs over {len(seeds)} day(s); {e['estimated'] + e['unknown']:.0f} had to wait"
        f" (median wait {e['median_wait_minutes']:.0f} min): estimated at submission {e['estimated']:.0f},"
        f" no estimate {e['unknown']:.0f}"
    )
    print(
        f"  |estimate - actual start| / wait (at least {FLOOR_S / 60:.0f} min): median {e['median_fraction']:.2f},"
        f" p90 {e['p90_fraction']:.2f}; in minutes: median {e['median_minutes']:.1f}, p90 {e['p90_minutes']:.1f}"
    )
    print(f"  simulation and estimates: {took:.1f} s")
    cost = budget_cost(10_000 if "--quick" in argv else 100_000)
    print(
        f"== Budgets with {cost['budget_runs']:,.0f} runs stored (ended over 60 days): the first look"
        f" {cost['budget_first_ms']:.0f} ms (the 30-day window read once), after a run ended"
        f" {cost['budget_after_end_ms']:.1f} ms (what ended since), kept {cost['budget_kept_ms'] * 1000:.0f} us"
    )
    return {**e, **cost}


if __name__ == "__main__":
    main(sys.argv[1:])
