"""Helpers (imported by the tests as ``trainer_helpers``) for running the real CLI (``python -m trainer``) in a subprocess, offline and inside tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The smallest run that still trains: 32 samples at 32x64, a 8-channel FNO, 4 steps per epoch.
TINY = [
    "data=32x64",
    "data.num_examples=32",
    "model=fno",
    "model.hidden_channels=8",
    "model.n_layers=2",
    "batch_size=8",
    "training.effective_batch_size=8",
    "accelerator=cpu",
    "num_workers=0",
]


def trainer_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # WandB's caches and settings go to tmp too: the tests leave nothing in $HOME.
    env.update(
        WANDB_CACHE_DIR=str(tmp / "wandb-cache"),
        WANDB_CONFIG_DIR=str(tmp / "wandb-config"),
        WANDB_DATA_DIR=str(tmp / "wandb-data"),
        PYTHONPATH=str(REPO),
    )
    return env


def run_cli(args: list[str], tmp: Path, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=tmp,
        env=trainer_env(tmp),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def wandb_records(path: Path):
    """The protobuf records of an offline run's ``run-<id>.wandb`` file. The file is a LevelDB-style log
    (a 7-byte ``:W&B`` header, then 32 KiB blocks of chunks: crc32, length, type, payload); wandb 0.31
    ships no Python reader for it, so this is the few lines it takes."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    assert raw[:4] == b":W&B", "not a wandb transaction log"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length = int.from_bytes(raw[pos + 4 : pos + 6], "little")
        kind = raw[pos + 6]
        payload = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        pending += payload
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record
