"""Shared by the tests in tests/slurm/ (this directory is on sys.path when pytest collects them): the CI
rule, Slurm's own view of a job, and a service process that launches on Slurm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from service_process import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
FAKE_TRAINER = [sys.executable, str(ROOT / "tests" / "app" / "fake_trainer.py")]
REAL_TRAINER = [sys.executable, "-m", "trainer"]


def in_ci() -> bool:
    """In CI a missing Slurm is a failure, never a skip: .ci/engines/slurm.sh must have started one."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def slurm_or_skip() -> str:
    """The node line of a Slurm that takes jobs now, or a skip (a failure with CI=true) saying why."""
    reason = None
    if shutil.which("sbatch") is None:
        reason = "Slurm is not installed (no sbatch); start one with .ci/engines/slurm.sh"
    else:
        done = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T %c %G"], capture_output=True, text=True)
        states = done.stdout.split()
        if done.returncode != 0:
            reason = (
                f"Slurm does not answer ({' '.join(done.stderr.split())[:200]}); run .ci/engines/slurm.sh"
            )
        elif len(states) < 2 or states[1].rstrip("*") not in ("idle", "mixed", "allocated", "completing"):
            reason = f"no Slurm node takes jobs (sinfo: {done.stdout.strip()!r}); run .ci/engines/slurm.sh"
    if reason:
        if in_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return done.stdout.strip()


def slurm_service(output_dir: Path, trainer=FAKE_TRAINER, **env: str) -> ServiceProcess:
    settings = {
        "LABRUN_LAUNCHER": "slurm",
        "LABRUN_SLURM_POLL_INTERVAL_S": "0.5",
        "LABRUN_SLURM_CPUS_PER_TASK": "1",
        "LABRUN_CANCEL_GRACE_S": "5",
        **env,
    }
    return ServiceProcess(output_dir, trainer_command=list(trainer), **settings)


def job_id(output_dir: Path, name: str) -> str:
    return (output_dir / ".labrun" / "runs" / name / "job_id").read_text().strip()


def show_job(job: str) -> dict[str, str]:
    """``scontrol show job``'s fields (Key=Value)."""
    done = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=True)
    fields: dict[str, str] = {}
    for word in done.stdout.split():
        key, _, value = word.partition("=")
        fields.setdefault(key, value)
    return fields


def squeue_state(job: str) -> str:
    done = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"], capture_output=True, text=True
    )
    return done.stdout.strip()


def ended_state(job: str, timeout: float = 30) -> str:
    """The state an ended job settles in. Slurm shows COMPLETING while it tidies up after the job's
    processes have exited (epilog, accounting), for a moment that is long on a busy machine."""
    wait_until(lambda: squeue_state(job) != "COMPLETING", timeout, f"job {job} to finish COMPLETING")
    return squeue_state(job)


def jobs_named(name: str) -> list[str]:
    """Job ids of that name (matched here: ``squeue --name`` splits a name at its commas)."""
    done = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i\t%j"], capture_output=True, text=True)
    return [line.split("\t", 1)[0] for line in done.stdout.splitlines() if line.split("\t", 1)[-1] == name]


def wait_until(check, timeout: float = 60, what: str = "condition", poll_s: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll_s)


def starts(output_dir: Path) -> list[str]:
    """Run names the fake trainer was started for, one per start."""
    path = output_dir / "fake_starts.log"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []
