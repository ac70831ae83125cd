"""The run directory: created exactly once, then filled with Hydra's records, the log and WandB's files.

Layout (``output_dir`` in conf/globals.yaml): ``<log_dir>/<YYYY-MM-DD>/<name>``, or
``<log_dir>/debug/<name>`` for a debug run. A run's directory is made with ``os.mkdir``, which fails when it
exists: two runs can never share (or overwrite) a directory, even when they start at the same moment.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trainer.naming import NameInUse

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class RunDirExists(NameInUse):
    pass


def create(
    output_dir: str | os.PathLike, resume: bool = False, made_for_run: str | os.PathLike | None = None
) -> Path:
    """Make the run's directory; raises RunDirExists when it exists (runs never share one), except that a
    resumed run (``resume``: a requeued or resumed attempt) reuses its own, once it has a ``run.json``,
    and that a directory made for this run by whoever started it (``made_for_run``: the Docker launcher
    mounts the run's own directory, so it exists before the trainer starts) is taken while it is empty."""
    path = Path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if resume and (path / "run.json").is_file():
        return path
    if made_for_run is not None and Path(made_for_run) == path and path.is_dir() and not any(path.iterdir()):
        return path
    try:
        os.mkdir(path)
    except FileExistsError:
        raise RunDirExists(
            f"run directory {path} already exists; runs never overwrite each other: pick another run_name"
        ) from None
    return path


def write_hydra_files(
    run_dir: Path, job: DictConfig, hydra_node: DictConfig, overrides: Sequence[str]
) -> None:
    """Hydra's ``.hydra/`` records. ``config.yaml`` is written resolved (Hydra writes it unresolved): a run's
    record must not change when it is read from another directory or on another day (``abspath``, dates)."""
    target = run_dir / ".hydra"
    if (target / "config.yaml").exists():  # a resumed run: its records stay as the first attempt wrote them
        return
    target.mkdir(exist_ok=True)
    hydra = OmegaConf.create({"hydra": OmegaConf.to_container(hydra_node, resolve=False)})
    hydra.hydra.run.dir = job.output_dir
    hydra.hydra.runtime.output_dir = job.output_dir
    OmegaConf.save(job, target / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), target / "overrides.yaml")
    OmegaConf.save(hydra, target / "hydra.yaml")


def setup_logging(run_dir: Path | None) -> None:
    """stdout (the service captures it as the run's log) and ``train.log``, in Hydra's format."""
    formatter = logging.Formatter(LOG_FORMAT)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if run_dir is not None:
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)


def route_library_logs() -> None:
    """Lightning gives its loggers a handler of their own (and stops propagation) when it is imported before
    the root logger has one; send everything through the root's handlers instead, so it reaches train.log."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def wandb_mode(debug: bool, env: dict[str, str] | None = None) -> str:
    """Offline unless an API key is set; an explicit WANDB_MODE wins, except that debug runs never go online."""
    env = os.environ if env is None else env
    mode = env.get("WANDB_MODE") or ("online" if env.get("WANDB_API_KEY") else "offline")
    if debug and mode not in ("offline", "dryrun", "disabled"):
        mode = "offline"
    return mode


def configure_wandb_env(run_dir: Path, debug: bool) -> str:
    """Set WANDB_MODE for this process (and wandb's service process). In debug mode, also keep wandb's own
    caches and settings, and those the training stack makes when it is imported (matplotlib's font cache
    in ~/.cache, torch's compile caches in /tmp), inside the run directory, so a debug run leaves nothing
    anywhere else. Called before the training stack is imported."""
    mode = wandb_mode(debug)
    os.environ["WANDB_MODE"] = mode
    if debug:
        for var, sub in (
            ("WANDB_CACHE_DIR", "wandb/cache"),
            ("WANDB_CONFIG_DIR", "wandb/config"),
            ("WANDB_DATA_DIR", "wandb/data"),
            ("WANDB_ARTIFACT_DIR", "wandb/artifacts"),
            ("MPLCONFIGDIR", ".cache/matplotlib"),
            ("TORCHINDUCTOR_CACHE_DIR", ".cache/torchinductor"),
            ("TRITON_CACHE_DIR", ".cache/triton"),
        ):
            os.environ[var] = str(run_dir / sub)
    return mode
