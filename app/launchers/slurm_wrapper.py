"""The body of a labrun Slurm job: runs one attempt of the trainer and records how it ended on the shared
filesystem, so the outcome is known without Slurm's accounting database (``sacct``).

Usage: python slurm_wrapper.py STATE_DIR -- COMMAND [ARGS...]   (standard library and trainer/atomic.py)

- Each start appends a line to ``STATE_DIR/attempts`` (JSON: attempt, job id, host, start), and each end
  one more (end, exit code, and whether it asked to be requeued). The attempt number is Slurm's
  ``SLURM_RESTART_COUNT`` + 1. An attempt after the first runs the trainer with ``LABRUN_RESUME=1``.
- The trainer learns it may be preempted (``LABRUN_PREEMPTIBLE=1``): SIGUSR1 (``--signal=B:USR1@N``
  before a time limit) or a SIGTERM that is not the service's cancel makes it checkpoint and exit 75. The
  service's cancel writes ``STATE_DIR/cancel_requested`` before it signals (``LABRUN_CANCEL_MARKER``).
- The trainer's exit 75 (and no cancel): the job asks Slurm to requeue it (``scontrol requeue``, as
  submitit does; a no-op when Slurm is requeueing it already, as for a preemption or an admin's
  ``scontrol requeue``) and no ``exit_code`` is written: the run is not over. Any other end writes
  ``STATE_DIR/exit_code`` (negative for a signal), as the local launcher's wrapper does.
SIGTERM, SIGINT and SIGUSR1 sent to this process are forwarded to the trainer's process group.
"""

from __future__ import annotations

import contextlib
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

from trainer.atomic import write_atomic  # noqa: E402

EXIT_REQUEUE = 75  # the trainer's "checkpointed, run me again" (EX_TEMPFAIL); trainer/resume.py
CANCEL_MARKER = "cancel_requested"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def note(state_dir: Path, entry: dict) -> None:
    with open(state_dir / "attempts", "a") as f:
        f.write(json.dumps(entry) + "\n")


def main(argv: list[str]) -> int:
    state_dir = Path(argv[1])
    command = argv[3:] if len(argv) > 3 and argv[2] == "--" else []
    if not command:
        print("usage: slurm_wrapper.py STATE_DIR -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    job_id = os.environ.get("SLURM_JOB_ID", "")
    attempt = int(os.environ.get("SLURM_RESTART_COUNT") or 0) + 1
    note(
        state_dir, {"attempt": attempt, "job_id": job_id, "host": socket.gethostname(), "start": time.time()}
    )
    pending: list[int] = []
    for signum in FORWARDED:
        signal.signal(signum, lambda s, _: pending.append(s))
    env = {
        **os.environ,
        "LABRUN_ATTEMPT": str(attempt),
        "LABRUN_PREEMPTIBLE": "1",
        "LABRUN_CANCEL_MARKER": str(state_dir / CANCEL_MARKER),
    }
    if attempt > 1:
        env["LABRUN_RESUME"] = "1"
    try:
        child = subprocess.Popen(command, start_new_session=True, env=env)
    except OSError as exc:
        print(f"labrun: could not start {command[0]!r}: {exc}", flush=True)
        write_atomic(state_dir / "exit_code", "127\n")
        return 127
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    for signum in pending:
        forward(signum, None)
    code = child.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)  # whatever the trainer left in its group ends with it
    cancelled = (state_dir / CANCEL_MARKER).exists()
    requeue = code == EXIT_REQUEUE and not cancelled and bool(job_id)
    note(state_dir, {"attempt": attempt, "end": time.time(), "exit_code": code, "requeue": requeue})
    if requeue:
        print(f"labrun: attempt {attempt} checkpointed; requeueing Slurm job {job_id}", flush=True)
        # Already being requeued (preemption, an admin's requeue): Slurm refuses this one, which is fine.
        subprocess.run(["scontrol", "requeue", job_id], check=False, capture_output=True, timeout=60)
        return code
    write_atomic(state_dir / "exit_code", f"{code}\n")
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
