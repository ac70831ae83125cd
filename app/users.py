"""Users and their tokens, kept in the run store's database (table ``users``).

A token is ``<name>.<secret>``: ``secret`` is 32 random bytes from ``secrets`` (URL-safe text), shown once
when made and stored only as its SHA-256. Checking one looks the user up by name and compares the hashes
with ``hmac.compare_digest`` (constant time). A random secret of that size needs no slow hash: nothing
about it can be guessed from its SHA-256. Tokens never go into a log, an answer or the store in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from app.errors import InvalidRun, RunConflict
from app.models import User
from app.store import RunStore

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
LOCAL = "local"  # the caller when auth is off (a loopback service with no users): may do everything


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Users:
    """Users and their tokens, over the store's users table (``store.users``)."""

    def __init__(self, store: RunStore) -> None:
        self._table = store.users

    def get(self, name: str) -> User | None:
        return self._table.get(name)

    def list(self) -> list[User]:
        return self._table.list()

    def ever_had_users(self) -> bool:
        """Whether this store has ever had a user: a revoked one keeps its row (there is no delete), so
        the store itself records that auth was switched on, and it stays on."""
        return self._table.any_row()

    def add(self, name: str, admin: bool = False) -> str:
        """Create a user; returns their token (the only time it is shown)."""
        if not NAME.match(name):
            raise InvalidRun(
                f"user name {name!r}: use 1-32 lowercase letters, digits, '_' or '-', starting with a letter"
            )
        if name == LOCAL:
            raise InvalidRun(f"{LOCAL!r} is the name of the caller when auth is off; choose another name")
        if self.get(name) is not None:
            raise RunConflict(f"user {name!r} exists; rotate their token with: users token {name}")
        token, digest = self._new_token(name)
        self._table.add(name, admin, digest, time.time())
        return token

    def rotate(self, name: str) -> str:
        """A new token for the user (the old one stops working); also re-activates a revoked user."""
        self._existing(name)
        token, digest = self._new_token(name)
        self._table.set_token(name, digest)
        return token

    def revoke(self, name: str) -> None:
        self._existing(name)
        self._table.revoke(name, time.time())

    def set_limits(
        self,
        name: str,
        max_gpus: int | None = None,
        max_queued: int | None = None,
        max_run_s: float | None = None,
        clear: bool = False,
    ) -> User:
        """Per-user limits over the server's defaults (None keeps a limit as it is; ``clear`` resets all)."""
        user = self._existing(name)
        if clear:
            max_gpus = max_queued = max_run_s = None
        else:
            max_gpus = user.max_gpus if max_gpus is None else max_gpus
            max_queued = user.max_queued if max_queued is None else max_queued
            max_run_s = user.max_run_s if max_run_s is None else max_run_s
        for key, value in (("max_gpus", max_gpus), ("max_queued", max_queued), ("max_run_s", max_run_s)):
            if value is not None and value < 0:
                raise InvalidRun(f"{key} must be >= 0, got {value}")
        self._table.set_limits(name, max_gpus, max_queued, max_run_s)
        return self._existing(name)

    def set_stall_after(self, name: str, stall_after_s: float | None) -> User:
        """The user's own stall limit in seconds (0: never stalled; None: back to the server's)."""
        self._existing(name)
        if stall_after_s is not None and stall_after_s < 0:
            raise InvalidRun(f"stall_after_s must be >= 0, got {stall_after_s}")
        self._table.set_stall_after(name, stall_after_s)
        return self._existing(name)

    def set_high_gpus(self, name: str, high_gpus: int | None) -> User:
        """The user's own allowance of high-priority GPUs (docs/priorities.md); None: the server's
        (LABRUN_HIGH_PRIORITY_GPUS). 0: no high-priority runs. Admins always may."""
        self._existing(name)
        if high_gpus is not None and high_gpus < 0:
            raise InvalidRun(f"high_gpus must be >= 0, got {high_gpus}")
        self._table.set_high_gpus(name, high_gpus)
        return self._existing(name)

    def set_budgets(
        self, name: str, gpu_hours: float | None = None, cpu_hours: float | None = None, clear: bool = False
    ) -> User:
        """The user's own GPU-hour and CPU-hour budgets per window (docs/budgets-and-estimates.md): None keeps
        one as it is; ``clear``: both back to the server's. 0: no budget (unbounded)."""
        user = self._existing(name)
        for key, value in (("gpu_hours", gpu_hours), ("cpu_hours", cpu_hours)):
            if value is not None and value < 0:
                raise InvalidRun(f"{key} must be >= 0, got {value}")
        if clear:
            gpu_hours = cpu_hours = None
        else:
            gpu_hours = user.budget_gpu_hours if gpu_hours is None else gpu_hours
            cpu_hours = user.budget_cpu_hours if cpu_hours is None else cpu_hours
        self._table.set_budgets(name, gpu_hours, cpu_hours)
        return self._existing(name)

    def authenticate(self, token: str) -> User | None:
        """The active user whose token this is, or None."""
        name, _, secret = token.strip().rpartition(".")
        if not name or not secret:
            return None
        found = self._table.active_with_hash(name)  # one query: every request of a poll asks
        if found is None:
            hmac.compare_digest(_hash(secret), _hash(""))  # the same work whether or not the user exists
            return None
        user, stored = found
        return user if hmac.compare_digest(_hash(secret), stored) else None

    def _existing(self, name: str) -> User:
        user = self.get(name)
        if user is None:
            raise RunConflict(f"no user named {name!r}; create one with: users add {name}")
        return user

    @staticmethod
    def _new_token(name: str) -> tuple[str, str]:
        secret = secrets.token_urlsafe(32)
        return f"{name}.{secret}", _hash(secret)
