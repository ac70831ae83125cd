"""The smallest real training run (seconds on a CPU), for the tests that run the real trainer through an
engine (tests/docker, tests/slurm). Imported by name: tests/helpers is on sys.path."""

from __future__ import annotations


def tiny_run(epochs: int = 1, examples: int = 16) -> list[str]:
    """Overrides of an FNO run on 32x64 data small enough to train in seconds."""
    return [
        "model=fno",
        "data=32x64",
        f"data.num_examples={examples}",
        f"training.max_epochs={epochs}",
        "batch_size=4",
        "training.effective_batch_size=4",
        "model.hidden_channels=8",
        "model.n_modes=[8,8]",
        "model.n_layers=1",
        "num_workers=0",
    ]
