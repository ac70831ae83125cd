"""Shared by the tests in tests/docker/ (this directory is on sys.path when pytest collects them)."""

from __future__ import annotations

import os

# A run of a few seconds on CPU: FNO at 32x64, 16 samples, one epoch, a tiny network.
TINY = [
    "model=fno",
    "data=32x64",
    "data.num_examples=16",
    "training.max_epochs=1",
    "batch_size=4",
    "training.effective_batch_size=4",
    "model.hidden_channels=8",
    "model.n_modes=[8,8]",
    "model.n_layers=1",
    "num_workers=0",
]


def in_ci() -> bool:
    """In CI a missing Engine (or docker-compose) is a failure, never a skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
