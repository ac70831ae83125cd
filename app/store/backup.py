"""``python -m app backup PATH``: a consistent copy of the run store, taken while the service runs.

Copying ``runs.db`` by hand is not a backup: while the service runs, recent writes live in the write-ahead
log beside it (``runs.db-wal``), and a copy taken mid-write can be torn. SQLite's online backup API reads a
consistent snapshot through an ordinary connection (the service's writes wait a moment, never fail). The
copy is written beside its target under a temporary name and linked into place, so an existing file is
never overwritten and a failed backup leaves no half-written file at PATH. The copy is a single file
(rollback journal, not WAL): it can be moved and restored as it is.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path


class BackupError(RuntimeError):
    """What stopped the backup, said so that an admin knows what to do."""


@dataclass(frozen=True)
class Backup:
    path: Path
    bytes: int
    runs: int


def backup(store: Path, target: Path) -> Backup:
    """Copy the store at ``store`` into the new file ``target``."""
    if not store.is_file():
        raise BackupError(f"no store at {store} (is LABRUN_OUTPUT_DIR the service's?)")
    if target.exists():
        raise BackupError(f"{target} exists: choose a new file (a backup never overwrites one)")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        runs = _copy(store, partial)
        _place(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return Backup(target, target.stat().st_size, runs)


def _copy(store: Path, partial: Path) -> int:
    """The snapshot into ``partial``, checked and turned into one self-contained file; its runs."""
    # mode=rw: a missing store is an error here, never a new empty one.
    source = sqlite3.connect(f"file:{store}?mode=rw", uri=True, timeout=30)
    try:
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)  # all pages in one step: one consistent snapshot
            copy.execute("PRAGMA journal_mode=DELETE")  # no -wal beside the copy: the file alone is whole
            if copy.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise BackupError("the copy does not check out: the store may be damaged")
            return int(copy.execute("SELECT count(*) FROM runs").fetchone()[0])
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise BackupError(f"could not copy {store}: {exc}") from exc
    finally:
        source.close()


def _place(partial: Path, target: Path) -> None:
    """``partial`` becomes ``target``, unless something appeared there meanwhile."""
    try:
        os.link(partial, target)  # fails if target exists, unlike a rename
    except FileExistsError:
        raise BackupError(f"{target} exists: choose a new file (a backup never overwrites one)") from None
    except OSError as exc:
        raise BackupError(f"could not write {target}: {exc}") from exc
