"""The GPU guard's tables (``app/gpus/``): the processes an admin lets be (``gpu_ignores``), Unix users
mapped to labrun users (``unix_users``), and the GPU time mapped users' own processes held outside the
queue (``gpu_outside_use``, one row per process and GPU, its last sighting updated on each pass)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass

from app.store.db import Database


@dataclass(frozen=True)
class GpuIgnore:
    """A process the guard lets be: one pid (the process that had it when the rule was made, by its start
    time), or every process whose command line matches ``pattern`` (shell-style, e.g. ``*jupyter*``)."""

    id: int
    pid: int | None
    pid_start: str | None
    pattern: str | None
    note: str | None
    created_by: str | None
    created_at: float


@dataclass(frozen=True)
class OutsideUse:
    gpu: int
    pid: int
    pid_start: str
    unix_user: str
    owner: str
    first_seen: float
    last_seen: float


class GpuStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- ignores ---------------------------------------------------------------------------------------

    def ignores(self) -> builtins.list[GpuIgnore]:
        rows = self._db.rows(
            "SELECT id, pid, pid_start, pattern, note, created_by, created_at FROM gpu_ignores ORDER BY id"
        )
        return [GpuIgnore(*row) for row in rows]

    def add_ignore(
        self,
        pid: int | None,
        pid_start: str | None,
        pattern: str | None,
        note: str | None,
        created_by: str | None,
        created_at: float,
    ) -> GpuIgnore:
        cursor = self._db.write(
            "INSERT INTO gpu_ignores (pid, pid_start, pattern, note, created_by, created_at) "
            "VALUES (?,?,?,?,?,?)",
            (pid, pid_start, pattern, note, created_by, created_at),
        )
        return GpuIgnore(int(cursor.lastrowid or 0), pid, pid_start, pattern, note, created_by, created_at)

    def remove_ignore(self, ignore_id: int) -> bool:
        return self._db.write("DELETE FROM gpu_ignores WHERE id = ?", (ignore_id,)).rowcount > 0

    # --- Unix users -> labrun users ----------------------------------------------------------------------

    def unix_users(self) -> dict[str, str]:
        """Unix user -> labrun user."""
        return dict(self._db.rows("SELECT unix_user, owner FROM unix_users ORDER BY unix_user"))

    def map_unix_user(self, unix_user: str, owner: str, at: float) -> None:
        self._db.write(
            "INSERT INTO unix_users (unix_user, owner, created_at) VALUES (?,?,?) "
            "ON CONFLICT (unix_user) DO UPDATE SET owner = excluded.owner",
            (unix_user, owner, at),
        )

    def unmap_unix_user(self, unix_user: str) -> bool:
        return self._db.write("DELETE FROM unix_users WHERE unix_user = ?", (unix_user,)).rowcount > 0

    # --- GPU time held outside the queue ------------------------------------------------------------------

    def note_outside_use(self, uses: builtins.list[OutsideUse]) -> None:
        """Record (or extend to ``last_seen``) each process's hold on each GPU, in one transaction."""
        if not uses:
            return
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT INTO gpu_outside_use (gpu, pid, pid_start, unix_user, owner, first_seen, last_seen) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT (gpu, pid, pid_start) DO UPDATE SET "
                "last_seen = excluded.last_seen, owner = excluded.owner",
                [(u.gpu, u.pid, u.pid_start, u.unix_user, u.owner, u.first_seen, u.last_seen) for u in uses],
            )

    def outside_use(self, since: float) -> builtins.list[OutsideUse]:
        """Every hold that lasted past ``since`` (fair share reads them at start-up)."""
        rows = self._db.rows(
            "SELECT gpu, pid, pid_start, unix_user, owner, first_seen, last_seen FROM gpu_outside_use "
            "WHERE last_seen >= ? ORDER BY first_seen",
            (since,),
        )
        return [OutsideUse(*row) for row in rows]
