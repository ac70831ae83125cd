"""Picking: which queued runs start now, given the queue and the free resources. No I/O, no side effects:
the dispatcher (``dispatch.py``) reserves, records and launches what a policy picks.

A policy is one object with two methods: ``order`` (the queue in the order it would take runs, which is
also what the API shows as queue positions) and ``pick`` (what to start in one round). ``FairSharePicking``
is today's: fair share across users (``app/fairshare.py``), FIFO within a user, per pool; a user at their
GPU cap is passed over; a GPU run that does not fit holds back the GPU runs behind it (so a big run is not
starved by small ones), never the CPU runs.

Priority classes (docs/priorities.md) come first: the queue is taken class by class (high, normal, low),
fair share and FIFO within a class, each user's caps in every class. The hold-back rule with classes: a GPU
run that does not fit holds back every GPU run behind it except those of a strictly lower class that may be
preempted: those may start on what is free, since the run they pass can take its GPUs back from them.
A run that does not fit may preempt running runs of a strictly lower, preemptible class (``Round.candidates``:
the dispatcher leaves out those too young or preempted too often): the fewest needed to free enough, taken in
the order that loses the least work (the freshest checkpoint first, then the youngest run), and none at all
if they cannot free enough. While its victims stop, what is free is kept for it (``Picks.waiting_for``)
and the victims are not chosen again (``Round.stopping``), so nothing else slips in and nothing thrashes.

Reservations (docs/reservations.md) come before classes: the GPU runs of a reservation's users go first
while its window is clearing or open, and each run takes only the GPUs ``Round.reservations`` lets it
(``app/reservations.py``: its own reservation's first; others' reserved GPUs only if it ends or can be
preempted before their window). The runs on reserved GPUs are stopped by ``lifecycle/reservations.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.fairshare import FairShare
from app.models import Priority
from app.reservations import GpuRules
from app.scheduling import Slots
from app.store import QueueEntry

RESERVED = "\0reserved:"  # prefix of what is kept, on the scratch copy, for a run whose victims are stopping


_RANKS = {p.value: p.rank for p in Priority}


def rank(entry: QueueEntry) -> int:
    """Its class's rank: high 2, normal 1, low 0 (a look-up: the whole queue is sorted by it each round)."""
    return _RANKS[entry.priority]


@dataclass(frozen=True)
class Candidate:
    """A running run that may be preempted now (its class may be; it ran long enough; it was not preempted
    too often lately): what the dispatcher found out about it, for the policy to choose among."""

    entry: QueueEntry
    loss_s: float  # the work it would lose: seconds since its last checkpoint (since its start: none)
    started_at: float


@dataclass(frozen=True)
class Preemption:
    waiter: QueueEntry  # the run that waits for what the victims hold
    victims: tuple[QueueEntry, ...]


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
    # owner -> GPUs their high-priority runs may hold at once (None: no bound; admission refuses a run that
    # could never fit its allowance)
    high_cap: Callable[[str], int | None] = lambda _owner: None
    preemptible: frozenset[str] = frozenset({Priority.LOW.value})  # the classes that may be preempted
    stopping: Mapping[str, str] = field(default_factory=dict)  # victim -> the run it stops for ("": unknown)
    candidates: Callable[[], Sequence[Candidate]] = lambda: ()  # asked only when a run does not fit
    # which GPUs each run may take while reservations are current (app/reservations.py); None: none are
    reservations: GpuRules | None = None


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
    preempt: list[Preemption] = field(default_factory=list)  # preemptions to begin now
    waiting_for: dict[str, tuple[str, ...]] = field(default_factory=dict)  # waiting run -> victims stopping


class PickingPolicy(Protocol):
    def order(self, queued: Sequence[QueueEntry], running: Sequence[QueueEntry]) -> list[QueueEntry]: ...

    def pick(self, round_: Round) -> Picks: ...


class FairSharePicking:
    def __init__(self, fair: FairShare) -> None:
        self.fair = fair

    def order(self, queued: Sequence[QueueEntry], running: Sequence[QueueEntry]) -> list[QueueEntry]:
        """Class by class (high first), fair share and FIFO within each (a stable sort keeps that order)."""
        return sorted(self.fair.order(queued, running), key=rank, reverse=True)

    def pick(self, round_: Round) -> Picks:
        state = _PickState(round_)
        round_.slots.set_aside(round_.outside)
        order = self.order(round_.queued, round_.running)
        rules = round_.reservations
        if rules is not None:  # a reservation first, then the class (a stable sort)
            order.sort(key=lambda entry: not rules.first(entry))
        for entry in order:
            state.place(entry)
        return state.picks


