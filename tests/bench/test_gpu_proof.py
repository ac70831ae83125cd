"""The GPU proof's rehearsal: bench/gpu_proof.sh --cpu runs every part of the proof (the trainer runs and their
checks, the seed-vs-cached and labrun-vs-bare measurements, the determinism pair) on the CPU with tiny
sizes, so that the one run on a GPU machine cannot fail on something a CPU would have shown."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_proof.sh"

pytestmark = pytest.mark.slow


def script_env(out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "OUT"}
    return {**env, "OUT": str(out), "PYTHON": sys.executable, **extra}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    # A generous budget: on a loaded 2-core machine the rehearsal takes minutes, not the ~60 s it takes alone.
    done = subprocess.run(
        ["bash", str(SCRIPT), "--cpu", "--budget-s", "600"],
        cwd=tmp_path_factory.mktemp("cwd"),
        env=script_env(out),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    return out, done.stdout, json.loads((out / "gpu_proof.json").read_text())


def test_runs_pass_every_check(rehearsal):
    _, _, figures = rehearsal
    assert figures["mode"] == "cpu"
    assert figures["failures"] == []
    for model in ("sfno", "fno"):
        run = figures["runs"][model]
        assert run["exit_code"] == 0
        assert run["checks"]["passed"] == {
            "run_dir": True,
            "run_json_succeeded": True,
            "run_json_device": True,
            "wandb_offline_run_name": True,
            "metrics_csv": True,
            "last_ckpt_loads": True,
        }
        assert run["checks"]["wandb_run_names"] == [f"proof-{model}"]
        assert "accelerator=cpu" in run["overrides"]
        assert "data=32x64" in run["overrides"]


def test_determinism_pair_matches_on_cpu(rehearsal):
    _, _, figures = rehearsal
    det = figures["runs"]["determinism"]
    assert det["identical"] is True
    assert det["rows"] > 0


def test_throughput_figures(rehearsal):
    _, _, figures = rehearsal
    pipe, e2e = figures["throughput"]["pipeline"], figures["throughput"]["end_to_end"]
    assert pipe["ratio"] > 1  # slices of a cached tensor against a PDE solve per sample: never close
    for value in (e2e["seed_samples_per_s"], e2e["cached_samples_per_s"], e2e["ratio_with_cache_build"]):
        assert value > 0
    assert figures["throughput"]["model"]["name"] == "sfno"
    step = figures["step_time"]
    assert step["labrun"]["batches_timed"] == step["bare"]["batches_timed"] > 0  # the same batches
    assert step["labrun"]["batch_s"] > 0
    assert step["bare"]["batch_s"] > 0
    assert "overhead" in step
    assert step["utilization"] == {"skipped": "no GPU (cpu rehearsal)"}


def test_output_is_two_plain_files_in_out(rehearsal):
    out, stdout, _ = rehearsal
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert [p.name for p in files] == ["gpu_proof.json", "gpu_proof.log"]  # easy to copy back
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in files)
    log = (out / "gpu_proof.log").read_text()
    for line in ("(1) sfno 32x64, 2 epochs", "(2b) fit samples/s cached vs seed", "(4) deterministic"):
        assert line in stdout
        assert line in log


def test_gpu_mode_without_a_kit_stops_at_once(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        env=script_env(tmp_path / "out", LABRUN_GPU_KIT=str(tmp_path / "no-kit")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "make gpu-kit" in done.stdout


def test_utilization_sampler_reads_nvml_inside_the_timed_windows(monkeypatch):
    """The NVML path the rehearsal skips, against a stand-in pynvml: polled in a thread, kept only inside the
    steady windows (less the first 0.5 s of each: NVML's figure covers the period before the reading)."""
    import time
    import types

    from bench import gpu_proof

    readings = iter([10, 95, 97, 99] + [98] * 1000)
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: ("handle", i),
        nvmlDeviceGetUtilizationRates=lambda _h: types.SimpleNamespace(gpu=next(readings), memory=0),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with gpu_proof.UtilSampler(every_s=0.01) as sampler:
        start = time.perf_counter()
        time.sleep(0.8)
        end = time.perf_counter()
    summary = sampler.summary([(start, end)])
    assert summary["all_samples"] >= 10
    assert 0 < summary["samples"] < summary["all_samples"]
    assert summary["mean"] >= 95  # the warm-up reading (10) falls outside the window
    assert sampler.summary([]) == {
        "mean": None,
        "p10": None,
        "samples": 0,
        "all_samples": summary["all_samples"],
    }
