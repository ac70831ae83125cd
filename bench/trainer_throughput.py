"""Trainer throughput: labrun's data path against the seed's, side by side in one process.

The seed's path is neuraloperator's ``SphericalSWEDataset``: one PDE solve from a fresh random initial
condition inside every ``__getitem__``, every epoch. labrun's path solves the samples in batches once,
caches them on disk (trainer/data.py) and serves slices from memory.

(a) data pipeline alone, samples/s: iterating the training DataLoader (no model). labrun's figure is
    with the cache present (the steady state); the one-off cost of building the cache is printed too.
(b) end to end, training samples/s over 5 epochs at 32x64 with ``model=fno model.hidden_channels=32``:
    a Lightning fit (validation included) on each path; labrun's time includes building its cache from
    nothing, so the ratio is conservative.

Usage: python bench/trainer_throughput.py [--quick] [--num-examples N] [--num-workers W]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIMS = (32, 64)
EPOCHS = 5
BATCH = 16  # the seed's batch_size


def _seed_dataset(n: int, dims: tuple[int, int] = DIMS):
    from neuralop.data.datasets.spherical_swe import SphericalSWEDataset

    return SphericalSWEDataset(dims=dims, num_examples=n)


def _loader(dataset, workers: int, shuffle: bool):
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset, batch_size=BATCH, shuffle=shuffle, num_workers=workers, persistent_workers=workers > 0
    )


def _drain(loader, min_seconds: float) -> float:
    """samples/s over whole epochs of ``loader``, at least ``min_seconds`` of them."""
    samples, start = 0, time.perf_counter()
    while True:
        for batch in loader:
            samples += len(batch["x"])
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return samples / elapsed


def pipeline(n: int, workers: int, cache_root: Path, dims: tuple[int, int] = DIMS) -> dict[str, float]:
    from trainer import swe
    from trainer.data import SWEDataModule

    seed_rate = _drain(_loader(_seed_dataset(n, dims), workers, shuffle=True), min_seconds=0.0)

    spec = swe.SolverSpec(nlat=dims[0], nlon=dims[1], num_examples=n, seed=0)
    start = time.perf_counter()
    SWEDataModule(spec, str(cache_root), 1.0 - 1.0 / n, BATCH, workers).prepare_data()  # cold: solve + write
    build_rate = n / (time.perf_counter() - start)
    start = time.perf_counter()
    dm = SWEDataModule(spec, str(cache_root), 1.0 - 1.0 / n, BATCH, workers)
    dm.setup("fit")  # warm: load the cache
    load_s = time.perf_counter() - start
    cached_rate = _drain(dm.train_dataloader(), min_seconds=1.0)
    return {
        "seed_samples_per_s": seed_rate,
        "cached_samples_per_s": cached_rate,
        "ratio": cached_rate / seed_rate,
        "cache_build_samples_per_s": build_rate,
        "cache_load_s": load_s,
    }


def _fit_seconds(
    datamodule, hidden: int, model: dict | None = None, accelerator: str = "cpu", epochs: int = EPOCHS
) -> float:
    """Seconds of one Lightning fit; ``model`` (conf/model keys) defaults to FNO [32, 32] x 5 layers."""
    import lightning as L

    from trainer.model import OperatorModule

    L.seed_everything(0, verbose=False)
    model = OperatorModule(
        model
        or {
            "name": "fno",
            "n_modes": [32, 32],
            "in_channels": 3,
            "out_channels": 3,
            "hidden_channels": hidden,
            "n_layers": 5,
        },
        lr=1e-3,
    )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    return time.perf_counter() - start


def end_to_end_spec(n: int, dims: tuple[int, int] = DIMS):
    """The sample set labrun's side of :func:`end_to_end` trains on."""
    from trainer import swe

    return swe.SolverSpec(nlat=dims[0], nlon=dims[1], num_examples=n, seed=1)


