"""What the guard knows after its last NVML pass, as frozen values that readers share (requests read the
cache, never NVML): ``GuardView`` with its GPUs and the processes on them that labrun did not start."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuIdentity:
    index: int  # labrun's id == NVML's index == nvidia-smi's (PCI bus order)
    uuid: str
    model: str


@dataclass(frozen=True)
class ForeignProcess:
    """A compute process on one of labrun's GPUs that no run of labrun started."""

    gpu: int
    pid: int
    user: str
    command: str
    used_mb: int | None  # None: the driver does not say
    since: float  # when the guard first saw it on this GPU (Unix time)
    ignored_by: int | None = None  # the admin's ignore rule that lets it be (it does not block then)
    pid_start: str = "?"  # its start in clock ticks since boot (a pid and this name one process)

    def describe(self) -> str:
        memory = "an unknown amount of memory" if self.used_mb is None else f"{self.used_mb} MiB"
        return (
            f"GPU {self.gpu} is busy outside labrun: pid {self.pid} ({self.user}: {self.command}) holds "
            f"{memory} since {_clock(self.since)}"
        )


def _clock(ts: float) -> str:
    local = time.localtime(ts)
    same_day = time.localtime().tm_yday == local.tm_yday
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", local)


@dataclass(frozen=True)
class GuardView:
    enabled: bool
    detail: str  # what /healthz says of it: on (and how), or off and why
    probed_at: float | None = None  # Unix time of the last NVML pass
    gpus: tuple[GpuIdentity, ...] = ()
    foreign: tuple[ForeignProcess, ...] = ()  # above the threshold, ignored ones included (marked)
    min_mb: int = 0
    busy: dict[int, tuple[ForeignProcess, ...]] = field(default_factory=dict)  # GPU -> what blocks it

    @classmethod
    def off(cls, detail: str) -> GuardView:
        return cls(False, detail)

    def reason(self, gpus: list[int] | tuple[int, ...] | None = None) -> str | None:
        """Why ``gpus`` (default: every busy GPU) cannot be handed out, naming each blocking process."""
        chosen = sorted(self.busy) if gpus is None else [g for g in gpus if g in self.busy]
        parts = [p.describe() for g in chosen for p in self.busy[g]]
        return "; ".join(parts) or None
