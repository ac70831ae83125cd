"""One numbering of GPUs: labrun's ids are NVML's and nvidia-smi's (PCI bus order), and every run's CUDA is
told to number them the same way (CUDA_DEVICE_ORDER=PCI_BUS_ID); otherwise, on a box with mixed GPU
models, CUDA's default (fastest first) would put a run on another GPU than the guard checked."""

from __future__ import annotations

import sys
from pathlib import Path

from app.launchers.base import LaunchSpec
from app.launchers.docker import DockerLauncher, DockerSettings
from app.launchers.local import LocalLauncher
from app.statedir import StateDir


def _spec(out: Path, name: str, gpus: tuple[int, ...]) -> LaunchSpec:
    state = out / ".labrun" / "runs" / name
    return LaunchSpec(
        name=name,
        trainer_args=[],
        gpus=gpus,
        output_dir=out,
        state_dir=state,
        log_path=state / "log",
        run_dir=out / name,
    )


def test_a_local_run_numbers_gpus_in_pci_bus_order(tmp_path):
    script = tmp_path / "t.py"
    script.write_text(
        "import os\nprint(os.environ['CUDA_DEVICE_ORDER'], os.environ['CUDA_VISIBLE_DEVICES'])\n"
    )
    launcher = LocalLauncher([sys.executable, str(script)], StateDir(tmp_path))
    handle = launcher.start(_spec(tmp_path, "r1", (1, 3)))
    assert launcher.wait("r1", handle, timeout=30).exit_code == 0
    assert (tmp_path / ".labrun/runs/r1/log").read_text().strip() == "PCI_BUS_ID 1,3"


def test_a_docker_gpu_run_numbers_gpus_in_pci_bus_order(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    launcher = DockerLauncher(DockerSettings(), tmp_path)
    kw = launcher.create_kwargs(_spec(tmp_path, "r1", (1, 3)), "sha256:" + "ab" * 32)
    assert kw["environment"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert kw["device_requests"][0]["DeviceIDs"] == ["1", "3"]  # nvidia-smi's ids: the same numbering
