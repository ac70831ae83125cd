"""When will it start: each queued run's estimated start, the reason it waits, and how sure that is
(docs/budgets-and-estimates.md). Pure: what is known goes in (``Situation``), estimates come out; no I/O,
no clock (``estimating.py`` gathers the inputs and keeps the answer).

The queue is played forward in time with the real picking policy (``PickingPolicy.pick``: classes,
per-user caps, fair share, the hold-back rule): a round at ``now``; then the next end of a running run
(from its progress, its time limit, or similar runs' durations), its GPUs freed, another round; and so on.
A run the policy starts in that play gets that time as its estimate, and the end that made room for it as
its reason. A run behind one whose end nobody can guess gets no time ("unknown"). Preemptions the policy
would begin are played too: the victims stop at once and queue again with what they had left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from app.lifecycle.picking import Candidate, PickingPolicy, Round
from app.models import Priority
from app.scheduling import Slots
from app.store import QueueEntry

MAX_EVENTS = 400  # ends played forward at most (each a round of the policy over the simulated queue)
MAX_QUEUED = 300  # queued runs played at most, in the policy's order; those behind get no time


class Sureness(StrEnum):
    HIGH = "high"  # it would start now, or after one end known from progress
    MEDIUM = "medium"  # the ends it waits for are known from progress, limits or similar runs
    LOW = "low"  # it waits for many ends, or for runs whose length is a guess, or it may be passed
    NONE = "none"  # no time: what it waits for cannot be guessed

    @property
    def level(self) -> int:
        return _LEVELS[self]


_LEVELS = {Sureness.NONE: 0, Sureness.LOW: 1, Sureness.MEDIUM: 2, Sureness.HIGH: 3}
_BY_LEVEL = {v: k for k, v in _LEVELS.items()}


@dataclass(frozen=True)
class Ending:
    """A running run, and when it is expected to end."""

    entry: QueueEntry  # as the policy sees it (its class as it runs)
    ends_in: float | None  # seconds from now (None: nobody can tell)
    why: str = ""  # e.g. "epoch 31 of 50", "its time limit", "like similar runs"
    sure: Sureness = Sureness.MEDIUM


@dataclass(frozen=True)
class Waiting:
    """A queued run, and how long it is expected to run once started."""

    entry: QueueEntry  # as the policy sees it (low when its owner is over budget)
    runs_for: float | None  # seconds (None: unknown)
    note: str | None = None  # said first in its reason (e.g. "over budget: runs as low (...)")


@dataclass(frozen=True)
class Situation:
    now: float
    queued: Sequence[Waiting]  # oldest first
    running: Sequence[Ending]
    gpus: Sequence[int]  # GPU indices labrun hands out
    max_cpu_runs: int
    places_runs: bool = False  # a cluster's scheduler places runs: it decides, not labrun
    outside: frozenset[int] = frozenset()  # GPUs busy outside labrun
    gpu_cap: Callable[[str], int | None] = lambda _owner: None
    high_cap: Callable[[str], int | None] = lambda _owner: None
    preemptible: frozenset[str] = frozenset({Priority.LOW.value})


@dataclass(frozen=True)
class Estimate:
    start_at: float | None  # None: no time can be given (see reason)
    reason: str
    sure: Sureness


@dataclass
class _Play:
    """The state of the play: the simulated running runs and queue."""

    t: float
    running: dict[str, tuple[QueueEntry, float | None, str, Sureness]]  # name -> (entry, end, why, sure)
    queue: list[QueueEntry]
    runs_for: dict[str, float | None]
    slots: Slots
    weakest: Sureness = Sureness.HIGH  # the least sure end played so far
    ends_seen: int = 0
    last_ended: list[tuple[str, str]] = field(default_factory=list)  # (run, why) that ended at ``t``


def estimate(situation: Situation, policy: PickingPolicy) -> dict[str, Estimate]:
    """Each queued run's estimate."""
    s = situation
    if s.places_runs:
        why = "the cluster's scheduler decides when it starts: no estimate"
        return {w.entry.name: Estimate(None, why, Sureness.NONE) for w in s.queued}
    notes = {w.entry.name: w.note for w in s.queued}
    order = policy.order([w.entry for w in s.queued], [r.entry for r in s.running])
    ahead = _higher_ahead(order)
    played = {e.name for e in order[:MAX_QUEUED]}
    play = _start_play(s, [e for e in order if e.name in played])
    found = _play(s, policy, play)
    out: dict[str, Estimate] = {}
    for entry in order:
        name = entry.name
        if name in found:
            at, reason, sure = found[name]
        elif name not in played:
            at, reason, sure = None, f"more than {MAX_QUEUED} runs ahead of it: no estimate", Sureness.NONE
        else:
            at, reason, sure = None, _unknown_reason(s, entry), Sureness.NONE
        if at is not None and entry.priority == Priority.LOW.value and at > s.now and sure.level > 1:
            sure = _BY_LEVEL[sure.level - 1]  # a run of another class submitted later may pass it
        parts = [p for p in (notes.get(name), _behind(ahead.get(name)), reason) if p]
        out[name] = Estimate(at, "; ".join(parts), sure)
    return out


