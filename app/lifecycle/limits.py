"""Per-user limits: a user's own where an admin set one, else the server's. 0 means none (as None), except
for the allowance of high-priority GPUs, where 0 means no high-priority runs and None no bound (admins)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from app.core.config import Settings
from app.users import LOCAL, Users


@dataclass(frozen=True)
class UserLimits:
    max_gpus: int | None = None  # GPUs in use at once
    max_queued: int | None = None  # runs queued at once
    max_run_s: float | None = None  # seconds a run may run before it is cancelled
    stall_after_s: float | None = None  # seconds without progress or output before it is stalled
    high_gpus: int | None = (
        0  # GPUs their high-priority runs may hold at once (0: none allowed; None: no bound)
    )


class Limits:
    def __init__(self, settings: Settings, users: Users) -> None:
        self.settings, self.users = settings, users

    def of(self, owner: str) -> UserLimits:
        user, s = self.users.get(owner), self.settings
        if user is None:  # the caller when auth is off may do everything (app/users.py)
            high = None if owner == LOCAL else s.high_priority_gpus
            return UserLimits(
                s.max_gpus_per_user or None,
                s.max_queued_per_user or None,
                s.max_run_s or None,
                s.stall_after_s or None,
                high,
            )
        return UserLimits(
            max_gpus=_own_or(user.max_gpus, s.max_gpus_per_user),
            max_queued=_own_or(user.max_queued, s.max_queued_per_user),
            max_run_s=_own_or(user.max_run_s, s.max_run_s),
            stall_after_s=_own_or(user.stall_after_s, s.stall_after_s),
            # admins always may; else their own allowance where an admin set one, else the server's
            high_gpus=None if user.is_admin else _own_or_zero(user.high_gpus, s.high_priority_gpus),
        )


N = TypeVar("N", int, float)


def _own_or(own: N | None, server: N | None) -> N | None:
    chosen = own if own is not None else server
    return chosen or None


def _own_or_zero(own: int | None, server: int) -> int:
    """An allowance, where 0 is one (none allowed), not "no bound"."""
    return own if own is not None else server
