"""Per-user limits: a user's own where an admin set one, else the server's. 0 means none (as None)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from app.core.config import Settings
from app.users import Users


@dataclass(frozen=True)
class UserLimits:
    max_gpus: int | None = None  # GPUs in use at once
    max_queued: int | None = None  # runs queued at once
    max_run_s: float | None = None  # seconds a run may run before it is cancelled
    stall_after_s: float | None = None  # seconds without progress or output before it is stalled


class Limits:
    def __init__(self, settings: Settings, users: Users) -> None:
        self.settings, self.users = settings, users

    def of(self, owner: str) -> UserLimits:
        user, s = self.users.get(owner), self.settings
        if user is None:
            return UserLimits(
                s.max_gpus_per_user or None,
                s.max_queued_per_user or None,
                s.max_run_s or None,
                s.stall_after_s or None,
            )
        return UserLimits(
            max_gpus=_own_or(user.max_gpus, s.max_gpus_per_user),
            max_queued=_own_or(user.max_queued, s.max_queued_per_user),
            max_run_s=_own_or(user.max_run_s, s.max_run_s),
            stall_after_s=_own_or(user.stall_after_s, s.stall_after_s),
        )


N = TypeVar("N", int, float)


def _own_or(own: N | None, server: N | None) -> N | None:
    chosen = own if own is not None else server
    return chosen or None
