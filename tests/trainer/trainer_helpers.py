"""Helpers (imported by the tests as ``trainer_helpers``) for running the real CLI (``python -m trainer``) in a subprocess, offline and inside tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The smallest run that still trains: 32 samples at 32x64, a 8-channel FNO, 4 steps per epoch.
TINY = [
    "data=32x64", "data.num_examples=32", "model=fno", "model.hidden_channels=8", "model.n_layers=2",
    "batch_size=8", "training.effective_batch_size=8", "accelerator=cpu", "num_workers=0",
]


def trainer_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # WandB's caches and settings go to tmp too: the tests leave nothing in $HOME.
    env.update(WANDB_CACHE_DIR=str(tmp / "wandb-cache"), WANDB_CONFIG_DIR=str(tmp / "wandb-config"),
               WANDB_DATA_DIR=str(tmp / "wandb-data"), PYTHONPATH=str(REPO))
    return env


def run_cli(args: list[str], tmp: Path, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=tmp, env=trainer_env(tmp),
                          capture_output=True, text=True, timeout=timeout, **kwargs)
