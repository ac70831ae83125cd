"""The ``sweeps`` table: one row per sweep (``app/sweeps.py``); its runs are rows of ``runs`` whose
``sweep`` is its name. A sweep's row is stored with its runs, in one transaction (``RunStore.insert_runs``).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from app.models import RunStatus, SweepRecord
from app.store.db import Database, unique_violation

_FIELDS = tuple(f.name for f in fields(SweepRecord))
_SELECT = f"SELECT {', '.join(_FIELDS)} FROM sweeps"
_INSERT = f"INSERT INTO sweeps ({', '.join(_FIELDS[1:])}) VALUES ({','.join('?' * (len(_FIELDS) - 1))})"
_JSON = frozenset({"overrides", "swept"})


class SweepStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, name: str) -> SweepRecord | None:
        row = self._db.one(f"{_SELECT} WHERE name = ?", (name,))
        return _sweep(row) if row else None

    def get_by_idempotency_key(self, key: str) -> SweepRecord | None:
        row = self._db.one(f"{_SELECT} WHERE idempotency_key = ?", (key,))
        return _sweep(row) if row else None

    def list(
        self, limit: int = 50, before: int | None = None, owner: str | None = None
    ) -> builtins.list[SweepRecord]:
        """Newest first; ``before``: only sweeps older than that ``seq`` (keyset paging)."""
        clauses: list[str] = []
        params: list[Any] = []
        if owner is not None:
            clauses.append("owner = ?")
            params.append(owner)
        if before is not None:
            clauses.append("seq < ?")
            params.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.rows(f"{_SELECT} {where} ORDER BY seq DESC LIMIT {int(limit)}", params)
        return [_sweep(row) for row in rows]

    def counts(self, names: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per sweep, its current runs (the latest attempt of each index) by status."""
        found = {n: dict.fromkeys([s.value for s in RunStatus], 0) for n in names}
        if not names:
            return found
        sql = (
            "SELECT sweep, status, COUNT(*) FROM runs r WHERE sweep IN "
            f"({','.join('?' * len(names))}) AND seq = (SELECT MAX(seq) FROM runs o "
            "WHERE o.sweep = r.sweep AND o.sweep_index = r.sweep_index) GROUP BY sweep, status"
        )
        for sweep, status, n in self._db.rows(sql, names):
            found[sweep][status] = n
        return found

    @staticmethod
    def insert(conn: sqlite3.Connection, sweep: SweepRecord) -> None:
        """In the caller's transaction (its runs'): store a new sweep. Raises NameTaken/IdempotencyKeyTaken."""
        values = [json.dumps(getattr(sweep, f)) if f in _JSON else getattr(sweep, f) for f in _FIELDS[1:]]
        try:
            conn.execute(_INSERT, values)
        except sqlite3.IntegrityError as exc:
            raise unique_violation(exc, sweep.name, sweep.idempotency_key) from None


def _sweep(row: tuple[Any, ...]) -> SweepRecord:
    values = dict(zip(_FIELDS, row, strict=True))
    for field in _JSON:
        values[field] = json.loads(values[field])
    return SweepRecord(**values)
