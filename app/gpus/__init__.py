"""The GPU guard: GPUs busy outside labrun (docs/gpu-guard.md).

nvml.py    the one place that talks to NVML (nvidia-ml-py's ``pynvml``): one pass over the GPUs
procs.py   what /proc says of a process on a GPU (user, command, session, ancestors, cgroup)
owners.py  whether a process is one of labrun's runs
state.py   the guard's last pass as frozen values (``GuardView``), and the reasons it gives
guard.py   ``GpuGuard``: the pass per interval, the re-check before a start, the outside use count
admin.py   ignoring processes and mapping Unix users (the API and ``python -m app gpus`` share it)
"""

from app.gpus.guard import GpuGuard
from app.gpus.state import ForeignProcess, GpuIdentity, GuardView

__all__ = ["ForeignProcess", "GpuGuard", "GpuIdentity", "GuardView"]
