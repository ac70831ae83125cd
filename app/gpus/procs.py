"""What ``/proc`` says of a process on a GPU: whose it is, what it runs, since when, and how it relates to
labrun's runs (its session, its ancestors, its cgroup). Read only for the few processes NVML lists.

Under Compose the API container shares the host's PID namespace (``pid: host``) and reads the host's
``/etc/passwd`` (mounted read-only), so the pids NVML reports are found here and their users have names.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from functools import cache

MAX_COMMAND_CHARS = 200  # a reason names the command; a long command line is cut


@cache
def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    session: int
    start_ticks: (
        str  # its start in clock ticks since boot: a pid and this name one process, never a reused pid
    )
    started_at: float  # Unix time
    uid: int
    user: str  # the Unix user's name (its uid as text when the name is unknown here)
    command: str


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def read(pid: int) -> ProcInfo | None:
    """The process, or None when it is gone (or hidden: another PID namespace)."""
    try:
        fields = _stat(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        uid = os.stat(f"/proc/{pid}").st_uid
    except (OSError, IndexError):
        return None
    command = " ".join(argv) or f"[{_comm(pid)}]"
    if len(command) > MAX_COMMAND_CHARS:
        command = command[: MAX_COMMAND_CHARS - 3] + "..."
    return ProcInfo(
        pid=pid,
        ppid=int(fields[1]),
        session=int(fields[3]),
        start_ticks=fields[19],
        started_at=_boot_time() + int(fields[19]) / _TICKS,
        uid=uid,
        user=user_name(uid),
        command=command,
    )


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def ancestors(pid: int, limit: int = 64) -> list[int]:
    """Its parent, grandparent, ... up to (not including) pid 1."""
    found: list[int] = []
    while len(found) < limit:
        try:
            pid = int(_stat(pid)[1])
        except (OSError, IndexError, ValueError):
            break
        if pid <= 1:
            break
        found.append(pid)
    return found


def cgroup(pid: int) -> str:
    """Its cgroup lines (a container's id appears in them); "" when unreadable."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return f.read()
    except OSError:
        return ""


def start_ticks(pid: int) -> str | None:
    try:
        return _stat(pid)[19]
    except (OSError, IndexError):
        return None
