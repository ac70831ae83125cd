"""Priority classes and the choice of preemption victims, against the pure policy (no service, no I/O):
the order of classes, who may pass a run that does not fit, which runs are preempted for whom, and that
a preemption under way is not repeated (docs/priorities.md)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from service_helpers import queued_record
from test_dispatch import MakeManager, MemoryLauncher, make_manager  # noqa: F401 - its fixture
from typing_extensions import override

from app.fairshare import FairShare
from app.launchers.base import Outcome
from app.lifecycle import RunManager
from app.lifecycle.picking import Candidate, FairSharePicking, Preemption, Round, fewest_to_free
from app.models import Priority, RunRecord, RunStatus
from app.scheduling import Slots
from app.statedir import StateDir
from app.store import QueueEntry

NOW = 1_000_000.0


def entry(seq: int, name: str, gpus: int = 1, priority: str = "normal", owner: str = "alice") -> QueueEntry:
    return QueueEntry(seq, name, owner, gpus, None, priority)


def running(seq: int, name: str, gpus: int = 1, priority: str = "low", owner: str = "bob") -> QueueEntry:
    return QueueEntry(seq, name, owner, gpus, NOW - 1000 + seq, priority)


def pick(
    queued: Sequence[QueueEntry],
    going: Sequence[QueueEntry] = (),
    gpus: int = 2,
    cpu: int = 1,
    losses: Mapping[str, float] | None = None,
    stopping: Mapping[str, str] | None = None,
    preemptible: frozenset[str] = frozenset({"low"}),
    caps: Mapping[str, int] | None = None,
    high_caps: Mapping[str, int] | None = None,
):
    """One round of the policy on ``gpus`` GPUs and ``cpu`` CPU slots, ``going`` holding what they need;
    ``losses``: the running runs that may be preempted, with the work each would lose."""
    slots = Slots(list(range(gpus)), max_cpu_runs=cpu)
    for r in going:
        assert slots.take(r.name, r.gpu_need) is not None
    by_name = {r.name: r for r in going}
    candidates = [
        Candidate(by_name[n], loss, by_name[n].started_at or 0) for n, loss in (losses or {}).items()
    ]
    asked: list[int] = []

    def ask() -> list[Candidate]:
        asked.append(1)
        return candidates

    round_ = Round(
        queued=list(queued),
        running=list(going),
        slots=slots,
        starting=frozenset(),
        gpu_cap=lambda owner: (caps or {}).get(owner),
        inventory=gpus,
        high_cap=lambda owner: (high_caps or {}).get(owner),
        preemptible=preemptible,
        stopping=dict(stopping or {}),
        candidates=ask,
    )
    picks = FairSharePicking(FairShare(3600.0)).pick(round_)
    return picks, asked


def started(picks) -> list[str]:
    return [s.entry.name for s in picks.start]


def preempted(picks) -> list[tuple[str, list[str]]]:
    return [(p.waiter.name, [v.name for v in p.victims]) for p in picks.preempt]


def test_classes_go_first_high_then_normal_then_low_fifo_within_each():
    queue = [
        entry(1, "low1", priority="low"),
        entry(2, "n1"),
        entry(3, "high1", priority="high"),
        entry(4, "n2"),
    ]
    policy = FairSharePicking(FairShare(3600.0))
    assert [e.name for e in policy.order(queue, [])] == ["high1", "n1", "n2", "low1"]
    picks, _ = pick(queue, gpus=2)
    assert started(picks) == ["high1", "n1"]


def test_fair_share_holds_within_a_class():
    fair = FairShare(3600.0)
    queue = [entry(1, "a1", owner="alice"), entry(2, "a2", owner="alice"), entry(3, "b1", owner="bob")]
    order = FairSharePicking(fair).order(queue, [running(0, "a-going", owner="alice", priority="normal")])
    assert [e.name for e in order] == ["b1", "a1", "a2"]  # alice has one going: bob's run first


def test_a_run_that_does_not_fit_lets_only_preemptible_lower_runs_pass():
    # 2 GPUs, one taken by a normal run; a 2-GPU high run cannot start: behind it, a normal 1-GPU run
    # waits (it could not be taken back), a low one may use the free GPU (it can be preempted).
    going = [running(0, "busy", priority="normal")]
    queue = [entry(1, "big", gpus=2, priority="high"), entry(2, "n1"), entry(3, "low1", priority="low")]
    picks, _ = pick(queue, going, gpus=2)
    assert started(picks) == ["low1"]
    # same class behind: held back, as before classes existed
    picks, _ = pick([entry(1, "big", gpus=2), entry(2, "n1")], going, gpus=2)
    assert started(picks) == []
    # where normal runs may be preempted too, a normal one may pass a high run
    picks, _ = pick(queue, going, gpus=2, preemptible=frozenset({"low", "normal"}))
    assert started(picks) == ["n1"]


def test_cpu_runs_are_never_held_back_by_a_gpu_run():
    going = [running(0, "busy", priority="normal")]
    picks, _ = pick([entry(1, "big", gpus=2, priority="high"), entry(2, "cpu", gpus=0)], going, gpus=2)
    assert started(picks) == ["cpu"]


def test_victims_lose_the_least_work_freshest_checkpoint_first_then_the_youngest():
    going = [running(1, "old-fresh"), running(2, "young-stale"), running(3, "young-fresh")]
    losses = {"old-fresh": 5.0, "young-stale": 300.0, "young-fresh": 5.0}
    picks, _ = pick([entry(9, "urgent", priority="high")], going, gpus=3, losses=losses)
    assert preempted(picks) == [("urgent", ["young-fresh"])]  # equal loss: the youngest
    assert picks.waiting_for == {"urgent": ("young-fresh",)}
    assert started(picks) == []


def test_a_two_gpu_run_preempts_the_fewest_that_free_enough():
    going = [running(1, "one-a"), running(2, "two", gpus=2), running(3, "one-b")]
    losses = {"one-a": 1.0, "two": 2.0, "one-b": 3.0}
    picks, _ = pick([entry(9, "pair", gpus=2, priority="high")], going, gpus=4, losses=losses)
    # taken in order until enough (one-a, two), then one-a is not needed after all
    assert preempted(picks) == [("pair", ["two"])]
    picks, _ = pick(
        [entry(9, "pair", gpus=2, priority="high")], going, gpus=4, losses={"one-a": 1, "one-b": 3}
    )
    assert preempted(picks) == [("pair", ["one-a", "one-b"])]  # two victims for one 2-GPU run


def test_a_preemption_that_cannot_free_enough_does_not_happen():
    going = [running(1, "low-a"), running(2, "normal-b", priority="normal")]
    picks, _ = pick([entry(9, "pair", gpus=2, priority="high")], going, gpus=2, losses={"low-a": 1.0})
    assert picks.preempt == []
    assert picks.waiting_for == {}


def test_only_strictly_lower_preemptible_classes_are_preempted():
    going = [running(1, "low-a"), running(2, "normal-b", priority="normal")]
    losses = {"low-a": 1.0, "normal-b": 0.0}
    # a normal run preempts low ones, not normal ones even where normal is preemptible
    picks, _ = pick(
        [entry(9, "n", priority="normal")],
        going,
        gpus=2,
        losses=losses,
        preemptible=frozenset({"low", "normal"}),
    )
    assert preempted(picks) == [("n", ["low-a"])]
    # a low run preempts nobody, and is not even asked about candidates
    picks, asked = pick([entry(9, "l", priority="low")], going, gpus=2, losses=losses)
    assert picks.preempt == []
    assert asked == []
    # normal runs are not preemptible by default: a high run waits
    picks, _ = pick(
        [entry(9, "h", priority="high")], [running(2, "normal-b", priority="normal")], gpus=1, losses={}
    )
    assert picks.preempt == []


def test_no_thrash_a_preemption_under_way_is_not_repeated_and_what_is_free_is_kept_for_it():
    # "pair" waits for "victim-a" (stopping) with one GPU already free: nothing new is preempted, the
    # free GPU is kept for it (the low run behind does not take it), and victim-a is not chosen again.
    going = [running(1, "victim-a"), running(2, "other")]
    queue = [entry(9, "pair", gpus=2, priority="high"), entry(10, "low-next", priority="low")]
    picks, asked = pick(
        queue, going, gpus=3, losses={"victim-a": 0.0, "other": 0.0}, stopping={"victim-a": "pair"}
    )
    assert picks.preempt == []
    assert asked == []
    assert picks.waiting_for == {"pair": ("victim-a",)}
    assert started(picks) == []
    # a run being stopped for another waiting run is not counted again: pair cannot free 2 GPUs
    losses = {"victim-a": 0.0, "other": 0.0}
    picks, _ = pick(queue[:1], going, gpus=2, losses=losses, stopping={"victim-a": "someone-else"})
    assert picks.preempt == []
    picks, _ = pick(queue[:1], going, gpus=2, losses=losses)
    assert preempted(picks) == [("pair", ["other", "victim-a"])]  # equal loss: the youngest first
    # once the victim is gone, what it held goes to the run it was stopped for
    picks, _ = pick(queue[:1], [running(2, "other")], gpus=3, stopping={"victim-a": "pair"})
    assert started(picks) == ["pair"]


def test_cpu_and_gpu_pools_preempt_only_within_themselves():
    going = [running(1, "gpu-low"), running(2, "cpu-low", gpus=0)]
    losses = {"gpu-low": 0.0, "cpu-low": 0.0}
    picks, _ = pick([entry(9, "cpu-high", gpus=0, priority="high")], going, gpus=1, cpu=1, losses=losses)
    assert preempted(picks) == [("cpu-high", ["cpu-low"])]
    picks, _ = pick([entry(9, "gpu-high", priority="high")], going, gpus=1, cpu=1, losses=losses)
    assert preempted(picks) == [("gpu-high", ["gpu-low"])]


def test_caps_hold_in_every_class():
    # alice may hold 1 GPU: her second high run waits, and preempts nobody for it
    going = [running(1, "alice-high", priority="high", owner="alice"), running(2, "low-a")]
    picks, _ = pick(
        [entry(9, "alice-more", priority="high")], going, gpus=2, losses={"low-a": 0.0}, caps={"alice": 1}
    )
    assert picks.start == []
    assert picks.preempt == []
    # her allowance of high GPUs is 1: a second high run waits too, though GPUs are free
    picks, _ = pick([entry(9, "alice-more", priority="high")], going[:1], gpus=2, high_caps={"alice": 1})
    assert picks.start == []
    # a normal run of hers is bounded by the GPU cap only
    picks, _ = pick([entry(9, "alice-normal")], going[:1], gpus=2, high_caps={"alice": 1})
    assert started(picks) == ["alice-normal"]


def test_fewest_to_free_takes_in_order_and_lets_go_of_what_is_not_needed():
    a, b, c = entry(1, "a", gpus=1), entry(2, "b", gpus=2), entry(3, "c", gpus=1)
    assert fewest_to_free([a, b, c], 2) == [b]
    assert fewest_to_free([a, c], 2) == [a, c]
    assert fewest_to_free([a], 2) == []
    assert fewest_to_free([], 0) == []
    assert Preemption(a, (b,)).victims == (b,)


# --- the dispatcher with classes: a real store and lifecycle, an in-memory launcher (tests/app/test_dispatch.py)


class StoppingLauncher(MemoryLauncher):
    """As ``MemoryLauncher``, with the state files a preemption reads; ``slow``: runs that ignore SIGTERM
    until the test ends them."""

    def __init__(self, state: StateDir, slow: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.state, self.slow = state, slow

    @override
    def _terminate(self, name: str, handle: str) -> None:
        if name not in self.slow:
            super()._terminate(name, handle)

    @override
    def wait(self, name: str, handle: str, timeout: float | None = None) -> Outcome | None:
        deadline = time.monotonic() + (timeout or 0)
        while (outcome := self.outcomes.get(name)) is None and time.monotonic() < deadline:
            time.sleep(0.01)  # a slow run takes its time, up to the grace period
        return outcome


@pytest.fixture
def preempting(make_manager: MakeManager, tmp_path: Path) -> Callable[..., RunManager]:  # noqa: F811
    """A manager on one GPU that preempts at once (no minimum run time), with a ``StoppingLauncher``."""

    def make(slow: Sequence[str] = (), **settings: Any) -> RunManager:
        launcher = StoppingLauncher(StateDir(tmp_path), frozenset(slow))
        defaults = {"preempt_min_run_s": 0.0, "preempt_grace_s": 60.0, "high_priority_gpus": 4}
        return make_manager(gpus=(0,), launcher=launcher, **{**defaults, **settings})

    return make


def queue_as(manager: RunManager, name: str, priority: str, gpus: int = 1) -> RunRecord:
    record = dataclasses.replace(
        queued_record(name, gpu_need=gpus, owner="alice"), priority=Priority(priority)
    )
    return manager.store.insert(record)


def stopped(manager: RunManager, name: str) -> None:
    """Until the preemption's thread has had its answer from the launcher, then the poll records it."""
    launcher = manager.launcher
    assert isinstance(launcher, MemoryLauncher)
    deadline = time.monotonic() + 10
    while name not in launcher.outcomes:
        assert time.monotonic() < deadline, f"{name} was not stopped"
        time.sleep(0.01)
    manager.supervisor.poll_once()


