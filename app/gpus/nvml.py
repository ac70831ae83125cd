"""The one place that talks to NVML (NVIDIA's management library, through ``nvidia-ml-py``'s ``pynvml``).

``NvmlProbe.open()`` initialises NVML once; without a driver (a CPU box, a container without GPU access)
it raises ``NvmlUnavailable`` and the guard stays off. ``sample(indices)`` is one pass: for each of the
service's GPUs (NVML index == ``nvidia-smi`` index == labrun's GPU id: both number GPUs in PCI bus order),
its UUID, its model, the *compute* processes on it with the memory each holds, and its utilisation (the
share of the last sample period in which a kernel ran: what the stall watcher's GPU rule reads). Graphics-only
processes (Xorg, a desktop) are in NVML's other list and are never asked for.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used here (no driver, no library, no GPU access)."""


@dataclass(frozen=True)
class GpuProcess:
    pid: int  # in the service's PID namespace (the host's, under Compose with ``pid: host``)
    used_mb: int | None  # None: the driver does not say (then it counts as above any threshold)


@dataclass(frozen=True)
class GpuSample:
    index: int
    uuid: str
    model: str
    processes: tuple[GpuProcess, ...]
    utilization: int | None = None  # % of the driver's last sample period a kernel ran; None: not reported


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlProbe:
    def __init__(self) -> None:
        self._nvml: ModuleType | None = None

    def open(self) -> int:
        """Initialise NVML; the number of GPUs it sees. Raises NvmlUnavailable."""
        try:
            nvml = importlib.import_module("pynvml")
            nvml.nvmlInit()
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
            raise NvmlUnavailable(f"{type(exc).__name__}: {exc}") from None
        self._nvml = nvml
        return count

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):  # shutting down: nothing to do about it
                self._nvml.nvmlShutdown()
            self._nvml = None

    def sample(self, indices: tuple[int, ...]) -> list[GpuSample]:
        """One NVML pass over ``indices``. Raises NvmlUnavailable when NVML stops answering (a driver
        reload): the caller keeps its last view and says so."""
        nvml = self._nvml
        if nvml is None:
            raise NvmlUnavailable("NVML is not initialised")
        samples = []
        try:
            for index in indices:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                processes = tuple(
                    GpuProcess(
                        int(p.pid),
                        None if p.usedGpuMemory is None else int(p.usedGpuMemory) // (1024 * 1024),
                    )
                    for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                )
                samples.append(
                    GpuSample(
                        index,
                        _text(nvml.nvmlDeviceGetUUID(handle)),
                        _text(nvml.nvmlDeviceGetName(handle)),
                        processes,
                        _utilization(nvml, handle),
                    )
                )
        except Exception as exc:
            raise NvmlUnavailable(f"{type(exc).__name__}: {exc}") from None
        return samples


def _utilization(nvml: ModuleType, handle: Any) -> int | None:
    """The GPU's utilisation in %, or None where the driver does not report it (NVMLError_NotSupported on
    some boards, a vGPU): then the stall watcher's GPU rule does not apply to it."""
    try:
        return int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:
        return None
