"""Reservations (docs/reservations.md): GPUs booked for a window ``[start, end)`` for one user or a few.

Pure values and rules, no I/O: the store keeps them (``app/store/reservations.py``), the lifecycle's room
(``app/lifecycle/reservations.py``) books, ends and enforces them, and the picking policy asks ``GpuRules``
which GPUs a queued run may take.

A reservation's phases, for the runs of others on its GPUs:

    upcoming   (before start - LABRUN_PREEMPT_GRACE_S) others' runs may take its GPUs only if they can be
               preempted (their class) or their time limit ends before the window starts
    clearing   (the grace before the start) the preemptible runs of others on its GPUs are preempted with a
               checkpoint, so that the GPUs are free at the start; only its users' runs start there
    open       (start to end) only its users' runs start on its GPUs; GPUs they leave idle may be filled with
               preemptible runs, which are preempted again as soon as one of its users' runs waits
    over       its end passed, or its owner ended it early: its GPUs are anyone's
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Phase(StrEnum):
    UPCOMING = "upcoming"
    CLEARING = "clearing"
    OPEN = "open"
    OVER = "over"


class Notice(StrEnum):
    """What is told of a reservation (the outbox's event kinds; each once)."""

    SOON = "reservation_soon"
    STARTED = "reservation_started"
    ENDED = "reservation_ended"


@dataclass(frozen=True)
class Reservation:
    id: int
    owner: str
    users: tuple[str, ...]  # whose runs it is for (the owner among them unless booked for others)
    gpus: tuple[int, ...]  # assigned when it was booked
    start_at: float
    end_at: float
    created_at: float
    ended_at: float | None = None  # ended early by its owner (or an admin)
    ended_by: str | None = None
    note: str | None = None
    told: tuple[str, ...] = ()  # the notices told ("soon", "started", "ended", "blocked")

    @property
    def over_at(self) -> float:
        return self.ended_at if self.ended_at is not None else self.end_at

    def phase(self, now: float, grace: float) -> Phase:
        if now >= self.over_at:
            return Phase.OVER
        if now >= self.start_at:
            return Phase.OPEN
        return Phase.CLEARING if now >= self.start_at - grace else Phase.UPCOMING

    def overlaps(self, start: float, end: float) -> bool:
        return self.start_at < end and start < self.over_at

    def gpu_hours(self) -> float:
        return len(self.gpus) * (self.end_at - self.start_at) / 3600.0


@dataclass(frozen=True)
class Grant:
    """Who may book how much: a user's own (an admin's choice; a None part: the server's), or the server's."""

    gpu_hours: float | None = None  # GPU-hours one booking may hold (0: none)
    max_window_s: float | None = None  # the longest window
    ahead_s: float | None = None  # how far ahead a window may start


class _Entry(Protocol):
    """A ``QueueEntry`` (a queued or running run), as the rules read it."""

    @property
    def owner(self) -> str | None: ...

    @property
    def gpu_need(self) -> int: ...

    @property
    def priority(self) -> str: ...

    @property
    def time_limit_s(self) -> float | None: ...

    @property
    def ran_s(self) -> float: ...


# How much a run prefers a GPU (lower first): its own reservation's, then a free one, then one reserved later
# (others prefer unreserved GPUs, so that reserved ones stay free for their window), then one it only fills.
_OWN, _FREE, _LATER, _FILL = 0, 1, 2, 3


@dataclass(frozen=True)
class GpuRules:
    """What the current reservations say, at ``now``, of each GPU: who may take it. One dispatch round's."""

    now: float
    grace: float
    reservations: tuple[Reservation, ...]  # those not over
    preemptible: frozenset[str]  # the classes that may be preempted
    waited_for: frozenset[int] = frozenset()  # ids of open reservations whose users' GPU runs are queued

    def first(self, entry: _Entry) -> bool:
        """A GPU run of a user of a reservation that is clearing or open: it goes before every class."""
        return entry.gpu_need > 0 and any(
            r.phase(self.now, self.grace) in (Phase.CLEARING, Phase.OPEN) and entry.owner in r.users
            for r in self.reservations
        )

    def usable(self, entry: _Entry, free: Sequence[int]) -> list[int]:
        """The GPUs of ``free`` that ``entry`` (a queued run) may take now, those it should take first first."""
        tiers = {g: tier for g in free if (tier := self._tier(entry, g)) is not None}
        return sorted(tiers, key=lambda g: (tiers[g], g))

    def _tier(self, entry: _Entry, gpu: int) -> int | None:
        on = [r for r in self.reservations if gpu in r.gpus]
        if not on:
            return _FREE
        now, owner = self.now, entry.owner
        active = [r for r in on if r.phase(now, self.grace) in (Phase.CLEARING, Phase.OPEN)]
        for r in active:
            if owner in r.users:
                return _OWN
        for r in active:
            fills = r.phase(now, self.grace) == Phase.OPEN and r.id not in self.waited_for
            if not (fills and entry.priority in self.preemptible):
                return None
        later = [r for r in on if r.phase(now, self.grace) == Phase.UPCOMING and owner not in r.users]
        if later and not self.ends_before(entry, min(r.start_at for r in later)):
            return None
        if active:
            return _FILL
        if later:
            return _LATER
        # its own reservation's, later: first (it leaves the unreserved GPUs to those who cannot take these)
        return _OWN if any(owner in r.users for r in on) else _FREE

    def ends_before(self, entry: _Entry, at: float) -> bool:
        """A queued run that may run until ``at``: it can be preempted, or its time limit ends by then."""
        if entry.priority in self.preemptible:
            return True
        left = None if entry.time_limit_s is None else max(0.0, entry.time_limit_s - entry.ran_s)
        return left is not None and self.now + left <= at


def refusal(
    start: float,
    end: float,
    gpus: int,
    now: float,
    grant: Grant | None,
    inventory: int,
) -> str | None:
    """Why a window of ``gpus`` GPUs from ``start`` to ``end`` cannot be booked by a user of ``grant`` (None:
    no bound, an admin), before it is checked against the other bookings; None: it may."""
    if end <= start:
        return f"the window ends ({iso(end)}) before it starts ({iso(start)}): give an end after the start"
    if start < now - PAST_SLACK_S:
        return f"the window starts in the past ({iso(start)}; it is {iso(now)} now): give a start ahead"
    if gpus < 1 or gpus > inventory:
        return f"a reservation books 1 to {inventory} GPUs (this server has {inventory}); {gpus} asked"
    if grant is None:
        return None
    hours = gpus * (end - start) / 3600.0
    if grant.gpu_hours is not None and hours > grant.gpu_hours + 1e-9:
        return (
            f"{hours:g} GPU-hours asked, over your grant of {grant.gpu_hours:g} GPU-hours per booking: "
            "book fewer GPUs or a shorter window, or ask an admin for a larger grant"
        )
    if grant.max_window_s is not None and end - start > grant.max_window_s + 1e-9:
        return (
            f"a window of {_span(end - start)}, longer than your grant's longest window of "
            f"{_span(grant.max_window_s)}: book a shorter one, or ask an admin"
        )
    if grant.ahead_s is not None and start - now > grant.ahead_s + 1e-9:
        return (
            f"the window starts {_span(start - now)} ahead, further than your grant allows "
            f"({_span(grant.ahead_s)}): book it later, or ask an admin"
        )
    return None


PAST_SLACK_S = 60.0  # a start this little in the past is taken as now (a CLI's "14:00" typed at 14:00:30)


def choose_gpus(
    inventory: Sequence[int],
    taken: Iterable[int],
    asked: int | Sequence[int],
    avoid: Iterable[int] = (),
) -> list[int] | None:
    """The GPUs a booking gets: the ones ``asked`` (ids), if none is ``taken``; or that many of the others,
    those not in ``avoid`` first (GPUs a run holds that would have to be stopped for the window); None:
    not enough are free."""
    busy = set(taken)
    if not isinstance(asked, int):
        return None if set(asked) & busy else sorted(set(asked))
    free = [g for g in inventory if g not in busy]
    if len(free) < asked:
        return None
    worse = set(avoid)
    return sorted(sorted(free, key=lambda g: (g in worse, g))[:asked])


def iso(ts: float) -> str:
    """A time as RFC 3339 in the server's local offset, to the second."""
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _span(seconds: float) -> str:
    if seconds >= 86400 and seconds % 3600 == 0:
        return f"{seconds / 86400:g} days"
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
