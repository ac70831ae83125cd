"""The ``slurm`` launcher: each run is one Slurm batch job, submitted with plain ``sbatch --parsable``.

Why the plain commands and not submitit: submitit pickles a Python function for the nodes, and its status
watcher reads job states from ``sacct`` only, which knows nothing on a cluster without slurmdbd (and
the jobs of a labrun run are a command line, not a function). What we take from it: the job finds its own
outcome on the shared filesystem, USR1 before the time limit, and ``scontrol requeue`` from the job.

- The job: ``<state_dir>/job.sh`` execs ``slurm_wrapper.py`` (standard library only) around the trainer
  command; job name = run name, working directory = the output directory (shared with the nodes), stdout
  and stderr appended to the run's log. ``--gres=gpu:N`` from the run's config; partition, account, QOS,
  CPUs, memory, time limit and extra options from ``LABRUN_SLURM_*`` only, never from a request. Slurm
  picks the node and the GPU ids (``places_runs``).
- Status: one ``squeue`` for all of the service's jobs per interval (``poll_many``); the exit code comes
  from ``<state_dir>/exit_code`` (the wrapper's), and, for a job that ended without one (killed, timed out,
  node failure) and has aged out of squeue, from ``sacct`` where accounting exists.
- Finding a run again: ``<state_dir>/job_id``, else its name in ``squeue`` in this output directory (never
  the job of an attempt that ``forget`` dropped before a resume: ``superseded_jobs``).
- Cancel: ``cancel_requested`` in the state dir (so the trainer does not take it for a preemption), then
  ``scancel --full --signal=TERM``, the grace period, then ``scancel`` (SIGKILL after Slurm's KillWait).
- Requeue (preemption, an admin's ``scontrol requeue``, USR1 before the time limit): the job is the same
  job id, pending again, then running again: the run stays one run with more ``attempts`` (see
  ``attempts()``), and the trainer resumes from ``ckpt/last.ckpt``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import override

from app.core.config import Settings, load_engine_settings
from app.launchers.base import LOST, EngineUnavailable, Launcher, LaunchError, LaunchSpec, Outcome
from app.launchers.slurm_wrapper import OWN_TIME_LIMIT_ENV
from app.statedir import StateDir
from trainer.atomic import write_atomic

WRAPPER = Path(__file__).with_name("slurm_wrapper.py")
# squeue's states of a job that has not ended (it may still run, or run again).
ACTIVE = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
    }
)
_UNREACHABLE = ("Unable to contact slurm controller", "Socket timed out", "Connection refused")
# Variables of the service's own machine or its own Slurm job, never passed on to a run's job.
_HOST_ONLY = ("CUDA_VISIBLE_DEVICES", "SLURM_", "SBATCH_", "LABRUN_")


class SlurmSettings(BaseSettings):
    """``LABRUN_SLURM_*``: read once at start-up; a bad value stops the service with a clear message."""

    model_config = SettingsConfigDict(env_prefix="LABRUN_SLURM_", extra="ignore")

    partition: str | None = None  # sbatch --partition; default: the cluster's default partition
    account: str | None = None  # sbatch --account; default: the user's default
    qos: str | None = None  # sbatch --qos; default: the account's default
    # Per priority class (docs/priorities.md), over the two above; Slurm then preempts by its own rules.
    partition_high: str | None = None  # sbatch --partition of a high-priority run
    partition_normal: str | None = None  # sbatch --partition of a normal run
    partition_low: str | None = None  # sbatch --partition of a low-priority run (one that may be preempted)
    qos_high: str | None = None  # sbatch --qos of a high-priority run
    qos_normal: str | None = None  # sbatch --qos of a normal run
    qos_low: str | None = None  # sbatch --qos of a low-priority run
    time_limit: str = "1-00:00:00"  # sbatch --time; a run past it gets USR1, checkpoints and is requeued
    cpus_per_task: int = 4  # sbatch --cpus-per-task
    mem: str | None = None  # sbatch --mem, e.g. 32G; default: the partition's
    sbatch_options: Annotated[list[str], NoDecode] = Field(default_factory=list)  # extra: words or JSON
    trainer_command: Annotated[list[str], NoDecode] | None = (
        None  # the trainer's command on the nodes; default LABRUN_TRAINER_COMMAND
    )
    python: str = sys.executable  # on the nodes, runs slurm_wrapper.py (standard library only)
    signal_before_s: int = 120  # --signal=B:USR1@N: checkpoint this long before the time limit
    requeue: bool = True  # --requeue: a preempted or timed-out run comes back and resumes
    poll_interval_s: float = 5.0  # seconds between two squeue calls (one for all runs)
    command_timeout_s: float = 30.0  # seconds to wait for sbatch, squeue, scontrol, scancel

    @field_validator("sbatch_options", "trainer_command", mode="before")
    @classmethod
    def _words(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return shlex.split(value)
        return value

    @field_validator("sbatch_options")
    @classmethod
    def _options(cls, value: list[str]) -> list[str]:
        owned = ("--job-name", "-J", "--output", "-o", "--error", "-e", "--chdir", "-D", "--parsable")
        for word in value:
            if word.split("=", 1)[0] in owned:
                raise ValueError(f"{word!r}: labrun sets this option itself")
        return value

    @field_validator("cpus_per_task", "signal_before_s")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("poll_interval_s", "command_timeout_s")
    @classmethod
    def _positive_s(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than 0 seconds")
        return value


class SlurmLauncher(Launcher):
    name: ClassVar[str] = "slurm"
    places_runs: ClassVar[bool] = True
    batch_polling: ClassVar[bool] = True

    def __init__(self, settings: SlurmSettings, state: StateDir, trainer_command: list[str]) -> None:
        super().__init__(state)
        self.settings = settings
        self.output_dir = Path(state.output_dir).resolve()
        self.trainer_command = list(settings.trainer_command or trainer_command)
        self.poll_interval_s = settings.poll_interval_s
        self.wait_step_s = min(self.wait_step_s, settings.poll_interval_s)

    @classmethod
    def from_settings(cls, settings: Settings, state: StateDir) -> SlurmLauncher:
        return cls(load_engine_settings(SlurmSettings), state, settings.trainer_command)

    # --- what Slurm is asked for -------------------------------------------------------------------------

    def sbatch_args(self, spec: LaunchSpec) -> list[str]:
        """sbatch's options for a run: everything a run's job is, in one place (the site's from settings)."""
        s = self.settings
        args = [
            "--parsable",
            f"--job-name={spec.name}",
            f"--output={spec.log_path}",
            f"--error={spec.log_path}",
            "--open-mode=append",
            f"--chdir={spec.output_dir}",
            "--export=ALL",
            "--nodes=1",
            "--ntasks=1",
            f"--cpus-per-task={s.cpus_per_task}",
            f"--time={self.job_time(spec)}",
            f"--signal=B:USR1@{s.signal_before_s}",
            "--requeue" if s.requeue else "--no-requeue",
        ]
        if spec.gpu_need:
            args.append(f"--gres=gpu:{spec.gpu_need}")
        if s.mem:
            args.append(f"--mem={s.mem}")
        partition = getattr(s, f"partition_{spec.priority}", None) or s.partition
        qos = getattr(s, f"qos_{spec.priority}", None) or s.qos
        if partition:
            args.append(f"--partition={partition}")
        if s.account:
            args.append(f"--account={s.account}")
        if qos:
            args.append(f"--qos={qos}")
        return [*args, *s.sbatch_options]

    def job_script(self, spec: LaunchSpec) -> str:
        command = [self.settings.python, str(WRAPPER), str(self.files(spec.name).dir), "--"]
        command += [*self.trainer_command, *spec.trainer_args]
        return "#!/bin/sh\n# labrun run " + spec.name + "\nexec " + shlex.join(command) + "\n"

    def job_time(self, spec: LaunchSpec) -> str:
        """sbatch --time: the site's (LABRUN_SLURM_TIME_LIMIT), or, where the run's own time limit ends
        first, what is left of it plus the warning before it (the job then gets USR1 at the run's limit,
        saves its checkpoint and is not requeued: ``own_time_limit``). Whole minutes, rounded up."""
        own = self.own_time_limit(spec)
        if own is None:
            return self.settings.time_limit
        return str(max(1, math.ceil(own / 60)))

    def own_time_limit(self, spec: LaunchSpec) -> float | None:
        """The job's time in seconds when the run's own limit ends before the site's (else None)."""
        if spec.time_limit_s is None:
            return None
        own = spec.time_limit_s + self.settings.signal_before_s
        site = slurm_seconds(self.settings.time_limit)
        return own if site is None or own < site else None

    def _env(self, spec: LaunchSpec) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_HOST_ONLY)}
        env.update(spec.env)
        if self.own_time_limit(spec) is not None:  # its USR1 is the run's own limit: no requeue
            env[OWN_TIME_LIMIT_ENV] = "1"
        env.setdefault("WANDB_MODE", os.environ.get("WANDB_MODE") or "")
        if not env["WANDB_MODE"]:
            env["WANDB_MODE"] = "online" if env.get("WANDB_API_KEY") else "offline"
        return env

    # --- Launcher ------------------------------------------------------------------------------------

    def start(self, spec: LaunchSpec) -> str:
        files = self.files(spec.name)
        files.dir.mkdir(parents=True, exist_ok=True)
        if files.job_id.exists():
            raise LaunchError(f"run {spec.name!r} was already submitted (found {files.job_id})")
        script = files.job_script
        write_atomic(script, self.job_script(spec))
        spec.log_path.touch()
        out = self._run(["sbatch", *self.sbatch_args(spec), str(script)], env=self._env(spec), launch=True)
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise LaunchError(f"sbatch answered {out.strip()!r}, not a job id")
        write_atomic(files.job_id, job_id + "\n")
        return job_id

    def poll(self, name: str, handle: str) -> Outcome | None:
        return self.poll_many({name: handle})[name]

    def poll_many(self, runs: Mapping[str, str]) -> dict[str, Outcome | None]:
        if not runs:
            return {}
        jobs = self._squeue()  # one query for all of them
        missing = [h for n, h in runs.items() if h not in jobs and self.files(n).read_exit_code() is None]
        accounted = self._sacct(missing) if missing else {}
        out: dict[str, Outcome | None] = {}
        for name, job_id in runs.items():
            code = self.files(name).read_exit_code()
            if code is not None:
                out[name] = self.outcome(name, code)
                continue
            state = jobs.get(job_id, {}).get("state") or accounted.get(job_id, {}).get("state")
            if state is None:
                out[name] = Outcome(None, LOST if job_id else "never submitted to Slurm")
            elif state.split()[0] in ACTIVE and not self._killed(name, state):
                out[name] = None
            else:
                code = self.files(name).read_exit_code()  # it may have been written between the two reads
                out[name] = (
                    self.outcome(name, code)
                    if code is not None
                    else self._ended(name, job_id, state, accounted)
                )
        return out

    @override
    def _terminate(self, name: str, handle: str) -> None:
        if self._squeue().get(handle, {}).get("state") == "PENDING":
            self._scancel(handle)  # it never ran: nothing to stop gracefully
        else:
            self._scancel("--full", "--signal=TERM", handle)

    @override
    def _kill(self, name: str, handle: str) -> None:
        self._scancel("--full", "--signal=KILL", handle)  # now, not after Slurm's KillWait

    def _kill_harder(self, name: str, handle: str) -> None:
        self._scancel(handle)  # ends the job (SIGKILL after KillWait), whatever its steps do
        self.wait(name, handle, timeout=120)

    def _scancel(self, *args: str) -> None:
        """scancel; a job that has just ended is not an error."""
        try:
            self._run(["scancel", *args])
        except LaunchError as exc:
            if not any(m in str(exc) for m in ("already complet", "Invalid job id", "not running")):
                raise

    def reattach(self, name: str) -> str | None:
        files = self.files(name)
        try:
            job_id = files.job_id.read_text().strip()
        except OSError:
            job_id = ""
        if job_id:
            return job_id
        superseded = self._superseded(name)
        found = [
            j
            for j, info in self._squeue().items()
            if info["name"] == name and self._ours(info) and j not in superseded
        ]
        if not found:
            return None
        job_id = max(found, key=int)
        files.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(files.job_id, job_id + "\n")
        return job_id

    def _drop(self, name: str) -> None:
        """The last attempt's job stays in squeue for a while after it ended (MinJobAge): a restart before
        the next attempt starts must not take it for the run's job (``reattach``)."""
        files = self.files(name)
        with contextlib.suppress(OSError):
            job_id = files.job_id.read_text().strip()
            if job_id:
                with open(files.superseded_jobs, "a") as f:
                    f.write(job_id + "\n")

    def _superseded(self, name: str) -> set[str]:
        try:
            return set(self.files(name).superseded_jobs.read_text().split())
        except OSError:
            return set()

    @override
    def release(self, name: str, handle: str) -> None:
        """A run whose outcome is recorded must not run on (e.g. one recorded as lost that reappeared)."""
        info = self._squeue().get(handle)
        if info and info["state"] in ACTIVE and info["state"] != "COMPLETING":
            with contextlib.suppress(LaunchError, EngineUnavailable):
                self._scancel(handle)

    def leftovers(self) -> dict[str, str]:
        return {
            info["name"]: job_id
            for job_id, info in self._squeue().items()
            if self._ours(info) and info["state"] in ACTIVE
        }

    def health(self) -> tuple[bool, str]:
        if shutil.which("sbatch") is None:
            return False, "sbatch not found: the service host must be a Slurm submit host"
        try:
            out = self._run(["sinfo", "-h", "-o", "%P %a %D %T"])
        except (EngineUnavailable, LaunchError) as exc:
            return False, f"Slurm unavailable: {exc}"
        lines = [" ".join(line.split()) for line in out.splitlines() if line.strip()]
        return bool(lines), "slurm launcher ready: " + "; ".join(lines[:5]) if lines else "no Slurm partition"

    def attempts(self, name: str) -> tuple[int, bool]:
        """(attempts started, whether the last one ended asking to be requeued and no other started yet),
        read from the job's own record in the state dir (the service shows them: ``attempts``,
        ``waiting_reason``)."""
        started, requeued = 0, False
        try:
            lines = self.files(name).attempts.read_text().splitlines()
        except OSError:
            return 0, False
        for line in lines:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if "start" in entry:
                    started, requeued = max(started, int(entry["attempt"])), False
                elif entry.get("requeue"):
                    requeued = True
        return started, requeued

    # --- helpers -------------------------------------------------------------------------------------

    def _killed(self, name: str, state: str) -> bool:
        """COMPLETING after the cancel's SIGKILL: its processes are gone; Slurm only cleans up (that can
        take its KillWait), and it will not run again (a cancelled job is never requeued)."""
        return state == "COMPLETING" and self.files(name).killed_after_grace.exists()

    def _ours(self, info: dict[str, str]) -> bool:
        try:
            return Path(info["workdir"]).resolve() == self.output_dir
        except OSError:
            return False

    def _squeue(self) -> dict[str, dict[str, str]]:
        """job id -> state, reason, name, workdir: this user's jobs (all states squeue still knows). Names are
        matched here, not with ``--name``: a run's name may hold a comma, which that option splits on."""
        cmd = ["squeue", "-h", "--states=all", "--me", "-o", "%i\t%T\t%r\t%Z\t%j"]
        jobs: dict[str, dict[str, str]] = {}
        for line in self._run(cmd).splitlines():
            parts = line.split("\t", 4)
            if len(parts) == 5:
                job_id, state, reason, workdir, job_name = parts
                jobs[job_id] = {"state": state, "reason": reason, "workdir": workdir, "name": job_name}
        return jobs

    def _sacct(self, job_ids: list[str]) -> dict[str, dict[str, str]]:
        """State and exit code of ended jobs from Slurm's accounting, where it exists ({} where not)."""
        if shutil.which("sacct") is None:
            return {}
        cmd = [
            "sacct",
            "-n",
            "-P",
            "-X",
            "-o",
            "JobID,State,ExitCode",
            "-j",
            ",".join(j for j in job_ids if j),
        ]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.settings.command_timeout_s
            )
        except (OSError, subprocess.TimeoutExpired):
            return {}
        out = {}
        for line in done.stdout.splitlines() if done.returncode == 0 else []:
            parts = line.split("|")
            if len(parts) == 3:
                out[parts[0]] = {"state": parts[1].split()[0] if parts[1] else "", "exit": parts[2]}
        return out

    def _ended(self, name: str, job_id: str, state: str, accounted: dict[str, dict[str, str]]) -> Outcome:
        """A job Slurm says ended, without an exit code from the wrapper (it was killed with the job)."""
        if self.files(name).killed_after_grace.exists():
            return self.outcome(name, -signal.SIGKILL)  # the cancel's SIGKILL took the wrapper too
        why = {
            "TIMEOUT": "it reached its time limit",
            "OUT_OF_MEMORY": "out of memory",
            "NODE_FAIL": "its node failed",
            "PREEMPTED": "preempted and not requeued",
            "CANCELLED": "cancelled in Slurm (scancel), not by labrun",
            "BOOT_FAIL": "its node failed to boot",
            "DEADLINE": "it reached its deadline",
        }.get(state.split()[0], "")
        exit_field = accounted.get(job_id, {}).get("exit")
        code = None
        if exit_field and ":" in exit_field:
            status, sig = exit_field.split(":", 1)
            code = -int(sig) if sig.isdigit() and int(sig) else int(status) if status.isdigit() else None
        detail = f"Slurm job {job_id} ended {state}" + (f": {why}" if why else "")
        return Outcome(code, f"{detail} (the run recorded no exit status)")

    def _run(self, cmd: list[str], env: dict[str, str] | None = None, launch: bool = False) -> str:
        """A Slurm command's stdout. A controller that cannot be reached: EngineUnavailable (the run stays
        queued, or is asked about again); anything else Slurm refuses: LaunchError with its message."""
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=self.settings.command_timeout_s
            )
        except FileNotFoundError:
            raise EngineUnavailable(
                f"{cmd[0]} not found: the service host must be a Slurm submit host"
            ) from None
        except subprocess.TimeoutExpired:
            raise EngineUnavailable(
                f"{cmd[0]} did not answer within {self.settings.command_timeout_s} s"
            ) from None
        if done.returncode != 0:
            message = " ".join((done.stderr or done.stdout).split()) or f"exit status {done.returncode}"
            if any(marker in message for marker in _UNREACHABLE):
                raise EngineUnavailable(f"{cmd[0]}: {message}")
            if launch:
                raise LaunchError(f"Slurm refused the job: {message}")
            raise LaunchError(f"{cmd[0]}: {message}")
        return done.stdout


def slurm_seconds(text: str) -> float | None:
    """Seconds of a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS); None: UNLIMITED,
    INFINITE or a form not known here (then the site's limit is taken as the longer one)."""
    text = text.strip()
    days = 0
    if "-" in text:
        head, _, text = text.partition("-")
        if not head.isdigit():
            return None
        days = int(head)
    parts = text.split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        return None
    numbers = [int(p) for p in parts]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        numbers += [0] * (3 - len(numbers))
        h, m, sec = numbers
    elif len(numbers) == 1:  # minutes
        h, m, sec = 0, numbers[0], 0
    elif len(numbers) == 2:  # MM:SS
        h, (m, sec) = 0, numbers
    else:
        h, m, sec = numbers
    return float(((days * 24 + h) * 60 + m) * 60 + sec)
