"""Slots: a GPU is never given to two runs; CPU runs are capped."""

from __future__ import annotations

from app.scheduling import Slots


def test_gpus_are_never_shared_and_come_back_when_freed():
    slots = Slots([0, 1, 2, 3], max_cpu_runs=1)
    assert slots.take("a", 2) == [0, 1]
    assert slots.take("b", 3) is None  # only 2 left
    assert slots.take("c", 2) == [2, 3]
    assert slots.take("d", 1) is None
    assert slots.free_gpus == []
    slots.free("a")
    assert slots.take("d", 1) == [0]
    assert slots.free_gpus == [1]


def test_cpu_runs_are_capped_and_held_runs_count():
    slots = Slots([], max_cpu_runs=2)
    slots.hold("reattached", 0, ())
    assert slots.take("a", 0) == []
    assert slots.take("b", 0) is None
    assert not slots.any_free()
    slots.free("reattached")
    assert slots.any_free()
    assert slots.take("b", 0) == []


def test_a_reattached_gpu_run_keeps_its_gpus():
    slots = Slots([0, 1], max_cpu_runs=1)
    slots.hold("old", 1, [1])
    assert slots.take("new", 1) == [0]
    assert slots.take("more", 1) is None


def test_a_launcher_that_places_runs_gets_every_run_and_no_gpu_ids():
    slots = Slots([0], max_cpu_runs=1, unlimited=True)
    assert [slots.take(name, need) for name, need in (("a", 4), ("b", 0), ("c", 0))] == [[], [], []]
    assert slots.any_free()
    assert slots.free_gpus == []
    slots.free("a")
    assert slots.take("a", 4) == []
