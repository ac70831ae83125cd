"""RunStore: every run, in SQLite inside the output directory (``StateDir.db``).

- WAL: readers never block the writer and survive a kill -9 of the service mid-write.
- One writer path: every write goes through this class, under one lock, on one connection.
- Status changes are compare-and-set (``UPDATE ... WHERE status IN (...)``) and stamp their own times;
  a trigger makes terminal statuses final even against a buggy caller.
- Reads use one connection per thread (the event loop reads directly: an indexed lookup is microseconds).
- The table's columns are the fields of ``RunRecord``, in order (``COLUMNS``); the schema itself is the sum
  of the numbered ``MIGRATIONS``, tracked in SQLite's ``user_version``. A store newer than this code is
  refused rather than misread.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any, NamedTuple

from app.errors import InsufficientStorage, StoreUnavailable
from app.models import TERMINAL, RunRecord, RunStatus

# Each step moves the schema one version up; never edit a released step, append a new one.
MIGRATIONS: tuple[str, ...] = (
    # 1: the runs table
    """
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
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, seq);
    CREATE TRIGGER IF NOT EXISTS terminal_is_final BEFORE UPDATE OF status ON runs
    WHEN OLD.status IN ('succeeded', 'failed', 'cancelled') AND NEW.status != OLD.status
    BEGIN SELECT RAISE(ABORT, 'terminal status is final'); END;
    """,
    # 2: each run records the launcher that started it
    "ALTER TABLE runs ADD COLUMN launcher TEXT;",
    # 3: the resource estimate made at submission (data bytes, parameter count, ...)
    "ALTER TABLE runs ADD COLUMN resources TEXT;",
    # 4: disk usage, and deleted runs (files gone, record kept)
    """
    ALTER TABLE runs ADD COLUMN disk_bytes INTEGER;
    ALTER TABLE runs ADD COLUMN deleted_at REAL;
    ALTER TABLE runs ADD COLUMN deleted_by TEXT;
    """,
    # 5: users and their tokens (hashes only), who owns and who cancelled a run
    """
    CREATE TABLE users (
        name        TEXT PRIMARY KEY,
        is_admin    INTEGER NOT NULL DEFAULT 0,
        token_hash  TEXT,
        created_at  REAL NOT NULL,
        revoked_at  REAL,
        max_gpus    INTEGER,
        max_queued  INTEGER,
        max_run_s   REAL
    );
    ALTER TABLE runs ADD COLUMN owner TEXT;
    ALTER TABLE runs ADD COLUMN cancelled_by TEXT;
    CREATE INDEX runs_by_owner ON runs (owner, status, seq);
    """,
    # 6: sweeps (app/sweeps.py): one row per sweep, and each run's sweep and place in it
    """
    CREATE TABLE sweeps (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        name            TEXT NOT NULL UNIQUE,
        owner           TEXT,
        config_name     TEXT NOT NULL,
        overrides       TEXT NOT NULL,
        swept           TEXT NOT NULL,
        size            INTEGER NOT NULL,
        run_dir         TEXT NOT NULL,
        created_at      REAL NOT NULL,
        idempotency_key TEXT UNIQUE
    );
    ALTER TABLE runs ADD COLUMN sweep TEXT;
    ALTER TABLE runs ADD COLUMN sweep_index INTEGER;
    CREATE INDEX runs_by_sweep ON runs (sweep, sweep_index) WHERE sweep IS NOT NULL;
    """,
    # 7: resume: a failed or cancelled run may go back to the queue as its next attempt; each finished
    # attempt is kept in ``attempts`` first, and the trigger allows exactly that move out of a final status.
    """
    ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE attempts (
        name        TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        status      TEXT NOT NULL,
        exit_code   INTEGER,
        reason      TEXT,
        log_tail    TEXT,
        started_at  REAL,
        finished_at REAL,
        PRIMARY KEY (name, attempt)
    );
    DROP TRIGGER terminal_is_final;
    CREATE TRIGGER terminal_is_final BEFORE UPDATE OF status ON runs
    WHEN OLD.status IN ('succeeded', 'failed', 'cancelled') AND NEW.status != OLD.status
         AND NOT (OLD.status IN ('failed', 'cancelled') AND NEW.status = 'queued'
                  AND NEW.attempts = OLD.attempts + 1)
    BEGIN SELECT RAISE(ABORT, 'terminal status is final'); END;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

