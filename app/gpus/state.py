"""What the guard knows after its last NVML pass, as frozen values that readers share (requests read the
cache, never NVML): ``GuardView`` with its GPUs, the processes on them that labrun did not start, and when
each GPU last did work (its utilisation above 0%: what the stall watcher's GPU rule reads)."""

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
    utilization: dict[int, int | None] = field(default_factory=dict)  # GPU -> % in the last pass (None: n/a)
    # GPU -> the last pass that saw it above 0%, or that could not tell (the guard's first pass, a pass NVML
    # did not answer, a GPU that does not report utilisation): unknown counts as working, never as idle
    active_at: dict[int, float] = field(default_factory=dict)
    watching_since: float | None = None  # the guard's first pass: before it, nothing is known of any GPU

    @classmethod
    def off(cls, detail: str) -> GuardView:
        return cls(False, detail)

    def idle_since(self, gpus: list[int] | tuple[int, ...]) -> float | None:
        """Since when every one of ``gpus`` has been at 0% (the latest of their last working times); None
        when one of them is not checked (the guard is off, or the GPU is not one NVML sees)."""
        if not gpus or any(g not in self.active_at for g in gpus):
            return None
        return max(self.active_at[g] for g in gpus)

    def reason(self, gpus: list[int] | tuple[int, ...] | None = None) -> str | None:
        """Why ``gpus`` (default: every busy GPU) cannot be handed out, naming each blocking process."""
        chosen = sorted(self.busy) if gpus is None else [g for g in gpus if g in self.busy]
        parts = [p.describe() for g in chosen for p in self.busy[g]]
        return "; ".join(parts) or None
