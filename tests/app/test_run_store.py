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
    with sqlite3.connect(path) as conn:
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
    with pytest.raises(TerminalStateError):  # the trigger survived the upgrade
        store._update("old", [RunStatus.SUCCEEDED], {"status": RunStatus.RUNNING})
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert RunStore(path).get("old").status == RunStatus.SUCCEEDED  # reopening migrates nothing twice


def test_columns_are_the_record_fields(store):
    from dataclasses import fields

    columns = [row[1] for row in store._writer.execute("PRAGMA table_info(runs)")]
    assert sorted(columns) == sorted(f.name for f in fields(RunRecord))


def test_a_store_from_a_newer_labrun_is_refused_and_left_untouched(tmp_path):
    from app.store import SCHEMA_VERSION, StoreVersionError

    path = tmp_path / "runs.db"
    RunStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreVersionError, match="newer labrun"):
        RunStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_the_service_refuses_to_start_on_a_newer_store(tmp_path):
    from app.core.config import SettingsError, load_settings
    from app.main import create_app
    from app.statedir import StateDir
    from app.store import SCHEMA_VERSION

    state = StateDir(tmp_path)
    RunStore(state.db).close()
    with sqlite3.connect(state.db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    with pytest.raises(SettingsError, match="LABRUN_OUTPUT_DIR: .*newer labrun"):
        create_app(load_settings(output_dir=tmp_path, gpus=""))