def test_dispatch_preempts_requeues_the_victim_in_its_place_and_resumes_it(preempting):
    manager = preempting()
    queue_as(manager, "low1", "low")
    assert manager.dispatcher.run_once() == ["low1"]
    assert manager.launcher.started[0].env.get("LABRUN_PREEMPTIBLE") == "1"  # takes SIGTERM as a preemption
    queue_as(manager, "high1", "high")
    queue_as(manager, "low2", "low")  # submitted after low1: low1 keeps its place ahead of it
    assert manager.dispatcher.run_once() == []
    assert manager.store.get("low1").preempted_by == "high1"
    stopped(manager, "low1")
    low1 = manager.store.get("low1")
    assert (low1.status, low1.attempts, low1.preempted_by) == (RunStatus.QUEUED, 2, None)
    assert low1.reason.startswith("preempted by a high run (high1): ")
    assert "no checkpoint" in low1.reason
    assert [a["status"] for a in manager.store.attempts_of("low1")] == ["preempted"]
    assert manager.dispatcher.run_once() == ["high1"]
    assert manager.dispatcher.queue_positions() == {"low1": 1, "low2": 2}
    manager.launcher.end("high1")
    manager.supervisor.poll_once()
    assert manager.dispatcher.run_once() == ["low1"]
    spec = manager.launcher.started[-1]
    assert (spec.name, spec.env.get("LABRUN_RESUME"), spec.env.get("LABRUN_ATTEMPT")) == ("low1", "1", "2")


