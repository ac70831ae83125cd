"""The ``attempts`` table: the finished earlier attempts of resumed runs (POST /runs/{name}/resume).

A run's current attempt is its row in ``runs``; when a failed or cancelled run goes back to the queue, the
attempt that ended is copied here first, in the same transaction (``RunStore.requeue_attempt``).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from app.store.db import Database

_FIELDS = ("attempt", "status", "exit_code", "reason", "started_at", "finished_at")


class AttemptStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def of(self, name: str) -> list[dict[str, Any]]:
        """The finished earlier attempts of a run, first first."""
        sql = f"SELECT {', '.join(_FIELDS)} FROM attempts WHERE name = ? ORDER BY attempt"
        return [dict(zip(_FIELDS, row, strict=True)) for row in self._db.rows(sql, (name,))]

    @staticmethod
    def keep_ended(conn: sqlite3.Connection, name: str) -> bool:
        """In the caller's transaction: copy the run's ended attempt here; False (nothing copied) unless the
        run is failed or cancelled and its files are still there."""
        sql = (
            "INSERT INTO attempts (name, attempt, status, exit_code, reason, log_tail, started_at, finished_at)"
            " SELECT name, attempts, status, exit_code, reason, log_tail, started_at, finished_at FROM runs"
            " WHERE name = ? AND status IN ('failed', 'cancelled') AND deleted_at IS NULL"
        )
        return conn.execute(sql, (name,)).rowcount == 1
