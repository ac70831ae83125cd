"""Reservations in the lifecycle: booking and ending them, and keeping their windows (``app/reservations.py``
says what the phases are; docs/reservations.md what users see).

    book/end    under the lifecycle's lock, so two bookings never take the same GPU for overlapping windows;
                the dispatcher is woken (a window may begin now, or GPUs be free again)
    enforce     each dispatch round, before the policy picks: preempts (with a checkpoint, through the
                ``Preempter``) the runs of others on the GPUs of a reservation that is clearing, or that is
                open while one of its users' runs waits; says why its users' runs wait; tells its notices
                (starts soon, started, ended; a GPU busy outside labrun at its start: the admins); and says
                when the dispatcher must look again by itself (the next boundary of a window)
    rules       what the policy asks: which GPUs a queued run may take (``GpuRules``)

Time is read from ``clock`` (``time.time``; tests set their own). A reservation's state is its row: a restart
honours a window that began while the service was down at its first round (its clearing preempts at once,
through the same path, so nothing runs twice).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from app.errors import Forbidden, InvalidReservation, NotFound, ReservationConflict
from app.lifecycle.live import Context
from app.lifecycle.picking import Candidate, Preemption, fewest_to_free
from app.lifecycle.preemption import Preempter
from app.models import RunRecord, RunStatus
from app.reservations import GpuRules, Grant, Notice, Phase, Reservation, choose_gpus, iso, refusal
from app.store import QueueEntry
from app.users import LOCAL, Users

log = logging.getLogger("labrun.lifecycle")
BLOCKED = "reservation_blocked"  # the server's event (app/notify/events.py ServerCondition) for the admins
WAITER = "reservation "  # what a victim's record notes it was preempted for: "reservation <id>"


class ReservationRoom:
    def __init__(
        self,
        ctx: Context,
        preempter: Preempter | None,
        inventory: Sequence[int],
        users: Users,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ctx, self.preempter, self.inventory, self.users = ctx, preempter, tuple(inventory), users
        self.store, self.live, self.settings = ctx.store, ctx.live, ctx.settings
        self.clock = clock
        self.waiting: dict[str, str] = {}  # queued run of a reservation's users -> why it waits (last round)
        self.wake_at: float | None = None  # the next boundary of a window (clock time), for the dispatcher
        self._waited_for: frozenset[int] = frozenset()
        self._current: list[Reservation] = []
        self._loaded = False
        self._ends_to_tell = True  # a window may have ended untold (at start-up, after an end, past an end)
        self._host = socket.gethostname()

    # --- requests -------------------------------------------------------------------------------------------

    def unsupported(self) -> str | None:
        if not self.ctx.launcher.places_runs:
            return None
        return (
            f"reservations are not managed by labrun with the {self.ctx.launcher.name} launcher: the cluster "
            "places runs itself, so book GPUs with its own reservations (Slurm: `scontrol create "
            "reservation`, then runs go there through its partition/QOS settings); see docs/reservations.md"
        )

    def grant(self, name: str, is_admin: bool) -> Grant | None:
        """The grant in force for ``name`` (None: no bound, an admin, or the local user with auth off)."""
        user = self.users.get(name)
        if is_admin or (user is None and name == LOCAL) or (user is not None and user.is_admin):
            return None
        own, s = self.store.reservations.grant(name) or Grant(), self.settings
        return Grant(
            own.gpu_hours if own.gpu_hours is not None else s.reserve_gpu_hours,
            own.max_window_s if own.max_window_s is not None else s.reserve_max_window_s,
            own.ahead_s if own.ahead_s is not None else s.reserve_ahead_s,
        )

    def book(
        self,
        owner: str,
        is_admin: bool,
        start: float,
        end: float,
        gpus: int | Sequence[int],
        users: Sequence[str] | None = None,
        note: str | None = None,
    ) -> Reservation:
        problem = self.unsupported()
        if problem:
            raise InvalidReservation(problem)
        for_users = tuple(dict.fromkeys(users or [owner]))
        self._check_users(for_users)
        count = gpus if isinstance(gpus, int) else len(set(gpus))
        if not isinstance(gpus, int):
            unknown = sorted(set(gpus) - set(self.inventory))
            if unknown:
                raise InvalidReservation(
                    f"no GPU {', '.join(map(str, unknown))} on this server; its GPUs: "
                    f"{', '.join(map(str, self.inventory)) or 'none'}"
                )
        now = self.clock()
        why = refusal(start, end, count, now, self.grant(owner, is_admin), len(self.inventory))
        if why:
            raise InvalidReservation(why)
        with self.live.cond:
            overlapping = [r for r in self._all(now) if r.overlaps(start, end)]
            taken = {g for r in overlapping for g in r.gpus}
            chosen = choose_gpus(self.inventory, taken, gpus, self._in_the_way(start))
            if chosen is None:
                raise ReservationConflict(_overlap(overlapping, count, len(self.inventory), gpus))
            made = self.store.reservations.add(owner, for_users, chosen, start, end, note)
            self._current.append(made)
            self.live.wake(queue_changed=True)
        log.info(
            "reservation %d booked by %s: GPUs %s, %s to %s", made.id, owner, chosen, iso(start), iso(end)
        )
        return made

    def end(self, id: int, by: str, is_admin: bool) -> Reservation:
        """Ended early by its owner (or an admin): its GPUs are anyone's at once."""
        found = self.get(id)
        if found.owner != by and not is_admin:
            raise Forbidden(f"reservation {id} is {found.owner}'s: only they (or an admin) may end it")
        with self.live.cond:
            if not self.store.reservations.end(id, self.clock(), by):
                raise ReservationConflict(f"reservation {id} is over already (it ended {iso(found.over_at)})")
            self._current = [r for r in self._current if r.id != id]
            self._ends_to_tell = True
            self.live.wake(queue_changed=True)
        return self.get(id)

    def get(self, id: int) -> Reservation:
        found = self.store.reservations.get(id)
        if found is None:
            raise NotFound(f"no reservation {id}; `labrun reservations` lists them")
        return found

    def listing(self, everything: bool = False) -> list[Reservation]:
        """Those not over (and the over ones too with ``everything``), the latest window first."""
        return self.store.reservations.list(None if everything else self.clock())

    def phase(self, reservation: Reservation) -> Phase:
        return reservation.phase(self.clock(), self.settings.preempt_grace_s)

    def _check_users(self, users: Sequence[str]) -> None:
        if not self.users.ever_had_users():
            return  # auth off: every run is the local user's
        unknown = [u for u in users if self.users.get(u) is None]
        if unknown:
            raise InvalidReservation(
                f"no user named {', '.join(map(repr, unknown))}; reserve for users who exist "
                "(`python -m app users list` on the server)"
            )

    def _in_the_way(self, start: float) -> set[int]:
        """GPUs held now by a run that may not be preempted and may still run at ``start``."""
        found: set[int] = set()
        classes = self.preempter.preemptible() if self.preempter else frozenset()
        for run in self.store.running():
            left = None if run.time_limit_s is None else run.time_limit_s - run.ran_s
            ends = run.started_at + left if left is not None and run.started_at is not None else None
            if run.priority not in classes and (ends is None or ends > start):
                found.update(run.gpus)
        return found

    # --- each dispatch round --------------------------------------------------------------------------------

    def _all(self, now: float) -> list[Reservation]:
        """(Under the lock.) The reservations not over at ``now``, read from the store once, then kept."""
        if not self._loaded:
            self._current, self._loaded = self.store.reservations.current(now), True
        return [r for r in self._current if r.over_at > now]

    def rules(self, preemptible: frozenset[str]) -> GpuRules | None:
        """(Under the lock.) What the policy asks this round; None: no reservation is current."""
        now = self.clock()
        current = self._all(now)
        if not current:
            return None
        grace = self.settings.preempt_grace_s
        return GpuRules(now, grace, tuple(current), preemptible, self._waited_for)

    def deadline(self, run: RunRecord) -> tuple[float, Reservation] | None:
        """When ``run`` (running) must be off its GPUs: the earliest upcoming window of others on them, less
        the grace, unless it may be preempted (then the window's clearing stops it). None: no such window."""
        with self.live.cond:
            now = self.clock()
            classes = self.preempter.preemptible() if self.preempter else frozenset()
            if run.priority in classes:
                return None
            ahead = [
                r
                for r in self._all(now)
                if set(r.gpus) & set(run.gpus) and run.owner not in r.users and r.start_at > now
            ]
        if not ahead:
            return None
        first = min(ahead, key=lambda r: r.start_at)
        return first.start_at - self.settings.preempt_grace_s, first

    def candidates(self, found: Callable[[], Sequence[Candidate]]) -> Callable[[], Sequence[Candidate]]:
        """The policy's preemption candidates, less runs on a current reservation's GPUs: those are this
        room's to stop (another waiting run could not take their GPUs anyway)."""

        def ask() -> list[Candidate]:
            reserved = {g for r in self._all(self.clock()) for g in r.gpus}
            if not reserved:
                return list(found())
            gpus = {r.name: set(r.gpus) for r in self.store.running()}
            return [c for c in found() if not gpus.get(c.entry.name, set()) & reserved]

        return ask

    def enforce(self) -> None:
        """(Under the lock.) Keep every current window (see the module's docstring)."""
        now, grace = self.clock(), self.settings.preempt_grace_s
        current = self._all(now)
        if self._ends_to_tell or len(current) < len(self._current):
            self._ends_to_tell = False
            self._tell_ends(now)
        self._current = current
        waiting: dict[str, str] = {}
        waited_for: set[int] = set()
        if current:
            running, queued = self.store.running(), self.store.entries(RunStatus.QUEUED)
            for r in current:
                phase = r.phase(now, grace)
                self._notices(r, phase, now)
                if phase in (Phase.CLEARING, Phase.OPEN):
                    theirs = [e for e in queued if e.gpu_need and e.owner in r.users]
                    if phase == Phase.OPEN and theirs:
                        waited_for.add(r.id)
                    self._clear(r, phase, running, theirs, waiting)
        self.waiting, self._waited_for = waiting, frozenset(waited_for)
        self.wake_at = self._next_boundary(current, now)

    def _clear(
        self,
        r: Reservation,
        phase: Phase,
        running: list[RunRecord],
        theirs: list[QueueEntry],
        waiting: dict[str, str],
    ) -> None:
        """Stop what others run on ``r``'s GPUs: all of it while it clears; while open, what its waiting users'
        runs need. Note why its users' runs wait."""
        mine = set(r.gpus)
        held = [run for run in running if set(run.gpus) & mine and run.owner not in r.users]
        classes = self.preempter.preemptible() if self.preempter else frozenset()
        stoppable = [run for run in held if run.priority in classes and run.name in self.live.active]
        busy = self._outside(r)
        if phase == Phase.CLEARING:
            victims = [run for run in stoppable if run.name not in self.live.preempting]
        elif theirs:
            free = mine - {g for run in running for g in run.gpus} - busy
            want = min(len(mine), sum(e.gpu_need for e in theirs))
            ranked = sorted(stoppable, key=lambda run: -(run.started_at or 0))  # the youngest loses least
            stopping = sum(run.gpu_need for run in ranked if run.name in self.live.preempting)
            chosen = fewest_to_free(
                [_entry(run) for run in ranked if run.name not in self.live.preempting],
                want - len(free) - stopping,
            )
            victims = [run for run in ranked if run.name in {c.name for c in chosen}]
        else:
            victims = []
        if victims and self.preempter is not None:
            waiter = QueueEntry(0, f"{WAITER}{r.id}", r.owner, len(r.gpus), None, "high")
            self.preempter.begin(Preemption(waiter, tuple(_entry(run) for run in victims)))
        reason = self._why(r, held, classes, busy)
        if reason:
            waiting.update(dict.fromkeys((e.name for e in theirs), reason))

    def _why(
        self, r: Reservation, held: list[RunRecord], classes: frozenset[str], busy: set[int]
    ) -> str | None:
        if busy:
            self._tell_blocked(r, busy)
            return f"reservation {r.id}: {self._outside_reason(busy)}; the admins are told"
        stopping = [run.name for run in held if run.name in self.live.preempting]
        if stopping:
            return f"reservation {r.id}: preempting {', '.join(stopping)} on its GPUs: saving a checkpoint"
        kept = [run for run in held if run.priority not in classes]
        if kept:
            names = ", ".join(f"{run.name} ({run.priority})" for run in kept)
            return f"reservation {r.id}: its GPUs are still held by {names}, which may not be preempted"
        return None

    def _outside(self, r: Reservation) -> set[int]:
        guard = self.ctx.guard.view() if self.ctx.guard is not None else None
        return set(guard.busy) & set(r.gpus) if guard is not None else set()

    def _outside_reason(self, gpus: set[int]) -> str:
        guard = self.ctx.guard.view() if self.ctx.guard is not None else None
        found = guard.reason(sorted(gpus)) if guard is not None else None
        return (
            found or f"GPU {', '.join(map(str, sorted(gpus)))} busy outside labrun (a process no run started)"
        )

    def _next_boundary(self, current: list[Reservation], now: float) -> float | None:
        grace, notice = self.settings.preempt_grace_s, self.settings.reserve_notice_s
        times = [t for r in current for t in (r.start_at - notice, r.start_at - grace, r.start_at, r.over_at)]
        ahead = [t for t in times if t > now]
        return min(ahead) if ahead else None

    # --- notices --------------------------------------------------------------------------------------------

    def _notices(self, r: Reservation, phase: Phase, now: float) -> None:
        if phase == Phase.UPCOMING and now >= r.start_at - self.settings.reserve_notice_s:
            self._tell(r, "soon", Notice.SOON, f"starts in {max(0, round(r.start_at - now))} s")
        elif phase == Phase.OPEN:
            self._tell(r, "started", Notice.STARTED, "started")

    def _tell_ends(self, now: float) -> None:
        for r in self.store.reservations.untold_ends(now):
            self._tell(r, "ended", Notice.ENDED, "ended early" if r.ended_at is not None else "ended")

    def _tell(self, r: Reservation, told: str, kind: Notice, what: str) -> None:
        if told in r.told:
            return
        body = {
            "reservation": r.id,
            "state": told,
            "what": what,
            "owner": r.owner,
            "users": list(r.users),
            "gpus": list(r.gpus),
            "start": iso(r.start_at),
            "end": iso(r.end_at),
            "ended_early": iso(r.ended_at) if r.ended_at is not None else None,
            "note": r.note,
        }
        try:
            if self.store.reservations.tell(r, told, kind.value, r.owner, body):
                log.info("reservation %d %s", r.id, what)
        except Exception:  # the store refused: told next round
            log.exception("could not tell that reservation %d %s", r.id, what)
            return
        self._current = [_told(x, told) if x.id == r.id else x for x in self._current]

    def _tell_blocked(self, r: Reservation, busy: set[int]) -> None:
        if "blocked" in r.told:
            return
        gpus = ", ".join(map(str, sorted(busy)))
        detail = (
            f"reservation {r.id} of {r.owner} ({iso(r.start_at)} to {iso(r.end_at)}): GPU {gpus} busy outside "
            "labrun at its start; its runs wait for it"
        )
        body = {
            "condition": BLOCKED,
            "state": "started",
            "subject": f"reservation:{r.id}",
            "detail": detail,
            "host": self._host,
        }
        try:
            self.store.reservations.tell(r, "blocked", BLOCKED, None, body)
        except Exception:
            log.exception("could not tell the admins that reservation %d is blocked", r.id)
            return
        self._current = [_told(x, "blocked") if x.id == r.id else x for x in self._current]


def _told(r: Reservation, told: str) -> Reservation:
    return replace(r, told=(*r.told, told))


def _entry(run: RunRecord) -> QueueEntry:
    return QueueEntry(
        run.seq, run.name, run.owner, run.gpu_need, run.started_at, run.priority, run.time_limit_s, run.ran_s
    )


def _overlap(overlapping: list[Reservation], count: int, inventory: int, asked: int | Sequence[int]) -> str:
    others = "; ".join(
        f"reservation {r.id} of {r.owner}: GPU {', '.join(map(str, r.gpus))} from {iso(r.start_at)} to "
        f"{iso(r.over_at)}"
        for r in overlapping
    )
    if not isinstance(asked, int):
        return f"GPU {', '.join(map(str, sorted(set(asked))))} overlap another booking ({others}): choose other GPUs or another window"
    free = inventory - len({g for r in overlapping for g in r.gpus})
    return (
        f"{count} GPUs asked, but overlapping reservations leave only {free} of this server's {inventory} "
        f"free then ({others}): book fewer GPUs or another window"
    )
