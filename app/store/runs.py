"""RunStore: every run, in the ``runs`` table of the store's database (``app/store/db.py``).

- Status changes are compare-and-set (``UPDATE ... WHERE status IN (...)``) and stamp their own times;
  a trigger makes terminal statuses final even against a buggy caller.
- New runs are stored by one path (``insert_runs``): one run, or a sweep's runs with the sweep's own row,
  in one transaction.
- Records are decoded once per row content and shared among readers (they are frozen).

``RunStore(path)`` opens the database; the other entities' stores share it: ``store.users``,
``store.sweeps``, ``store.attempts``, ``store.chains``.
"""

from __future__ import annotations

import builtins
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from app.models import TERMINAL, RunRecord, RunStatus, SweepRecord
from app.store import run_overrides, run_rows
from app.store.attempts import AttemptStore
from app.store.chains import ChainStore
from app.store.db import Database, Rollback, Row, unique_violation
from app.store.errors import TerminalStateError
from app.store.gpus import GpuStore
from app.store.ledger import LedgerStore
from app.store.outbox import OutboxStore
from app.store.reservations import ReservationStore
from app.store.sweeps import SweepStore
from app.store.users import UserStore

SELECTS_KEPT = 1024  # queries' answers kept at the current version (each a few records, shared with the memo)
MEMO_ROWS = 4096  # decoded rows kept (a few MB): the pages clients poll, and every queued and running run


class QueueEntry(NamedTuple):
    seq: int
    name: str
    owner: str | None
    gpu_need: int
    started_at: float | None
    priority: str = "normal"  # its class (app.models.Priority's value)
    time_limit_s: float | None = None  # its time limit over all its attempts (None: none)
    ran_s: float = 0.0  # running time of its attempts before the current one


class RunStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path)
        self.users = UserStore(self._db)
        self.sweeps = SweepStore(self._db)
        self.attempts = AttemptStore(self._db)
        self.gpus = GpuStore(self._db)  # the GPU guard's tables (app/gpus/)
        self.outbox = OutboxStore(self._db)  # notifications (app/notify/)
        self.chains = ChainStore(self._db)  # what waiting runs wait for (app/lifecycle/dependencies.py)
        self.ledger = LedgerStore(self._db)  # what ran, for budgets and start estimates
        self.reservations = ReservationStore(self._db)  # GPUs booked for a window (app/reservations.py)
        run_overrides.backfill(self._db)  # runs stored before the override index existed (once)
        self._counts: dict[tuple[str, tuple[Any, ...]], tuple[int, int]] = {}
        self._decoded: dict[Row, RunRecord] = {}  # a row, as read -> its record (see ``_select``)
        # (where, params, tail) -> (store version, records): a query's answer at a version (see ``_select``)
        self._selected: dict[tuple[str, tuple[Any, ...], str], tuple[int, tuple[RunRecord, ...]]] = {}

    def close(self) -> None:
        self._db.close()

    def check(self) -> None:
        """SQLite's quick check of the whole file; raises StoreDamaged."""
        self._db.check()

    @property
    def version(self) -> int:
        """Changes with every write of this process: what was read at one version is current while it stays."""
        return self._db.version

    def write_problem(self) -> str | None:
        """Why the store cannot be written now (for /healthz), or None."""
        return self._db.write_problem()

    # --- reads -------------------------------------------------------------------------------------------

    def _select(
        self, where: str = "", params: Iterable[Any] = (), tail: str = ""
    ) -> builtins.list[RunRecord]:
        """Records are decoded once per row content: a row read again unchanged (the same page polled by
        many clients) gives the same (frozen) ``RunRecord`` object. Decoding a row's JSON columns was most
        of a page's cost.

        A query asked again at the same ``version`` is answered from what it gave last time, without
        SQLite: only this process writes runs (through the one writer path, which changes the version
        before and after each write), so nothing it read can have changed. Reading the rows again was
        most of a polled page's time. A read that starts while a write is under way is not kept."""
        params = tuple(params)
        key, version = (where, params, tail), self._db.version
        hit = self._selected.get(key)
        if hit is not None and hit[0] == version:
            return builtins.list(hit[1])  # a copy: callers may slice or extend what they get
        records = self._read(where, params, tail)
        if version % 2 == 0:  # no write was under way when the version was read
            if len(self._selected) >= SELECTS_KEPT:
                self._selected.clear()
            self._selected[key] = (version, tuple(records))
        return records

    def _read(self, where: str, params: tuple[Any, ...], tail: str) -> builtins.list[RunRecord]:
        memo, records = self._decoded, []
        for row in self._db.rows(f"SELECT {run_rows.SELECT} FROM runs {where} {tail}", params):
            record = memo.get(row)
            if record is None:
                record = run_rows.decode(row)
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
        asked: Sequence[tuple[str, str]] = (),
    ) -> builtins.list[RunRecord]:
        """Newest first; ``before``: only runs older than that ``seq`` (keyset paging: the cost of a page
        does not grow with how many came before it); ``asked``: only runs asked every (key, value_norm)
        (``app/override_values.py``)."""
        where, params = _filter(statuses, owner, asked)
        if before is not None:
            where = f"{where} AND seq < ?" if where else "WHERE seq < ?"
            params = [*params, before]
        return self._select(where, params, f"ORDER BY seq DESC LIMIT {int(limit)}")

    def count(
        self,
        statuses: Iterable[RunStatus] | None = None,
        owner: str | None = None,
        asked: Sequence[tuple[str, str]] = (),
    ) -> int:
        """How many runs match. Cached until the next write: with years of runs stored, counting costs
        milliseconds, and listing pages asks for it on every poll."""
        where, params = _filter(statuses, owner, asked)
        key, version = (where, tuple(params)), self._db.version
        hit = self._counts.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        n = _int(self._db.one(f"SELECT COUNT(*) FROM runs {where}", params))
        if len(self._counts) > 256:
            self._counts.clear()
        self._counts[key] = (version, n)
        return n

    def in_sweep(self, sweep: str) -> builtins.list[RunRecord]:
        """A sweep's runs (every attempt), by index, oldest attempt first."""
        return self._select("WHERE sweep = ?", (sweep,), "ORDER BY sweep_index, seq")

    def ended_since(self, since: float) -> builtins.list[RunRecord]:
        """Runs that ran and ended after ``since`` (fair share's history)."""
        return self._select("WHERE finished_at > ? AND started_at IS NOT NULL", (since,))

    def queued(self) -> builtins.list[RunRecord]:
        """Queued runs, oldest first (FIFO)."""
        return self._select("WHERE status = 'queued'", tail="ORDER BY seq")

    def running(self) -> builtins.list[RunRecord]:
        return self._select("WHERE status = 'running'", tail="ORDER BY seq")

    def entries(self, status: RunStatus) -> builtins.list[QueueEntry]:
        """What fair share needs of the queued (or running) runs, oldest first: a few columns, no decoding
        (the dispatcher and queue positions read the whole queue; a thousand full records cost ~15 ms)."""
        sql = (
            "SELECT seq, name, owner, gpu_need, started_at, priority, time_limit_s, ran_s FROM runs"
            " WHERE status = ? ORDER BY seq"
        )
        return [QueueEntry(*row) for row in self._db.rows(sql, (RunStatus(status).value,))]

    def running_elsewhere(self, launcher: str) -> builtins.list[tuple[str, str]]:
        """(name, launcher) of the running runs another launcher started."""
        sql = (
            "SELECT name, launcher FROM runs WHERE status = 'running' AND launcher IS NOT NULL"
            " AND launcher != ? ORDER BY seq"
        )
        return [(row[0], row[1]) for row in self._db.rows(sql, (launcher,))]

    def started_since(self, seq: int) -> builtins.list[tuple[int, float, float, int]]:
        """(seq, created_at, started_at, gpu_need) of the runs after ``seq`` that have started."""
        sql = (
            "SELECT seq, created_at, started_at, gpu_need FROM runs WHERE seq > ? AND started_at IS NOT NULL"
        )
        return [(row[0], row[1], row[2], row[3]) for row in self._db.rows(sql, (seq,))]

    def last_seq(self) -> int:
        return _int(self._db.one("SELECT COALESCE(MAX(seq), 0) FROM runs"))

    def attempts_of(self, name: str) -> builtins.list[dict[str, Any]]:
        """The finished earlier attempts of a run, first first."""
        return self.attempts.of(name)

    def usage(self) -> dict[str, int]:
        """Bytes the runs' files take (as measured when each ended), and how many runs that covers."""
        sql = "SELECT COALESCE(SUM(disk_bytes), 0), COUNT(disk_bytes) FROM runs WHERE deleted_at IS NULL"
        total, measured = self._db.one(sql) or (0, 0)
        deleted = _int(self._db.one("SELECT COUNT(*) FROM runs WHERE deleted_at IS NOT NULL"))
        return {"disk_bytes": total, "runs_measured": measured, "runs_deleted": deleted}

    def largest(self, limit: int = 10) -> builtins.list[RunRecord]:
        return self._select(
            "WHERE disk_bytes > 0 AND deleted_at IS NULL", tail=f"ORDER BY disk_bytes DESC LIMIT {int(limit)}"
        )

    # --- writes ------------------------------------------------------------------------------------------

    def insert(self, record: RunRecord) -> RunRecord:
        """Store a new queued run (``insert_runs`` of one): the stored record, with its ``seq``."""
        return self.insert_runs([record])[0]

    def insert_runs(
        self, records: Sequence[RunRecord], sweep: SweepRecord | None = None
    ) -> builtins.list[RunRecord]:
        """Store new queued runs, and the sweep they make up (its own row), in ONE transaction: all of them
        or none, also across a kill -9 (SQLite's journal). Raises NameTaken or IdempotencyKeyTaken (nothing
        stored then). Returns the stored records (queued, each with its ``seq``)."""
        stored = []
        with self._db.transaction() as conn:
            if sweep is not None:
                self.sweeps.insert(conn, sweep)
            for record in records:
                try:
                    cursor = conn.execute(run_rows.INSERT, run_rows.new_row(record))
                except sqlite3.IntegrityError as exc:
                    raise unique_violation(exc, record.name, record.idempotency_key) from None
                seq = _rowid(cursor)
                run_overrides.write(conn, seq, record.overrides, record.default_overrides)
                stored.append(replace(record, seq=seq, status=RunStatus.QUEUED))
        return stored

    def set_owner_of_unowned(self, owner: str) -> int:
        """Runs from before users existed get ``owner`` (LABRUN_LEGACY_OWNER)."""
        return self._db.write("UPDATE runs SET owner = ? WHERE owner IS NULL", (owner,)).rowcount

    def assign_gpus(self, name: str, gpus: builtins.list[int]) -> bool:
        """Note a queued run's GPUs before its launch (a restart then knows what a found run holds)."""
        return self._update(name, [RunStatus.QUEUED], {"gpus": gpus})

    def mark_running(
        self,
        name: str,
        handle: str,
        gpus: builtins.list[int],
        started_at: float | None = None,
        launcher: str | None = None,
    ) -> bool:
        fields = {
            "status": RunStatus.RUNNING,
            "handle": handle,
            "gpus": gpus,
            "started_at": started_at or time.time(),
            "launcher": launcher,
            "preempted_by": None,  # a new attempt: no preemption of it is under way
        }
        return self._update(name, [RunStatus.QUEUED], fields)

    def set_attempts(self, name: str, started: int) -> bool:
        """A running run the engine requeued (a preemption) has been started ``started`` times: its attempt
        count goes up to that (never down). False if it is not running or already counted that far."""
        sql = "UPDATE runs SET attempts = ? WHERE name = ? AND status = 'running' AND attempts < ?"
        return self._db.write(sql, (started, name, started)).rowcount == 1

    def requeue_attempt(self, name: str, continuation_s: float | None = None) -> bool:
        """A failed or cancelled run goes back to the queue as its next attempt; the attempt that ended is
        kept in ``attempts`` (one transaction: both or neither). False if the run was not failed/cancelled.
        ``continuation_s``: the running time its next attempts may have (its time limit becomes what it has
        run plus that); None: no limit."""
        ran = "ran_s + MAX(0, COALESCE(finished_at - started_at, 0))"
        again = (
            "UPDATE runs SET status = 'queued', attempts = attempts + 1, exit_code = NULL, reason = NULL,"
            f" ran_s = {ran}, time_limit_s = ? + {ran}, log_tail = NULL,"
            " started_at = NULL, finished_at = NULL, handle = NULL, gpus = '[]',"
            " cancel_requested = 0, cancelled_by = NULL, launcher = NULL, disk_bytes = NULL"
            " WHERE name = ? AND status IN ('failed', 'cancelled') AND deleted_at IS NULL"
        )
        moved = False
        with self._db.transaction() as conn:
            moved = (
                self.attempts.keep_ended(conn, name)
                and conn.execute(again, (continuation_s, name)).rowcount == 1
            )
            if not moved:
                raise Rollback
        return moved

    def set_stall_after(self, name: str, seconds: float) -> bool:
        """A running run's own stall limit (an extension, app/lifecycle/stalls.py); False if it is not running."""
        return self._update(name, [RunStatus.RUNNING], {"stall_after_s": seconds})

    def set_time_limit(self, name: str, seconds: float | None) -> bool:
        """A queued or running run's new time limit (seconds over all its attempts; None: none)."""
        return self._update(name, [RunStatus.QUEUED, RunStatus.RUNNING], {"time_limit_s": seconds})

    def request_preempt(self, name: str, by_class: str | None) -> bool:
        """Note that a running run is being preempted for a waiting run of ``by_class`` (None: no longer),
        so that its end counts as a preemption even across a restart."""
        return self._update(name, [RunStatus.RUNNING], {"preempted_by": by_class})

    def requeue_preempted(
        self, name: str, reason: str, exit_code: int | None, log_tail: str | None, ended_at: float
    ) -> bool:
        """A preempted run goes back to the queue as its next attempt, keeping its ``seq`` (its place in the
        queue); the attempt that ended is kept in ``attempts`` as "preempted", with ``reason`` (which the
        run's record shows too until it ends). One transaction: both or neither. False if it was not
        running."""
        keep = (
            "INSERT INTO attempts (name, attempt, status, exit_code, reason, log_tail, started_at, finished_at)"
            " SELECT name, attempts, 'preempted', ?, ?, ?, started_at, ? FROM runs"
            " WHERE name = ? AND status = 'running'"
        )
        again = (
            "UPDATE runs SET status = 'queued', attempts = attempts + 1, exit_code = NULL, reason = ?,"
            " ran_s = ran_s + MAX(0, COALESCE(? - started_at, 0)), log_tail = NULL,"
            " started_at = NULL, finished_at = NULL, handle = NULL, gpus = '[]',"
            " launcher = NULL, preempted_by = NULL WHERE name = ? AND status = 'running'"
        )
        moved = False
        with self._db.transaction() as conn:
            kept = conn.execute(keep, (exit_code, reason, log_tail, ended_at, name)).rowcount == 1
            moved = kept and conn.execute(again, (reason, ended_at, name)).rowcount == 1
            if not moved:
                raise Rollback
        return moved

    def preemptions_since(self, name: str, since: float) -> int:
        """How many of the run's attempts ended preempted after ``since``."""
        sql = "SELECT COUNT(*) FROM attempts WHERE name = ? AND status = 'preempted' AND finished_at > ?"
        return _int(self._db.one(sql, (name, since)))

    def preemption_counts(self) -> dict[str, int]:
        """How many attempts ended preempted, per class of the run preempted (the store's whole history)."""
        sql = (
            "SELECT r.priority, COUNT(*) FROM attempts a JOIN runs r ON r.name = a.name"
            " WHERE a.status = 'preempted' GROUP BY r.priority"
        )
        return {row[0]: int(row[1]) for row in self._db.rows(sql)}

    def set_disk_bytes(self, name: str, size: int) -> bool:
        return self._update(name, list(TERMINAL), {"disk_bytes": size})

    def mark_deleted(self, name: str, by: str, at: float | None = None) -> bool:
        """A finished run's files are gone; its record stays (so its name is never reused)."""
        fields = {"deleted_at": at or time.time(), "deleted_by": by, "disk_bytes": 0}
        return self._update(name, list(TERMINAL), fields, extra="AND deleted_at IS NULL")

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
        finished_at: float | None = None,
    ) -> bool:
        """Move a run from one of ``expected`` to the terminal ``status``; False if it was not there.
        ``finished_at``: when it ended, if that was before now (a write the store refused for a while)."""
        if status not in TERMINAL:
            raise ValueError(f"{status} is not a terminal status")
        fields: dict[str, Any] = {
            "status": status,
            "exit_code": exit_code,
            "reason": reason,
            "log_tail": log_tail,
            "finished_at": finished_at or time.time(),
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
        params = (*(run_rows.encode(c, v) for c, v in fields.items()), name, *[s.value for s in expected])
        try:
            return self._db.write(sql, params).rowcount == 1
        except sqlite3.IntegrityError as exc:
            raise TerminalStateError(str(exc)) from None


def _filter(
    statuses: Iterable[RunStatus] | None,
    owner: str | None = None,
    asked: Sequence[tuple[str, str]] = (),
) -> tuple[str, list[Any]]:
    values: list[Any] = [RunStatus(s).value for s in statuses or []]
    clauses = [f"status IN ({','.join('?' * len(values))})"] if values else []
    if owner is not None:
        clauses.append("owner = ?")
        values.append(owner)
    if asked:
        clause, params = run_overrides.matching(asked)
        clauses.append(clause)
        values.extend(params)
    return ("WHERE " + " AND ".join(clauses), values) if clauses else ("", [])


def _rowid(cursor: sqlite3.Cursor) -> int:
    if cursor.lastrowid is None:  # pragma: no cover - SQLite gives every inserted row one
        raise RuntimeError("an inserted run has no rowid")
    return cursor.lastrowid


def _int(row: Row | None) -> int:
    return int(row[0]) if row else 0
