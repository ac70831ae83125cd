"""RunStore: compare-and-set transitions, final terminal statuses, unique names and idempotency keys."""

from __future__ import annotations

import sqlite3

import pytest
from service_helpers import queued_record

from app.models import RunRecord, RunStatus
from app.store import IdempotencyKeyTaken, NameTaken, RunStore, TerminalStateError


def _record(name: str, key: str | None = None) -> RunRecord:
    return queued_record(name, seed=42, idempotency_key=key)


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs.db")


def test_lifecycle_stamps_times_and_round_trips(store):
    store.insert(_record("a"))
    assert store.get("a").status == RunStatus.QUEUED and store.get("a").started_at is None
    assert store.mark_running("a", "123:456", [1])
    running = store.get("a")
    assert running.status == RunStatus.RUNNING and running.handle == "123:456" and running.gpus == [1]
    assert running.started_at is not None
    assert store.finish("a", [RunStatus.RUNNING], RunStatus.FAILED, 3, "exited with code 3", "tail\n")
    done = store.get("a")
    assert (done.status, done.exit_code, done.reason, done.log_tail) == (
        RunStatus.FAILED,
        3,
        "exited with code 3",
        "tail\n",
    )
    assert done.finished_at >= done.started_at and done.seed == 42 and done.overrides == ["model=fno"]


def test_transitions_are_compare_and_set(store):
    store.insert(_record("a"))
    assert not store.finish("a", [RunStatus.RUNNING], RunStatus.SUCCEEDED)  # it is queued, not running
    assert store.finish("a", [RunStatus.QUEUED], RunStatus.CANCELLED)
    assert not store.mark_running("a", "1:1", [])  # a cancelled run never starts


def test_terminal_statuses_are_final(store):
    store.insert(_record("a"))
    store.finish("a", [RunStatus.QUEUED], RunStatus.SUCCEEDED)
    with pytest.raises(TerminalStateError):
        store.finish("a", [RunStatus.SUCCEEDED], RunStatus.FAILED)
    with pytest.raises(ValueError):
        store.finish("a", [RunStatus.QUEUED], RunStatus.RUNNING)
    raw = sqlite3.connect(store.path)  # even a writer that bypasses the class is refused (trigger)
    with pytest.raises(sqlite3.IntegrityError, match="terminal status is final"):
        raw.execute("UPDATE runs SET status = 'running' WHERE name = 'a'")
    raw.close()
    assert store.get("a").status == RunStatus.SUCCEEDED


def test_names_and_idempotency_keys_are_unique(store):
    store.insert(_record("a", key="k"))
    with pytest.raises(NameTaken):
        store.insert(_record("a"))
    with pytest.raises(IdempotencyKeyTaken):
        store.insert(_record("b", key="k"))
    assert store.get_by_idempotency_key("k").name == "a"


def test_queue_order_positions_and_listing(store):
    for name in "abcd":
        store.insert(_record(name))
    store.mark_running("a", "1:1", [])
    assert [r.name for r in store.queued()] == ["b", "c", "d"]
    assert store.queue_positions() == {"b": 1, "c": 2, "d": 3}
    assert store.queue_position(store.get("c")) == 2 and store.queue_position(store.get("a")) is None
    assert [r.name for r in store.list(limit=2)] == ["d", "c"]
    assert [r.name for r in store.list([RunStatus.RUNNING])] == ["a"]
    assert store.count([RunStatus.QUEUED]) == 3 and store.count() == 4


def test_store_survives_reopening(tmp_path):
    RunStore(tmp_path / "runs.db").insert(_record("a"))
    again = RunStore(tmp_path / "runs.db")
    assert again.get("a").name == "a"
    assert sqlite3.connect(again.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