class _PickState:
    """One round of picking: what is given out so far, and what holds back what."""

    def __init__(self, round_: Round) -> None:
        self.round_, self.picks = round_, Picks()
        self.blocked: int | None = None  # the highest class of a GPU run that did not fit (it holds back)
        self.outside_blocked = False  # a GPU run that holds back the others waits for GPUs busy outside
        self.blocked_usable: set[int] = set()  # GPUs the runs that hold back others may take (reservations)
        self.in_use: dict[str, int] = defaultdict(int)  # GPUs each owner has going (and picked in this round)
        self.high_in_use: dict[str, int] = defaultdict(int)  # of those, in high-priority runs
        self.victims_of: dict[str, list[str]] = defaultdict(list)  # waiting run -> its victims still running
        self.chooser = _VictimChooser(round_)
        running = {r.name for r in round_.running}
        for r in round_.running:
            self._count(r)
        for victim, waiter in round_.stopping.items():
            if victim in running:
                self.victims_of[waiter].append(victim)

    def _count(self, entry: QueueEntry) -> None:
        self.in_use[entry.owner or ""] += entry.gpu_need
        if entry.priority == Priority.HIGH:
            self.high_in_use[entry.owner or ""] += entry.gpu_need

    def place(self, entry: QueueEntry) -> None:
        round_, picks = self.round_, self.picks
        if entry.gpu_need and not _within_caps(entry, round_, self.in_use, self.high_in_use):
            return  # this user has their share of GPUs (or of high GPUs) in use; others' may go first
        held_back = (
            entry.gpu_need > 0 and self.blocked is not None and not _may_pass(entry, self.blocked, round_)
        )
        rules = round_.reservations
        among = rules.usable(entry, round_.slots.free_gpus) if rules is not None and entry.gpu_need else None
        if held_back and among is not None:  # it may still take reserved GPUs that those it passes cannot
            among = [g for g in among if g not in self.blocked_usable]
            held_back = len(among) < entry.gpu_need
        if entry.name in round_.starting or held_back:
            if held_back and self.outside_blocked:
                picks.outside.append(entry.name)
            return
        if round_.inventory is not None and entry.gpu_need > round_.inventory:  # the inventory shrank
            reason = f"could not start: needs {entry.gpu_need} GPU(s), this server now has {round_.inventory}"
            picks.refuse.append(Refusal(entry, reason))
            return
        gpus = round_.slots.take(entry.name, entry.gpu_need, among)
        if gpus is not None:
            self._count(entry)
            picks.start.append(Start(entry, tuple(gpus)))
            return
        self._does_not_fit(entry)

    def _does_not_fit(self, entry: QueueEntry) -> None:
        """It waits: for victims it is stopping (or may stop now), or for GPUs busy outside labrun."""
        round_, picks = self.round_, self.picks
        if entry.gpu_need:
            self.blocked = max(-1 if self.blocked is None else self.blocked, rank(entry))
            if round_.reservations is not None:  # the GPUs it could ever take before a window
                self.blocked_usable.update(round_.reservations.usable(entry, round_.slots.gpus))
        stopping = self.victims_of.get(entry.name) or self.chooser.choose(entry, picks)
        if stopping:
            picks.waiting_for[entry.name] = tuple(stopping)
            _keep_free_for(entry, round_.slots)
        elif entry.gpu_need and round_.slots.would_fit(entry.gpu_need, round_.outside):
            self.outside_blocked = True
            picks.outside.append(entry.name)


def _within_caps(
    entry: QueueEntry, round_: Round, in_use: Mapping[str, int], high_in_use: Mapping[str, int]
) -> bool:
    owner = entry.owner or ""
    cap = round_.gpu_cap(owner)
    if cap is not None and in_use[owner] + entry.gpu_need > cap:
        return False
    high = round_.high_cap(owner) if entry.priority == Priority.HIGH else None
    return high is None or high_in_use[owner] + entry.gpu_need <= high


def _may_pass(entry: QueueEntry, blocked: int, round_: Round) -> bool:
    """A GPU run behind one that does not fit may start only if it is of a strictly lower class that may be
    preempted: the run it passes can take the GPUs back. Same class: it waits its turn (no starving)."""
    return rank(entry) < blocked and entry.priority in round_.preemptible


def _keep_free_for(entry: QueueEntry, slots: Slots) -> None:
    """(On the scratch copy.) What is free now is kept for a run whose victims are stopping: no run behind
    it takes what they leave, one victim at a time."""
    free = slots.free_gpus[: entry.gpu_need]  # (a CPU run that did not fit: no CPU slot is free)
    if free:
        slots.hold(RESERVED + entry.name, len(free), free)


class _VictimChooser:
    """Chooses victims for runs that do not fit, among ``Round.candidates`` (asked once, if at all)."""

    def __init__(self, round_: Round) -> None:
        self.round_ = round_
        self._candidates: list[Candidate] | None = None
        self.claimed = set(round_.stopping)  # a run is stopped for one waiting run at a time

    def choose(self, entry: QueueEntry, picks: Picks) -> list[str]:
        """The victims to stop for ``entry`` (noted in ``picks.preempt``), or none."""
        if rank(entry) == 0:
            return []  # nothing is lower than low
        if self._candidates is None:  # the least loss first, then the youngest
            self._candidates = sorted(self.round_.candidates(), key=lambda c: (c.loss_s, -c.started_at))
        eligible = [
            c.entry
            for c in self._candidates
            if c.entry.name not in self.claimed
            and rank(c.entry) < rank(entry)
            and c.entry.priority in self.round_.preemptible
            and bool(c.entry.gpu_need) == bool(entry.gpu_need)  # GPU and CPU pools stay apart
        ]
        short = entry.gpu_need - len(self.round_.slots.free_gpus) if entry.gpu_need else 1
        victims = fewest_to_free(eligible, short)
        if victims:
            self.claimed.update(v.name for v in victims)
            picks.preempt.append(Preemption(entry, tuple(victims)))
        return [v.name for v in victims]


def fewest_to_free(ranked: Sequence[QueueEntry], short: int) -> list[QueueEntry]:
    """Runs from ``ranked`` (best victim first) that free ``short`` units (GPUs; a CPU run is one slot):
    taken in order until enough, then any that is not needed after all is let go (the last taken first).
    None at all when even every one of them would not free enough."""
    chosen: list[QueueEntry] = []
    freed = 0
    for victim in ranked:
        if freed >= short:
            break
        chosen.append(victim)
        freed += victim.gpu_need or 1
    if freed < short:
        return []
    for victim in reversed(list(chosen)):
        if freed - (victim.gpu_need or 1) >= short:
            chosen.remove(victim)
            freed -= victim.gpu_need or 1
    return chosen
