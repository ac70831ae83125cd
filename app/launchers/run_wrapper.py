"""Runs one trainer process and records how it ended, so the outcome outlives the service.

Usage: python run_wrapper.py STATE_DIR -- COMMAND [ARGS...]   (standard library, ``app/statedir.py`` and
``trainer/{atomic,runenv,logbound}.py`` only: it starts in milliseconds)

The local launcher runs this file as the parent of each run; a Slurm job runs ``slurm_wrapper.py``, which
is this wrapper plus what only a cluster job does (attempts, preemption and requeue). What both do:

- The trainer runs in its own process group, so the service can SIGKILL the trainer and all its workers
  without killing this wrapper, which then still records the outcome.
- A signal that arrives before the trainer exists is held and passed on once it does (never a half-started
  run); afterwards each forwarded signal goes to the trainer's group.
- The trainer's stdout and stderr are a pipe that this wrapper copies into the run's log
  (``RunFiles.log``), bounded by ``LABRUN_MAX_LOG_BYTES`` (``trainer/logbound.py``: its beginning and its
  end are kept, and a marker line says how much was cut between them). The wrapper's own stdout is the log
  too (opened by the launcher, or by Slurm): only a crash of the wrapper itself would show there.
- When the trainer ends, whatever is left in its group is killed (a stray DataLoader worker, a
  ``sleep 300 &``) before ``RunFiles.exit_code`` is written (atomically): the return code, negative for a
  signal. Only then may the service hand the run's GPUs to the next run.
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

from app.statedir import RunFiles
from trainer.atomic import write_atomic
from trainer.logbound import BoundedLog, OutputCopy
from trainer.runenv import RunEnv, RunEnvError

EXIT_NOT_STARTED = 127  # as a shell reports a command it could not run


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); OSError if it is gone."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (guards against pid reuse)."""
    return proc_stat(pid)[19]


class RunWrapper:
    """One run's parent. Subclasses change what differs (``slurm_wrapper.SlurmJobWrapper``)."""

    forwarded: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, files: RunFiles, command: list[str]) -> None:
        self.files = files
        self.command = command

    def before_start(self) -> None:
        """First act: the wrapper's own pid, so that the service finds the run even if it dies next."""
        me = os.getpid()
        write_atomic(self.files.pid, f"{me} {start_time(me)}\n")

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def started(self, child: subprocess.Popen[bytes]) -> None:
        """The trainer's pid: the service signals its process group (cancel)."""
        write_atomic(self.files.child_pid, f"{child.pid} {start_time(child.pid)}\n")

    def signalled(self, signum: int) -> None:
        """A hook: a signal the wrapper forwards to the trainer (the Slurm job notes USR1)."""

    def ended(self, code: int) -> bool:  # noqa: ARG002 - a hook: the Slurm job reads it
        """Whether the run is over with ``code``. False: it is not, and no exit code is written (a Slurm
        job that asked to be requeued)."""
        return True

    def open_log(self) -> BoundedLog:
        """The run's log, as bounded as the service asked (``LABRUN_MAX_LOG_BYTES``)."""
        try:
            bound = RunEnv.from_env().max_log_bytes
        except RunEnvError as exc:  # the trainer refuses to start on it, and says why, in this log
            print(f"labrun: {exc}", flush=True)
            bound = None
        return BoundedLog(self.files.log, bound)

    def run(self) -> int:
        self.before_start()
        pending: list[int] = []  # signals that arrive before the trainer exists
        for signum in self.forwarded:
            signal.signal(signum, lambda s, _: pending.append(s))
        copy = OutputCopy(self.open_log())
        try:
            child = subprocess.Popen(
                self.command,
                start_new_session=True,
                env=self.environment(),
                stdout=copy.write_fd,
                stderr=copy.write_fd,
            )
        except OSError as exc:
            copy.log.close()
            print(f"labrun: could not start {self.command[0]!r}: {exc}", flush=True)
            self.files.record_exit_code(EXIT_NOT_STARTED)
            return EXIT_NOT_STARTED
        self.started(child)  # first: the service may signal the trainer as soon as it shows signs of life
        copy.start()

        def forward(signum: int, _frame: object) -> None:
            self.signalled(signum)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signum)

        for forwarded in self.forwarded:
            signal.signal(forwarded, forward)
        for held in pending:
            forward(held, None)
        code = child.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)  # whatever the trainer left in its group ends with it
        copy.finish()  # the last of its output is in the log before the outcome is
        if not self.ended(code):
            return code
        self.files.record_exit_code(code)
        return code if code >= 0 else 128 - code


def run_from_command_line(wrapper: type[RunWrapper], argv: list[str]) -> int:
    """``PROGRAM STATE_DIR -- COMMAND...``: run COMMAND under ``wrapper``; 2 and the usage otherwise."""
    command = argv[3:] if len(argv) > 3 and argv[2] == "--" else []
    if not command:
        print(f"usage: {Path(argv[0]).name} STATE_DIR -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return wrapper(RunFiles(Path(argv[1])), command).run()


def main(argv: list[str]) -> int:
    return run_from_command_line(RunWrapper, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
