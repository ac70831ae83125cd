"""Reservations (docs/reservations.md) in the lifecycle, on a clock the tests move: which runs may take
reserved GPUs before a window, what happens at its start (minus the preemption grace) and during it, the
refusals of a booking, and the notices in the outbox. Real store, real dispatcher and preempter; the engine
is the in-memory one (tests/app/test_dispatch.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from service_helpers import queued_record
from test_dispatch import MakeManager, PlacingLauncher, make_manager  # noqa: F401 - its fixture
from test_priorities import StoppingLauncher, stopped

from app.errors import Forbidden, InvalidReservation, ReservationConflict
from app.lifecycle import RunManager
from app.models import Priority, RunRecord, RunStatus
from app.reservations import GpuRules, Reservation, choose_gpus
from app.statedir import StateDir
from app.store import QueueEntry

T0 = 2_000_000_000.0  # the tests' "now" (2033): far from the wall clock, which nothing here reads
HOUR = 3600.0
GRACE = 60.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def box(make_manager: MakeManager, tmp_path: Path) -> Callable[..., tuple[RunManager, Clock]]:  # noqa: F811
    """A manager on two GPUs that preempts at once, with a clock the test moves."""

    def make(gpus: Sequence[int] = (0, 1), **settings: Any) -> tuple[RunManager, Clock]:
        launcher = StoppingLauncher(StateDir(tmp_path))
        defaults = {"preempt_min_run_s": 0.0, "preempt_grace_s": GRACE, "reserve_notice_s": 900.0}
        manager = make_manager(gpus=tuple(gpus), launcher=launcher, **{**defaults, **settings})
        clock = Clock()
        manager.reservations.clock = clock
        return manager, clock

    return make


def queue_run(
    manager: RunManager, name: str, owner: str, priority: str = "normal", limit: float | None = None
) -> RunRecord:
    record = queued_record(name, gpu_need=1, owner=owner)
    record = dataclasses.replace(record, priority=Priority(priority), time_limit_s=limit)
    return manager.store.insert(record)


def book(
    manager: RunManager, clock: Clock, start: float, end: float, gpus: Any = 1, **kw: Any
) -> Reservation:
    return manager.reservations.book("bob", False, clock.now + start, clock.now + end, gpus, **kw)


def gpus_of(manager: RunManager, name: str) -> list[int]:
    record = manager.store.get(name)
    assert record is not None
    return list(record.gpus) if record.status == RunStatus.RUNNING else []


def status(manager: RunManager, name: str) -> str:
    record = manager.store.get(name)
    assert record is not None
    return record.status.value


# --- before the window --------------------------------------------------------------------------------------


def test_before_the_window_only_preemptible_runs_or_runs_that_end_in_time_take_reserved_gpus(box):
    manager, clock = box()
    r = book(manager, clock, HOUR, 2 * HOUR, gpus=[1])
    assert r.gpus == (1,)
    queue_run(manager, "first", "alice")
    queue_run(manager, "unlimited", "alice")
    assert manager.dispatcher.run_once() == ["first"]
    assert gpus_of(manager, "first") == [0]  # the free GPU, not the reserved one
    assert status(manager, "unlimited") == "queued"  # no time limit: it would run into the window
    queue_run(manager, "too-long", "carol", limit=HOUR + 1)
    assert manager.dispatcher.run_once() == []
    queue_run(manager, "in-time", "carol", limit=HOUR - 10)  # ends before the window starts: it passes
    assert manager.dispatcher.run_once() == ["in-time"]  # (those it passes could not take GPU 1 anyway)
    assert gpus_of(manager, "in-time") == [1]


def test_a_low_run_fills_reserved_gpus_and_is_preempted_at_the_start_minus_the_grace(box):
    manager, clock = box(gpus=(0,))
    book(manager, clock, HOUR, 2 * HOUR)
    queue_run(manager, "filler", "alice", priority="low")
    assert manager.dispatcher.run_once() == ["filler"]
    queue_run(manager, "bobs", "bob")  # the reservation's user: waits, the GPU is held
    clock.now = T0 + HOUR - GRACE - 1
    assert manager.dispatcher.run_once() == []
    assert manager.dispatcher._round().reservations is not None
    clock.now = T0 + HOUR - GRACE  # the clearing begins: the filler is preempted with a checkpoint
    assert manager.dispatcher.run_once() == []
    assert manager.store.get("filler").preempted_by == "reservation 1"  # type: ignore[union-attr]
    stopped(manager, "filler")
    assert status(manager, "filler") == "queued"
    (attempt,) = manager.store.attempts.of("filler")
    assert (attempt["status"], attempt["reason"][:30]) == ("preempted", "preempted by reservation 1 (GP"), (
        attempt
    )
    assert manager.dispatcher.run_once() == ["bobs"]  # the reservation's run goes first
    assert gpus_of(manager, "bobs") == [0]
    manager.launcher.end("bobs")  # type: ignore[attr-defined]
    manager.supervisor.poll_once()
    clock.now = T0 + HOUR + 10  # open, and idle: the preempted run may fill it again
    assert manager.dispatcher.run_once() == ["filler"]
    spec = manager.launcher.started[-1]  # type: ignore[attr-defined]
    assert (spec.name, spec.env.get("LABRUN_RESUME"), spec.env.get("LABRUN_ATTEMPT")) == ("filler", "1", "2")


def test_during_the_window_a_filler_is_preempted_as_soon_as_a_users_run_waits(box):
    manager, clock = box(gpus=(0, 1))
    book(manager, clock, 10 * 60, HOUR, gpus=[1], users=["bob", "dana"])
    clock.now = T0 + 20 * 60  # open
    queue_run(manager, "normal", "alice")
    queue_run(manager, "filler", "alice", priority="low")
    assert manager.dispatcher.run_once() == ["normal", "filler"]
    assert (gpus_of(manager, "normal"), gpus_of(manager, "filler")) == ([0], [1])
    queue_run(manager, "danas", "dana")
    assert manager.dispatcher.run_once() == []
    assert "reservation 1: preempting filler" in manager.live("danas").waiting_reason  # type: ignore[operator]
    stopped(manager, "filler")
    assert manager.dispatcher.run_once() == ["danas"]
    assert gpus_of(manager, "danas") == [1]
    assert status(manager, "filler") == "queued"  # no free GPU left for it: it waits


def test_reservation_users_go_first_before_every_class(box):
    manager, clock = box(gpus=(0,), high_priority_gpus=4)
    book(manager, clock, 0, HOUR)
    queue_run(manager, "high", "alice", priority="high")
    queue_run(manager, "bobs", "bob", priority="low")
    assert manager.queue_positions() == {"bobs": 1, "high": 2}  # the order shown is the order taken
    assert manager.dispatcher.run_once() == ["bobs"]


def test_ending_a_reservation_early_frees_its_gpus_at_once(box):
    manager, clock = box(gpus=(0,))
    r = book(manager, clock, 0, HOUR)
    queue_run(manager, "alices", "alice")
    assert manager.dispatcher.run_once() == []
    with pytest.raises(Forbidden):
        manager.reservations.end(r.id, "alice", False)
    ended = manager.reservations.end(r.id, "bob", False)
    assert (ended.ended_at, ended.ended_by) == (clock.now, "bob")
    assert manager.dispatcher.run_once() == ["alices"]
    with pytest.raises(ReservationConflict, match="over already"):
        manager.reservations.end(r.id, "bob", False)


# --- booking ------------------------------------------------------------------------------------------------


def test_overlaps_that_need_more_gpus_than_the_box_has_are_refused_with_the_reason(box):
    manager, clock = box(gpus=(0, 1))
    first = book(manager, clock, HOUR, 3 * HOUR, gpus=2)
    assert first.gpus == (0, 1)
    with pytest.raises(
        ReservationConflict, match=r"overlapping reservations leave only 0 of this server's 2"
    ):
        book(manager, clock, 2 * HOUR, 4 * HOUR)
    assert book(manager, clock, 3 * HOUR, 4 * HOUR).gpus == (0,)  # [start, end): back to back is fine
    with pytest.raises(ReservationConflict, match="GPU 0 overlap"):
        book(manager, clock, 3 * HOUR + 60, 4 * HOUR, gpus=[0])
    assert book(manager, clock, 3 * HOUR + 60, 4 * HOUR, gpus=[1]).gpus == (1,)


def test_windows_in_the_past_wrong_sizes_and_over_the_grant_are_refused(box):
    manager, clock = box(gpus=(0, 1), reserve_gpu_hours=4.0, reserve_max_window_s=3 * HOUR)
    with pytest.raises(InvalidReservation, match="in the past"):
        book(manager, clock, -HOUR, HOUR)
    with pytest.raises(InvalidReservation, match="ends .* before it starts"):
        book(manager, clock, HOUR, HOUR)
    with pytest.raises(InvalidReservation, match="1 to 2 GPUs"):
        book(manager, clock, HOUR, 2 * HOUR, gpus=3)
    with pytest.raises(InvalidReservation, match="no GPU 7"):
        book(manager, clock, HOUR, 2 * HOUR, gpus=[7])
    with pytest.raises(InvalidReservation, match="6 GPU-hours asked, over your grant of 4"):
        book(manager, clock, HOUR, 4 * HOUR, gpus=2)
    with pytest.raises(InvalidReservation, match="longer than your grant's longest window of 3 h"):
        book(manager, clock, HOUR, 5 * HOUR - 1, gpus=[0], note="x")  # 4 h on one GPU: within the hours
    with pytest.raises(InvalidReservation, match="further than your grant allows"):
        book(manager, clock, 15 * 24 * HOUR, 15 * 24 * HOUR + 60)
    admin = manager.reservations.book("root", True, clock.now + HOUR, clock.now + 9 * HOUR, 2)
    assert admin.gpus == (0, 1)  # an admin has no bound


def test_a_booking_prefers_gpus_no_unpreemptible_run_holds():
    assert choose_gpus([0, 1, 2, 3], taken=[1], asked=2, avoid=[0]) == [2, 3]
    assert choose_gpus([0, 1, 2, 3], taken=[1], asked=3, avoid=[0]) == [0, 2, 3]
    assert choose_gpus([0, 1], taken=[1], asked=2) is None
    assert choose_gpus([0, 1], taken=[1], asked=[0]) == [0]


def test_a_launcher_that_places_runs_itself_has_no_reservations_of_labrun(make_manager):  # noqa: F811
    manager = make_manager(launcher=PlacingLauncher())
    with pytest.raises(InvalidReservation, match="scontrol create reservation"):
        manager.reservations.book("bob", False, 4e9, 4e9 + 60, 1)


# --- notices ------------------------------------------------------------------------------------------------


def test_a_reservation_tells_once_that_it_starts_soon_has_started_and_has_ended(box):
    manager, clock = box(gpus=(0,))
    r = book(manager, clock, HOUR, 2 * HOUR)

    def told() -> list[str]:
        return [e.kind for e in manager.store.outbox.events_of(f"reservation:{r.id}")]

    manager.dispatcher.run_once()
    assert told() == []
    clock.now = T0 + HOUR - 900
    manager.dispatcher.run_once()
    manager.dispatcher.run_once()
    assert told() == ["reservation_soon"]
    clock.now = T0 + HOUR
    manager.dispatcher.run_once()
    clock.now = T0 + 2 * HOUR
    manager.dispatcher.run_once()
    manager.dispatcher.run_once()
    assert told() == ["reservation_soon", "reservation_started", "reservation_ended"]
    (event,) = [
        e for e in manager.store.outbox.events_of(f"reservation:{r.id}") if e.kind == "reservation_ended"
    ]
    assert (event.owner, event.body["gpus"], event.body["users"]) == ("bob", [0], ["bob"])


def test_the_dispatcher_is_told_to_wake_at_the_next_boundary(box):
    manager, clock = box(gpus=(0,))
    book(manager, clock, HOUR, 2 * HOUR)
    manager.dispatcher.run_once()
    assert manager.reservations.wake_at == T0 + HOUR - 900  # its notice
    clock.now = T0 + HOUR - 900
    manager.dispatcher.run_once()
    assert manager.reservations.wake_at == T0 + HOUR - GRACE  # its clearing
    clock.now = T0 + HOUR
    manager.dispatcher.run_once()
    assert manager.reservations.wake_at == T0 + 2 * HOUR  # its end


# --- the rules, pure ----------------------------------------------------------------------------------------


def test_the_rules_order_a_runs_gpus_its_own_first_then_free_then_reserved_later():
    later = Reservation(1, "bob", ("bob",), (0,), T0 + HOUR, T0 + 2 * HOUR, T0)
    now = Reservation(2, "carol", ("carol",), (1,), T0 - 60, T0 + HOUR, T0)
    rules = GpuRules(T0, GRACE, (later, now), frozenset({"low"}))
    low = QueueEntry(1, "x", "alice", 1, None, "low")
    assert rules.usable(low, [0, 1, 2]) == [2, 0, 1]  # free, then reserved later, then a fill
    assert rules.usable(QueueEntry(2, "y", "carol", 1, None, "normal"), [0, 1, 2]) == [1, 2]
    # its own reservation's GPU first, even before its window: it leaves GPU 2 to runs that cannot take GPU 0
    assert rules.usable(QueueEntry(3, "z", "bob", 1, None, "normal"), [0, 1, 2]) == [0, 2]
    waited = dataclasses.replace(rules, waited_for=frozenset({2}))
    assert waited.usable(low, [0, 1, 2]) == [2, 0]  # no fill while one of its users' runs waits
    assert rules.first(QueueEntry(4, "c", "carol", 1, None, "low"))  # its reservation is open
    assert not rules.first(QueueEntry(5, "b", "bob", 1, None, "high"))  # bob's is not yet
