"""The store's database: one SQLite file inside the output directory (``StateDir.db``), shared by the
entity stores (runs, attempts, users, sweeps).

- WAL: readers never block the writer and survive a kill -9 of the service mid-write.
- One writer path: every write goes through ``write`` or ``transaction``, under one lock, on one connection.
- Reads use one connection per thread (the event loop reads directly: an indexed lookup is microseconds).
- A read or write SQLite refuses for a reason outside the service (a full disk, a read-only filesystem, a
  locked database, a damaged page) becomes a domain error that names the cause (507 or 503, never a 500);
  the caller (a request, a watcher) says so or retries. The last write problem is kept until a write
  succeeds, for /healthz. Integrity errors (a unique name, the terminal-status trigger) are left to the
  entity stores, which know what they mean.
- Opening the database brings its schema up to date (``app/store/migrations.py``); ``check`` is SQLite's
  quick check, which the service runs before it starts.
- A clean close checkpoints the write-ahead log into the database file, so that the file alone holds
  everything (a backup that copies only it loses nothing).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from app.errors import InsufficientStorage, StoreUnavailable
from app.store.errors import IdempotencyKeyTaken, NameTaken, StoreDamaged
from app.store.migrations import migrate

Row = tuple[Any, ...]


class Rollback(Exception):
    """Raised inside ``Database.transaction()``: undo the transaction and carry on (nothing is raised)."""


class Database:
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
        self._readers: list[sqlite3.Connection] = []  # every thread's, closed with the store
        self._readers_lock = threading.Lock()
        self._version = 0  # bumped before and after every write: what was read before may be stale
        self._write_problem: str | None = None  # why the last write failed, until one succeeds

    @property
    def version(self) -> int:
        """Changes with every write: a value read at one version is current while it stays the same."""
        return self._version

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
                with self._readers_lock:
                    self._readers.append(conn)
            except sqlite3.Error:  # the output directory is gone (unmounted, moved): the open writer still
                return _LockedReads(self._writer, self._write_lock)  # reads, so answers keep coming
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Checkpoint the write-ahead log into the file (best effort: a read-only or full disk keeps it in
        the log, where the next start finds it), then close."""
        with self._write_lock:
            with self._readers_lock:
                for reader in self._readers:  # their files, not left to the garbage collector
                    reader.close()
                self._readers.clear()
            with suppress(sqlite3.Error):
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._writer.close()

    def check(self) -> None:
        """SQLite's quick check of every page (linear in the file's size; see bench/store_bench.py).
        Raises StoreDamaged naming what it found."""
        try:
            found = [row[0] for row in self._writer.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as exc:
            found = [str(exc)]
        if found != ["ok"]:
            raise StoreDamaged("; ".join(found))

    def write_problem(self) -> str | None:
        """Why the store cannot be written now, if it cannot: the last write's failure (until a write
        succeeds), else a file or folder of the store that is not writable (cheap: no write is tried)."""
        if self._write_problem:
            return self._write_problem
        return _unwritable(self.path)

    # --- reads -------------------------------------------------------------------------------------------

    def rows(self, sql: str, params: Iterable[Any] = ()) -> Iterator[Row]:
        """The rows of a query, read on this thread's own connection (all of them: an error is raised here,
        as StoreUnavailable, not halfway through the caller's loop)."""
        try:
            return iter(self._reader().execute(sql, tuple(params)).fetchall())
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(
                f"the run store cannot be read right now: {_why(exc, self.path)}"
            ) from None

    def one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        """The first row of a query, or None."""
        return next(self.rows(sql, params), None)

    # --- writes (the one writer path) ------------------------------------------------------------------

    def write(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        """One statement (a transaction of its own)."""
        with self._write_lock:
            self._version += 1
            try:
                cursor = self._writer.execute(sql, tuple(params))
            except sqlite3.IntegrityError:
                raise
            except sqlite3.DatabaseError as exc:
                raise self._failed(exc) from None
            finally:
                self._version += 1  # again once written: a count read meanwhile is not kept
            self._write_problem = None
            return cursor

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``with db.transaction() as conn:`` the statements on ``conn`` are stored all or none, also across
        a kill -9 (SQLite's journal). An exception undoes them and is raised again; ``Rollback`` undoes
        them quietly."""
        with self._write_lock:
            self._version += 1
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                try:
                    yield self._writer
                except BaseException:
                    if self._writer.in_transaction:  # SQLite may have rolled back itself (a full disk)
                        self._writer.execute("ROLLBACK")
                    raise
                self._writer.execute("COMMIT")
            except Rollback:
                pass
            except sqlite3.IntegrityError:
                raise
            except sqlite3.DatabaseError as exc:
                raise self._failed(exc) from None
            else:
                self._write_problem = None
            finally:
                self._version += 1

    def _failed(self, exc: sqlite3.DatabaseError) -> InsufficientStorage | StoreUnavailable:
        """A refused write as the domain error that names its cause (kept for /healthz)."""
        why = _why(exc, self.path)
        self._write_problem = why
        if "full" in str(exc):
            return InsufficientStorage(
                f"the run store cannot be written: {why} (the output directory's disk is full); "
                "delete finished runs (DELETE /runs/<name>) or free space on it"
            )
        return StoreUnavailable(f"the run store cannot be written: {why}")


def _why(exc: sqlite3.DatabaseError, path: Path) -> str:
    """SQLite's message, with the cause it leaves out: which of the store's files cannot be written ("disk
    I/O error" is what SQLite says of a read-only write-ahead log), or a damaged file."""
    message = str(exc)
    unwritable = _unwritable(path)
    if unwritable:
        return f"{unwritable} ({message})"
    if "malformed" in message or "not a database" in message:
        return (
            f"the store file {path} is damaged ({message}); stop the service and restore the latest "
            "backup (see the operations docs)"
        )
    return message


def _unwritable(path: Path) -> str | None:
    """The store's folder or a file of it that exists and this process may not write, if any."""
    for candidate in (
        path.parent,
        path,
        path.with_name(path.name + "-wal"),
        path.with_name(path.name + "-shm"),
    ):
        if candidate.exists() and not os.access(candidate, os.W_OK):
            kind = "folder" if candidate.is_dir() else "file"
            return f"the {kind} {candidate} is read-only for the service (uid {os.getuid()})"
    return None


def unique_violation(
    exc: sqlite3.IntegrityError, name: str, key: str | None
) -> NameTaken | IdempotencyKeyTaken:
    """What a refused insert of ``name`` (with Idempotency-Key ``key``) means: its key or its name is taken."""
    if "idempotency_key" in str(exc):
        return IdempotencyKeyTaken(key)
    return NameTaken(name)


class _LockedReads:
    """Reads on the writer's connection, one at a time, when no reader can connect."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self.conn, self.lock = conn, lock

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Fetched:
        with self.lock:
            return _Fetched(self.conn.execute(sql, tuple(params)).fetchall())


class _Fetched(list[Row]):
    """Rows already read, answering ``fetchall`` as a cursor does."""

    def fetchall(self) -> list[Row]:
        return self