def _start_play(s: Situation, order: list[QueueEntry]) -> _Play:
    slots = Slots(s.gpus, s.max_cpu_runs)
    running: dict[str, tuple[QueueEntry, float | None, str, Sureness]] = {}
    by_gpu = list(s.gpus)
    for r in s.running:
        gpus = slots.take(r.entry.name, r.entry.gpu_need)
        if gpus is None:  # more running than the inventory shows (it shrank): held on what is left
            slots.hold(r.entry.name, 0, [g for g in by_gpu if g in slots.free_gpus][: r.entry.gpu_need])
        end = None if r.ends_in is None else s.now + max(0.0, r.ends_in)
        running[r.entry.name] = (r.entry, end, r.why, r.sure)
    runs_for = {w.entry.name: w.runs_for for w in s.queued}
    return _Play(s.now, running, order, runs_for, slots)


def _play(s: Situation, policy: PickingPolicy, play: _Play) -> dict[str, tuple[float, str, Sureness]]:
    found: dict[str, tuple[float, str, Sureness]] = {}
    outside_first: set[str] = set()
    for event in range(MAX_EVENTS):
        picks = policy.pick(_round(s, play))
        if event == 0:
            outside_first = set(picks.outside)
        for p in picks.preempt:  # played at once: the victims queue again with what they had left
            for victim in p.victims:
                entry, end, _, _ = play.running.pop(victim.name)
                play.slots.free(victim.name)
                play.runs_for[victim.name] = None if end is None else max(0.0, end - play.t)
                play.queue.append(entry)
        for start in picks.start:
            name = start.entry.name
            if name in outside_first:
                continue
            play.slots.hold(name, start.entry.gpu_need, start.gpus)
            play.queue = [e for e in play.queue if e.name != name]
            length = play.runs_for.get(name)
            end = None if length is None else play.t + length
            sure = Sureness.MEDIUM if length is not None else Sureness.NONE
            play.running[name] = (start.entry, end, "like similar runs", sure)
            found.setdefault(name, (play.t, _reason(s, play), _sureness(play)))
        if picks.preempt:
            continue  # what the victims freed is given out at the same time
        if not play.queue or not _next_end(play):
            break
    for name in outside_first:
        found.pop(name, None)
    return found


def _round(s: Situation, play: _Play) -> Round:
    return Round(
        queued=play.queue,
        running=[r[0] for r in play.running.values()],
        slots=play.slots.copy(),
        starting=frozenset(),
        gpu_cap=s.gpu_cap,
        inventory=len(s.gpus),
        outside=s.outside,
        high_cap=s.high_cap,
        preemptible=s.preemptible,
        candidates=lambda: _candidates(play),
    )


def _candidates(play: _Play) -> list[Candidate]:
    """Every running run of the play may be preempted (the policy keeps to the preemptible classes)."""
    return [Candidate(entry, 0.0, play.t) for entry, _, _, _ in play.running.values()]


def _next_end(play: _Play) -> bool:
    """Move the play to the next end(s) of a running run; False when no running run's end is known."""
    ends = [(end, name) for name, (_, end, _, _) in play.running.items() if end is not None]
    if not ends:
        return False
    t = min(end for end, _ in ends)
    play.t = t
    play.last_ended = []
    for end, name in ends:
        if end <= t:
            _, _, why, sure = play.running.pop(name)
            play.slots.free(name)
            play.ends_seen += 1
            play.last_ended.append((name, why))
            if sure.level < play.weakest.level:
                play.weakest = sure
    return True


def _reason(s: Situation, play: _Play) -> str:
    if play.t <= s.now:
        return "starts at the next round: what it needs is free"
    when = _duration(play.t - s.now)
    ended = [f"run {name} ends in ~{when}" + (f" ({why})" if why else "") for name, why in play.last_ended]
    more = f" and {len(ended) - 2} more" if len(ended) > 2 else ""
    return "waiting for " + ", ".join(ended[:2]) + more


def _sureness(play: _Play) -> Sureness:
    if play.ends_seen == 0:
        return Sureness.HIGH
    sure = play.weakest
    if play.ends_seen > 3 and sure.level > 1:
        sure = _BY_LEVEL[sure.level - 1]  # many ends in a row: their errors add up
    return sure


def _unknown_reason(s: Situation, entry: QueueEntry) -> str:
    if entry.gpu_need and s.outside:
        return "waiting for GPUs busy outside labrun: no estimate (nobody knows when they are let go)"
    return (
        "unknown: it waits for runs whose length cannot be guessed (no progress, no limit, no similar runs)"
    )


def _higher_ahead(order: Sequence[QueueEntry]) -> dict[str, tuple[int, str]]:
    """name -> (how many runs of a higher class are ahead of it in its pool, the highest such class)."""
    out: dict[str, tuple[int, str]] = {}
    counts: dict[tuple[bool, str], int] = {}
    for entry in order:
        pool = bool(entry.gpu_need)
        mine = _RANK[entry.priority]
        higher = [(p, n) for (gp, p), n in counts.items() if gp == pool and _RANK[p] > mine]
        if higher:
            out[entry.name] = (sum(n for _, n in higher), max((p for p, _ in higher), key=_RANK.__getitem__))
        counts[(pool, entry.priority)] = counts.get((pool, entry.priority), 0) + 1
    return out


_RANK = {p.value: p.rank for p in Priority}


def _behind(ahead: tuple[int, str] | None) -> str | None:
    if ahead is None:
        return None
    n, cls = ahead
    return (
        f"behind {n} {cls}-priority run{'s' if n > 1 else ''}"
        if cls == "high"
        else (f"behind {n} run{'s' if n > 1 else ''} of a higher class")
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