def test_a_preemption_under_way_is_remembered_across_rounds_and_says_so(preempting):
    manager = preempting(slow={"low1"})
    queue_as(manager, "low1", "low")
    manager.dispatcher.run_once()
    queue_as(manager, "high1", "high")
    for _ in range(3):  # no thrash: one preemption, the same victim, round after round
        assert manager.dispatcher.run_once() == []
    assert manager.live("high1").waiting_reason == "preempting run low1: saving a checkpoint"
    assert manager.store.get("low1").status == RunStatus.RUNNING
    manager.launcher.end("low1", 75)  # it saved its checkpoint and exited, as the trainer does
    manager.supervisor.poll_once()
    assert manager.dispatcher.run_once() == ["high1"]
    assert manager.store.get("low1").attempts == 2


def test_runs_too_young_or_preempted_too_often_are_not_candidates(preempting):
    manager = preempting(preempt_min_run_s=3600.0)
    queue_as(manager, "low1", "low")
    manager.dispatcher.run_once()
    queue_as(manager, "high1", "high")
    assert manager.dispatcher.run_once() == []
    assert manager.store.get("low1").preempted_by is None  # too young: not preempted
    assert manager.live("high1").waiting_reason is None


def test_a_run_preempted_as_often_as_allowed_this_hour_is_not_chosen_again(preempting):
    manager = preempting(preempt_max_per_hour=1)
    queue_as(manager, "low1", "low")
    manager.dispatcher.run_once()
    queue_as(manager, "high1", "high")
    manager.dispatcher.run_once()
    stopped(manager, "low1")
    assert manager.dispatcher.run_once() == ["high1"]
    manager.launcher.end("high1")
    manager.supervisor.poll_once()
    assert manager.dispatcher.run_once() == ["low1"]
    queue_as(manager, "high2", "high")
    assert manager.dispatcher.run_once() == []
    assert manager.store.get("low1").preempted_by is None  # preempted once this hour already
    assert manager.live("high2").waiting_reason is None


def test_a_cancel_during_a_preemption_wins(preempting):
    manager = preempting(slow={"low1"})
    queue_as(manager, "low1", "low")
    manager.dispatcher.run_once()
    queue_as(manager, "high1", "high")
    manager.dispatcher.run_once()
    manager.launcher.slow = frozenset()
    cancel = threading.Thread(target=manager.canceller.cancel, args=("low1",))
    cancel.start()  # it waits for the end to be recorded: the poll below
    stopped(manager, "low1")
    cancel.join(timeout=10)
    low1 = manager.store.get("low1")
    assert low1.status == RunStatus.CANCELLED
    assert manager.dispatcher.run_once() == ["high1"]
