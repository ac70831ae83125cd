"""The GPU proof: labrun's trainer on CUDA, checked and measured in one short run (bench/gpu_proof.sh).

1. runs: ``python -m trainer accelerator=gpu devices=1`` for SFNO and FNO (data=32x64, 2 epochs, a few
   samples); checks the run directory, run.json (status, the GPU's name), the offline WandB run's name,
   metrics.csv, and that ckpt/last.ckpt loads back and runs forward.
2. throughput, the default SFNO at 64x128: (a) data pipeline and (b) a Lightning fit on labrun's cached data
   path against the seed's per-sample solve (bench/trainer_throughput.py, samples/s and ratio); (c) the time
   per batch of labrun's own training (trainer/train.py, its Trainer and callbacks) against a bare PyTorch
   loop over the same model, the same batches and the same determinism settings (goal: within 10%).
3. GPU utilization (NVML) sampled during (c), after a warm-up epoch, training phases only (goal: >= 90%).
4. determinism: the same tiny config run twice with deterministic=true; whether metrics.csv matches.

``--cpu`` is the rehearsal (tests/bench/test_gpu_proof.py): accelerator=cpu, tiny sizes, no NVML, the current
environment. Figures go to ``<out>/gpu_proof.json`` (rewritten after every phase, so a run cut short still
leaves what it measured); a table is printed at the end. The whole stays within ``--budget-s`` of wall
time: a phase that no longer fits is skipped and says so. Exit status 1 when a functional check of (1) or
(4)'s runs failed, 0 otherwise: the performance goals are reported, not enforced.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gpu_guard_proof import guard_phase  # noqa: E402 - needs ROOT on sys.path

STEP_GOAL = 0.10  # labrun's time per batch at most 10% above the bare loop's
UTIL_GOAL = 90.0  # % GPU busy after warm-up


@dataclass(frozen=True)
class Plan:
    """Sizes per mode. GPU: the issue's configs. CPU: the smallest that still runs every code path."""

    accelerator: str
    run_overrides: tuple[str, ...]  # (1): added to model=sfno|fno data=32x64
    det_overrides: tuple[str, ...] | None  # (4); None: (1)'s FNO config once more, compared with (1)'s
    dims: tuple[int, int]  # (2), (3)
    model_overrides: tuple[str, ...]  # (2c) on top of the default model=sfno
    workers: int
    pipeline_n: int
    e2e_n: int
    e2e_epochs: int
    fit_n: int
    fit_epochs: int  # the first is warm-up


GPU = Plan(
    accelerator="gpu",
    run_overrides=("data.num_examples=128",),
    det_overrides=("model=fno", "model.hidden_channels=32", "data.num_examples=64"),
    dims=(64, 128),
    model_overrides=(),
    workers=4,  # the config's num_workers
    pipeline_n=256,
    e2e_n=512,
    e2e_epochs=2,
    fit_n=1024,
    fit_epochs=5,
)
TINY = (
    "model.hidden_channels=8",
    "model.n_layers=2",
    "data.num_examples=32",
    "batch_size=8",
    "training.effective_batch_size=8",
    "num_workers=0",
)
CPU = Plan(
    accelerator="cpu",
    run_overrides=TINY,
    det_overrides=None,  # each trainer process costs ~12 s of imports on 2 cores: three, not four
    dims=(32, 64),
    model_overrides=(
        "model.hidden_channels=8",
        "model.n_layers=2",
        "batch_size=8",
        "training.effective_batch_size=8",
    ),
    workers=0,
    pipeline_n=16,
    e2e_n=32,
    e2e_epochs=1,
    fit_n=32,
    fit_epochs=2,
)

log = logging.getLogger("gpu_proof")


