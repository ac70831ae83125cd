"""The server's own conditions, told to the server-wide destinations an admin sets: a GPU busy outside
labrun, the output directory's disk running low (or gone), the launcher's engine down.

Each condition (one per GPU for the first) is told once when it starts and once when it clears, and never
more often than LABRUN_NOTIFY_SERVER_EVENT_MIN_S: a change within that interval of the condition's last
message is held back, and told once the interval has passed if the condition still differs from what was
last told (one that flaps back within the interval sends nothing more). What was last told is read back
from the outbox on first use, so a restart does not tell again a condition that still holds.

Where the changes are noticed:

- the GPU guard's pass, when what blocks a GPU changes (its ``on_change``);
- the disk guard's check (submissions, dispatch rounds, ``/healthz``: its ``on_check``);
- ``ServerWatch``, a thread that every LABRUN_NOTIFY_SERVER_CHECK_S asks the launcher's health (its
  engine), checks the disk (so an idle server notices too), and tells what the interval held back.

An event is one insert into the outbox, a transaction of its own (no status change to share one with); the
delivery worker sends it like any other. Noticing never waits on delivery, and a store that cannot be
written costs the event, never the guard's pass or a dispatch round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.notify.events import ServerCondition
from app.store.outbox import OutboxStore

log = logging.getLogger("labrun.notify")
DISK, ENGINE = "disk", "engine"


@dataclass(frozen=True)
class _Told:
    active: bool
    at: float


class ServerEvents:
    def __init__(self, outbox: OutboxStore, min_interval_s: float, host: str) -> None:
        self.outbox, self.min_interval_s, self.host = outbox, min_interval_s, host
        self._told: dict[str, _Told] | None = None  # subject -> what its last event said (read lazily)
        self._held: dict[str, tuple[ServerCondition, bool, str]] = {}  # subject -> a change held back
        self._lock = threading.Lock()

    def observe(self, condition: ServerCondition, subject: str, active: bool, detail: str) -> None:
        try:
            with self._lock:
                self._observe(condition, subject, active, detail)
        except Exception:  # the store is full or locked: this event is lost, the caller's work is not
            log.exception("could not note the server event %s (%s)", condition.value, subject)

    def gpus(self, busy: Mapping[int, str]) -> None:
        """What blocks each GPU now (GPU -> a description; the GPUs not named are free)."""
        with self._lock:
            told = {s for s, t in self._known().items() if s.startswith("gpu:") and t.active}
            told |= {s for s in self._held if s.startswith("gpu:")}
        named = {f"gpu:{gpu}": detail for gpu, detail in busy.items()}
        for subject in sorted(told | set(named)):
            detail = named.get(subject, f"GPU {subject[4:]} is no longer busy outside labrun")
            self.observe(ServerCondition.GPU_BUSY_OUTSIDE, subject, subject in named, detail)

    def disk(self, ok: bool, reason: str | None) -> None:
        detail = reason or "the output directory's disk has room again: runs start"
        self.observe(ServerCondition.DISK_LOW, DISK, not ok, detail)

    def engine(self, ok: bool, detail: str) -> None:
        told = detail if not ok else f"the launcher's engine answers again ({detail})"
        self.observe(ServerCondition.ENGINE_DOWN, ENGINE, not ok, told)

    def flush(self) -> None:
        """Tell the changes the interval held back, whose time has come (if they still hold)."""
        with self._lock:
            held = list(self._held.items())
        for subject, (condition, active, detail) in held:
            self.observe(condition, subject, active, detail)

    def _known(self) -> dict[str, _Told]:
        if self._told is None:
            found = self.outbox.last_events([c.value for c in ServerCondition])
            self._told = {e.subject: _Told(e.body.get("state") == "started", e.created_at) for e in found}
        return self._told

    def _observe(self, condition: ServerCondition, subject: str, active: bool, detail: str) -> None:
        told = self._known().get(subject)
        if active == (told is not None and told.active):
            self._held.pop(subject, None)  # back to what was last told: nothing to tell
            return
        now = time.time()
        if told is not None and now - told.at < self.min_interval_s:
            self._held[subject] = (condition, active, detail)
            return
        body = {
            "condition": condition.value,
            "state": "started" if active else "cleared",
            "subject": subject,
            "detail": detail,
            "host": self.host,
        }
        self.outbox.add_event(condition.value, subject, body)
        self._held.pop(subject, None)
        self._known()[subject] = _Told(active, now)
        log.info("server event: %s %s (%s)", condition.value, body["state"], subject)


class ServerWatch:
    """The thread that asks what nobody else asks on an idle server: the engine's health, the disk."""

    def __init__(
        self,
        events: ServerEvents,
        interval_s: float,
        health: Callable[[], tuple[bool, str]],
        disk: Callable[[], object],
    ) -> None:
        self.events, self.interval_s, self.health, self.disk = events, interval_s, health, disk
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="labrun-server-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            self.check()
            if self._stop.wait(self.interval_s):
                return

    def check(self) -> None:
        try:
            ok, detail = self.health()
        except Exception as exc:  # a health check must answer, whatever the engine does
            ok, detail = False, f"the launcher's health check failed: {type(exc).__name__}"
        self.events.engine(ok, detail)
        try:
            self.disk()  # the disk guard's check tells ServerEvents itself (its on_check)
        except Exception:
            log.exception("the server watch's disk check failed")
        self.events.flush()
