"""Opening the store for the service: refuse a damaged store, and never take a missing or empty one for a
new one when the state folder shows that runs existed (every run and every user would be gone, and with
no users, auth would be off).

The check is SQLite's ``quick_check``: every page read once, linear in the file's size (100,000 runs:
see bench/store_bench.py), run once at start-up before any request is served.
"""

from __future__ import annotations

import time
from pathlib import Path

from app.store.errors import StoreDamaged
from app.store.runs import RunStore

RESTORE = (
    "stop here and restore the latest backup (python -m app backup makes one; the operations docs say how "
    "to restore it); to salvage what SQLite can still read: sqlite3 {db} .recover | sqlite3 recovered.db"
)


def open_store(db: Path, runs_dir: Path) -> tuple[RunStore, float]:
    """The store at ``db`` and how long its check took (seconds). ``runs_dir``: the state folder's run
    folders, one per run ever started. Raises StoreDamaged saying what is wrong and what to do."""
    empty = not db.exists() or db.stat().st_size == 0
    if empty and _any_run(runs_dir):
        state = "is missing" if not db.exists() else "is empty (0 bytes)"
        raise StoreDamaged(
            f"the store {db} {state}, but {runs_dir} shows that runs existed: starting afresh would lose "
            f"every run and user. {RESTORE.format(db=db)}. To really start afresh, move {db.parent} away."
        )
    store = RunStore(db)
    started = time.perf_counter()
    try:
        store.check()
    except StoreDamaged as exc:
        store.close()
        raise StoreDamaged(f"the store {db} is damaged ({exc}). {RESTORE.format(db=db)}") from None
    return store, time.perf_counter() - started


def _any_run(runs_dir: Path) -> bool:
    try:
        return any(entry.is_dir() for entry in runs_dir.iterdir())
    except OSError:
        return False
