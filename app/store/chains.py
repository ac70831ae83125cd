"""What run chains read (docs/run-chains.md): the runs that wait for others (``runs.after``), and the state
of the runs and sweeps they wait for. Each read is one query, whatever the number of runs it covers: the
dispatcher asks once per round in which the store changed, never once per run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

from app.store.db import Database

_MAX_PARAMS = 500  # names per IN (...): far below SQLite's bound on parameters


class Waiting(NamedTuple):
    """A queued run that has never started and names what it waits for."""

    name: str
    after: list[dict[str, str]]
    init_from: str | None
    owner: str | None


class RunState(NamedTuple):
    status: str
    deleted: bool


class SweepState(NamedTuple):
    counts: dict[str, int]  # its runs (the latest attempt of each index) by status
    deleted: bool  # one of them was deleted


class ChainStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def waiting(self) -> list[Waiting]:
        """Queued runs with an ``after`` that have never run (a resumed or preempted run's next attempt
        waits for nothing: it started once already), oldest first. Served by the partial index
        ``runs_waiting``: its cost is that of the runs that wait, not of the queue."""
        sql = (
            "SELECT name, after, init_from, owner FROM runs WHERE status = 'queued' AND after IS NOT NULL"
            " AND attempts = 1 ORDER BY seq"
        )
        return [Waiting(r[0], json.loads(r[1]), r[2], r[3]) for r in self._db.rows(sql)]

    def runs(self, names: Sequence[str]) -> dict[str, RunState]:
        """The status of each named run that exists, and whether its files were deleted."""
        found: dict[str, RunState] = {}
        names = sorted(set(names))
        for i in range(0, len(names), _MAX_PARAMS):
            part = names[i : i + _MAX_PARAMS]
            sql = f"SELECT name, status, deleted_at FROM runs WHERE name IN ({','.join('?' * len(part))})"
            for name, status, deleted_at in self._db.rows(sql, part):
                found[name] = RunState(status, deleted_at is not None)
        return found

    def sweeps(self, names: Sequence[str]) -> dict[str, SweepState]:
        """Each named sweep that exists: its runs (the latest attempt of each index) by status."""
        found: dict[str, SweepState] = {}
        names = sorted(set(names))
        for i in range(0, len(names), _MAX_PARAMS):
            part = names[i : i + _MAX_PARAMS]
            marks = ",".join("?" * len(part))
            for (name,) in self._db.rows(f"SELECT name FROM sweeps WHERE name IN ({marks})", part):
                found[name] = SweepState({}, False)
            sql = (
                "SELECT sweep, status, COUNT(*), COUNT(deleted_at) FROM runs r WHERE sweep IN "
                f"({marks}) AND seq = (SELECT MAX(seq) FROM runs o WHERE o.sweep = r.sweep "
                "AND o.sweep_index = r.sweep_index) GROUP BY sweep, status"
            )
            for sweep, status, n, deleted in self._db.rows(sql, part):
                state = found.setdefault(sweep, SweepState({}, False))
                state.counts[status] = n
                if deleted:
                    found[sweep] = SweepState(state.counts, True)
        return found
