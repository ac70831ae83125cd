"""``GpuGuard``: which of labrun's GPUs are busy outside labrun, from one NVML pass per interval.

Its own thread makes one pass every ``LABRUN_GPU_GUARD_INTERVAL_S`` (2 s); requests and dispatch rounds
read the cached ``GuardView``, never NVML. The dispatcher asks for one more pass just before it launches a
run (``recheck``), so a process that appeared between the pick and the start sends the run back to wait.
When what blocks changes (a process came or went) the guard wakes the dispatcher (``on_change``): a GPU
comes back by itself once its process is gone.

The same pass reads each GPU's utilisation and keeps, per GPU, the last time it was above 0%
(``GuardView.active_at``): the stall watcher reads it for its GPU rule (``app/lifecycle/stalls.py``), so that
rule costs no NVML call of its own.

Each pass also counts, for a Unix user an admin mapped to a labrun user, the GPUs their own processes
held since the last pass toward that user's fair share (and notes it in the store, which fair share reads
again at start-up).
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from app.core.config import Settings
from app.fairshare import GPU, FairShare
from app.gpus import procs
from app.gpus.nvml import GpuSample, NvmlProbe, NvmlUnavailable
from app.gpus.owners import RunProcesses
from app.gpus.state import ForeignProcess, GpuIdentity, GuardView
from app.statedir import StateDir
from app.store import RunStore
from app.store.gpus import GpuIgnore, OutsideUse

log = logging.getLogger("labrun.gpus")

UNSEEN = ("?", "not visible from labrun's PID namespace (under Compose: pid: host)")


class GpuGuard:
    def __init__(
        self,
        settings: Settings,
        gpus: tuple[int, ...],
        store: RunStore,
        state: StateDir,
        runs: Callable[[], Iterable[tuple[str, str | None]]],
        fair: FairShare,
        places_runs: bool = False,
        probe: NvmlProbe | None = None,
    ) -> None:
        """``runs``: (name, handle) of each run that is running or being started (whose processes are
        labrun's own)."""
        self.settings, self.gpus, self.store, self.state = settings, tuple(gpus), store, state
        self.runs, self.fair, self.places_runs = runs, fair, places_runs
        self.probe = probe or NvmlProbe()
        self.on_change: Callable[[], None] = lambda: None
        self._view = GuardView.off("off: not started")
        self._lock = threading.Lock()  # one pass at a time (the thread's, or a dispatcher's recheck)
        self._first_seen: dict[tuple[int, int, str], float] = {}  # (GPU, pid, its start) -> first seen
        self._last_pass: float | None = None
        self._active_at: dict[int, float] = {}  # GPU -> last pass that saw it working (or could not tell)
        self._watching_since: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- start and stop ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Open NVML and make the first pass; without NVML the guard stays off and says so once."""
        why = self._off_by_settings()
        if why is None:
            try:
                count = self.probe.open()
            except NvmlUnavailable as exc:
                why = f"off: NVML is not available here ({exc}); GPUs are handed out without this check"
            else:
                missing = [g for g in self.gpus if g >= count]
                if missing:
                    log.warning("GPU guard: NVML sees %d GPU(s); it cannot check GPU(s) %s", count, missing)
                    self.gpus = tuple(g for g in self.gpus if g < count)
        if why is not None:
            self._view = GuardView.off(why)
            log.info("GPU guard %s", why)
            return
        self._load_history()
        self.refresh()
        log.info("GPU guard on: %s", self._view.detail)
        self._thread = threading.Thread(target=self._loop, name="labrun-gpu-guard", daemon=True)
        self._thread.start()

    def _off_by_settings(self) -> str | None:
        if self.places_runs:
            return "off: the launcher's scheduler places runs and owns its nodes' GPUs"
        if not self.settings.gpu_guard:
            return "off: LABRUN_GPU_GUARD=false"
        if not self.gpus:
            return "off: this server hands out no GPUs"
        return None

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.probe.close()

    def _loop(self) -> None:
        while not self._stopping.wait(self.settings.gpu_guard_interval_s):
            try:
                self.refresh()
            except Exception:  # a pass that failed (the store, /proc): the next one tries again
                log.exception("GPU guard: a pass failed")

    # --- what the others read ---------------------------------------------------------------------------

    def view(self) -> GuardView:
        """The last pass (a frozen value: requests read it, never NVML)."""
        return self._view

    def recheck(self, gpus: list[int]) -> str | None:
        """A fresh pass just before a run starts on ``gpus``: why it must not (a process outside labrun
        holds one of them), or None."""
        if not self._view.enabled or not gpus:
            return None
        return self.refresh().reason(gpus)

    # --- one pass ------------------------------------------------------------------------------------------

    def refresh(self) -> GuardView:
        with self._lock:
            now = time.time()
            before = self._view
            try:
                samples = self.probe.sample(self.gpus)
            except NvmlUnavailable as exc:  # e.g. a driver reload: nothing blocks until NVML answers again
                if before.probed_at is not None and before.enabled:
                    log.warning("GPU guard: NVML stopped answering (%s); not checking until it does", exc)
                self._active_at.update(dict.fromkeys(self.gpus, now))  # not seen idle: counts as working
                self._view = GuardView(
                    True,
                    f"on, but NVML did not answer the last pass ({exc})",
                    now,
                    active_at=dict(self._active_at),
                    watching_since=self._watching_since,
                )
                self._changed(before)
                return self._view
            self._note_utilization(samples, now)
            foreign = self._foreign(samples, now)
            self._count_outside_use(foreign, now)
            busy: dict[int, tuple[ForeignProcess, ...]] = {}
            for process in foreign:
                if process.ignored_by is None:
                    busy[process.gpu] = (*busy.get(process.gpu, ()), process)
            self._view = GuardView(
                enabled=True,
                detail=f"on: NVML, {len(self.gpus)} GPU(s) checked every {self.settings.gpu_guard_interval_s:g} s; "
                f"processes outside labrun above {self.settings.foreign_gpu_min_mb} MiB block their GPU",
                probed_at=now,
                gpus=tuple(GpuIdentity(s.index, s.uuid, s.model) for s in samples),
                foreign=tuple(foreign),
                min_mb=self.settings.foreign_gpu_min_mb,
                busy=busy,
                utilization={s.index: s.utilization for s in samples},
                active_at=dict(self._active_at),
                watching_since=self._watching_since,
            )
            self._last_pass = now
            self._changed(before)
            return self._view

    def _changed(self, before: GuardView) -> None:
        if _blocking(before) != _blocking(self._view):
            for gpu, found in sorted(self._view.busy.items()):
                if _blocking(before).get(gpu) != _pids(found):
                    log.info("GPU guard: %s", "; ".join(p.describe() for p in found))
            for gpu in sorted(set(before.busy) - set(self._view.busy)):
                log.info("GPU guard: GPU %d is no longer busy outside labrun", gpu)
            self.on_change()

    def _note_utilization(self, samples: list[GpuSample], now: float) -> None:
        """Each GPU's last working time: a pass that sees it above 0% (or cannot tell: no utilisation
        reported, or its first pass, as nothing is known of the time before) moves it to now."""
        if self._watching_since is None:
            self._watching_since = now
        for sample in samples:
            if sample.utilization is None or sample.utilization > 0 or sample.index not in self._active_at:
                self._active_at[sample.index] = now

    def _foreign(self, samples: list[GpuSample], now: float) -> list[ForeignProcess]:
        """The processes above the threshold that no run of labrun started, each with its ignore rule."""
        min_mb = self.settings.foreign_gpu_min_mb
        runs = RunProcesses.of(self.runs(), self.state)
        ignores = self.store.gpus.ignores()
        found: list[ForeignProcess] = []
        first_seen: dict[tuple[int, int, str], float] = {}
        for sample in samples:
            for process in sample.processes:
                if process.used_mb is not None and process.used_mb <= min_mb:
                    continue
                info = procs.read(process.pid)
                if info is not None and runs.owns(info):
                    continue
                user, command = UNSEEN if info is None else (info.user, info.command)
                key = (sample.index, process.pid, info.start_ticks if info else "?")
                since = first_seen[key] = self._first_seen.get(key, now)
                rule = _ignored_by(ignores, process.pid, info)
                found.append(
                    ForeignProcess(
                        sample.index, process.pid, user, command, process.used_mb, since, rule, key[2]
                    )
                )
        self._first_seen = first_seen
        return found

    # --- fair share: GPU time held outside the queue -----------------------------------------------------

    def _count_outside_use(self, foreign: list[ForeignProcess], now: float) -> None:
        mapped = self.store.gpus.unix_users()
        if not mapped:
            return
        interval = self.settings.gpu_guard_interval_s
        # Since the last pass (a pass that came late counts one interval: the guard did not see between).
        last = (
            self._last_pass if self._last_pass and now - self._last_pass <= 3 * interval else now - interval
        )
        held: dict[tuple[str, int], float] = {}  # (labrun user, GPU) -> from when, in this pass
        uses = []
        for p in foreign:
            owner = mapped.get(p.user)
            if owner is None:
                continue
            start = max(p.since, last)
            held[(owner, p.gpu)] = min(held.get((owner, p.gpu), start), start)
            uses.append(OutsideUse(p.gpu, p.pid, p.pid_start, p.user, owner, p.since, now))
        for (owner, _gpu), start in held.items():  # a GPU counts once, however many processes hold it
            self.fair.add_use(owner, GPU, 1, start, now, now)
        try:
            self.store.gpus.note_outside_use(uses)
        except Exception as exc:  # the store is full or read-only: fair share has it until a restart
            log.warning("GPU guard: could not note GPU time held outside the queue: %s", exc)

    def _load_history(self) -> None:
        """What mapped users' processes held before this start, into fair share (as runs are)."""
        since = time.time() - 20 * self.settings.fair_share_half_life_s
        spans: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
        for use in self.store.gpus.outside_use(since):
            spans[(use.owner, use.gpu)].append((use.first_seen, use.last_seen))
        for (owner, _gpu), intervals in spans.items():
            for start, end in _merged(intervals):  # two processes on one GPU at once: the GPU counts once
                self.fair.add_use(owner, GPU, 1, start, end)


def _ignored_by(ignores: list[GpuIgnore], pid: int, info: procs.ProcInfo | None) -> int | None:
    for rule in ignores:
        if rule.pid is not None and rule.pid == pid:
            if rule.pid_start is None or (info is not None and rule.pid_start == info.start_ticks):
                return rule.id
        elif (
            rule.pattern is not None and info is not None and fnmatch.fnmatchcase(info.command, rule.pattern)
        ):
            return rule.id
    return None


def _pids(found: tuple[ForeignProcess, ...]) -> tuple[int, ...]:
    return tuple(sorted(p.pid for p in found))


def _blocking(view: GuardView) -> dict[int, tuple[int, ...]]:
    return {gpu: _pids(found) for gpu, found in view.busy.items()}


def _merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
