"""Dispatch without processes: which queued runs start, on which GPUs, and why the others wait.

A real store (SQLite in ``tmp_path``) and the real lifecycle, against ``MemoryLauncher``: it starts nothing,
notes what it was asked, and ends a run when the test says so. Rounds are run by hand
(``dispatcher.run_once``, ``supervisor.poll_once``), so every outcome is exact.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typing_extensions import override

from app.core.config import Settings, load_settings
from app.diskspace import DiskGuard, DiskState
from app.errors import EngineUnavailable, LaunchError
from app.fairshare import FairShare
from app.launchers.base import Launcher, LaunchSpec, Outcome
from app.lifecycle import RunLive, RunManager, UserLimits
from app.lifecycle.picking import FairSharePicking, Picks, Round, Start
from app.models import RunRecord, RunStatus
from app.scheduling import Slots
from app.statedir import StateDir
from app.store import QueueEntry, RunStore
from app.validation import RunValidator
from trainer.plan import DeviceLimits


class MemoryLauncher(Launcher):
    """Starts nothing; ``end(name)`` makes a run's next poll answer its outcome."""

    name = "memory"
    batch_polling = True  # followed by poll_once: no watcher threads

    def __init__(self, refuse: Exception | None = None) -> None:
        self.refuse = refuse  # raised by start(), when set
        self.started: list[LaunchSpec] = []
        self.outcomes: dict[str, Outcome] = {}

    @classmethod
    @override
    def from_settings(cls, settings: Settings, state: StateDir) -> Launcher:
        return cls()

    @override
    def start(self, spec: LaunchSpec) -> str:
        if self.refuse is not None:
            raise self.refuse
        self.started.append(spec)
        return f"mem-{spec.name}"

    @override
    def poll(self, name: str, handle: str) -> Outcome | None:
        return self.outcomes.get(name)

    @override
    def wait(self, name: str, handle: str, timeout: float | None = None) -> Outcome | None:
        return self.outcomes.get(name)

    @override
    def _terminate(self, name: str, handle: str) -> None:
        self.outcomes[name] = Outcome.from_exit_code(-15)  # it stops on SIGTERM: the base's cancel is done

    @override
    def _kill(self, name: str, handle: str) -> None:
        self.outcomes[name] = Outcome.from_exit_code(-9)

    @override
    def reattach(self, name: str) -> str | None:
        return None

    def end(self, name: str, exit_code: int = 0) -> None:
        self.outcomes[name] = Outcome.from_exit_code(exit_code)

    def placed(self) -> list[tuple[str, tuple[int, ...]]]:
        """(run, its GPUs) for each start, in order."""
        return [(spec.name, spec.gpus) for spec in self.started]


class PlacingLauncher(MemoryLauncher):
    """As a cluster: the engine picks the nodes and GPUs."""

    places_runs: ClassVar[bool] = True


class FullDisk(DiskGuard):
    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"), 0, 0.0)
        self.full = True

    def check(self) -> DiskState:
        if self.full:
            return DiskState(
                False, 10, 1000, 100, 0.0, reason="only 10 B free on the output directory's disk"
            )
        return DiskState(True, 1000, 1000, 100, 0.0)


MakeManager = Callable[..., RunManager]


@pytest.fixture
def make_manager(tmp_path: Path) -> Iterator[MakeManager]:
    made: list[RunManager] = []

    def make(
        gpus: tuple[int, ...] = (0, 1, 2, 3),
        launcher: Launcher | None = None,
        disk: DiskGuard | None = None,
        **settings: Any,
    ) -> RunManager:
        s = load_settings(output_dir=tmp_path, gpus=gpus, min_free_bytes=0, min_free_percent=0, **settings)
        state = StateDir(tmp_path)
        state.root.mkdir(parents=True, exist_ok=True)
        validator = RunValidator(s, DeviceLimits(gpus=len(gpus)))  # never asked: runs are queued directly
        manager = RunManager(
            s, RunStore(state.db), launcher or MemoryLauncher(), validator, state, gpus, disk
        )
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.stop()
        manager.store.close()


def queue(manager: RunManager, name: str, owner: str = "alice", gpus: int = 0) -> RunRecord:
    record = RunRecord(
        seq=0,
        name=name,
        status=RunStatus.QUEUED,
        config_name="config",
        overrides=[],
        run_dir=f"2026-01-01/{name}",
        gpu_need=gpus,
        created_at=time.time(),
        owner=owner,
    )
    return manager.store.insert(record)


def launcher_of(manager: RunManager) -> MemoryLauncher:
    assert isinstance(manager.launcher, MemoryLauncher)
    return manager.launcher


def statuses(manager: RunManager, *names: str) -> dict[str, str]:
    found = {name: manager.store.get(name) for name in names}
    return {name: record.status.value for name, record in found.items() if record is not None}