class Proof:
    def __init__(self, plan: Plan, out: Path, work: Path, budget_s: float, kit: Path | None) -> None:
        self.plan, self.out, self.work, self.kit = plan, out, work, kit
        self.deadline = time.monotonic() + budget_s
        self.started = time.monotonic()
        self.results: dict[str, Any] = {
            "mode": plan.accelerator,
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "plan": asdict(plan),
        }
        self.failures: list[str] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        self.results["wall_s"] = round(time.monotonic() - self.started, 1)
        self.results["failures"] = self.failures
        tmp = self.out / ".gpu_proof.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        os.replace(tmp, self.out / "gpu_proof.json")

    def phase(self, name: str, fn, needs_s: float) -> None:
        """Run one phase, record its figures or its error; skip it when less than ``needs_s`` is left."""
        if self.left() < needs_s:
            self.results[name] = {
                "skipped": f"{self.left():.0f} s left of the budget, {needs_s:.0f} s needed"
            }
            log.warning("%s: skipped (out of time)", name)
        else:
            log.info("== %s (%.0f s left)", name, self.left())
            start = time.monotonic()
            try:
                self.results[name] = fn()
            except Exception as exc:  # one broken phase must not hide the others' figures
                log.error("%s failed:\n%s", name, traceback.format_exc())
                self.results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            self.results[name]["phase_s"] = round(time.monotonic() - start, 1)
        self.save()

    # ------------------------------------------------------------------------------------ environment

    def environment(self) -> dict[str, Any]:
        import torch

        env: dict[str, Any] = {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available(),
        }
        if self.plan.accelerator == "gpu":
            if not torch.cuda.is_available():
                raise RuntimeError("torch sees no CUDA device")
            env.update(
                device=torch.cuda.get_device_name(0),
                cuda=torch.version.cuda,
                capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
            )
            with contextlib.suppress(Exception):
                import pynvml

                pynvml.nvmlInit()
                env["driver"] = pynvml.nvmlSystemGetDriverVersion()
        from importlib import metadata

        env["packages"] = {}
        for dist in ("hydra-core", "omegaconf", "wandb", "neuraloperator", "torch-harmonics", "lightning"):
            try:
                env["packages"][dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                env["packages"][dist] = None
        # The imports the trainer needs, and where they come from (the kit's target on the GPU machine).
        env["imports"] = {}
        for module in ("hydra", "omegaconf", "wandb", "neuralop", "torch_harmonics", "lightning"):
            try:
                env["imports"][module] = str(Path(__import__(module).__file__).parent)
            except Exception as exc:  # reported: what is missing is the finding
                env["imports"][module] = f"FAILED: {type(exc).__name__}: {exc}"
                self.failures.append(f"import {module}: {exc}")
        if self.kit is not None:
            env["kit_closure"] = kit_closure_here(self.kit)
            if env["kit_closure"]["problems"]:
                self.failures.append("kit closure: " + "; ".join(env["kit_closure"]["problems"]))
        return env

    # ------------------------------------------------------------------------------------ (1) and (4)

    def launch_runs(self) -> None:
        """(1) SFNO and FNO and (4) the determinism pair: concurrent ``python -m trainer`` processes, started
        first so that their imports overlap the environment phase's."""
        p = self.plan
        self.log_dir = log_dir = self.work / "runs"
        common = (f"accelerator={p.accelerator}", "devices=1", "data=32x64", "training.max_epochs=2")
        fno = [*common, "model=fno", *p.run_overrides, "deterministic=true"]
        jobs = {"sfno": [*common, "model=sfno", *p.run_overrides], "fno": fno}
        if p.det_overrides is None:
            jobs["fno_again"] = fno
            self.det_pair = ("proof-fno", "proof-fno-again")
        else:
            jobs["det_a"] = jobs["det_b"] = [*common, *p.det_overrides, "deterministic=true"]
            self.det_pair = ("proof-det-a", "proof-det-b")
        self.procs = procs = {}
        for key, overrides in jobs.items():
            args = [*overrides, f"run_name=proof-{key.replace('_', '-')}", f"log_dir={log_dir}"]
            logfile = open(self.work / f"{key}.out", "w")  # noqa: SIM115 - closed below
            env = trainer_env(self.work)
            procs[key] = (
                subprocess.Popen(
                    [sys.executable, "-m", "trainer", *args],
                    cwd=self.work,
                    env=env,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                ),
                logfile,
                args,
                time.monotonic(),
            )

    def runs(self) -> dict[str, Any]:
        log_dir = self.log_dir
        device = expected_device(self.plan.accelerator)
        out: dict[str, Any] = {}
        for key, (proc, logfile, args, start) in self.procs.items():
            try:
                code = proc.wait(timeout=max(1.0, self.left() - 5))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            logfile.close()
            out[key] = {"overrides": args, "exit_code": code, "wall_s": round(time.monotonic() - start, 1)}
            if code != 0:
                tail = (self.work / f"{key}.out").read_text(errors="replace")[-3000:]
                out[key]["log_tail"] = tail
                log.error("run %s exited %s:\n%s", key, code, tail)
        for key in ("sfno", "fno"):
            if out[key]["exit_code"] == 0:
                out[key]["checks"] = check_run(log_dir, f"proof-{key}", device, self.plan.accelerator)
        out["determinism"] = {"runs": self.det_pair, **compare_metrics(log_dir, *self.det_pair)}
        for key, res in out.items():
            if key != "determinism" and res["exit_code"] != 0:
                self.failures.append(f"run {key}: exit code {res['exit_code']}")
            failed = [name for name, ok in res.get("checks", {}).get("passed", {}).items() if not ok]
            if failed:
                self.failures.append(f"run {key}: checks failed: {', '.join(failed)}")
        if "error" in out["determinism"]:
            self.failures.append(f"determinism: {out['determinism']['error']}")
        return out

    # ------------------------------------------------------------------------------------ (2) and (3)

    def throughput(self) -> dict[str, Any]:
        """(2a, 2b) seed vs cached, through bench/trainer_throughput.py at the plan's dims and model."""
        from omegaconf import OmegaConf

        from bench import trainer_throughput as tt
        from trainer.data import SWEDataModule

        p = self.plan
        model = OmegaConf.to_container(self.fit_job().model)
        cache = self.work / "data"
        pipe = tt.pipeline(p.pipeline_n, p.workers, cache, dims=p.dims)
        # labrun's side of the fit on a warm cache (the steady state: runs share the cache); the one-off
        # build is timed on its own and added back for the "cold" ratio.
        start = time.perf_counter()
        SWEDataModule(tt.end_to_end_spec(p.e2e_n, p.dims), str(cache), 0.9, tt.BATCH).prepare_data()
        build_s = time.perf_counter() - start
        e2e = tt.end_to_end(
            p.e2e_n,
            p.workers,
            cache,
            dims=p.dims,
            model=model,
            accelerator=p.accelerator,
            epochs=p.e2e_epochs,
        )
        n_train = int(p.e2e_n * 0.9) * p.e2e_epochs
        e2e["cache_build_s"] = build_s
        e2e["ratio_with_cache_build"] = (n_train / (e2e["cached_fit_s"] + build_s)) / e2e[
            "seed_samples_per_s"
        ]
        return {
            "dims": list(p.dims),
            "model": model,
            "workers": p.workers,
            "pipeline": pipe,
            "end_to_end": e2e,
        }

    def fit_job(self):
        from trainer import config

        p = self.plan
        overrides = [
            f"accelerator={p.accelerator}",
            "devices=1",
            f"data={p.dims[0]}x{p.dims[1]}",
            "model=sfno",
            *p.model_overrides,
            f"data.num_examples={p.fit_n}",
            f"training.max_epochs={p.fit_epochs}",
            f"num_workers={p.workers}",
            "run_name=proof-step-time",
            f"log_dir={self.work / 'fit'}",
            f"paths.data_root={self.work / 'data'}",
        ]
        cfg = config.compose_config(overrides)
        config.assign_run_name(cfg, overrides)
        job = config.job_config(cfg)
        config.check_job(job)
        return job

    def step_time(self) -> dict[str, Any]:
        """(2c) labrun's time per batch against a bare loop, and (3) NVML utilization during both."""
        import torch
        from omegaconf import OmegaConf

        from trainer import train as train_mod
        from trainer.cancel import CancelGuard

        job = self.fit_job()
        run_dir = Path(job.output_dir)
        run_dir.mkdir(parents=True)
        os.environ["WANDB_MODE"] = "offline"
        sync = torch.cuda.synchronize if self.plan.accelerator == "gpu" else (lambda: None)
        timer = epoch_timer(sync)
        sampler = UtilSampler() if self.plan.accelerator == "gpu" else None
        build_trainer = train_mod.build_trainer

        def with_timer(*args, **kwargs):
            trainer = build_trainer(*args, **kwargs)
            trainer.callbacks.append(timer)
            return trainer

        # labrun's own train(): its datamodule, module, loggers, callbacks and Trainer settings, timed by one
        # more callback (it synchronizes only at epoch boundaries).
        train_mod.build_trainer = with_timer
        try:
            with sampler or contextlib.nullcontext():
                train_mod.train(job, run_dir, CancelGuard())
        finally:
            train_mod.build_trainer = build_trainer
        labrun = epoch_summary(timer.epochs, int(job.batch_size))
        deterministic = {
            "algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        }
        # The bare loop inherits those settings (they are process-wide): same model, same batches.
        bare_sampler = UtilSampler() if sampler else None
        with bare_sampler or contextlib.nullcontext():
            bare = bare_loop(job, sync, self.plan.accelerator)
        out: dict[str, Any] = {
            "config": {
                "dims": list(self.plan.dims),
                "model": OmegaConf.to_container(job.model),
                "batch_size": int(job.batch_size),
                "accumulate_grad_batches": int(job.training.accumulate_grad_batches),
                "num_examples": int(job.data.num_examples),
                "epochs": int(job.training.max_epochs),
                "num_workers": int(job.num_workers),
            },
            "deterministic_settings": deterministic,
            "labrun": labrun,
            "bare": bare,
        }
        if labrun.get("batch_s") and bare.get("batch_s"):
            out["overhead"] = labrun["batch_s"] / bare["batch_s"] - 1
            out["within_goal"] = out["overhead"] <= STEP_GOAL
        if sampler:
            out["utilization"] = sampler.summary(timer.steady_windows())
            out["utilization"]["goal_met"] = (out["utilization"].get("mean") or 0) >= UTIL_GOAL
            out["utilization_bare"] = bare_sampler.summary(bare.pop("windows"))
        else:
            bare.pop("windows")
            out["utilization"] = {"skipped": "no GPU (cpu rehearsal)"}
        return out


# ---------------------------------------------------------------------------------------------- helpers


def trainer_env(work: Path) -> dict[str, str]:
    """Offline WandB with its caches in ``work``; the tree (and the kit, through PYTHONPATH) importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_CACHE_DIR=str(work / "wandb-cache"),
        WANDB_CONFIG_DIR=str(work / "wandb-config"),
        WANDB_DATA_DIR=str(work / "wandb-data"),
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    return env


def expected_device(accelerator: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if accelerator == "gpu" else "cpu"


def check_run(log_dir: Path, name: str, device: str, accelerator: str) -> dict[str, Any]:
    import torch

    from trainer.model import OperatorModule

    sys.path.insert(0, str(ROOT / "tests" / "trainer"))
    from trainer_helpers import wandb_records  # the offline run's records (wandb ships no reader)

    found = sorted(log_dir.glob(f"*/{name}"))
    passed: dict[str, bool] = {"run_dir": len(found) == 1}
    facts: dict[str, Any] = {"run_dir": [str(p) for p in found]}
    if not found:
        return {"passed": passed, **facts}
    run_dir = found[0]
    record = json.loads((run_dir / "run.json").read_text())
    facts["run_json"] = {
        k: record.get(k) for k in ("status", "devices", "versions", "start_time", "end_time")
    }
    passed["run_json_succeeded"] = record.get("status") == "succeeded"
    devices = record.get("devices") or []
    passed["run_json_device"] = len(devices) == 1 and devices[0].startswith(device)
    wandb_runs = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    names = [
        rec.run.display_name
        for path in wandb_runs
        for rec in wandb_records(path)
        if rec.WhichOneof("record_type") == "run"
    ]
    facts["wandb_run_names"] = sorted(set(names))
    passed["wandb_offline_run_name"] = len(wandb_runs) == 1 and set(names) == {name}
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val = [float(r["val_loss"]) for r in rows if r.get("val_loss")]
    facts["val_loss"] = val
    passed["metrics_csv"] = len(val) == 2 and all(v == v for v in val)
    map_location = "cuda" if accelerator == "gpu" else "cpu"
    ckpt = run_dir / "ckpt" / "last.ckpt"
    module = OperatorModule.load_from_checkpoint(ckpt, map_location=map_location)
    saved = torch.load(ckpt, map_location=map_location, weights_only=True)["state_dict"]
    same = all(torch.equal(v, saved[k]) for k, v in module.state_dict().items() if k in saved)
    x = torch.randn(2, 3, 32, 64, device=map_location)
    with torch.no_grad():
        y = module.eval()(x)
    passed["last_ckpt_loads"] = same and tuple(y.shape) == (2, 3, 32, 64) and bool(torch.isfinite(y).all())
    facts["last_ckpt"] = {"bytes": ckpt.stat().st_size, "device": str(next(module.parameters()).device)}
    return {"passed": passed, **facts}


def compare_metrics(log_dir: Path, a: str, b: str) -> dict[str, Any]:
    paths = [sorted(log_dir.glob(f"*/{n}/metrics.csv")) for n in (a, b)]
    if not all(len(p) == 1 for p in paths):
        return {"error": f"metrics.csv missing: {paths}"}
    texts = [p[0].read_text() for p in paths]
    out: dict[str, Any] = {"identical": texts[0] == texts[1], "rows": texts[0].count("\n") - 1}
    if not out["identical"]:
        rows = [list(csv.DictReader(t.splitlines())) for t in texts]
        diffs = [
            abs(float(r0[k]) - float(r1[k]))
            for r0, r1 in zip(*rows, strict=False)
            for k in r0
            if r0.get(k) and r1.get(k) and k not in ("epoch", "step")
        ]
        out["max_abs_diff"] = max(diffs, default=None)
    return out


def kit_closure_here(kit: Path) -> dict[str, Any]:
    """bench/gpu_kit.py's closure check, against what this machine really has (versions included)."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    from bench import gpu_kit

    wheels = gpu_kit.kit_wheels(kit)
    carried = {w.name for w in wheels}
    here = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name and name not in carried:
            here.setdefault(name, dist.version)
    closure = gpu_kit.check_closure(wheels, machine=here)
    return {
        "wheels": len(wheels),
        "bytes": sum(w.size for w in wheels),
        "problems": [str(p) for p in closure.problems],
        "from_machine": {name: here.get(name) for name in sorted(closure.from_machine)},
    }


def epoch_timer(sync):
    """A Lightning callback: time and batches of each epoch's training phase, synchronized at its two ends
    only (a sync per batch would change what is measured)."""
    import lightning as L

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.epochs: list[tuple[float, float, int]] = []
            self._t0: float | None = None
            self._n = 0

        def on_train_epoch_start(self, *_) -> None:  # Lightning passes (trainer, module)
            sync()
            self._t0, self._n = time.perf_counter(), 0

        def on_train_batch_end(self, *_) -> None:
            self._n += 1

        def on_validation_start(self, trainer, *_) -> None:
            if trainer.sanity_checking or self._t0 is None:
                return
            sync()
            self.epochs.append((self._t0, time.perf_counter(), self._n))
            self._t0 = None

        def steady_windows(self) -> list[tuple[float, float]]:
            return [(t0, t1) for t0, t1, _ in self.epochs[1:]]

    return EpochTimer()


def epoch_summary(epochs: list[tuple[float, float, int]], len_batch: int) -> dict[str, Any]:
    """Per-batch time over the epochs after the first (warm-up: allocator, kernels' first launches)."""
    out: dict[str, Any] = {"epoch_s": [round(t1 - t0, 4) for t0, t1, _ in epochs]}
    steady = epochs[1:]
    batches = sum(n for _, _, n in steady)
    if batches:
        seconds = sum(t1 - t0 for t0, t1, _ in steady)
        out["batch_s"] = seconds / batches
        out["samples_per_s"] = batches * len_batch / seconds
        out["batches_timed"] = batches
    return out


def bare_loop(job, sync, accelerator: str) -> dict[str, Any]:
    """The same model (same init seed), optimizer, loss, accumulation and batches (labrun's datamodule) as
    labrun's fit, in a plain loop: no Lightning, no logging, no callbacks, no validation."""
    import torch

    from trainer.model import build_operator
    from trainer.train import build_datamodule

    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    torch.manual_seed(int(job.seed))
    m = job.model
    net = build_operator(
        m.name, list(m.n_modes), m.in_channels, m.out_channels, m.hidden_channels, m.n_layers
    ).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=float(job.training.lr))
    loss_fn = torch.nn.MSELoss()
    accumulate = int(job.training.accumulate_grad_batches)
    dm = build_datamodule(job)
    dm.setup("fit")
    loader = dm.train_dataloader()
    sampler = loader.sampler
    epochs = []
    net.train()
    for epoch in range(int(job.training.max_epochs)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        sync()
        t0, n = time.perf_counter(), 0
        for i, batch in enumerate(loader):
            x = batch["x"].to(device, non_blocking=True)
            y = batch["y"].to(device, non_blocking=True)
            loss = loss_fn(net(x), y) / accumulate
            loss.backward()
            if (i + 1) % accumulate == 0:
                opt.step()
                opt.zero_grad(set_to_none=True)
            n += 1
        sync()
        epochs.append((t0, time.perf_counter(), n))
    out = epoch_summary(epochs, int(job.batch_size))
    out["windows"] = [(t0, t1) for t0, t1, _ in epochs[1:]]
    return out


class UtilSampler:
    """NVML's GPU utilization (% of time a kernel ran, over the driver's last sample period), polled every
    50 ms in a thread while the block runs."""

    def __init__(self, index: int = 0, every_s: float = 0.05) -> None:
        self.index, self.every_s = index, every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()

    def __enter__(self) -> UtilSampler:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)

        def poll() -> None:
            while not self._stop.is_set():
                util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
                self.samples.append((time.perf_counter(), int(util)))
                self._stop.wait(self.every_s)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self, windows: list[tuple[float, float]]) -> dict[str, Any]:
        # NVML's figure covers the period before the reading: skip the first 0.5 s of each window.
        inside = [u for t, u in self.samples if any(t0 + 0.5 <= t <= t1 for t0, t1 in windows)]
        return {
            "mean": statistics.fmean(inside) if inside else None,
            "p10": sorted(inside)[len(inside) // 10] if inside else None,
            "samples": len(inside),
            "all_samples": len(self.samples),
        }


# ---------------------------------------------------------------------------------------------- report


def table(results: dict[str, Any]) -> str:
    def get(*keys, fmt="{}"):
        node: Any = results
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return "-"
            node = node[k]
        return fmt.format(node) if node is not None else "-"

    rows = [("device", get("environment", "device") if results["mode"] == "gpu" else "cpu (rehearsal)")]
    for key in ("sfno", "fno"):
        checks = results.get("runs", {}).get(key, {}).get("checks", {}).get("passed")
        ok = bool(checks) and all(checks.values())
        rows.append(
            (f"(1) {key} 32x64, 2 epochs", f"{'ok' if ok else 'FAILED'} in {get('runs', key, 'wall_s')} s")
        )
    rows += [
        ("(2a) data pipeline cached / seed", get("throughput", "pipeline", "ratio", fmt="{:.1f}x")),
        (
            "(2b) fit samples/s cached vs seed",
            f"{get('throughput', 'end_to_end', 'cached_samples_per_s', fmt='{:.1f}')} vs "
            f"{get('throughput', 'end_to_end', 'seed_samples_per_s', fmt='{:.1f}')}: "
            f"{get('throughput', 'end_to_end', 'ratio', fmt='{:.2f}x')} "
            f"({get('throughput', 'end_to_end', 'ratio_with_cache_build', fmt='{:.2f}x')} with the cache build)",
        ),
        (
            "(2c) ms/batch labrun vs bare loop",
            f"{_ms(results, 'labrun')} vs "
            f"{_ms(results, 'bare')}: {get('step_time', 'overhead', fmt='{:+.1%}')} (goal <= +10%)",
        ),
        (
            "(3) GPU busy after warm-up",
            f"{get('step_time', 'utilization', 'mean', fmt='{:.1f}%')} (bare loop "
            f"{get('step_time', 'utilization_bare', 'mean', fmt='{:.1f}%')}; goal >= 90%)",
        ),
        ("(4) deterministic metrics.csv equal", get("runs", "determinism", "identical")),
        ("wall time", f"{results.get('wall_s')} s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _ms(results: dict[str, Any], which: str) -> str:
    value = results.get("step_time", {}).get(which, {}).get("batch_s")
    return f"{value * 1000:.2f}" if value else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cpu", action="store_true", help="the rehearsal: accelerator=cpu, tiny sizes, no NVML"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench/out/gpu-proof")
    )
    parser.add_argument(
        "--kit", type=Path, help="the kit folder (its closure is checked against this machine)"
    )
    parser.add_argument(
        "--budget-s", type=float, default=330.0, help="wall time for everything (default %(default)s s)"
    )
    parser.add_argument("--install-s", type=float, help="seconds the wheel install took (gpu_proof.sh)")
    parser.add_argument(
        "--keep", type=Path, help="keep the run directories here (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", stream=sys.stdout)
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric", "trainer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    args.out = args.out.resolve()  # the driver works in a folder of its own (os.chdir below)
    args.kit = args.kit.resolve() if args.kit else None
    args.keep = args.keep.resolve() if args.keep else None
    args.out.mkdir(parents=True, exist_ok=True)
    plan = CPU if args.cpu else GPU
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="labrun-gpu-proof-")))
        work.mkdir(parents=True, exist_ok=True)
        os.chdir(work)  # whatever a library writes to the working directory lands here
        os.environ.update({k: v for k, v in trainer_env(work.resolve()).items() if k.startswith("WANDB_")})
        proof = Proof(plan, args.out, work.resolve(), args.budget_s, args.kit)
        if args.install_s is not None:
            proof.results["kit_install_s"] = args.install_s
        proof.launch_runs()
        proof.phase("environment", proof.environment, needs_s=0)
        proof.phase("runs", proof.runs, needs_s=0)  # waits for them, within the budget
        env = proof.results["environment"]
        if "error" in env or any(str(v).startswith("FAILED") for v in env.get("imports", {}).values()):
            log.error("not measuring without the training stack: %s", "; ".join(proof.failures))
        else:
            proof.phase("throughput", proof.throughput, needs_s=60 if plan is GPU else 5)
            proof.phase("step_time", proof.step_time, needs_s=60 if plan is GPU else 5)
        # The GPU guard: a foreign CUDA process keeps labrun's run waiting until it ends (gpu_guard_proof.py)
        proof.phase(
            "gpu_guard",
            lambda: guard_phase(proof.work, trainer_env(proof.work), plan.accelerator, proof.left()),
            needs_s=90 if plan is GPU else 0,
        )
        proof.save()
    print("\n" + table(proof.results))
    print(f"\nfigures: {args.out / 'gpu_proof.json'}")
    for failure in proof.failures:
        print(f"FAILED: {failure}")
    return 1 if proof.failures else 0


if __name__ == "__main__":
    sys.exit(main())