def end_to_end(
    n: int,
    workers: int,
    cache_root: Path,
    hidden: int = 32,
    *,
    dims: tuple[int, int] = DIMS,
    model: dict | None = None,
    accelerator: str = "cpu",
    epochs: int = EPOCHS,
) -> dict[str, float]:
    """Both paths through the same fit. labrun's cache is built inside its fit unless it is already under
    ``cache_root`` (SolverSpec seed 1; bench/gpu_proof.py builds it first to time the steady state)."""
    import lightning as L

    from trainer.data import SWEDataModule

    n_train = int(n * 0.9)

    class SeedDataModule(L.LightningDataModule):
        """The seed's data path: fresh solves in __getitem__ for train and val, every epoch."""

        def train_dataloader(self):
            return _loader(_seed_dataset(n_train, dims), workers, shuffle=True)

        def val_dataloader(self):
            return _loader(_seed_dataset(n - n_train, dims), workers, shuffle=False)

    fit = {"model": model, "accelerator": accelerator, "epochs": epochs}
    seed_s = _fit_seconds(SeedDataModule(), hidden, **fit)
    spec = end_to_end_spec(n, dims)  # not cached yet: cold (unless the caller built it)
    pin = accelerator != "cpu"  # as the trainer does on a GPU (trainer/train.py)
    ours_s = _fit_seconds(
        SWEDataModule(spec, str(cache_root), 0.9, BATCH, workers, pin_memory=pin), hidden, **fit
    )
    seed_rate, ours_rate = n_train * epochs / seed_s, n_train * epochs / ours_s
    return {
        "seed_samples_per_s": seed_rate,
        "cached_samples_per_s": ours_rate,
        "ratio": ours_rate / seed_rate,
        "seed_fit_s": seed_s,
        "cached_fit_s": ours_s,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (about a minute on 2 cores)")
    parser.add_argument("--num-examples", type=int, help="samples per data set (default 256, quick 64)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers, both paths")
    args = parser.parse_args(argv)
    n = args.num_examples or (64 if args.quick else 256)
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("trainer").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    import torch

    print(
        f"trainer throughput: {DIMS[0]}x{DIMS[1]}, {n} samples, batch {BATCH}, {args.num_workers} workers, "
        f"{torch.get_num_threads()} torch threads"
    )
    with tempfile.TemporaryDirectory(prefix="labrun-bench-") as tmp:
        pipe = pipeline(n, args.num_workers, Path(tmp))
        print(
            f"(a) data pipeline   seed {pipe['seed_samples_per_s']:10.1f} samples/s   "
            f"cached {pipe['cached_samples_per_s']:10.1f} samples/s   ratio {pipe['ratio']:8.1f}x"
        )
        print(
            f"    building the cache once: {pipe['cache_build_samples_per_s']:.0f} samples/s "
            f"(batched solve + write); loading it: {pipe['cache_load_s'] * 1000:.0f} ms"
        )
        e2e = end_to_end(n, args.num_workers, Path(tmp))
        print(
            f"(b) end to end, {EPOCHS} epochs, fno hidden_channels=32: seed {e2e['seed_samples_per_s']:7.1f} "
            f"samples/s ({e2e['seed_fit_s']:.1f} s)   cached {e2e['cached_samples_per_s']:7.1f} samples/s "
            f"({e2e['cached_fit_s']:.1f} s, cache built inside)   ratio {e2e['ratio']:5.2f}x"
        )
    # Where (b) can go at most: labrun removes the solve from each sample's cost, not the training.
    solve_s, train_s = 1 / pipe["seed_samples_per_s"], 1 / e2e["cached_samples_per_s"]
    bound = (train_s + solve_s) / train_s
    print(
        f"    per training sample: {train_s * 1000:.1f} ms of training (model-bound here), {solve_s * 1000:.1f} ms "
        f"of solving on the seed's path: (b) can reach about {bound:.2f}x on this machine; on a GPU, where "
        f"training is far faster, (b) approaches (a)"
    )
    e2e["bound_from_solve_cost"] = bound
    return {
        "num_examples": n,
        "num_workers": args.num_workers,
        "dims": list(DIMS),
        "epochs": EPOCHS,
        "batch_size": BATCH,
        "pipeline": pipe,
        "end_to_end": e2e,
    }


if __name__ == "__main__":
    main(sys.argv[1:])
