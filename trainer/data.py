"""The data: shallow-water samples generated once, cached on disk, served from memory.

A cache file holds the unnormalised ``(x, y)`` of one :class:`~trainer.swe.SolverSpec`; its name carries a
hash of everything that determines the numbers (dims, num_examples, seed, solver parameters, torch-harmonics'
version, format version), so a different data config never reads the wrong file. It is written to a temporary file in the
same directory and moved into place with ``os.replace``: a concurrent run sees either no file or a whole
one, and two runs racing to write the same key write identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from typing_extensions import override

from trainer import schema, swe
from trainer.atomic import replace_atomic

log = logging.getLogger(__name__)


def cache_path(spec: swe.SolverSpec, root: str | os.PathLike) -> Path:
    key = json.dumps(spec.key_fields(), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(root) / f"swe_{spec.nlat}x{spec.nlon}_n{spec.num_examples}_seed{spec.seed}_{digest}.pt"


def load_or_generate(
    spec: swe.SolverSpec,
    root: str | os.PathLike,
    write: bool = True,
    on_chunk: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples of ``spec``: from the cache under ``root`` if there, else solved (and cached if ``write``).
    ``on_chunk(done, total)``: a heartbeat while solving (``swe.generate``)."""
    path = cache_path(spec, root)
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # whatever is wrong with it, the file is not the data
            # Not written by load_or_generate (its writes are atomic): a copy cut short, a bad disk. It is
            # replaced below, so it costs this run a solve instead of failing every run of this config.
            log.warning("data: cache %s is unreadable (%s); regenerating", path, type(exc).__name__)
            blob = None
        if isinstance(blob, dict) and blob.get("key") == spec.key_fields():
            log.info("data: loaded %d samples from cache %s", len(blob["x"]), path)
            return blob["x"], blob["y"]
        if blob is not None:
            log.warning("data: cache %s holds other data (hash collision?); regenerating", path)
    log.info(
        "data: solving %d shallow-water samples at %dx%d (seed %d)",
        spec.num_examples,
        spec.nlat,
        spec.nlon,
        spec.seed,
    )
    x, y = swe.generate(spec, on_chunk)
    if write:
        try:
            replace_atomic(path, lambda f: torch.save({"key": spec.key_fields(), "x": x, "y": y}, f))
            log.info("data: cached at %s", path)
        except OSError as exc:  # a cache that cannot be written costs time next run, not this run
            log.warning("data: could not write the cache %s: %s", path, exc)
    return x, y


class PairDataset(Dataset):
    """``{"x", "y"}`` samples held in memory. ``__getitems__`` lets the DataLoader fetch a whole batch with
    one slice instead of collating ``batch_size`` single samples."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "y": self.y[index]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return {"x": self.x[idx], "y": self.y[idx]}


class EpochShuffle(Sampler[int]):
    """A shuffle that depends on ``(seed, epoch)`` only. A ``DataLoader(shuffle=True, generator=g)`` draws
    from ``g`` for its worker seed too, once per epoch without workers but only once per run with
    persistent workers, so its order would change with ``num_workers``. Lightning calls ``set_epoch``.

    ``resume_at(epoch, skip)``: the next pass over ``epoch`` leaves out the first ``skip`` indices of that
    epoch's order (the samples a preempted attempt already trained on); the order itself never depends on
    where a run was resumed, so the batches that follow are the ones an uninterrupted run would see."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, skip: int) -> None:
        self._resume = (epoch, skip)

    def order(self, epoch: int) -> list[int]:
        """The whole sample order of ``epoch``."""
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        return torch.randperm(self.n, generator=gen).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1] :]
            self._resume = None  # once: the epoch after it starts at its beginning
        return iter(order)

    def __len__(self) -> int:
        return self.n


def _as_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch  # already a batch (see PairDataset.__getitems__); module-level so workers can pickle it


class SWEDataModule(L.LightningDataModule):
    """Train/val split of one cached sample set, normalised per channel with the training inputs' statistics
    (the seed normalised with one random sample's; a fixed set makes this reproducible)."""

    def __init__(
        self,
        spec: swe.SolverSpec,
        data_root: str,
        train_val_split: float,
        batch_size: int,
        num_workers: int = 0,
        write_cache: bool = True,
        pin_memory: bool = False,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> None:
        super().__init__()
        self.spec, self.data_root, self.write_cache = spec, data_root, write_cache
        self.on_chunk = on_chunk  # a heartbeat while the cache is built (trainer/heartbeat.py)
        problem = schema.split_problem(spec.num_examples, train_val_split)
        if problem:
            raise ValueError(problem)
        self.n_train = schema.train_size(spec.num_examples, train_val_split)
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.train_set: PairDataset | None = None
        self.val_set: PairDataset | None = None
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """The next train loader starts ``epoch`` after its first ``batches_done`` batches (an exact resume in
        the middle of an epoch, trainer/preempt.py). Called before the loader is made."""
        self._resume = (epoch, batches_done)

    def prepare_data(self) -> None:
        self.setup("fit")

    @override
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_or_generate(self.spec, self.data_root, write=self.write_cache, on_chunk=self.on_chunk)
        xt = x[: self.n_train]
        mean = xt.mean(dim=(0, 2, 3), keepdim=True)
        std = xt.std(dim=(0, 2, 3), keepdim=True)
        x, y = (x - mean) / std, (y - mean) / std
        n = self.n_train
        self.train_set, self.val_set = PairDataset(x[:n], y[:n]), PairDataset(x[n:], y[n:])

    def train_dataloader(self) -> DataLoader:
        # The order depends on the seed and the epoch only: not on torch's global RNG, nor on num_workers.
        assert self.train_set is not None, "setup() first"
        sampler = EpochShuffle(len(self.train_set), self.spec.seed)
        if self._resume is not None:
            epoch, batches_done = self._resume
            sampler.resume_at(epoch, batches_done * self.batch_size)  # batches are consecutive slices of it
        return self._loader(self.train_set, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def _loader(self, dataset: PairDataset | None, **kwargs) -> DataLoader:
        assert dataset is not None, "setup() first"
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            # Workers only copy slices of tensors already in memory: keep them alive across epochs so
            # num_workers > 0 does not pay a fork per epoch.
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,  # page-locked batches copy to a GPU asynchronously
            collate_fn=_as_batch,
            **kwargs,
        )