def test_free_gpus_alternate_between_users_of_equal_usage(make_manager: MakeManager) -> None:
    manager = make_manager(gpus=(0, 1))
    for name in ("a1", "a2", "a3"):
        queue(manager, name, "alice", gpus=1)
    queue(manager, "b1", "bob", gpus=1)
    assert manager.dispatcher.run_once() == ["a1", "b1"]
    assert launcher_of(manager).placed() == [("a1", (0,)), ("b1", (1,))]
    assert statuses(manager, "a1", "a2", "a3", "b1") == {
        "a1": "running",
        "a2": "queued",
        "a3": "queued",
        "b1": "running",
    }
    assert manager.store.get("b1").gpus == [1]  # type: ignore[union-attr]


def test_the_user_with_less_recent_usage_goes_first(make_manager: MakeManager) -> None:
    manager = make_manager(gpus=(0,))
    old = queue(manager, "earlier", "alice", gpus=1)
    now = time.time()
    manager.fair.add(dataclasses.replace(old, started_at=now - 3600, finished_at=now - 1800))
    queue(manager, "a1", "alice", gpus=1)
    queue(manager, "b1", "bob", gpus=1)
    manager.store.finish("earlier", [RunStatus.QUEUED], RunStatus.CANCELLED)
    assert manager.queue_positions() == {"b1": 1, "a1": 2}
    assert manager.dispatcher.run_once() == ["b1"]
    assert manager.queue_positions() == {"a1": 1}


def test_a_user_at_their_gpu_cap_waits_while_others_start(make_manager: MakeManager) -> None:
    manager = make_manager(gpus=(0, 1, 2, 3), max_gpus_per_user=1)
    queue(manager, "a1", "alice", gpus=1)
    queue(manager, "a2", "alice", gpus=1)
    queue(manager, "b1", "bob", gpus=1)
    assert manager.dispatcher.run_once() == ["a1", "b1"]  # GPUs 2 and 3 stay free: a2 is over alice's cap
    assert statuses(manager, "a2") == {"a2": "queued"}
    launcher_of(manager).end("a1")
    manager.supervisor.poll_once()
    assert statuses(manager, "a1") == {"a1": "succeeded"}
    assert manager.dispatcher.run_once() == ["a2"]
    assert launcher_of(manager).placed() == [("a1", (0,)), ("b1", (1,)), ("a2", (0,))]


def test_a_users_own_limits_replace_the_servers(make_manager: MakeManager) -> None:
    manager = make_manager(max_gpus_per_user=1, max_queued_per_user=0, max_run_s=60, stall_after_s=0)
    manager.users.add("alice")
    manager.users.set_limits("alice", 3, 5, None)
    assert manager.limits("alice") == UserLimits(max_gpus=3, max_queued=5, max_run_s=60)
    assert manager.limits("bob") == UserLimits(max_gpus=1, max_queued=None, max_run_s=60)  # 0: none
    manager.users.set_stall_after("alice", 120)  # a stall limit of her own (app/lifecycle/stalls.py)
    assert manager.limits("alice").stall_after_s == 120
    assert manager.limits("bob").stall_after_s is None
    queue(manager, "a1", "alice", gpus=2)
    queue(manager, "a2", "alice", gpus=2)  # 4 > 3: waits
    queue(manager, "a3", "alice", gpus=1)
    assert manager.dispatcher.run_once() == ["a1", "a3"]


def test_a_gpu_run_that_does_not_fit_holds_back_later_gpu_runs_not_cpu_runs(
    make_manager: MakeManager,
) -> None:
    manager = make_manager(gpus=(0, 1), max_cpu_runs=1)
    queue(manager, "first", gpus=1)
    assert manager.dispatcher.run_once() == ["first"]
    queue(manager, "big", gpus=2)
    queue(manager, "small", gpus=1)  # would fit on GPU 1, but big is older
    queue(manager, "cpu", gpus=0)
    assert manager.dispatcher.run_once() == ["cpu"]
    assert manager.queue_positions() == {"big": 1, "small": 2}
    launcher_of(manager).end("first")
    manager.supervisor.poll_once()
    assert manager.dispatcher.run_once() == ["big"]
    assert launcher_of(manager).placed() == [("first", (0,)), ("cpu", ()), ("big", (0, 1))]


def test_cpu_runs_are_capped_by_their_pool(make_manager: MakeManager) -> None:
    manager = make_manager(gpus=(), max_cpu_runs=2)
    for name in ("c1", "c2", "c3"):
        queue(manager, name)
    assert manager.dispatcher.run_once() == ["c1", "c2"]
    assert manager.dispatcher.run_once() == []
    launcher_of(manager).end("c2", exit_code=3)
    manager.supervisor.poll_once()
    assert manager.store.get("c2").reason == "exited with code 3"  # type: ignore[union-attr]
    assert manager.dispatcher.run_once() == ["c3"]


