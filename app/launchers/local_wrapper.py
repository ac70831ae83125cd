"""Runs one trainer process and records how it ended, so the outcome outlives the service.

Usage: python local_wrapper.py STATE_DIR -- COMMAND [ARGS...]   (standard library and trainer/atomic.py
only: it starts in milliseconds)

The service may be killed at any moment; this small parent stays with the trainer and writes
``STATE_DIR/exit_code`` (atomically) when the trainer ends: the return code, negative for a signal.
The trainer runs in its own process group (``STATE_DIR/child_pid`` names it), so the service can SIGKILL
the trainer and all its workers without killing this wrapper, which then still records the outcome. When
the trainer ends, whatever is left in its group is killed before the exit code is written.
SIGTERM/SIGINT sent to the wrapper are forwarded to the trainer's group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: make the project's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer.atomic import write_atomic  # noqa: E402


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); OSError if it is gone."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (guards against pid reuse)."""
    return proc_stat(pid)[19]


def read_exit_code(state_dir: Path) -> int | None:
    """The exit code a wrapper recorded in ``state_dir`` (this one, or the Slurm job's), or None yet."""
    try:
        return int((state_dir / "exit_code").read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str]) -> int:
    state_dir = Path(argv[1])
    command = argv[3:] if len(argv) > 3 and argv[2] == "--" else []
    if not command:
        print("usage: local_wrapper.py STATE_DIR -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    me = os.getpid()
    write_atomic(state_dir / "pid", f"{me} {start_time(me)}\n")
    # Until the trainer is started, a SIGTERM must not leave a half-started run: just remember it.
    pending: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _: pending.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _: pending.append(signum))
    try:
        child = subprocess.Popen(command, start_new_session=True)
    except OSError as exc:
        print(f"labrun: could not start {command[0]!r}: {exc}", flush=True)
        write_atomic(state_dir / "exit_code", "127\n")
        return 127
    write_atomic(state_dir / "child_pid", f"{child.pid} {start_time(child.pid)}\n")

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for signum in pending:
        forward(signum, None)
    code = child.wait()
    # Whatever the trainer left in its process group (a stray DataLoader worker, a `sleep 300 &`) dies with
    # it, before the exit code tells the service that the run's GPUs are free for the next run.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    write_atomic(state_dir / "exit_code", f"{code}\n")
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
