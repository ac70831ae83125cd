"""Persistence: every run, sweep and user, in one SQLite file inside the output directory.

    db.py          the connection, the one writer path (a lock), transactions
    migrations.py  the schema, as numbered migrations
    runs.py        RunStore: the runs table (and the way in: ``RunStore(path)`` opens the database)
    run_rows.py    a run's row <-> its RunRecord
    attempts.py    the finished earlier attempts of resumed runs
    users.py       users, their limits and token hashes
    sweeps.py      sweeps (their runs are rows of runs)
    errors.py      what the store refuses
    startup.py     opening it for the service: a damaged or lost store is refused
    backup.py      python -m app backup: an online copy through SQLite's backup API

SQL lives here and only here: the rest of the code calls the entity stores' methods.
"""

from app.store.errors import (
    IdempotencyKeyTaken,
    NameTaken,
    StoreDamaged,
    StoreVersionError,
    TerminalStateError,
)
from app.store.migrations import SCHEMA_VERSION
from app.store.runs import QueueEntry, RunStore

__all__ = [
    "SCHEMA_VERSION",
    "IdempotencyKeyTaken",
    "NameTaken",
    "QueueEntry",
    "RunStore",
    "StoreDamaged",
    "StoreVersionError",
    "TerminalStateError",
]
