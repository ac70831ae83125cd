"""The service's own folder inside the output directory, spelled out here and nowhere else.

<output_dir>/.labrun/
├── runs.db            the run store (SQLite, WAL)
├── service.lock       one service per output directory (flock)
└── runs/<name>/       one folder per run (``RunFiles``): its log and what the launcher and the run's
                       wrapper keep about its current attempt (pid, exit code, job id, cancel markers)

Standard library and ``trainer/atomic.py`` only: the run wrappers (``app/launchers/run_wrapper.py``,
``slurm_wrapper.py``) import it, on a Slurm node too, and start in milliseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from trainer.atomic import write_atomic


@dataclass(frozen=True)
class RunFiles:
    """One run's state folder: every file a launcher or a run's wrapper keeps there, named once.

    Files of the current attempt (``forget_attempt`` removes them before a resume):
    - ``pid``, ``child_pid``: "pid start-time" of the wrapper and of the trainer it started (local runs).
    - ``exit_code``: the trainer's exit status, negative for a signal, written by the wrapper when it ends.
    - ``job_id``: the Slurm job of the attempt; ``job.sh``: its script.
    - ``cancel_requested``: written by the service's cancel before it signals, so that neither the trainer
      nor the Slurm job takes the SIGTERM for a preemption (the run reads it as ``LABRUN_CANCEL_MARKER``).
    - ``killed_after_grace``: written by the cancel just before its SIGKILL (the grace period, in s), so
      that the outcome says who killed the run and why.
    - ``stall.json``: the stall watcher's clock of the attempt and its decision to cancel it for a stall
      (``app/lifecycle/stall_clock.py``), so that a restart of the service neither forgets nor hastens it.
    Kept for the run's life: ``log`` (every attempt appends to it), ``attempts`` (one JSON line per start
    and end of a Slurm job), ``superseded_jobs`` (Slurm jobs of forgotten attempts: never the run's job).
    """

    dir: Path

    @property
    def log(self) -> Path:
        return self.dir / "log"

    @property
    def pid(self) -> Path:
        return self.dir / "pid"

    @property
    def child_pid(self) -> Path:
        return self.dir / "child_pid"

    @property
    def exit_code(self) -> Path:
        return self.dir / "exit_code"

    @property
    def job_id(self) -> Path:
        return self.dir / "job_id"

    @property
    def job_script(self) -> Path:
        return self.dir / "job.sh"

    @property
    def attempts(self) -> Path:
        return self.dir / "attempts"

    @property
    def superseded_jobs(self) -> Path:
        return self.dir / "superseded_jobs"

    @property
    def cancel_marker(self) -> Path:
        return self.dir / "cancel_requested"

    @property
    def killed_after_grace(self) -> Path:
        return self.dir / "killed_after_grace"

    @property
    def stall_clock(self) -> Path:
        return self.dir / "stall.json"

    def read_exit_code(self) -> int | None:
        """The exit code the run's wrapper recorded, or None while there is none."""
        try:
            return int(self.exit_code.read_text())
        except (OSError, ValueError):
            return None

    def record_exit_code(self, code: int) -> None:
        write_atomic(self.exit_code, f"{code}\n")

    def grace_kill(self) -> str | None:
        """The grace period (as written, in s) of a cancel that went on to SIGKILL the run, else None."""
        try:
            return self.killed_after_grace.read_text().strip()
        except OSError:
            return None

    def mark_cancel_requested(self) -> None:
        write_atomic(self.cancel_marker, f"{time.time()}\n")

    def mark_killed_after_grace(self, grace_s: float) -> None:
        write_atomic(self.killed_after_grace, f"{grace_s}\n")

    def forget_attempt(self) -> None:
        """Remove what describes the attempt that ended, so that the run can start again as its next."""
        for path in (
            self.pid,
            self.child_pid,
            self.exit_code,
            self.job_id,
            self.job_script,
            self.cancel_marker,
            self.killed_after_grace,
            self.stall_clock,
        ):
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class StateDir:
    output_dir: Path

    @property
    def root(self) -> Path:
        return self.output_dir / ".labrun"

    @property
    def db(self) -> Path:
        return self.root / "runs.db"

    @property
    def lock(self) -> Path:
        return self.root / "service.lock"

    def run(self, name: str) -> Path:
        """The run's own state folder (its log and the launcher's files)."""
        return self.root / "runs" / name

    def files(self, name: str) -> RunFiles:
        return RunFiles(self.run(name))

    def log(self, name: str) -> Path:
        return self.files(name).log
