"""The store's database: one SQLite file inside the output directory (``StateDir.db``), shared by the
entity stores (runs, attempts, users, sweeps).

- WAL: readers never block the writer and survive a kill -9 of the service mid-write.
- One writer path: every write goes through ``write`` or ``transaction``, under one lock, on one connection.
- Reads use one connection per thread (the event loop reads directly: an indexed lookup is microseconds).
- A write SQLite refuses for a reason outside the service (a full disk, a read-only filesystem, a locked
  database) becomes a domain error that names the cause; the caller (a request, a watcher) says so or
  retries. Integrity errors (a unique name, the terminal-status trigger) are left to the entity stores,
  which know what they mean.
- Opening the database brings its schema up to date (``app/store/migrations.py``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.errors import InsufficientStorage, StoreUnavailable
from app.store.errors import IdempotencyKeyTaken, NameTaken
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
        self._version = 0  # bumped before and after every write: what was read before may be stale

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
            except sqlite3.Error:  # the output directory is gone (unmounted, moved): the open writer still
                return _LockedReads(self._writer, self._write_lock)  # reads, so answers keep coming
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()

    # --- reads -------------------------------------------------------------------------------------------

    def rows(self, sql: str, params: Iterable[Any] = ()) -> Iterator[Row]:
        """The rows of a query, read on this thread's own connection."""
        return iter(self._reader().execute(sql, tuple(params)))

    def one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        """The first row of a query, or None."""
        return next(self.rows(sql, params), None)

    # --- writes (the one writer path) ------------------------------------------------------------------

    def write(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        """One statement (a transaction of its own)."""
        with self._write_lock:
            self._version += 1
            try:
                return self._writer.execute(sql, tuple(params))
            except sqlite3.OperationalError as exc:
                raise _store_error(exc) from None
            finally:
                self._version += 1  # again once written: a count read meanwhile is not kept

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
            except sqlite3.OperationalError as exc:
                raise _store_error(exc) from None
            finally:
                self._version += 1


def _store_error(exc: sqlite3.OperationalError) -> InsufficientStorage | StoreUnavailable:
    message = str(exc)
    if "full" in message:
        return InsufficientStorage(
            f"the run store cannot write: {message} (the output directory's disk is full); "
            "delete finished runs (DELETE /runs/<name>) or free space on it"
        )
    return StoreUnavailable(f"the run store cannot write right now: {message}")


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

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.lock:
            return self.conn.execute(sql, tuple(params)).fetchall()
