"""The store: compare-and-set transitions, final terminal statuses, unique names and idempotency keys, one
insert path for a run and a sweep's runs, frozen records, and migrations from every older schema."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from contextlib import closing

import pytest
from service_helpers import queued_record

from app.models import RunRecord, RunStatus, SweepRecord
from app.store import IdempotencyKeyTaken, NameTaken, RunStore, TerminalStateError


def _record(name: str, key: str | None = None) -> RunRecord:
    return queued_record(name, seed=42, idempotency_key=key)


@pytest.fixture
def store(tmp_path) -> Iterator[RunStore]:
    opened = RunStore(tmp_path / "runs.db")
    yield opened
    opened.close()


def _sweep(name: str, key: str | None = None) -> SweepRecord:
    return SweepRecord(0, name, "alice", "neuraloperator", ["seed=1,2"], ["seed"], 2, f"d/{name}", 1.0, key)


def test_lifecycle_stamps_times_and_round_trips(store):
    store.insert(_record("a"))
    assert store.get("a").status == RunStatus.QUEUED
    assert store.get("a").started_at is None
    assert store.mark_running("a", "123:456", [1])
    running = store.get("a")
    assert running.status == RunStatus.RUNNING
    assert running.handle == "123:456"
    assert running.gpus == [1]
    assert running.started_at is not None
    assert store.finish("a", [RunStatus.RUNNING], RunStatus.FAILED, 3, "exited with code 3", "tail\n")
    done = store.get("a")
    assert (done.status, done.exit_code, done.reason, done.log_tail) == (
        RunStatus.FAILED,
        3,
        "exited with code 3",
        "tail\n",
    )
    assert done.finished_at >= done.started_at
    assert done.seed == 42
    assert done.overrides == ["model=fno"]


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
    with pytest.raises(ValueError, match="not a terminal status"):
        store.finish("a", [RunStatus.QUEUED], RunStatus.RUNNING)
    # even a writer that bypasses the store is refused (the trigger)
    with closing(sqlite3.connect(store.path)) as raw, pytest.raises(sqlite3.IntegrityError, match="final"):
        raw.execute("UPDATE runs SET status = 'running' WHERE name = 'a'")
    assert store.get("a").status == RunStatus.SUCCEEDED


def test_names_and_idempotency_keys_are_unique(store):
    store.insert(_record("a", key="k"))
    with pytest.raises(NameTaken):
        store.insert(_record("a"))
    with pytest.raises(IdempotencyKeyTaken):
        store.insert(_record("b", key="k"))
    assert store.get_by_idempotency_key("k").name == "a"


def test_queue_order_and_listing(store):
    for name in "abcd":
        store.insert(_record(name))
    store.mark_running("a", "1:1", [])
    assert [r.name for r in store.queued()] == ["b", "c", "d"]
    assert [r.name for r in store.list(limit=2)] == ["d", "c"]
    assert [r.name for r in store.list([RunStatus.RUNNING])] == ["a"]
    assert store.count([RunStatus.QUEUED]) == 3
    assert store.count() == 4


def test_insert_returns_the_stored_record_and_records_are_frozen(store):
    given = dataclasses.replace(
        _record("a"), status=RunStatus.FAILED
    )  # a new run is queued, whatever it says
    stored = store.insert(given)
    assert (stored.status, stored.seq) == (RunStatus.QUEUED, 1)
    assert stored.name == "a"
    assert (given.status, given.seq) == (RunStatus.FAILED, 0)  # the caller's record is not changed
    assert store.get("a") == stored
    with pytest.raises(dataclasses.FrozenInstanceError):
        store.get("a").status = RunStatus.RUNNING  # type: ignore[misc]


def test_a_sweep_is_stored_with_its_runs_or_not_at_all(store):
    runs = [queued_record(f"s-{i}", sweep="s", sweep_index=i) for i in range(2)]
    stored = store.insert_runs(runs, _sweep("s", key="alice:k"))
    assert [(r.name, r.seq, r.sweep_index) for r in stored] == [("s-0", 1, 0), ("s-1", 2, 1)]
    assert store.sweeps.get("s").swept == ["seed"]
    assert store.sweeps.get_by_idempotency_key("alice:k").name == "s"
    assert store.sweeps.counts(["s"])["s"]["queued"] == 2
    with pytest.raises(NameTaken, match="^s$"):  # the sweep's name is taken: none of its runs is stored
        store.insert_runs([queued_record("t-0", sweep="s")], _sweep("s"))
    with pytest.raises(IdempotencyKeyTaken):
        store.insert_runs([queued_record("u-0", sweep="u")], _sweep("u", key="alice:k"))
    with pytest.raises(NameTaken):  # one run's name is taken: neither the sweep nor its other runs
        store.insert_runs([queued_record("v-0"), queued_record("s-1")], _sweep("v"))
    assert store.count() == 2
    assert [s.name for s in store.sweeps.list()] == ["s"]
    assert store.get("t-0") is None
    assert store.get("v-0") is None
    assert store.sweeps.get("v") is None


def test_set_attempts_counts_a_running_runs_attempts_up_only(store):
    store.insert(_record("a"))
    assert not store.set_attempts("a", 2)  # queued: not started, not requeued by an engine
    store.mark_running("a", "1:1", [])
    assert store.set_attempts("a", 3)
    assert store.get("a").attempts == 3
    assert not store.set_attempts("a", 2)
    assert store.get("a").attempts == 3
    assert not store.set_attempts("a", 3)


def test_store_survives_reopening(tmp_path):
    first = RunStore(tmp_path / "runs.db")
    first.insert(_record("a"))
    first.close()
    again = RunStore(tmp_path / "runs.db")
    assert again.get("a").name == "a"
    with closing(sqlite3.connect(again.path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


# The schema exactly as labrun wrote it before stores were versioned (user_version 0), with a launcher
# column (added by the last unversioned release) and without (the release before).
_UNVERSIONED = """
CREATE TABLE runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, status TEXT NOT NULL,
    config_name TEXT NOT NULL, overrides TEXT NOT NULL, run_dir TEXT NOT NULL, gpu_need INTEGER NOT NULL,
    seed TEXT, created_at REAL NOT NULL, started_at REAL, finished_at REAL, exit_code INTEGER, reason TEXT,
    log_tail TEXT, gpus TEXT NOT NULL DEFAULT '[]', handle TEXT, rerun_of TEXT, idempotency_key TEXT UNIQUE,
    cancel_requested INTEGER NOT NULL DEFAULT 0{launcher}
);
CREATE INDEX runs_by_status ON runs (status, seq);
CREATE TRIGGER terminal_is_final BEFORE UPDATE OF status ON runs
WHEN OLD.status IN ('succeeded', 'failed', 'cancelled') AND NEW.status != OLD.status
BEGIN SELECT RAISE(ABORT, 'terminal status is final'); END;
INSERT INTO runs (name, status, config_name, overrides, run_dir, gpu_need, seed, created_at, gpus, handle)
VALUES ('old', 'running', 'neuraloperator', '["model=fno"]', '2026-01-01/old', 0, '42', 1.0, '[]', '1:2');
"""


@pytest.mark.parametrize("launcher_column", [True, False])
def test_an_unversioned_store_is_upgraded_and_keeps_its_runs(tmp_path, launcher_column):
    from app.store import SCHEMA_VERSION

    path = tmp_path / "runs.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(_UNVERSIONED.format(launcher=", launcher TEXT" if launcher_column else ""))
    store = RunStore(path)
    old = store.get("old")
    assert (old.status, old.overrides, old.seed, old.handle, old.launcher) == (
        RunStatus.RUNNING,
        ["model=fno"],
        42,
        "1:2",
        None,
    )
    assert store.finish("old", [RunStatus.RUNNING], RunStatus.SUCCEEDED, 0)
    store.close()
    with closing(sqlite3.connect(path)) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="terminal status is final"):  # the trigger survived
            conn.execute("UPDATE runs SET status = 'running' WHERE name = 'old'")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    again = RunStore(path)
    assert again.get("old").status == RunStatus.SUCCEEDED  # reopening migrates nothing twice
    again.close()


def _versioned_store(path, version: int) -> None:
    """A store exactly as the labrun of schema ``version`` left it, with one run that had started."""
    from app.store.migrations import MIGRATIONS

    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for step in range(1, version + 1):
            conn.executescript(f"BEGIN; {MIGRATIONS[step - 1]} PRAGMA user_version = {step}; COMMIT;")
        conn.execute(
            "INSERT INTO runs (name, status, config_name, overrides, run_dir, gpu_need, seed, created_at,"
            " started_at, gpus, handle) VALUES ('old', 'running', 'neuraloperator', '[\"model=fno\"]',"
            " '2026-01-01/old', 1, '42', 1.0, 2.0, '[0]', '1:2')"
        )


def _all_older_versions() -> list[int]:
    from app.store import SCHEMA_VERSION

    return list(range(1, SCHEMA_VERSION))


@pytest.mark.parametrize("version", _all_older_versions())
def test_a_store_of_every_older_version_is_upgraded_and_works(tmp_path, version):
    from app.store import SCHEMA_VERSION

    path = tmp_path / "runs.db"
    _versioned_store(path, version)
    store = RunStore(path)
    try:
        old = store.get("old")
        assert (old.status, old.overrides, old.seed, old.gpus, old.attempts) == (
            RunStatus.RUNNING,
            ["model=fno"],
            42,
            [0],
            1,
        )
        assert store.set_owner_of_unowned("legacy") == 1
        assert store.get("old").owner == "legacy"
        assert store.finish("old", [RunStatus.RUNNING], RunStatus.FAILED, 1)
        assert store.requeue_attempt("old")
        assert store.attempts_of("old")[0]["status"] == "failed"
        store.insert_runs([queued_record("new-0", sweep="s", sweep_index=0)], _sweep("s"))
        assert store.sweeps.counts(["s"])["s"]["queued"] == 1
        assert store.count() == 2
        store.users.add("alice", True, "hash", 1.0)
        assert store.users.get("alice").is_admin
    finally:
        store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_columns_are_the_record_fields(store):
    from dataclasses import fields

    with closing(sqlite3.connect(store.path)) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    assert sorted(columns) == sorted(f.name for f in fields(RunRecord))


def test_a_store_from_a_newer_labrun_is_refused_and_left_untouched(tmp_path):
    from app.store import SCHEMA_VERSION, StoreVersionError

    path = tmp_path / "runs.db"
    RunStore(path).close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreVersionError, match="newer labrun"):
        RunStore(path)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_the_service_refuses_to_start_on_a_newer_store(tmp_path):
    from app.core.config import SettingsError, load_settings
    from app.main import create_app
    from app.statedir import StateDir
    from app.store import SCHEMA_VERSION

    state = StateDir(tmp_path)
    RunStore(state.db).close()
    with closing(sqlite3.connect(state.db)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    with pytest.raises(SettingsError, match="LABRUN_OUTPUT_DIR: .*newer labrun"):
        create_app(load_settings(output_dir=tmp_path, gpus=""))
