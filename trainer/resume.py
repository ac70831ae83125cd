"""Preemption and resume: a run that is stopped by its scheduler continues where it stopped.

- Preemption: SIGUSR1 (Slurm's ``--signal=B:USR1@N`` before a time limit), or SIGTERM when the run is
  preemptible (``RunEnv.preemptible``, set by labrun's Slurm job) and the service did not ask for a
  cancel (its cancel writes ``RunEnv.cancel_marker`` before it signals). The trainer then stops at its next
  safe point, writes ``ckpt/last.ckpt`` that resumes it exactly (``trainer/preempt.py``) and exits
  ``EXIT_REQUEUE`` (75).
- Resume (``RunEnv.resume``: a requeued Slurm job's next attempt, or ``POST /runs/{name}/resume``): the
  same run directory is reused, training restarts from ``ckpt/last.ckpt``, ``metrics.csv`` is appended to
  (with its existing columns), the WandB run is the same one (its id is derived from the run's name) and
  ``run.json`` gains an attempt.
Light at import (no torch): the CLI and the signal handler use it.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from trainer.atomic import write_atomic
from trainer.runenv import RunEnv

log = logging.getLogger(__name__)
EXIT_REQUEUE = 75  # EX_TEMPFAIL: checkpointed, run me again (the Slurm job wrapper requeues on it)
PREEMPT_SIGNAL = signal.SIGUSR1
LAST_CKPT = "last.ckpt"


def is_preemption(signum: int) -> bool:
    """SIGUSR1 always; SIGTERM only for a preemptible run whose cancel was not asked for by the service."""
    if signum == PREEMPT_SIGNAL:
        return True
    env = RunEnv.from_env()
    if signum != signal.SIGTERM or not env.preemptible:
        return False
    return not (env.cancel_marker and env.cancel_marker.exists())


def wandb_id(name: str) -> str:
    """The WandB run id of a run: the same for every attempt (so a resumed run continues the same WandB run)."""
    return hashlib.sha256(name.encode()).hexdigest()[:24]


def last_checkpoint(ckpt_dir: str | os.PathLike[str]) -> Path | None:
    path = Path(ckpt_dir) / LAST_CKPT
    return path if path.is_file() else None


def csv_columns(path: Path) -> list[str]:
    """The header of an existing metrics.csv (its writer keeps them, so appended rows line up)."""
    try:
        with open(path, newline="") as f:
            return next(csv.reader(f), [])
    except OSError:
        return []


def cut_metrics_csv(path: Path, below_step: int) -> int:
    """Keep only the rows of metrics.csv whose ``step`` is below ``below_step`` (the checkpoint's global
    step), and return how many were dropped. A killed attempt wrote rows for the steps it did after its last
    checkpoint; the resumed attempt does those steps again and writes them again, so without the cut they
    would appear twice. Rows an epoch's end wrote after its checkpoint (val_loss, train_loss_epoch) carry
    that epoch's last step, below the checkpoint's, and are kept: the resumed attempt does not write them
    again. Lines kept are kept byte for byte; a row whose step cannot be read is kept."""
    try:
        lines = path.read_bytes().splitlines(keepends=True)
    except OSError:
        return 0
    header = next(csv.reader([lines[0].decode()]), []) if lines else []
    if "step" not in header:
        return 0
    column = header.index("step")
    kept = [lines[0]]
    for line in lines[1:]:
        row = next(csv.reader([line.decode()]), [])
        try:
            step = int(float(row[column]))
        except (IndexError, ValueError):
            step = None
        if step is None or step < below_step:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        write_atomic(path, b"".join(kept))
        log.info(
            "metrics.csv: dropped %d rows from at or after step %d, which this attempt does again",
            dropped,
            below_step,
        )
    return dropped


def keep_metrics_csv(csv_logger: Any, path: Path, below_step: int | None = None) -> None:
    """A resumed run appends to its metrics.csv: Lightning's CSV writer deletes an existing file when it is
    made, so the file steps aside meanwhile, and the writer learns its columns (or it would rewrite the
    header with only the columns of its first rows). ``below_step``: the checkpoint's global step, past
    which rows are cut (``cut_metrics_csv``)."""
    if below_step is not None:
        cut_metrics_csv(path, below_step)
    aside = path.with_name(".metrics.csv.resumed")
    if path.is_file():
        os.replace(path, aside)
    try:
        writer = csv_logger.experiment
    finally:
        if aside.is_file():
            os.replace(aside, path)
    writer.metrics_keys = sorted(csv_columns(path))


def preempt_signal() -> int:
    """The signal a scheduler preempts this run with: SIGTERM where the run is preemptible, else SIGUSR1."""
    return signal.SIGTERM if RunEnv.from_env().preemptible else PREEMPT_SIGNAL


def preempt_after_epochs_callback() -> Any:
    """Operations/test hooks, on the first attempt only, each sending this process what a scheduler would
    (``preempt_signal``): ``RunEnv.preempt_after_epochs=N`` after epoch N, a preemption at an epoch
    boundary; ``RunEnv.preempt_in_validation=N`` at the first validation batch of epoch N (0-based);
    ``RunEnv.preempt_at_step=N`` once optimizer step N is done, in the middle of an epoch where N is;
    ``RunEnv.kill_at_step=N``: SIGKILL there, a run that did not stop in time."""
    env = RunEnv.from_env()
    after, during = env.preempt_after_epochs, env.preempt_in_validation
    at_step, kill_at = env.preempt_at_step, env.kill_at_step
    if all(v is None for v in (after, during, at_step, kill_at)) or env.resume:
        return None
    import lightning as L

    class PreemptAfter(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, *_: Any) -> None:
            if after is not None and trainer.current_epoch + 1 == after:
                os.kill(os.getpid(), preempt_signal())

        def on_validation_batch_start(self, trainer: L.Trainer, *_: Any) -> None:
            if during is not None and not trainer.sanity_checking and trainer.current_epoch == during:
                os.kill(os.getpid(), preempt_signal())

        def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
            if trainer.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if trainer.global_step == at_step:
                os.kill(os.getpid(), preempt_signal())

    return PreemptAfter()
