"""Whose is a process on a GPU: one of labrun's runs, or someone else's ("outside labrun")?

A process belongs to a run when
- it is in a local run's session: the wrapper and the trainer each lead a session of their own
  (``app/launchers/local.py``), and every worker a trainer starts stays in the trainer's, even once
  reparented; or one of its ancestors is such a session leader, or the service itself (a run that is
  being started right now);
- or its cgroup names a run's container (a Docker run's handle is its container id; the host's
  ``/proc/<pid>/cgroup`` says ``.../docker-<id>.scope`` or ``/docker/<id>``).
Anything else is outside labrun, whoever started it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.gpus import procs
from app.gpus.procs import ProcInfo
from app.statedir import StateDir

_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RunProcesses:
    """What labrun's runs are made of, as seen at one pass."""

    sessions: frozenset[int]  # session leaders: local runs' wrappers and trainers
    containers: tuple[str, ...]  # Docker runs' container ids
    service_pid: int

    @classmethod
    def of(cls, runs: Iterable[tuple[str, str | None]], state: StateDir) -> RunProcesses:
        """``runs``: (name, handle) of every run that is running or being started."""
        sessions: set[int] = set()
        containers: list[str] = []
        for name, handle in runs:
            if handle and _CONTAINER_ID.match(handle):
                containers.append(handle)
            files = state.files(name)
            for path in (files.pid, files.child_pid):
                pid = _live_pid(path)
                if pid is not None:
                    sessions.add(pid)
        return cls(frozenset(sessions), tuple(containers), os.getpid())

    def owns(self, info: ProcInfo) -> bool:
        if info.session in self.sessions or info.pid in self.sessions:
            return True
        chain = procs.ancestors(info.pid)
        if self.service_pid in chain or any(pid in self.sessions for pid in chain):
            return True
        if self.containers:
            cgroup = procs.cgroup(info.pid)
            return any(container in cgroup for container in self.containers)
        return False


def _live_pid(path: Path) -> int | None:
    """The pid a state file names ("pid start-time"), if that very process still exists."""
    try:
        pid_text, started = Path(path).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if procs.start_ticks(pid) == started else None
