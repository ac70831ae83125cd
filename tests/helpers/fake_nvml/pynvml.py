"""A stand-in for nvidia-ml-py's ``pynvml``, for tests on machines without a GPU: NVML faked at the boundary.

Tests put this folder first on the service process's PYTHONPATH and write the JSON file that
``FAKE_NVML_FILE`` names; every call reads it again, so a test changes what NVML says by rewriting it:

    {"gpus": [{"uuid": "GPU-0000", "name": "Fake GPU", "utilization": 0}, ...],
     "processes": [{"gpu": 0, "pid": 1234, "used_mb": 2048, "graphics": false}, ...]}

A GPU's ``utilization`` (percent) answers ``nvmlDeviceGetUtilizationRates``; a GPU without it raises
``NVMLError_NotSupported`` there, as boards that do not report it do.

As the driver does, only live processes are listed (a pid that is gone drops out), and graphics processes
come only from ``nvmlDeviceGetGraphicsRunningProcesses``. No file, or ``"fail_init": true``: nvmlInit
raises, as on a machine without a driver.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


def _state() -> dict[str, Any]:
    path = os.environ.get("FAKE_NVML_FILE", "")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        raise NVMLError_LibraryNotFound("NVML Shared Library Not Found") from None


def nvmlInit() -> None:
    if _state().get("fail_init"):
        raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")


def nvmlShutdown() -> None:
    pass


def nvmlDeviceGetCount() -> int:
    return len(_state()["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    if not 0 <= index < nvmlDeviceGetCount():
        raise NVMLError("Invalid Argument")
    return index


def nvmlDeviceGetUUID(handle: int) -> str:
    return _state()["gpus"][handle]["uuid"]


def nvmlDeviceGetName(handle: int) -> str:
    return _state()["gpus"][handle].get("name", "Fake GPU")


def _processes(handle: int, graphics: bool) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(pid=p["pid"], usedGpuMemory=None if p.get("used_mb") is None else p["used_mb"] << 20)
        for p in _state().get("processes", [])
        if p["gpu"] == handle and bool(p.get("graphics")) == graphics and os.path.exists(f"/proc/{p['pid']}")
    ]


def nvmlDeviceGetComputeRunningProcesses(handle: int) -> list[SimpleNamespace]:
    return _processes(handle, graphics=False)


def nvmlDeviceGetGraphicsRunningProcesses(handle: int) -> list[SimpleNamespace]:
    return _processes(handle, graphics=True)


def nvmlDeviceGetUtilizationRates(handle: int) -> SimpleNamespace:
    gpu = _state()["gpus"][handle]
    if gpu.get("utilization") is None:
        raise NVMLError_NotSupported("Not Supported")
    return SimpleNamespace(gpu=int(gpu["utilization"]), memory=int(gpu.get("memory_utilization", 0)))
