"""The data: the batched solver matches torch-harmonics' own, generation is reproducible, and the cache
is hit, keyed by everything that determines the samples, and written atomically."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from trainer import data, swe

SPEC = swe.SolverSpec(nlat=16, nlon=32, num_examples=6, seed=3)


def test_batched_solver_matches_the_per_sample_solver():
    solver = swe.make_solver(SPEC)
    u0 = swe.random_initial_conditions(solver, 3, SPEC.mach, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = solver.spec2grid(swe._timestep(solver, u0, SPEC.nsteps))
        theirs = torch.stack([solver.spec2grid(solver.timestep(u, SPEC.nsteps)) for u in u0])
    scale = theirs.abs().max()
    assert (ours - theirs).abs().max() / scale < 1e-5


def test_generation_depends_on_the_seed_only():
    torch.manual_seed(123)  # global RNG state must not matter
    x1, y1 = swe.generate(SPEC)
    torch.manual_seed(999)
    x2, y2 = swe.generate(SPEC)
    assert torch.equal(x1, x2)
    assert torch.equal(y1, y2)
    assert x1.shape == (6, 3, 16, 32)
    assert x1.dtype == torch.float32
    x3, _ = swe.generate(swe.SolverSpec(nlat=16, nlon=32, num_examples=6, seed=4))
    assert not torch.equal(x1, x3)


def test_cache_hit_loads_without_solving(tmp_path, monkeypatch):
    x, y = data.load_or_generate(SPEC, tmp_path)
    assert data.cache_path(SPEC, tmp_path).is_file()
    monkeypatch.setattr(swe, "generate", lambda _spec: pytest.fail("cache miss"))
    x2, y2 = data.load_or_generate(SPEC, tmp_path)
    assert torch.equal(x, x2)
    assert torch.equal(y, y2)


@pytest.mark.parametrize(
    "changed",
    [
        {"num_examples": 7},
        {"seed": 4},
        {"nlat": 8, "nlon": 16},
        {"dt": 1800.0},
        {"mach": 0.1},
    ],
)
def test_cache_key_changes_with_everything_that_determines_the_data(changed):
    other = swe.SolverSpec(**{**SPEC.__dict__, **changed})
    assert data.cache_path(other, "/c") != data.cache_path(SPEC, "/c")


def test_format_version_is_part_of_the_key(monkeypatch):
    before = data.cache_path(SPEC, "/c")
    monkeypatch.setattr(swe, "FORMAT_VERSION", swe.FORMAT_VERSION + 1)
    assert data.cache_path(SPEC, "/c") != before


def test_solver_version_is_part_of_the_key(monkeypatch):
    before = data.cache_path(SPEC, "/c")
    monkeypatch.setattr(swe, "SOLVER_VERSION", "0.0.1")
    assert data.cache_path(SPEC, "/c") != before
    assert "+" not in swe.SOLVER_VERSION  # the release, not the wheel's build tag


def test_an_unreadable_cache_file_is_regenerated_not_trusted(tmp_path, caplog):
    """A cache file that does not load (truncated by a crash of an older writer, a copy cut short) costs a
    regeneration, not every later run with this data config."""
    x, y = data.load_or_generate(SPEC, tmp_path)
    path = data.cache_path(SPEC, tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    x2, y2 = data.load_or_generate(SPEC, tmp_path)
    assert torch.equal(x, x2)
    assert torch.equal(y, y2)
    assert "unreadable" in caplog.text
    x3, _ = data.load_or_generate(SPEC, tmp_path)  # rewritten whole
    assert torch.equal(x, x3)


def test_no_write_mode_leaves_no_file(tmp_path):
    data.load_or_generate(SPEC, tmp_path / "c", write=False)
    assert not (tmp_path / "c").exists()


def test_atomic_write_never_exposes_a_partial_file(tmp_path, monkeypatch):
    path = data.cache_path(SPEC, tmp_path)

    def exploding_save(_obj, f):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    x, _ = data.load_or_generate(SPEC, tmp_path)  # the run goes on without a cache
    assert x.shape[0] == SPEC.num_examples
    assert not path.exists()
    assert os.listdir(tmp_path) == []  # the temporary file is gone too


def test_concurrent_writers_and_readers_see_whole_files(tmp_path):
    errors: list[BaseException] = []

    def work():
        try:
            x, _ = data.load_or_generate(SPEC, tmp_path)
            assert x.shape[0] == SPEC.num_examples
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [p.name for p in tmp_path.iterdir()] == [data.cache_path(SPEC, tmp_path).name]


def test_datamodule_split_normalisation_and_batches(tmp_path):
    spec = swe.SolverSpec(nlat=16, nlon=32, num_examples=20, seed=1)
    dm = data.SWEDataModule(spec, str(tmp_path), train_val_split=0.9, batch_size=4, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (18, 2)
    assert dm.train_set.x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 3, 16, 32)
    assert batch["y"].shape == (4, 3, 16, 32)
    assert len(list(dm.train_dataloader())) == 5  # 18 samples in batches of 4, the last one short


def test_shuffle_order_depends_on_seed_and_epoch_not_on_workers(tmp_path):
    spec = swe.SolverSpec(nlat=16, nlon=32, num_examples=20, seed=1)

    def epochs(workers, n=3):
        dm = data.SWEDataModule(spec, str(tmp_path), 0.9, batch_size=4, num_workers=workers)
        dm.setup("fit")
        loader = dm.train_dataloader()
        out = []
        for epoch in range(n):
            loader.sampler.set_epoch(epoch)  # what Lightning does each epoch
            out.append(torch.cat([b["x"] for b in loader]))
        return out

    serial, parallel = epochs(0), epochs(2)
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))
    assert not torch.equal(serial[0], serial[1])  # reshuffled each epoch
    torch.manual_seed(7)
    assert torch.equal(epochs(0, 1)[0], serial[0])  # global RNG does not matter
