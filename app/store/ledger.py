"""What budgets and start estimates read from the run history (``app/budgets.py``,
``app/lifecycle/estimating.py``): the attempts that ran and ended since a time, and how long similar runs
took. Both read through the ``finished_at`` indexes (migration 15): a look costs what ended since the last
one, not the whole history."""

from __future__ import annotations

from typing import NamedTuple

from app.store.db import Database


class Ran(NamedTuple):
    """One attempt that ran and ended: (name, attempt) is its key (a failed attempt that is resumed is
    copied to ``attempts`` and shows in both tables)."""

    name: str
    attempt: int
    owner: str | None
    gpu_need: int
    started_at: float
    finished_at: float


class Took(NamedTuple):
    """A run that succeeded, and how long it ran over all its attempts."""

    name: str
    config_name: str
    overrides: str  # the stored JSON text of its overrides: equal texts, equal requests
    ran_s: float
    finished_at: float


class LedgerStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def ended_since(self, since: float) -> list[Ran]:
        """Attempts that ran and ended at or after ``since``: current attempts (``runs``) and earlier ones
        (``attempts``)."""
        current = (
            "SELECT name, attempts, owner, gpu_need, started_at, finished_at FROM runs"
            " WHERE finished_at >= ? AND started_at IS NOT NULL"
        )
        earlier = (
            "SELECT a.name, a.attempt, r.owner, r.gpu_need, a.started_at, a.finished_at FROM attempts a"
            " JOIN runs r ON r.name = a.name WHERE a.finished_at >= ? AND a.started_at IS NOT NULL"
        )
        rows = [*self._db.rows(current, (since,)), *self._db.rows(earlier, (since,))]
        return [Ran(*row) for row in rows]

    def succeeded_since(self, since: float, limit: int) -> list[Took]:
        """Runs that succeeded at or after ``since``, the latest ``limit`` of them, latest last."""
        sql = (
            "SELECT name, config_name, overrides, finished_at - started_at + ran_s, finished_at FROM runs"
            " WHERE finished_at >= ? AND status = 'succeeded' AND started_at IS NOT NULL"
            f" ORDER BY finished_at DESC LIMIT {int(limit)}"
        )
        return [Took(*row) for row in reversed(list(self._db.rows(sql, (since,))))]

    def waiting_requests(self) -> dict[str, tuple[str, str]]:
        """name -> (config_name, overrides JSON text) of the queued and running runs."""
        sql = "SELECT name, config_name, overrides FROM runs WHERE status IN ('queued', 'running')"
        return {row[0]: (row[1], row[2]) for row in self._db.rows(sql)}