def test_a_full_disk_keeps_runs_queued_and_says_why(make_manager: MakeManager) -> None:
    disk = FullDisk()
    manager = make_manager(disk=disk)
    queue(manager, "c1")
    assert manager.dispatcher.run_once() == []
    assert manager.live("c1") == RunLive(waiting_reason="only 10 B free on the output directory's disk")
    assert launcher_of(manager).started == []
    assert statuses(manager, "c1") == {"c1": "queued"}
    disk.full = False
    assert manager.dispatcher.run_once() == ["c1"]
    assert manager.live("c1") == RunLive()


def test_queue_positions_count_within_each_pool_in_fair_order(make_manager: MakeManager) -> None:
    manager = make_manager(gpus=())  # nothing can start: only the order is asked
    queue(manager, "a-g1", "alice", gpus=1)
    queue(manager, "a-g2", "alice", gpus=1)
    queue(manager, "a-c1", "alice")
    queue(manager, "b-g1", "bob", gpus=1)
    queue(manager, "b-c1", "bob")
    assert manager.queue_positions() == {"a-c1": 1, "b-c1": 2, "a-g1": 1, "b-g1": 2, "a-g2": 3}


def test_a_launcher_that_places_runs_gets_every_queued_run(make_manager: MakeManager) -> None:
    manager = make_manager(gpus=(), launcher=PlacingLauncher())
    for name in ("g1", "g2", "c1"):
        queue(manager, name, gpus=0 if name == "c1" else 8)
    assert manager.dispatcher.run_once() == ["c1", "g1", "g2"]
    assert [(s.name, s.gpus, s.gpu_need) for s in launcher_of(manager).started] == [
        ("c1", (), 0),
        ("g1", (), 8),
        ("g2", (), 8),
    ]


def test_a_run_needing_more_gpus_than_the_server_has_fails(make_manager: MakeManager) -> None:
    manager = make_manager(gpus=(0, 1))
    queue(manager, "huge", gpus=4)
    queue(manager, "fits", gpus=2)
    assert manager.dispatcher.run_once() == ["fits"]
    huge = manager.store.get("huge")
    assert huge is not None
    assert huge.status == RunStatus.FAILED
    assert huge.reason == "could not start: needs 4 GPU(s), this server now has 2"


def test_an_engine_that_is_down_keeps_the_run_queued_and_its_gpus_free(make_manager: MakeManager) -> None:
    launcher = MemoryLauncher(refuse=EngineUnavailable("the engine is down"))
    manager = make_manager(gpus=(0,), launcher=launcher)
    queue(manager, "g1", gpus=1)
    assert manager.dispatcher.run_once() == ["g1"]  # picked; the launch did not happen
    assert statuses(manager, "g1") == {"g1": "queued"}
    assert launcher.started == []
    launcher.refuse = None
    assert manager.dispatcher.run_once() == ["g1"]
    assert launcher.placed() == [("g1", (0,))]


def test_a_launch_the_engine_refuses_fails_the_run(make_manager: MakeManager) -> None:
    manager = make_manager(launcher=MemoryLauncher(refuse=LaunchError("no such image")))
    queue(manager, "c1")
    queue(manager, "c2")
    manager.dispatcher.run_once()
    c1 = manager.store.get("c1")
    assert c1 is not None
    assert (c1.status, c1.reason) == (RunStatus.FAILED, "could not start: no such image")
    assert statuses(manager, "c2") == {"c2": "queued"}  # the CPU slot came back for the next round


def test_the_fair_share_policy_alone_picks_from_the_entries_and_free_resources() -> None:
    def entry(seq: int, name: str, owner: str, gpus: int) -> QueueEntry:
        return QueueEntry(seq, name, owner, gpus, None)

    slots = Slots([0, 1, 2], max_cpu_runs=1)
    slots.hold("running", 1, [1])
    caps: Mapping[str, int | None] = {"alice": 2, "bob": None}
    round_ = Round(
        queued=[entry(2, "a1", "alice", 1), entry(3, "a2", "alice", 1), entry(4, "b1", "bob", 1)],
        running=[entry(1, "running", "alice", 1)],
        slots=slots,
        starting=frozenset(),
        gpu_cap=caps.get,
        inventory=3,
    )
    picks = FairSharePicking(FairShare(3600.0)).pick(round_)
    # alice has one GPU going and a cap of two: a1 fits, a2 does not; bob (nothing going) goes first
    assert picks == Picks(start=[Start(round_.queued[2], (0,)), Start(round_.queued[0], (2,))])
