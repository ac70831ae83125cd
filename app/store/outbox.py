"""Notifications in the store (``app/notify/``): the outbox of events, users' destinations, their choices,
and one delivery row per event and destination.

- Events are written by triggers (migration 9) inside the transaction that moves a run to a final status,
  whichever path ends it (a run's end, a cancel, a refusal at dispatch, recovery): an event exists if and
  only if the status change was stored. Each has an ``id`` a receiver can use to drop a repeat.
- The worker fans an event out (its delivery rows, and the event marked fanned out) in one transaction,
  then sends each due delivery and records the outcome; a kill -9 in between leaves them pending.
- Destination URLs are kept sealed (encrypted, ``app/notify/sealing.py``); the store never sees them in
  clear, and ``label`` is the masked form shown back to users.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.store.db import Database, Row


@dataclass(frozen=True)
class Event:
    seq: int
    id: str
    kind: str
    subject: str
    owner: str | None
    created_at: float
    body: dict[str, Any]


@dataclass(frozen=True)
class Destination:
    id: int
    owner: str
    kind: str
    label: str
    sealed: bytes
    created_at: float
    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_sent_at: float | None = None
    paused_at: float | None = None
    events: builtins.list[str] | None = None  # its own filter (None: every event its owner's runs send)


@dataclass(frozen=True)
class Delivery:
    event: Event
    destination: Destination
    tries: int


_DEST = (
    "id, owner, kind, label, sealed, created_at, failures, last_error, last_error_at, last_sent_at, paused_at"
)
_EVENT = "seq, id, kind, subject, owner, created_at, body"


def _event(row: Row) -> Event:
    seq, id, kind, subject, owner, created_at, body = row
    return Event(seq, id, kind, subject, owner, created_at, json.loads(body))


def _filter(id: int) -> str:
    return f"@destination:{id}"


def _destination(row: Row) -> Destination:
    return Destination(*row)


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- destinations -------------------------------------------------------------------------------------

    def add_destination(self, owner: str, kind: str, label: str, sealed: bytes) -> Destination:
        sql = (
            "INSERT INTO notify_destinations (owner, kind, label, sealed, created_at) VALUES (?, ?, ?, ?, ?)"
        )
        cursor = self._db.write(sql, (owner, kind, label, sealed, time.time()))
        found = self.destination(int(cursor.lastrowid or 0))
        assert found is not None
        return found

    def destination(self, id: int) -> Destination | None:
        row = self._db.one(f"SELECT {_DEST} FROM notify_destinations WHERE id = ?", (id,))
        return _destination(row) if row else None

    def destinations(self, owner: str) -> builtins.list[Destination]:
        sql = f"SELECT {_DEST} FROM notify_destinations WHERE owner = ? ORDER BY id"
        return [_destination(r) for r in self._db.rows(sql, (owner,))]

    def remove_destination(self, owner: str, id: int) -> bool:
        """Also drops its pending deliveries and its filter (one transaction)."""
        with self._db.transaction() as conn:
            gone = conn.execute("DELETE FROM notify_destinations WHERE id = ? AND owner = ?", (id, owner))
            if gone.rowcount:
                conn.execute("DELETE FROM deliveries WHERE destination = ? AND state = 'pending'", (id,))
                conn.execute("DELETE FROM notify_choices WHERE subject = ?", (_filter(id),))
        return bool(gone.rowcount)

    def destination_worked(self, id: int) -> None:
        """A delivery (or a test) got through: failures forgotten, a pause lifted."""
        sql = "UPDATE notify_destinations SET failures = 0, paused_at = NULL, last_sent_at = ? WHERE id = ?"
        self._db.write(sql, (time.time(), id))

    def destination_failed(self, id: int, error: str, pause_after: int) -> bool:
        """Count a failed try; pauses the destination at ``pause_after`` in a row. True if now paused."""
        now = time.time()
        sql = (
            "UPDATE notify_destinations SET failures = failures + 1, last_error = ?, last_error_at = ?,"
            " paused_at = CASE WHEN failures + 1 >= ? THEN COALESCE(paused_at, ?) ELSE paused_at END"
            " WHERE id = ?"
        )
        self._db.write(sql, (error, now, pause_after, now, id))
        found = self.destination(id)
        return found is not None and found.paused_at is not None

    def filters(self, ids: Sequence[int]) -> dict[int, builtins.list[str]]:
        """The destinations' own event filters, of those of ``ids`` that have one. Kept with the runs' and
        sweeps' choices, under a subject no run or sweep can have (``@destination:<id>``)."""
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        sql = f"SELECT subject, events FROM notify_choices WHERE subject IN ({marks})"
        rows = self._db.rows(sql, [_filter(id) for id in ids])
        return {int(subject.rsplit(":", 1)[1]): list(json.loads(events)) for subject, events in rows}

    def set_filter(self, id: int, events: Sequence[str] | None) -> None:
        if events is None:
            self._db.write("DELETE FROM notify_choices WHERE subject = ?", (_filter(id),))
        else:
            self.set_choice(_filter(id), events)

    # --- choices ------------------------------------------------------------------------------------------

    def defaults(self, owner: str) -> builtins.list[str] | None:
        row = self._db.one("SELECT events FROM notify_defaults WHERE owner = ?", (owner,))
        return list(json.loads(row[0])) if row else None

    def set_defaults(self, owner: str, events: Sequence[str]) -> None:
        sql = "INSERT OR REPLACE INTO notify_defaults (owner, events) VALUES (?, ?)"
        self._db.write(sql, (owner, json.dumps(list(events))))

    def choice(self, subject: str) -> builtins.list[str] | None:
        """The events a run or sweep was submitted with (``"notify": [...]``), if it chose."""
        row = self._db.one("SELECT events FROM notify_choices WHERE subject = ?", (subject,))
        return list(json.loads(row[0])) if row else None

    def set_choice(self, subject: str, events: Sequence[str]) -> None:
        sql = "INSERT OR REPLACE INTO notify_choices (subject, events) VALUES (?, ?)"
        self._db.write(sql, (subject, json.dumps(list(events))))

    # --- events and deliveries ----------------------------------------------------------------------------

    def add_event(self, kind: str, subject: str, body: dict[str, Any]) -> int:
        """An event of the server itself (no run's status change to share a transaction with): one insert,
        a transaction of its own, with no owner. Its seq."""
        sql = "INSERT INTO events (kind, subject, owner, created_at, body) VALUES (?, ?, NULL, ?, ?)"
        cursor = self._db.write(sql, (kind, subject, time.time(), json.dumps(body)))
        return int(cursor.lastrowid or 0)

    def add_run_event(self, kind: str, subject: str, owner: str | None, body: dict[str, Any]) -> int:
        """A run's event that no status change writes (the time limit is near): its owner's, its seq."""
        sql = "INSERT INTO events (kind, subject, owner, created_at, body) VALUES (?, ?, ?, ?, ?)"
        cursor = self._db.write(sql, (kind, subject, owner, time.time(), json.dumps(body)))
        return int(cursor.lastrowid or 0)

    def has_run_event(self, kind: str, subject: str, attempt: int) -> bool:
        """Whether an event of ``kind`` was written for this attempt of the run (told once, restarts too)."""
        sql = (
            "SELECT 1 FROM events WHERE kind = ? AND subject = ? AND json_extract(body, '$.attempt') = ?"
            " LIMIT 1"
        )
        return self._db.one(sql, (kind, subject, attempt)) is not None

    def last_events(self, kinds: Sequence[str]) -> builtins.list[Event]:
        """The last event of each subject among events of ``kinds`` (the server's conditions as last told)."""
        marks = ", ".join("?" for _ in kinds)
        sql = (
            f"SELECT {_EVENT} FROM events WHERE seq IN"
            f" (SELECT MAX(seq) FROM events WHERE owner IS NULL AND kind IN ({marks}) GROUP BY subject)"
        )
        return [_event(r) for r in self._db.rows(sql, tuple(kinds))]

    def events_to_fan_out(self, limit: int = 200) -> builtins.list[Event]:
        sql = f"SELECT {_EVENT} FROM events WHERE fanned_out = 0 ORDER BY seq LIMIT ?"
        return [_event(r) for r in self._db.rows(sql, (limit,))]

    def event(self, seq: int) -> Event | None:
        row = self._db.one(f"SELECT {_EVENT} FROM events WHERE seq = ?", (seq,))
        return _event(row) if row else None

    def events_of(self, subject: str) -> builtins.list[Event]:
        sql = f"SELECT {_EVENT} FROM events WHERE subject = ? ORDER BY seq"
        return [_event(r) for r in self._db.rows(sql, (subject,))]

    def fan_out(self, plan: Sequence[tuple[int, Sequence[int]]]) -> None:
        """(event seq, destination ids) for each event: its deliveries, and the event marked fanned out,
        all in one transaction (a crash leaves the events to fan out again, never half done)."""
        now = time.time()
        with self._db.transaction() as conn:
            for seq, destinations in plan:
                conn.executemany(
                    "INSERT OR IGNORE INTO deliveries (event, destination, next_at) VALUES (?, ?, ?)",
                    [(seq, d, now) for d in destinations],
                )
                conn.execute("UPDATE events SET fanned_out = 1 WHERE seq = ?", (seq,))

    def due(self, now: float, limit: int = 100) -> builtins.list[Delivery]:
        """Pending deliveries whose time has come, to destinations not paused, oldest first."""
        sql = (
            f"SELECT d.tries, {', '.join('e.' + c.strip() for c in _EVENT.split(','))},"
            f" {', '.join('n.' + c.strip() for c in _DEST.split(','))}"
            " FROM deliveries d JOIN events e ON e.seq = d.event JOIN notify_destinations n ON n.id = d.destination"
            " WHERE d.state = 'pending' AND d.next_at <= ? AND n.paused_at IS NULL ORDER BY d.next_at LIMIT ?"
        )
        found = []
        for row in self._db.rows(sql, (now, limit)):
            event, destination = _event(row[1:8]), _destination(row[8:])
            found.append(Delivery(event, destination, int(row[0])))
        return found

    def next_due_at(self) -> float | None:
        row = self._db.one("SELECT MIN(next_at) FROM deliveries WHERE state = 'pending'")
        return float(row[0]) if row and row[0] is not None else None

    def delivered(self, event: int, destination: int) -> None:
        """The delivery sent, and its destination's failures forgotten (a pause lifted): one transaction."""
        now = time.time()
        sql = "UPDATE deliveries SET state = 'sent', tries = tries + 1, done_at = ?, last_error = NULL"
        with self._db.transaction() as conn:
            conn.execute(f"{sql} WHERE event = ? AND destination = ?", (now, event, destination))
            conn.execute(
                "UPDATE notify_destinations SET failures = 0, paused_at = NULL, last_sent_at = ? WHERE id = ?",
                (now, destination),
            )

    def retry_later(self, event: int, destination: int, at: float, error: str, give_up: bool) -> None:
        state = "failed" if give_up else "pending"
        sql = "UPDATE deliveries SET tries = tries + 1, next_at = ?, last_error = ?, state = ?, done_at = ?"
        done = time.time() if give_up else None
        self._db.write(
            f"{sql} WHERE event = ? AND destination = ?", (at, error, state, done, event, destination)
        )

    def deliveries_of(self, event: int) -> builtins.list[dict[str, Any]]:
        sql = "SELECT destination, state, tries, last_error FROM deliveries WHERE event = ? ORDER BY destination"
        keys = ("destination", "state", "tries", "last_error")
        return [dict(zip(keys, row, strict=True)) for row in self._db.rows(sql, (event,))]

    def counts(self) -> dict[str, int]:
        """Deliveries by state, and events not yet fanned out (for tests and the bench)."""
        found = {
            row[0]: int(row[1])
            for row in self._db.rows("SELECT state, COUNT(*) FROM deliveries GROUP BY state")
        }
        row = self._db.one("SELECT COUNT(*) FROM events WHERE fanned_out = 0")
        found["unfanned"] = int(row[0]) if row else 0
        return found
