"""What an admin tells the GPU guard, through the API or ``python -m app gpus``: processes to let be (by pid
or by command pattern) and Unix users that are labrun users (their processes' GPU time outside the queue
counts toward their fair share). Stored in the run store; the guard reads them on its next pass."""

from __future__ import annotations

import re
import time

from app.errors import NotFound
from app.gpus import procs
from app.store import RunStore
from app.store.gpus import GpuIgnore

UNIX_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?$")


def ignore_pid(store: RunStore, pid: int, note: str | None = None, by: str | None = None) -> GpuIgnore:
    """Let the process ``pid`` be (that process only: a later one that gets its pid is not ignored)."""
    started = procs.start_ticks(pid)
    if started is None:
        raise NotFound(
            f"no process with pid {pid} on this machine (seen from labrun); list the GPUs' processes with: "
            "labrun gpus"
        )
    return store.gpus.add_ignore(pid, started, None, note, by, time.time())


def ignore_pattern(
    store: RunStore, pattern: str, note: str | None = None, by: str | None = None
) -> GpuIgnore:
    """Let every process whose command line matches ``pattern`` (shell-style: ``*jupyter*``) be."""
    return store.gpus.add_ignore(None, None, pattern, note, by, time.time())


def unignore(store: RunStore, ignore_id: int) -> None:
    if not store.gpus.remove_ignore(ignore_id):
        raise NotFound(f"no GPU ignore rule with id {ignore_id}; list them with: GET /gpus/ignores")


def map_unix_user(store: RunStore, unix_user: str, owner: str) -> None:
    if store.users.get(owner) is None:
        raise NotFound(f"no labrun user named {owner!r}; create one with: python -m app users add {owner}")
    store.gpus.map_unix_user(unix_user, owner, time.time())


def unmap_unix_user(store: RunStore, unix_user: str) -> None:
    if not store.gpus.unmap_unix_user(unix_user):
        raise NotFound(f"the Unix user {unix_user!r} is not mapped to a labrun user")


def describe(rule: GpuIgnore) -> str:
    what = f"pid {rule.pid}" if rule.pid is not None else f"command matching {rule.pattern!r}"
    return what + (f" ({rule.note})" if rule.note else "")
