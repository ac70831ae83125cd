"""Slots: which GPUs and CPU-run slots are taken, and by which run.

Pure bookkeeping, no threads and no I/O: the lifecycle's rooms call it under the lifecycle's lock. A GPU is owned by at most
one run; CPU-only runs are capped at MAX_CPU_RUNS. A run needing ``n`` GPUs takes the ``n`` lowest free
indices. ``unlimited``: the launcher places runs itself (a cluster): every run may start now, with no GPU
ids from us.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_OUTSIDE = "\0outside"  # owner of a GPU set aside: no run's name (run names never hold a NUL)


class Slots:
    def __init__(self, gpus: Sequence[int], max_cpu_runs: int, unlimited: bool = False) -> None:
        self.unlimited = unlimited
        self.gpus = () if unlimited else tuple(gpus)
        self.max_cpu_runs = max_cpu_runs
        self._gpu_owner: dict[int, str] = {}  # GPU -> the run that owns it
        self._cpu_runs: set[str] = set()
        self._held: dict[str, tuple[int, ...]] = {}

    def copy(self) -> Slots:
        """A scratch copy to plan on (a picking policy reserves on it; the dispatcher then holds what it
        picked on the real one)."""
        other = Slots(self.gpus, self.max_cpu_runs, self.unlimited)
        other._gpu_owner, other._cpu_runs, other._held = (
            dict(self._gpu_owner),
            set(self._cpu_runs),
            dict(self._held),
        )
        return other

    @property
    def free_gpus(self) -> list[int]:
        return [g for g in self.gpus if g not in self._gpu_owner]

    def any_free(self) -> bool:
        return (
            self.unlimited or len(self._cpu_runs) < self.max_cpu_runs or len(self._gpu_owner) < len(self.gpus)
        )

    def take(self, name: str, gpu_need: int, among: Sequence[int] | None = None) -> list[int] | None:
        """Reserve what a queued run needs: its GPUs ([] for a CPU run), or None if they are not free.
        A run that still holds resources (its launch failed half-way) gets the same ones again. ``among``:
        the GPUs it may take, in the order it should (reservations: ``app/reservations.py``)."""
        if name in self._held:
            return list(self._held[name])
        if self.unlimited:
            self._held[name] = ()
            return []
        if gpu_need == 0:
            if len(self._cpu_runs) >= self.max_cpu_runs:
                return None
            self.hold(name, 0, ())
            return []
        free = (
            self.free_gpus
            if among is None
            else [g for g in among if g in self.gpus and g not in self._gpu_owner]
        )
        if gpu_need > len(free):
            return None
        gpus = free[:gpu_need]
        self.hold(name, gpu_need, gpus)
        return gpus

    def set_aside(self, gpus: Iterable[int]) -> None:
        """Take free GPUs out of what may be handed out (on a scratch copy): GPUs busy outside labrun."""
        for g in gpus:
            if g in self.gpus and g not in self._gpu_owner:
                self._gpu_owner[g] = _OUTSIDE

    def would_fit(self, gpu_need: int, gpus: Iterable[int]) -> bool:
        """Whether ``gpu_need`` GPUs would be free if ``gpus`` (set aside) were."""
        aside = sum(1 for g in set(gpus) if self._gpu_owner.get(g) == _OUTSIDE)
        return aside > 0 and gpu_need <= len(self.free_gpus) + aside

    def hold(self, name: str, gpu_need: int, gpus: Sequence[int]) -> None:
        """Account for a run that already has its resources (re-attached after a restart)."""
        if self.unlimited:
            self._held[name] = ()
            return
        if gpu_need == 0:
            self._cpu_runs.add(name)
        for g in gpus:
            self._gpu_owner[g] = name
        self._held[name] = tuple(gpus)

    def free(self, name: str) -> None:
        self._cpu_runs.discard(name)
        for g in self._held.pop(name, ()):
            if self._gpu_owner.get(g) == name:
                del self._gpu_owner[g]
