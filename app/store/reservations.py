"""The ``reservations`` table (GPUs booked for a window, ``app/reservations.py``) and ``reservation_grants``
(each user's own grant of them, set by an admin).

A booking is checked against the others and stored under one lock in the lifecycle's room
(``app/lifecycle/reservations.py``), so two bookings never take the same GPU for overlapping windows.
A notice of a reservation (it starts soon, it started, it ended) is one event in the notifications outbox,
written in the transaction that notes it as told: told once, across restarts too.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Sequence
from typing import Any

from app.reservations import Grant, Reservation
from app.store.db import Database, Row

_COLUMNS = "id, owner, users, gpus, start_at, end_at, created_at, ended_at, ended_by, note, told"


def _reservation(row: Row) -> Reservation:
    id, owner, users, gpus, start_at, end_at, created_at, ended_at, ended_by, note, told = row
    return Reservation(
        id=int(id),
        owner=owner,
        users=tuple(json.loads(users)),
        gpus=tuple(int(g) for g in json.loads(gpus)),
        start_at=float(start_at),
        end_at=float(end_at),
        created_at=float(created_at),
        ended_at=ended_at,
        ended_by=ended_by,
        note=note,
        told=tuple(json.loads(told)),
    )


class ReservationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self,
        owner: str,
        users: Sequence[str],
        gpus: Sequence[int],
        start_at: float,
        end_at: float,
        note: str | None,
    ) -> Reservation:
        sql = (
            "INSERT INTO reservations (owner, users, gpus, start_at, end_at, created_at, note)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        params = (owner, json.dumps(list(users)), json.dumps(list(gpus)), start_at, end_at, time.time(), note)
        cursor = self._db.write(sql, params)
        found = self.get(int(cursor.lastrowid or 0))
        assert found is not None
        return found

    def get(self, id: int) -> Reservation | None:
        row = self._db.one(f"SELECT {_COLUMNS} FROM reservations WHERE id = ?", (id,))
        return _reservation(row) if row else None

    def current(self, now: float) -> builtins.list[Reservation]:
        """Those not over at ``now`` (not ended early, and their end still ahead), by their start."""
        sql = (
            f"SELECT {_COLUMNS} FROM reservations WHERE ended_at IS NULL AND end_at > ? ORDER BY start_at, id"
        )
        return [_reservation(r) for r in self._db.rows(sql, (now,))]

    def untold_ends(self, now: float) -> builtins.list[Reservation]:
        """Reservations over (ended early or past their end) whose end was not told yet."""
        sql = (
            f"SELECT {_COLUMNS} FROM reservations WHERE (ended_at IS NOT NULL OR end_at <= ?)"
            " AND told NOT LIKE '%\"ended\"%'"
        )
        return [_reservation(r) for r in self._db.rows(sql, (now,))]

    def list(self, since: float | None, limit: int = 500) -> builtins.list[Reservation]:
        """Newest window first; ``since``: only those whose window (or early end) is after it."""
        where = "" if since is None else "WHERE COALESCE(ended_at, end_at) > ?"
        sql = f"SELECT {_COLUMNS} FROM reservations {where} ORDER BY start_at DESC, id DESC LIMIT ?"
        params: tuple[Any, ...] = (limit,) if since is None else (since, limit)
        return [_reservation(r) for r in self._db.rows(sql, params)]

    def end(self, id: int, at: float, by: str) -> bool:
        """Ended early (its GPUs are free from ``at``). False: it was over already."""
        sql = "UPDATE reservations SET ended_at = ?, ended_by = ? WHERE id = ? AND ended_at IS NULL AND end_at > ?"
        return self._db.write(sql, (at, by, id, at)).rowcount == 1

    def tell(
        self, reservation: Reservation, notice: str, kind: str, owner: str | None, body: dict[str, Any]
    ) -> bool:
        """Note ``notice`` as told and write its event (``owner`` None: one of the server's, for the admins)
        in one transaction; False (and nothing written) when it was told already."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT told FROM reservations WHERE id = ?", (reservation.id,)).fetchone()
            told = builtins.list(json.loads(row[0])) if row else [notice]
            if notice in told:
                return False
            conn.execute(
                "UPDATE reservations SET told = ? WHERE id = ?", (json.dumps([*told, notice]), reservation.id)
            )
            conn.execute(
                "INSERT INTO events (kind, subject, owner, created_at, body) VALUES (?, ?, ?, ?, ?)",
                (kind, f"reservation:{reservation.id}", owner, time.time(), json.dumps(body)),
            )
        return True

    # --- grants -------------------------------------------------------------------------------------------

    def grant(self, name: str) -> Grant | None:
        row = self._db.one(
            "SELECT gpu_hours, max_window_s, ahead_s FROM reservation_grants WHERE name = ?", (name,)
        )
        return Grant(*row) if row else None

    def set_grant(self, name: str, grant: Grant) -> None:
        """The user's own grant (a None part: the server's)."""
        self._db.write(
            "INSERT OR REPLACE INTO reservation_grants (name, gpu_hours, max_window_s, ahead_s) VALUES (?,?,?,?)",
            (name, grant.gpu_hours, grant.max_window_s, grant.ahead_s),
        )
