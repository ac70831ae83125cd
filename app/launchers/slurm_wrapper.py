"""The body of a labrun Slurm job: ``run_wrapper.py``'s wrapper plus what only a cluster job does. It records
how each attempt ended on the shared filesystem, so the outcome is known without Slurm's accounting
database (``sacct``).

Usage: python slurm_wrapper.py STATE_DIR -- COMMAND [ARGS...]   (standard library, ``app/statedir.py`` and
``trainer/{atomic,runenv,logbound}.py``)

The job's stdout (Slurm's ``--output``) is the run's log; the trainer's output reaches it through the
wrapper, bounded by ``LABRUN_MAX_LOG_BYTES`` as for a local run (``run_wrapper.py``).

- Each start appends a line to ``RunFiles.attempts`` (JSON: attempt, job id, host, start), and each end one
  more (end, exit code, and whether it asked to be requeued). The attempt number is the service's
  ``LABRUN_ATTEMPT`` (the run's attempt when the job was submitted: a resumed run's is above 1) plus
  Slurm's ``SLURM_RESTART_COUNT``. An attempt after the first runs the trainer with ``LABRUN_RESUME=1``.
- The trainer learns it may be preempted (``LABRUN_PREEMPTIBLE=1``): SIGUSR1 (``--signal=B:USR1@N``
  before a time limit) or a SIGTERM that is not the service's cancel makes it checkpoint and exit 75. The
  service's cancel writes ``RunFiles.cancel_marker`` before it signals (``LABRUN_CANCEL_MARKER``).
- The trainer's exit 75 (and no cancel): the job asks Slurm to requeue it (``scontrol requeue``, as
  submitit does; a no-op when Slurm is requeueing it already, as for a preemption or an admin's
  ``scontrol requeue``) and no exit code is written: the run is not over. Any other end writes it, as
  for a local run. Except where the job's --time is the run's own time limit (``LABRUN_OWN_TIME_LIMIT``):
  after that USR1 the run has reached its limit, and it ends (not requeued; the service records why).
SIGUSR1 is forwarded to the trainer's process group too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # run by path: make the project's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.launchers.run_wrapper import RunWrapper, run_from_command_line
from app.statedir import RunFiles
from trainer.runenv import RunEnv

EXIT_REQUEUE = 75  # the trainer's "checkpointed, run me again" (EX_TEMPFAIL); trainer/resume.py
# Set by the service when the job's --time is the run's own time limit (docs/time-limits.md): the USR1
# before it is that limit, and the run, checkpointed, is not requeued (it ends; a resume continues it).
OWN_TIME_LIMIT_ENV = "LABRUN_OWN_TIME_LIMIT"


class SlurmJobWrapper(RunWrapper):
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(self, files: RunFiles, command: list[str]) -> None:
        super().__init__(files, command)
        self.job_id = os.environ.get("SLURM_JOB_ID", "")
        first = RunEnv.from_env().attempt or 1  # the service's: a resumed run's is above 1
        self.attempt = first + int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        self.own_time_limit = os.environ.get(OWN_TIME_LIMIT_ENV) == "1"
        self.usr1 = False  # the USR1 before the job's time limit came

    def signalled(self, signum: int) -> None:
        if signum == signal.SIGUSR1:
            self.usr1 = True

    def note(self, entry: dict[str, object]) -> None:
        with open(self.files.attempts, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def before_start(self) -> None:
        # The service finds a job by its id, never by a pid on a node.
        self.note(
            {
                "attempt": self.attempt,
                "job_id": self.job_id,
                "host": socket.gethostname(),
                "start": time.time(),
            }
        )

    def environment(self) -> dict[str, str]:
        run = RunEnv(
            attempt=self.attempt,
            resume=self.attempt > 1,
            preemptible=True,
            cancel_marker=self.files.cancel_marker,
        )
        return {**os.environ, **run.to_env()}

    def started(self, child: subprocess.Popen[bytes]) -> None:
        pass  # a pid on a node means nothing to the service

    def ended(self, code: int) -> bool:
        cancelled = self.files.cancel_marker.exists()
        at_own_limit = self.own_time_limit and self.usr1
        requeue = code == EXIT_REQUEUE and not cancelled and bool(self.job_id) and not at_own_limit
        entry: dict[str, object] = {
            "attempt": self.attempt,
            "end": time.time(),
            "exit_code": code,
            "requeue": requeue,
        }
        if at_own_limit:
            entry["time_limit"] = True
        self.note(entry)
        if not requeue:
            return True
        print(f"labrun: attempt {self.attempt} checkpointed; requeueing Slurm job {self.job_id}", flush=True)
        # Already being requeued (preemption, an admin's requeue): Slurm refuses this one, which is fine.
        subprocess.run(["scontrol", "requeue", self.job_id], check=False, capture_output=True, timeout=60)
        return False


def main(argv: list[str]) -> int:
    return run_from_command_line(SlurmJobWrapper, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
