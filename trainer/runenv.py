"""The contract between the service and a run: the ``LABRUN_*`` variables of a run's environment, as one
typed value. The service writes them with ``RunEnv(...).to_env()``; the trainer reads them with
``RunEnv.from_env()``. Each name is written here and nowhere else.

Who sets each one, and why:

- ``LABRUN_RUN_OWNER`` (``owner``): the service, for every run (``app/lifecycle.py``). Who submitted it:
  a tag and a config value of its WandB run.
- ``LABRUN_SWEEP`` (``sweep``): the service, for a sweep's run. The sweep's runs share one WandB group.
- ``LABRUN_RESUME`` (``resume``) and ``LABRUN_ATTEMPT`` (``attempt``): the service for a resumed run
  (``POST /runs/{name}/resume``), the Slurm job wrapper for a requeued job's next attempt
  (``app/launchers/slurm_wrapper.py``). The run continues from ``ckpt/last.ckpt`` in its own directory,
  and ``run.json`` numbers the attempt.
- ``LABRUN_PREEMPTIBLE`` (``preemptible``) and ``LABRUN_CANCEL_MARKER`` (``cancel_marker``): the Slurm job
  wrapper. A SIGTERM is then a preemption (checkpoint, exit 75) unless the marker file exists: the
  service's cancel writes it before it signals.
- ``LABRUN_IMAGE_ID`` (``image_id``): the Docker launcher. ``run.json`` names the image the run ran in.
- ``LABRUN_CODE_VERSION`` (``code_version``): the trainer image, baked in at build time
  (``docker/trainer.Dockerfile``). ``run.json``'s commit where there is no ``.git``.
- ``LABRUN_LOG_PATH`` (``log_path``): the Docker launcher. Read by the container's entrypoint (its shell
  and the log writer, ``python -m trainer.logbound``), not by the trainer: the run's log file.
- ``LABRUN_MAX_LOG_BYTES`` (``max_log_bytes``): the service, for every run (its ``LABRUN_MAX_LOG_BYTES``
  setting). Read by the run's log writer (``trainer/logbound.py``: the run wrapper, or a Docker run's
  entrypoint), not by the trainer: the most the run's log file keeps (0: no bound).
- ``LABRUN_RUN_DIR`` and ``LABRUN_RUN_NAME`` (``run_dir``, ``run_name``): the trainer itself (rank 0), for
  the other ranks Lightning starts by running the same command again: they join this run.
  ``LABRUN_RUN_DIR`` alone: the Docker launcher, which makes the run's directory (its only mount) before
  the trainer starts; rank 0 takes it while it is empty (``trainer/rundir.py``).

- ``LABRUN_INIT_FROM_CKPT`` (``init_from_ckpt``): the service, for a run whose config names ``init_from``
  (a run's name): the path of that run's last checkpoint, resolved by the service from the name
  (``app/lifecycle/dependencies.py``), never taken from a request. The trainer loads its model weights
  (``trainer/init_from.py``); the Docker launcher mounts that one file, read-only. Set it by hand to run
  ``python -m trainer init_from=NAME`` outside the service.

Test hooks, never set by the service: ``LABRUN_PREEMPT_AFTER_EPOCHS=N`` (``preempt_after_epochs``) preempts
the run (SIGTERM if it is preemptible, else SIGUSR1) after epoch N, ``LABRUN_PREEMPT_IN_VALIDATION=N``
(``preempt_in_validation``) at the first validation batch of epoch N (0-based), ``LABRUN_PREEMPT_AT_STEP=N``
(``preempt_at_step``) once optimizer step N is done; ``LABRUN_KILL_AT_STEP=N`` (``kill_at_step``) sends it
SIGKILL there. All on the first attempt only (``trainer/resume.py``).

Not part of it: ``LABRUN_CONF_DIR``, a deployment setting (where ``conf/`` is) that the service and the
trainer read alike (``trainer/config.py``) and that the service never sets for a run.

An empty value is the same as an unset one. A value that cannot be read raises ``RunEnvError`` naming the
variable; ``python -m trainer`` reads the environment before anything else and exits 2 on it.
Standard library only: the Slurm job wrapper imports this module on the compute nodes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

RUN_OWNER = "LABRUN_RUN_OWNER"
SWEEP = "LABRUN_SWEEP"
RESUME = "LABRUN_RESUME"
ATTEMPT = "LABRUN_ATTEMPT"
PREEMPTIBLE = "LABRUN_PREEMPTIBLE"
CANCEL_MARKER = "LABRUN_CANCEL_MARKER"
IMAGE_ID = "LABRUN_IMAGE_ID"
CODE_VERSION = "LABRUN_CODE_VERSION"
LOG_PATH = "LABRUN_LOG_PATH"
MAX_LOG_BYTES = "LABRUN_MAX_LOG_BYTES"
RUN_DIR = "LABRUN_RUN_DIR"
RUN_NAME = "LABRUN_RUN_NAME"
PREEMPT_AFTER_EPOCHS = "LABRUN_PREEMPT_AFTER_EPOCHS"  # test hook
PREEMPT_IN_VALIDATION = "LABRUN_PREEMPT_IN_VALIDATION"  # test hook
PREEMPT_AT_STEP = "LABRUN_PREEMPT_AT_STEP"  # test hook
KILL_AT_STEP = "LABRUN_KILL_AT_STEP"  # test hook
INIT_FROM_CKPT = "LABRUN_INIT_FROM_CKPT"


class RunEnvError(ValueError):
    """A ``LABRUN_*`` variable whose value cannot be read; the message names each one and what it takes."""


def _text(value: str) -> str | None:
    return value or None


def _path(value: str) -> Path | None:
    return Path(value) if value else None


def _flag(value: str) -> bool:
    if value not in ("", "0", "1"):
        raise ValueError("1 or 0")
    return value == "1"


def _integer(minimum: int) -> Callable[[str], int | None]:
    def read(value: str) -> int | None:
        if not value:
            return None
        if not re.fullmatch(r"[0-9]+", value) or int(value) < minimum:
            raise ValueError(f"an integer >= {minimum}")
        return int(value)

    return read


def _var(name: str, read: Callable[[str], Any], default: Any = None) -> Any:
    """A field of ``RunEnv``: the variable it is read from and how its text is read."""
    return field(default=default, metadata={"env": name, "read": read})


@dataclass(frozen=True)
class RunEnv:
    """The ``LABRUN_*`` environment of a run (see the module docstring for who sets each field)."""

    owner: str | None = _var(RUN_OWNER, _text)
    sweep: str | None = _var(SWEEP, _text)
    resume: bool = _var(RESUME, _flag, default=False)
    attempt: int | None = _var(ATTEMPT, _integer(1))
    preemptible: bool = _var(PREEMPTIBLE, _flag, default=False)
    cancel_marker: Path | None = _var(CANCEL_MARKER, _path)
    image_id: str | None = _var(IMAGE_ID, _text)
    code_version: str | None = _var(CODE_VERSION, _text)
    log_path: Path | None = _var(LOG_PATH, _path)
    max_log_bytes: int | None = _var(MAX_LOG_BYTES, _integer(0))
    run_dir: Path | None = _var(RUN_DIR, _path)
    run_name: str | None = _var(RUN_NAME, _text)
    preempt_after_epochs: int | None = _var(PREEMPT_AFTER_EPOCHS, _integer(0))  # test hook
    preempt_in_validation: int | None = _var(PREEMPT_IN_VALIDATION, _integer(0))  # test hook
    preempt_at_step: int | None = _var(PREEMPT_AT_STEP, _integer(1))  # test hook
    kill_at_step: int | None = _var(KILL_AT_STEP, _integer(1))  # test hook
    init_from_ckpt: Path | None = _var(INIT_FROM_CKPT, _path)

    def to_env(self) -> dict[str, str]:
        """The variables of the fields that are set (a flag: when true, as ``1``), for a run's environment."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value is False:
                continue
            env[f.metadata["env"]] = "1" if value is True else str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RunEnv:
        """Read from ``environ`` (by default this process's environment, as it is at the call); raises
        ``RunEnvError`` naming every variable whose value cannot be read."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in fields(cls):
            name, raw = f.metadata["env"], environ.get(f.metadata["env"], "")
            try:
                values[f.name] = f.metadata["read"](raw)
            except ValueError as exc:
                problems.append(f"{name}={raw!r}: expected {exc}")
        if problems:
            raise RunEnvError("invalid run environment: " + "; ".join(problems))
        return cls(**values)
