"""``train(job, run_dir, guard)``: build everything from the resolved config, fit, return the final metrics.

Kept small on purpose (lightning-hydra-template's ``train.py``): the objects are built in one line each,
and the WandB run is always finished, also when training fails or is cancelled.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from trainer import init_from, resume, swe
from trainer.callbacks import ProgressFile, StopOnCancel
from trainer.cancel import CancelGuard
from trainer.data import SWEDataModule
from trainer.heartbeat import PhaseReporter
from trainer.model import OperatorModule
from trainer.preempt import ExactState, PreemptStop, checkpoint_step
from trainer.runenv import RunEnv

log = logging.getLogger(__name__)


def _quiet_known_noise() -> None:
    """Noise, not news: metrics.csv is meant to live in the run directory next to the other records, and
    Lightning's own use of a deprecated torch API is nothing a run can act on."""
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # Resumed in the middle of an epoch, Lightning warns unless the loader saves its own position: here
    # the checkpoint carries it and the sampler skips what was done (trainer/preempt.py).
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")


def build_datamodule(job: DictConfig, phases: PhaseReporter | None = None) -> SWEDataModule:
    spec = swe.SolverSpec(
        nlat=job.data.dims[0], nlon=job.data.dims[1], num_examples=job.data.num_examples, seed=job.seed
    )
    # A debug run reads the cache but never writes it: debugging leaves nothing outside <log_dir>/debug.
    return SWEDataModule(
        spec,
        job.paths.data_root,
        job.data.train_val_split,
        job.batch_size,
        job.num_workers,
        write_cache=not job.debug,
        pin_memory=str(job.accelerator) != "cpu" and torch.cuda.is_available(),
        on_chunk=(lambda done, total: phases.beat("data", done, total)) if phases is not None else None,
    )


def _determinism(job: DictConfig) -> bool | str:
    """Bit-identical on CPU. On a GPU some kernels (scatter/index backward, ...) have no deterministic
    version and would stop the run with an error: there they warn instead ("warn" is Lightning's option)."""
    if not job.deterministic:
        return False
    return True if str(job.accelerator) == "cpu" else "warn"


def build_trainer(
    job: DictConfig,
    run_dir: Path,
    loggers: list,
    guard: CancelGuard,
    stops: list[L.Callback],
    resuming: bool,
    phases: PhaseReporter | None = None,
) -> L.Trainer:
    """``stops``: the callbacks that stop the run (trainer/preempt.py), after the test hooks that signal it.
    ``resuming``: from a checkpoint, which is then validated already."""
    debug = bool(job.debug)
    checkpoint = ModelCheckpoint(dirpath=job.ckpt_dir, monitor=job.training.ckpt_monitor_val, save_last=True)
    hooks = [resume.preempt_after_epochs_callback()]  # test hooks: a preemption at a chosen point
    return L.Trainer(
        accelerator=job.accelerator,
        strategy=job.strategy,
        devices=job.devices,
        precision=job.precision,
        # The seed's debug mode: one short epoch of debug_batches train and val batches.
        max_epochs=1 if debug else job.training.max_epochs,
        limit_train_batches=job.debug_batches if debug else None,
        limit_val_batches=job.debug_batches if debug else None,
        val_check_interval=job.training.val_check_interval,
        accumulate_grad_batches=job.training.accumulate_grad_batches,
        # A resumed attempt skips it: it would draw from the random generators the checkpoint restored.
        num_sanity_val_steps=0 if resuming else job.num_sanity_val_steps,
        log_every_n_steps=job.log_every_n_steps,
        deterministic=_determinism(job),
        logger=loggers,
        callbacks=[checkpoint, ProgressFile(run_dir / "progress.json", phases=phases)]
        + [c for c in hooks if c is not None]
        + [StopOnCancel(guard), *stops],
        default_root_dir=run_dir,
        # A service captures stdout as the run's log: no progress bar there (ProgressFile logs each epoch).
        enable_progress_bar=sys.stderr.isatty(),
        plugins=cluster_plugins(),
    )


