"""The delivery worker: a thread of the service that sends what the outbox holds.

Each pass (every LABRUN_NOTIFY_POLL_S, sooner when a batch ends):

1. fan out new events: who gets each (``events.wanted``), one delivery row per destination, and the event
   marked done, in one transaction;
2. send the due deliveries: one task per destination on a small pool, each sending that destination's due
   deliveries in order. A destination that hangs or refuses costs its own task's time (each try is bounded
   by LABRUN_NOTIFY_TIMEOUT_S) and its own retries; the others, the lifecycle and requests never wait.

A failed try is retried after a backoff that doubles (LABRUN_NOTIFY_RETRY_BASE_S up to _MAX_S), given up
after LABRUN_NOTIFY_MAX_TRIES; a destination that failed LABRUN_NOTIFY_PAUSE_AFTER times in a row is paused
(``labrun notify ls`` shows it with the last error; a successful ``labrun notify test`` resumes it).

A delivery is marked sent after the receiver accepted it: a kill -9 in between sends it again after the
restart (the receiver can drop the repeat by the event's id); nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app.core.config import Settings
from app.notify import events, sending, webhook
from app.notify.message import Message, compose
from app.notify.safety import NetworkPolicy
from app.notify.sealing import Sealer
from app.store.outbox import Delivery, Event, OutboxStore

log = logging.getLogger("labrun.notify")
SERVER_KINDS = frozenset(c.value for c in events.ServerCondition)
POOL_SIZE = 8
BATCH = 500


class NotifyWorker:
    def __init__(
        self,
        outbox: OutboxStore,
        settings: Settings,
        sealer: Sealer,
        policy: NetworkPolicy,
        metrics: Callable[[str], dict[str, Any]],
    ) -> None:
        self.outbox, self.settings, self.sealer, self.policy = outbox, settings, sealer, policy
        self.metrics = metrics
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._busy: set[int] = set()  # destinations with a task under way
        self._hold: dict[int, float] = {}  # destination -> not before (after a failed try)
        self._lock = threading.Lock()
        self.connections = webhook.Connections()  # kept between deliveries (a burst to one receiver)

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="labrun-notify-send")
        self._thread = threading.Thread(target=self._loop, name="labrun-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop taking new work; tries under way end within their timeout (what they did not record is
        sent again after the restart)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.connections.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.fan_out()
                self._dispatch()
            except Exception:  # a store that cannot be read now (disk, lock): try again next pass
                log.exception("the notification worker's pass failed; retrying")
            self._wake.wait(self.settings.notify_poll_s)
            self._wake.clear()

    # --- fan out ------------------------------------------------------------------------------------------

    def fan_out(self) -> int:
        """Deliveries for the events not fanned out yet; how many events were."""
        found = self.outbox.events_to_fan_out(BATCH)
        if found:
            self.outbox.fan_out([(event.seq, self._recipients(event)) for event in found])
        return len(found)

    def _recipients(self, event: Event) -> list[int]:
        """The destinations ``event`` goes to: those its owner's choices send it to (the server-wide ones
        for the server's own events), less those whose own filter leaves it out."""
        if event.owner is None:
            owner = events.SERVER if event.kind in SERVER_KINDS else None
        else:
            owner = event.owner if self._wanted(event, event.owner) else None
        if owner is None:
            return []
        found = [d.id for d in self.outbox.destinations(owner) if d.paused_at is None]
        filters = self.outbox.filters(found)
        return [id for id in found if id not in filters or event.kind in filters[id]]

    def _wanted(self, event: Event, owner: str) -> bool:
        sweep = event.subject if event.kind == events.EventKind.SWEEP_FINISHED else event.body.get("sweep")
        run_choice = (
            self.outbox.choice(event.subject) if event.kind != events.EventKind.SWEEP_FINISHED else None
        )
        sweep_choice = self.outbox.choice(sweep) if sweep else None
        defaults = self.outbox.defaults(owner)
        return events.wanted(event.kind, run_choice, sweep_choice, sweep is not None, defaults)

    # --- send ---------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        if not self.settings.notify or self._pool is None:
            return
        now = time.time()
        by_destination: dict[int, list[Delivery]] = defaultdict(list)
        for delivery in self.outbox.due(now, BATCH):
            by_destination[delivery.destination.id].append(delivery)
        with self._lock:
            for id, batch in by_destination.items():
                if id in self._busy or self._hold.get(id, 0) > now:
                    continue
                self._busy.add(id)
                self._pool.submit(self._send_batch, id, batch)

    def _send_batch(self, id: int, batch: list[Delivery]) -> None:
        try:
            for delivery in batch:
                if self._stop.is_set() or not self.send_one(delivery):
                    break
        except Exception:
            log.exception("a notification batch failed; its deliveries stay pending")
        finally:
            with self._lock:
                self._busy.discard(id)
            self._wake.set()

    def send_one(self, delivery: Delivery) -> bool:
        """One try; records its outcome. True if it got through."""
        destination, event = delivery.destination, delivery.event
        try:
            secret = sending.Secret.loads(self.sealer.open(destination.sealed))
        except Exception:
            error: str | None = "the destination cannot be read (the server's notification key changed)"
        else:
            timeout = self.settings.notify_timeout_s
            error = sending.send(secret, self.message(event), self.policy, timeout, self.connections)
        if error is None:
            self.outbox.delivered(event.seq, destination.id)
            return True
        tries = delivery.tries + 1
        give_up = tries >= self.settings.notify_max_tries
        wait = min(self.settings.notify_retry_base_s * 2 ** (tries - 1), self.settings.notify_retry_max_s)
        self.outbox.retry_later(event.seq, destination.id, time.time() + wait, error, give_up)
        if self.outbox.destination_failed(destination.id, error, self.settings.notify_pause_after):
            log.warning(
                "notification destination %d of %s paused after repeated failures",
                destination.id,
                destination.owner,
            )
        with self._lock:
            self._hold[destination.id] = time.time() + wait
        return False

    def message(self, event: Event) -> Message:
        return compose(event, self.settings.public_url, self.metrics)