COLUMNS = tuple(f.name for f in fields(RunRecord))
MEMO_ROWS = 4096  # decoded rows kept (a few MB): the pages clients poll, and every queued and running run
_SELECT = ", ".join(COLUMNS)
# How a field is kept in its column, where that is not the value itself.
_JSON = frozenset({"overrides", "seed", "gpus", "resources"})


def _encode(column: str, value: Any) -> Any:
    if column in _JSON:
        return json.dumps(value)
    if column == "status":
        return RunStatus(value).value
    if column == "cancel_requested":
        return int(value)
    return value


def _json(value: Any) -> Any:
    return json.loads(value) if value else None


# Column position -> how its value becomes the field's (the others are the value itself). Polling reads
# dozens of rows per request: converting only these columns keeps a row at a few microseconds.
_DECODERS = tuple(
    (i, _json if c in _JSON else RunStatus if c == "status" else bool)
    for i, c in enumerate(COLUMNS)
    if c in _JSON or c in ("status", "cancel_requested")
)


def _record(row: tuple) -> RunRecord:
    values = list(row)
    for i, decode in _DECODERS:
        values[i] = decode(values[i])
    record = RunRecord(*values)
    if record.gpus is None:
        record.gpus = []
    return record


class QueueEntry(NamedTuple):
    seq: int
    name: str
    owner: str | None
    gpu_need: int
    started_at: float | None


class TerminalStateError(RuntimeError):
    """A transition out of a terminal status was attempted."""


class NameTaken(RuntimeError):
    pass


class IdempotencyKeyTaken(RuntimeError):
    pass


class StoreVersionError(RuntimeError):
    """The store was written by a newer labrun: this code would misread it."""


class RunStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        try:
            migrate(self._writer)
        except BaseException:
            self._writer.close()
            raise
        self._local = threading.local()
        self._version = 0  # bumped by every write: what was read before may be stale
        self._counts: dict[tuple, tuple[int, int]] = {}
        self._decoded: dict[tuple, RunRecord] = {}  # a row, as read -> its record (see ``_select``)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable against a process crash; WAL keeps it fast
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _reader(self) -> sqlite3.Connection | _LockedReads:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._connect()
                conn.execute("PRAGMA query_only=1")
            except sqlite3.Error:  # the output directory is gone (unmounted, moved): the open writer still
                return _LockedReads(self._writer, self._write_lock)  # reads, so answers keep coming
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._write_lock:
            # Fold the write-ahead log into runs.db, so that after a clean stop the file alone holds every
            # write (a copy of it is whole). SQLite does this itself only when the last connection closes,
            # and the readers' connections are still open.
            # A store that cannot be written now keeps its log; the next start folds it in.
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._writer.close()

    # --- reads -------------------------------------------------------------------------------------------

    def _select(self, where: str = "", params: Iterable[Any] = (), tail: str = "") -> list[RunRecord]:
        """Records are decoded once per row content: a row read again unchanged (the same page polled by
        many clients) gives the same ``RunRecord`` object, which callers treat as read-only (they change a
        record with ``dataclasses.replace``). Decoding a row's JSON columns was most of a page's cost."""
        sql = f"SELECT {_SELECT} FROM runs {where} {tail}"
        memo, records = self._decoded, []
        for row in self._reader().execute(sql, tuple(params)):
            record = memo.get(row)
            if record is None:
                record = _record(row)
                if len(memo) >= MEMO_ROWS:  # dict operations are atomic: readers on many threads are safe
                    memo.clear()
                memo[row] = record
            records.append(record)
        return records

    def get(self, name: str) -> RunRecord | None:
        found = self._select("WHERE name = ?", (name,))
        return found[0] if found else None

    def get_by_idempotency_key(self, key: str) -> RunRecord | None:
        found = self._select("WHERE idempotency_key = ?", (key,))
        return found[0] if found else None

    def list(
        self,
        statuses: Iterable[RunStatus] | None = None,
        limit: int = 100,
        before: int | None = None,
        owner: str | None = None,
    ) -> list[RunRecord]:
        """Newest first; ``before``: only runs older than that ``seq`` (keyset paging: the cost of a page
        does not grow with how many came before it)."""
        where, params = _filter(statuses, owner)
        if before is not None:
            where = f"{where} AND seq < ?" if where else "WHERE seq < ?"
            params = [*params, before]
        return self._select(where, params, f"ORDER BY seq DESC LIMIT {int(limit)}")

    def count(self, statuses: Iterable[RunStatus] | None = None, owner: str | None = None) -> int:
        """How many runs match. Cached until the next write: with years of runs stored, counting costs
        milliseconds, and listing pages asks for it on every poll."""
        where, params = _filter(statuses, owner)
        key, version = (where, tuple(params)), self._version
        hit = self._counts.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        n = self._reader().execute(f"SELECT COUNT(*) FROM runs {where}", params).fetchone()[0]
        if len(self._counts) > 256:
            self._counts.clear()
        self._counts[key] = (version, n)
        return n

    def in_sweep(self, sweep: str) -> list[RunRecord]:
        """A sweep's runs (every attempt), by index, oldest attempt first."""
        return self._select("WHERE sweep = ?", (sweep,), "ORDER BY sweep_index, seq")

    def ended_since(self, since: float) -> list[RunRecord]:
        """Runs that ran and ended after ``since`` (fair share's history)."""
        return self._select("WHERE finished_at > ? AND started_at IS NOT NULL", (since,))

    def set_owner_of_unowned(self, owner: str) -> int:
        """Runs from before users existed get ``owner`` (LABRUN_LEGACY_OWNER)."""
        return self.write("UPDATE runs SET owner = ? WHERE owner IS NULL", (owner,))

    def queued(self) -> list[RunRecord]:
        """Queued runs, oldest first (FIFO)."""
        return self._select("WHERE status = 'queued'", tail="ORDER BY seq")

    def running(self) -> list[RunRecord]:
        return self._select("WHERE status = 'running'", tail="ORDER BY seq")

    def entries(self, status: RunStatus) -> list[QueueEntry]:
        """What fair share needs of the queued (or running) runs, oldest first: a few columns, no decoding
        (the dispatcher and queue positions read the whole queue; a thousand full records cost ~15 ms)."""
        sql = "SELECT seq, name, owner, gpu_need, started_at FROM runs WHERE status = ? ORDER BY seq"
        return [QueueEntry(*row) for row in self._reader().execute(sql, (RunStatus(status).value,))]

    def running_elsewhere(self, launcher: str) -> list[tuple[str, str]]:
        """(name, launcher) of the running runs another launcher started."""
        sql = (
            "SELECT name, launcher FROM runs WHERE status = 'running' AND launcher IS NOT NULL"
            " AND launcher != ? ORDER BY seq"
        )
        return [(row[0], row[1]) for row in self._reader().execute(sql, (launcher,))]

    def started_since(self, seq: int) -> list[tuple[int, float, float, int]]:
        """(seq, created_at, started_at, gpu_need) of the runs after ``seq`` that have started."""
        sql = (
            "SELECT seq, created_at, started_at, gpu_need FROM runs WHERE seq > ? AND started_at IS NOT NULL"
        )
        return [tuple(row) for row in self._reader().execute(sql, (seq,))]

    def last_seq(self) -> int:
        return self._reader().execute("SELECT COALESCE(MAX(seq), 0) FROM runs").fetchone()[0]

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
        record.status = RunStatus.QUEUED
        columns = [c for c in COLUMNS if c != "seq"]
        values = [_encode(c, getattr(record, c)) for c in columns]
        sql = f"INSERT INTO runs ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})"
        try:
            cursor = self._write(sql, values)
        except sqlite3.IntegrityError as exc:
            if "idempotency_key" in str(exc):
                raise IdempotencyKeyTaken(record.idempotency_key) from None
            raise NameTaken(record.name) from None
        record.seq = cursor.lastrowid
        return record

    def insert_many(
        self, records: list[RunRecord], also: Iterable[tuple[str, Iterable[Any]]] = ()
    ) -> list[RunRecord]:
        """Store new queued runs, and the ``also`` statements (a sweep's own row), in ONE transaction: all
        of them or none, also across a kill -9 (SQLite's journal). Raises NameTaken or
        IdempotencyKeyTaken (nothing stored then); sets each ``record.seq``."""
        columns = [c for c in COLUMNS if c != "seq"]
        sql = f"INSERT INTO runs ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})"
        with self._write_lock:
            self._version += 1
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                try:
                    for statement, params in also:
                        self._writer.execute(statement, tuple(params))
                    for record in records:
                        record.status = RunStatus.QUEUED
                        values = [_encode(c, getattr(record, c)) for c in columns]
                        record.seq = self._writer.execute(sql, values).lastrowid
                    self._writer.execute("COMMIT")
                except BaseException:
                    if self._writer.in_transaction:  # SQLite may have rolled back itself (a full disk)
                        self._writer.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError as exc:
                if "idempotency_key" in str(exc):
                    raise IdempotencyKeyTaken(str(exc)) from None
                raise NameTaken(str(exc)) from None
            except sqlite3.OperationalError as exc:
                raise _store_error(exc) from None
            finally:
                self._version += 1
        return records

    def assign_gpus(self, name: str, gpus: list[int]) -> bool:
        """Note a queued run's GPUs before its launch (a restart then knows what a found run holds)."""
        return self._update(name, [RunStatus.QUEUED], {"gpus": gpus})

    def mark_running(
        self,
        name: str,
        handle: str,
        gpus: list[int],
        started_at: float | None = None,
        launcher: str | None = None,
    ) -> bool:
        fields = {
            "status": RunStatus.RUNNING,
            "handle": handle,
            "gpus": gpus,
            "started_at": started_at or time.time(),
            "launcher": launcher,
        }
        return self._update(name, [RunStatus.QUEUED], fields)

    def requeue_attempt(self, name: str) -> bool:
        """A failed or cancelled run goes back to the queue as its next attempt; the attempt that ended is
        kept in ``attempts`` (one transaction: both or neither). False if the run was not failed/cancelled."""
        keep = (
            "INSERT INTO attempts (name, attempt, status, exit_code, reason, log_tail, started_at, finished_at)"
            " SELECT name, attempts, status, exit_code, reason, log_tail, started_at, finished_at FROM runs"
            " WHERE name = ? AND status IN ('failed', 'cancelled') AND deleted_at IS NULL"
        )
        again = (
            "UPDATE runs SET status = 'queued', attempts = attempts + 1, exit_code = NULL, reason = NULL,"
            " log_tail = NULL, started_at = NULL, finished_at = NULL, handle = NULL, gpus = '[]',"
            " cancel_requested = 0, cancelled_by = NULL, launcher = NULL, disk_bytes = NULL"
            " WHERE name = ? AND status IN ('failed', 'cancelled') AND deleted_at IS NULL"
        )
        with self._write_lock:
            self._version += 1
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                try:
                    moved = self._writer.execute(keep, (name,)).rowcount == 1
                    moved = moved and self._writer.execute(again, (name,)).rowcount == 1
                except BaseException:
                    self._writer.execute("ROLLBACK")
                    raise
                self._writer.execute("COMMIT" if moved else "ROLLBACK")
                return moved
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"the run store cannot write right now: {exc}") from None
            finally:
                self._version += 1

    def attempts_of(self, name: str) -> list[dict[str, Any]]:
        """The finished earlier attempts of a run, first first."""
        sql = (
            "SELECT attempt, status, exit_code, reason, started_at, finished_at FROM attempts"
            " WHERE name = ? ORDER BY attempt"
        )
        keys = ("attempt", "status", "exit_code", "reason", "started_at", "finished_at")
        return [dict(zip(keys, row, strict=True)) for row in self.read(sql, (name,))]

    def set_disk_bytes(self, name: str, size: int) -> bool:
        return self._update(name, list(TERMINAL), {"disk_bytes": size})

    def mark_deleted(self, name: str, by: str, at: float | None = None) -> bool:
        """A finished run's files are gone; its record stays (so its name is never reused)."""
        fields = {"deleted_at": at or time.time(), "deleted_by": by, "disk_bytes": 0}
        return self._update(name, list(TERMINAL), fields, extra="AND deleted_at IS NULL")

    def usage(self) -> dict[str, int]:
        """Bytes the runs' files take (as measured when each ended), and how many runs that covers."""
        sql = "SELECT COALESCE(SUM(disk_bytes), 0), COUNT(disk_bytes) FROM runs WHERE deleted_at IS NULL"
        total, measured = self._reader().execute(sql).fetchone()
        deleted = (
            self._reader().execute("SELECT COUNT(*) FROM runs WHERE deleted_at IS NOT NULL").fetchone()[0]
        )
        return {"disk_bytes": total, "runs_measured": measured, "runs_deleted": deleted}

    def largest(self, limit: int = 10) -> list[RunRecord]:
        return self._select(
            "WHERE disk_bytes > 0 AND deleted_at IS NULL", tail=f"ORDER BY disk_bytes DESC LIMIT {int(limit)}"
        )

    def request_cancel(self, name: str, requested: bool = True, by: str | None = None) -> bool:
        """Note that a running run is being cancelled, so its end counts as a cancel even across a restart."""
        return self._update(name, [RunStatus.RUNNING], {"cancel_requested": requested, "cancelled_by": by})

    def finish(
        self,
        name: str,
        expected: Iterable[RunStatus],
        status: RunStatus,
        exit_code: int | None = None,
        reason: str | None = None,
        log_tail: str | None = None,
        cancelled_by: str | None = None,
    ) -> bool:
        """Move a run from one of ``expected`` to the terminal ``status``; False if it was not there."""
        if status not in TERMINAL:
            raise ValueError(f"{status} is not a terminal status")
        fields = {
            "status": status,
            "exit_code": exit_code,
            "reason": reason,
            "log_tail": log_tail,
            "finished_at": time.time(),
        }
        if cancelled_by is not None:
            fields["cancelled_by"] = cancelled_by
        return self._update(name, expected, fields)

    def _update(
        self, name: str, expected: Iterable[RunStatus], fields: dict[str, Any], extra: str = ""
    ) -> bool:
        expected = list(expected)
        if any(s in TERMINAL for s in expected) and "status" in fields:
            raise TerminalStateError(f"cannot move run {name!r} out of a terminal status")
        assignments = ", ".join(f"{column} = ?" for column in fields)
        marks = ",".join("?" * len(expected))
        sql = f"UPDATE runs SET {assignments} WHERE name = ? AND status IN ({marks}) {extra}"
        params = (*(_encode(c, v) for c, v in fields.items()), name, *[s.value for s in expected])
        try:
            return self._write(sql, params).rowcount == 1
        except sqlite3.IntegrityError as exc:
            raise TerminalStateError(str(exc)) from None

    def read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """Rows of a read-only query (for the store's neighbours: users, usage)."""
        return [tuple(row) for row in self._reader().execute(sql, tuple(params))]

    def write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """A write through the one writer path; the number of rows it changed."""
        return self._write(sql, params).rowcount

    def _write(self, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
        """The one writer path. A write SQLite refuses for a reason outside the service (a full disk, a
        read-only filesystem, a locked database) becomes a domain error that names the cause; the caller
        (a request, a watcher) says so or retries."""
        with self._write_lock:
            self._version += 1
            try:
                return self._writer.execute(sql, tuple(params))
            except sqlite3.OperationalError as exc:
                raise _store_error(exc) from None
            finally:
                self._version += 1  # again once written: a count read meanwhile is not kept


def _store_error(exc: sqlite3.OperationalError) -> InsufficientStorage | StoreUnavailable:
    message = str(exc)
    if "full" in message:
        return InsufficientStorage(
            f"the run store cannot write: {message} (the output directory's disk is full); "
            "delete finished runs (DELETE /runs/<name>) or free space on it"
        )
    return StoreUnavailable(f"the run store cannot write right now: {message}")


class _LockedReads:
    """Reads on the writer's connection, one at a time, when no reader can connect."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self.conn, self.lock = conn, lock

    def execute(self, sql: str, params: Iterable[Any] = ()) -> _Rows:
        with self.lock:
            return _Rows(self.conn.execute(sql, tuple(params)).fetchall())


class _Rows(list):
    def fetchone(self) -> Any:
        return self[0] if self else None


def _filter(statuses: Iterable[RunStatus] | None, owner: str | None = None) -> tuple[str, list[str]]:
    values = [RunStatus(s).value for s in statuses or []]
    clauses = [f"status IN ({','.join('?' * len(values))})"] if values else []
    if owner is not None:
        clauses.append("owner = ?")
        values.append(owner)
    return ("WHERE " + " AND ".join(clauses), values) if clauses else ("", [])


def schema_version(conn: sqlite3.Connection) -> int:
    """The store's schema version. Stores written before versions were kept (user_version 0) are read off
    their columns: the migrations they had are exactly those whose columns exist."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version:
        return version
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    if not columns:
        return 0
    return 2 if "launcher" in columns else 1


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the store up to SCHEMA_VERSION, one step per transaction; returns the version it found."""
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise StoreVersionError(
            f"the store {_path(conn)} has schema version {found}, newer than this labrun knows "
            f"({SCHEMA_VERSION}): it was written by a newer labrun. Upgrade labrun, or set "
            "LABRUN_OUTPUT_DIR to another directory"
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.executescript(f"BEGIN; {MIGRATIONS[version - 1]} PRAGMA user_version = {version}; COMMIT;")
    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:  # an unversioned, current store
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return found


def _path(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return row[2] if row else "?"