def cluster_plugins() -> list:
    """Inside a Slurm job, labrun's job wrapper owns requeueing (app/launchers/slurm_wrapper.py): on
    SIGUSR1 the trainer checkpoints and exits 75, and the wrapper asks Slurm to requeue. Lightning's own
    auto-requeue (a SIGUSR1 handler that saves an hpc checkpoint and runs ``scontrol requeue``) is switched
    off: today it stays out only because it skips a signal that already has a handler (the trainer's own,
    installed first), and a requeue must not hang on that order. Lightning still reads ranks from Slurm."""
    in_job = "SLURM_JOB_ID" in os.environ  # first: detect() warns on any machine that has srun at all
    return [SLURMEnvironment(auto_requeue=False)] if in_job and SLURMEnvironment.detect() else []


def train(job: DictConfig, run_dir: Path, guard: CancelGuard) -> dict[str, float]:
    L.seed_everything(job.seed, workers=True, verbose=False)
    phases = PhaseReporter(run_dir / "progress.json")  # the phase, through every long one (heartbeat.py)
    datamodule = build_datamodule(job, phases)
    phases.beat("data", force=True)
    datamodule.prepare_data()  # generate or load before fit: a SIGTERM here stops at once
    model = OperatorModule(OmegaConf.to_container(job.model), lr=job.training.lr)
    env = RunEnv.from_env()
    owner = env.owner  # set by the service: who submitted the run
    wandb_logger = WandbLogger(
        save_dir=str(run_dir),
        name=job.wandb_run_name,
        project=job.wandb_project,
        entity=job.wandb_entity,
        config={**OmegaConf.to_container(job), **({"labrun_owner": owner} if owner else {})},
        tags=[f"owner:{owner}"] if owner else None,
        group=env.sweep,  # set by the service: the sweep's runs share a group
        id=resume.wandb_id(job.wandb_run_name),  # every attempt of the run continues the same WandB run
        resume="allow",
    )
    # -> <run_dir>/metrics.csv, flushed often enough that a killed run keeps most of its rows
    csv_logger = CSVLogger(save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=20)
    ckpt_path = resume.last_checkpoint(job.ckpt_dir) if env.resume else None
    if ckpt_path is not None:
        resume.keep_metrics_csv(csv_logger, run_dir / "metrics.csv", checkpoint_step(ckpt_path))
        log.info("resuming from %s", ckpt_path)
    elif job.get("init_from") and env.init_from_ckpt is not None:  # (resumed: its own checkpoint has them)
        init_from.load_weights(model, str(job.init_from), env.init_from_ckpt)
    exact = ExactState(datamodule)
    stop = PreemptStop(guard, exact, job.ckpt_dir)
    exit_code = 1
    try:
        with phases.busy("starting the tracker"):  # wandb's start (seconds; its own timeouts end a hang)
            _ = wandb_logger.experiment
        loggers = [wandb_logger, csv_logger]
        trainer = build_trainer(
            job, run_dir, loggers, guard, [exact, stop], resuming=ckpt_path is not None, phases=phases
        )
        with guard.deferred(), warnings.catch_warnings():
            _quiet_known_noise()
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
            if not stop.stopped:
                guard.finished_anyway()
        exit_code = 0
        return {k: float(v) for k, v in trainer.callback_metrics.items()}
    finally:
        if guard.received:
            exit_code = guard.exit_code
        guard.cleaning_up()
        _finish_wandb(wandb_logger, exit_code)


def _finish_wandb(logger: WandbLogger, exit_code: int) -> None:
    run: Any = getattr(logger, "_experiment", None)
    if run is None:
        return
    try:
        run.finish(exit_code=exit_code)
    except Exception:  # a broken tracker must not hide how the run itself ended
        log.exception("could not finish the WandB run")
