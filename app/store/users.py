"""The ``users`` table: users, their limits and their token hashes (the tokens themselves: ``app/users.py``)."""

from __future__ import annotations

import builtins
from typing import Any

from app.models import User
from app.store.db import Database

_COLUMNS = (
    "name, is_admin, created_at, revoked_at, max_gpus, max_queued, max_run_s, stall_after_s, high_gpus,"
    " budget_gpu_hours, budget_cpu_hours"
)


class UserStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, name: str) -> User | None:
        row = self._db.one(f"SELECT {_COLUMNS} FROM users WHERE name = ?", (name,))
        return _user(row) if row else None

    def list(self) -> builtins.list[User]:
        return [_user(row) for row in self._db.rows(f"SELECT {_COLUMNS} FROM users ORDER BY name")]

    def any_row(self) -> bool:
        """Whether any user, active or revoked, was ever made (a user is revoked, never deleted)."""
        return self._db.one("SELECT 1 FROM users LIMIT 1") is not None

    def active_with_hash(self, name: str) -> tuple[User, str] | None:
        """An active user and their token's hash, in one query (a request's token check); None for a revoked
        or unknown user."""
        row = self._db.one(
            f"SELECT {_COLUMNS}, token_hash FROM users WHERE name = ? AND revoked_at IS NULL", (name,)
        )
        return (_user(row[:-1]), row[-1]) if row and row[-1] is not None else None

    def add(self, name: str, is_admin: bool, token_hash: str, created_at: float) -> None:
        self._db.write(
            "INSERT INTO users (name, is_admin, token_hash, created_at) VALUES (?,?,?,?)",
            (name, int(is_admin), token_hash, created_at),
        )

    def set_token(self, name: str, token_hash: str) -> None:
        """A new token hash; a revoked user is active again."""
        self._db.write(
            "UPDATE users SET token_hash = ?, revoked_at = NULL WHERE name = ?", (token_hash, name)
        )

    def revoke(self, name: str, at: float) -> None:
        self._db.write("UPDATE users SET revoked_at = ?, token_hash = NULL WHERE name = ?", (at, name))

    def set_limits(
        self, name: str, max_gpus: int | None, max_queued: int | None, max_run_s: float | None
    ) -> None:
        """The user's own limits (None: the server's)."""
        self._db.write(
            "UPDATE users SET max_gpus = ?, max_queued = ?, max_run_s = ? WHERE name = ?",
            (max_gpus, max_queued, max_run_s, name),
        )

    def set_stall_after(self, name: str, stall_after_s: float | None) -> None:
        """The user's own stall limit (None: the server's; app/lifecycle/stalls.py)."""
        self._db.write("UPDATE users SET stall_after_s = ? WHERE name = ?", (stall_after_s, name))

    def set_high_gpus(self, name: str, high_gpus: int | None) -> None:
        """The user's own allowance of high-priority GPUs (None: the server's)."""
        self._db.write("UPDATE users SET high_gpus = ? WHERE name = ?", (high_gpus, name))

    def set_budgets(self, name: str, gpu_hours: float | None, cpu_hours: float | None) -> None:
        """The user's own budgets (None: the server's; app/budgets.py)."""
        self._db.write(
            "UPDATE users SET budget_gpu_hours = ?, budget_cpu_hours = ? WHERE name = ?",
            (gpu_hours, cpu_hours, name),
        )


def _user(row: tuple[Any, ...]) -> User:
    return User(row[0], bool(row[1]), *row[2:])
