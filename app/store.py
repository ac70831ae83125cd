"""RunStore: every run, in SQLite inside the output directory (``<output_dir>/.labrun/runs.db``).

- WAL: readers never block the writer and survive a kill -9 of the service mid-write.
- One writer path: every write goes through this class, under one lock, on one connection.
- Status changes are compare-and-set (``UPDATE ... WHERE status IN (...)``) and stamp their own times;
  a trigger makes terminal statuses final even against a buggy caller.
- Reads use one connection per thread (the event loop reads directly: an indexed lookup is microseconds).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.models import TERMINAL, RunRecord, RunStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL,
    config_name     TEXT NOT NULL,
    overrides       TEXT NOT NULL,
    run_dir         TEXT NOT NULL,
    gpu_need        INTEGER NOT NULL,
    seed            TEXT,
    created_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL,
    exit_code       INTEGER,
    reason          TEXT,
    log_tail        TEXT,
    gpus            TEXT NOT NULL DEFAULT '[]',
    handle          TEXT,
    rerun_of        TEXT,
    idempotency_key TEXT UNIQUE,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    launcher        TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, seq);
CREATE TRIGGER IF NOT EXISTS terminal_is_final BEFORE UPDATE OF status ON runs
WHEN OLD.status IN ('succeeded', 'failed', 'cancelled') AND NEW.status != OLD.status
BEGIN SELECT RAISE(ABORT, 'terminal status is final'); END;
"""

_COLUMNS = (
    "seq, name, status, config_name, overrides, run_dir, gpu_need, seed, created_at, started_at, "
    "finished_at, exit_code, reason, log_tail, gpus, handle, rerun_of, idempotency_key, cancel_requested"
)


class TerminalStateError(RuntimeError):
    """A transition out of a terminal status was attempted."""


class NameTaken(RuntimeError):
    pass


class IdempotencyKeyTaken(RuntimeError):
    pass


class RunStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        self._writer.executescript(SCHEMA)
        columns = {row[1] for row in self._writer.execute("PRAGMA table_info(runs)")}
        if "launcher" not in columns:  # a store from before runs recorded their launcher
            self._writer.execute("ALTER TABLE runs ADD COLUMN launcher TEXT")
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable against a process crash; WAL keeps it fast
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            conn.execute("PRAGMA query_only=1")
        return conn

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()

    # --- reads -------------------------------------------------------------------------------------------

    def get(self, name: str) -> RunRecord | None:
        row = self._reader().execute(f"SELECT {_COLUMNS} FROM runs WHERE name = ?", (name,)).fetchone()
        return _record(row) if row else None

    def get_by_idempotency_key(self, key: str) -> RunRecord | None:
        row = (
            self._reader()
            .execute(f"SELECT {_COLUMNS} FROM runs WHERE idempotency_key = ?", (key,))
            .fetchone()
        )
        return _record(row) if row else None

    def list(self, statuses: Iterable[RunStatus] | None = None, limit: int = 100) -> list[RunRecord]:
        """Newest first."""
        statuses = list(statuses or [])
        if statuses:
            marks = ",".join("?" * len(statuses))
            sql = f"SELECT {_COLUMNS} FROM runs WHERE status IN ({marks}) ORDER BY seq DESC LIMIT ?"
            params: tuple = (*[s.value for s in statuses], limit)
        else:
            sql, params = f"SELECT {_COLUMNS} FROM runs ORDER BY seq DESC LIMIT ?", (limit,)
        return [_record(row) for row in self._reader().execute(sql, params)]

    def count(self, statuses: Iterable[RunStatus] | None = None) -> int:
        statuses = list(statuses or [])
        if not statuses:
            return self._reader().execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        marks = ",".join("?" * len(statuses))
        sql = f"SELECT COUNT(*) FROM runs WHERE status IN ({marks})"
        return self._reader().execute(sql, [s.value for s in statuses]).fetchone()[0]

    def queued(self) -> list[RunRecord]:
        """Queued runs, oldest first (FIFO)."""
        sql = f"SELECT {_COLUMNS} FROM runs WHERE status = 'queued' ORDER BY seq"
        return [_record(row) for row in self._reader().execute(sql)]

    def running(self) -> list[RunRecord]:
        sql = f"SELECT {_COLUMNS} FROM runs WHERE status = 'running' ORDER BY seq"
        return [_record(row) for row in self._reader().execute(sql)]

    def launcher_of(self, name: str) -> str | None:
        """The launcher that started the run (None: not started, or recorded before this was kept)."""
        row = self._reader().execute("SELECT launcher FROM runs WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def running_elsewhere(self, launcher: str) -> list[tuple[str, str]]:
        """(name, launcher) of the running runs another launcher started."""
        sql = (
            "SELECT name, launcher FROM runs WHERE status = 'running' AND launcher IS NOT NULL"
            " AND launcher != ? ORDER BY seq"
        )
        return [(row[0], row[1]) for row in self._reader().execute(sql, (launcher,))]

    def queue_position(self, record: RunRecord) -> int | None:
        if record.status != RunStatus.QUEUED:
            return None
        sql = "SELECT COUNT(*) FROM runs WHERE status = 'queued' AND seq <= ?"
        return self._reader().execute(sql, (record.seq,)).fetchone()[0]

    def queue_positions(self) -> dict[str, int]:
        sql = "SELECT name FROM runs WHERE status = 'queued' ORDER BY seq"
        return {row[0]: i for i, row in enumerate(self._reader().execute(sql), start=1)}

    # --- writes (the one writer path) ------------------------------------------------------------------

    def insert(self, record: RunRecord) -> RunRecord:
        """Store a new queued run. Raises NameTaken or IdempotencyKeyTaken; sets ``record.seq``."""
        values = (
            record.name,
            RunStatus.QUEUED.value,
            record.config_name,
            json.dumps(record.overrides),
            record.run_dir,
            record.gpu_need,
            json.dumps(record.seed),
            record.created_at,
            record.rerun_of,
            record.idempotency_key,
        )
        sql = (
            "INSERT INTO runs (name, status, config_name, overrides, run_dir, gpu_need, seed, created_at,"
            " rerun_of, idempotency_key) VALUES (?,?,?,?,?,?,?,?,?,?)"
        )
        with self._write_lock:
            try:
                cursor = self._writer.execute(sql, values)
            except sqlite3.IntegrityError as exc:
                if "idempotency_key" in str(exc):
                    raise IdempotencyKeyTaken(record.idempotency_key) from None
                raise NameTaken(record.name) from None
        record.seq, record.status = cursor.lastrowid, RunStatus.QUEUED
        return record

    def assign_gpus(self, name: str, gpus: list[int]) -> bool:
        """Note a queued run's GPUs before its launch (a restart then knows what a found run holds)."""
        return self._update(name, [RunStatus.QUEUED], {"gpus": json.dumps(gpus)})

    def mark_running(
        self,
        name: str,
        handle: str,
        gpus: list[int],
        started_at: float | None = None,
        launcher: str | None = None,
    ) -> bool:
        fields = {
            "status": RunStatus.RUNNING.value,
            "handle": handle,
            "gpus": json.dumps(gpus),
            "started_at": started_at or time.time(),
            "launcher": launcher,
        }
        return self._update(name, [RunStatus.QUEUED], fields)

    def request_cancel(self, name: str, requested: bool = True) -> bool:
        """Note that a running run is being cancelled, so its end counts as a cancel even across a restart."""
        return self._update(name, [RunStatus.RUNNING], {"cancel_requested": int(requested)})

    def finish(
        self,
        name: str,
        expected: Iterable[RunStatus],
        status: RunStatus,
        exit_code: int | None = None,
        reason: str | None = None,
        log_tail: str | None = None,
    ) -> bool:
        """Move a run from one of ``expected`` to the terminal ``status``; False if it was not there."""
        if status not in TERMINAL:
            raise ValueError(f"{status} is not a terminal status")
        fields = {
            "status": status.value,
            "exit_code": exit_code,
            "reason": reason,
            "log_tail": log_tail,
            "finished_at": time.time(),
        }
        return self._update(name, expected, fields)

    def _update(self, name: str, expected: Iterable[RunStatus], fields: dict[str, Any]) -> bool:
        expected = list(expected)
        if any(s in TERMINAL for s in expected) and "status" in fields:
            raise TerminalStateError(f"cannot move run {name!r} out of a terminal status")
        assignments = ", ".join(f"{column} = ?" for column in fields)
        marks = ",".join("?" * len(expected))
        sql = f"UPDATE runs SET {assignments} WHERE name = ? AND status IN ({marks})"
        params = (*fields.values(), name, *[s.value for s in expected])
        with self._write_lock:
            try:
                return self._writer.execute(sql, params).rowcount == 1
            except sqlite3.IntegrityError as exc:
                raise TerminalStateError(str(exc)) from None


def _record(row: tuple) -> RunRecord:
    (
        seq,
        name,
        status,
        config_name,
        overrides,
        run_dir,
        gpu_need,
        seed,
        created_at,
        started_at,
        finished_at,
        exit_code,
        reason,
        log_tail,
        gpus,
        handle,
        rerun_of,
        idempotency_key,
        cancel_requested,
    ) = row
    return RunRecord(
        seq=seq,
        name=name,
        status=RunStatus(status),
        config_name=config_name,
        overrides=json.loads(overrides),
        run_dir=run_dir,
        gpu_need=gpu_need,
        seed=json.loads(seed) if seed else None,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        exit_code=exit_code,
        reason=reason,
        log_tail=log_tail,
        gpus=json.loads(gpus),
        handle=handle,
        rerun_of=rerun_of,
        idempotency_key=idempotency_key,
        cancel_requested=bool(cancel_requested),
    )
