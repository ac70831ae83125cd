"""The notifications of one service: built once at start-up from the settings, started and stopped with
the service (``app/main.py``); the routes reach it as ``app.state.notify``."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from app.core.config import Settings, SettingsError
from app.notify.destinations import Destinations
from app.notify.safety import NetworkPolicy
from app.notify.sealing import Sealer
from app.notify.server_events import ServerEvents, ServerWatch
from app.notify.worker import NotifyWorker
from app.runfiles import RunFiles
from app.store import RunStore

if TYPE_CHECKING:
    from app.lifecycle.manager import RunManager


class Notifications:
    def __init__(self, settings: Settings, store: RunStore, files: RunFiles) -> None:
        key_file = settings.secret_key_file.expanduser().resolve()
        if key_file.is_relative_to(settings.output_dir):
            raise SettingsError(
                f"invalid labrun settings:\n  LABRUN_SECRET_KEY_FILE: {key_file} is inside the output directory, "
                "where a copy of the store would carry it; choose a file outside it"
            )
        self.outbox = store.outbox
        self.sealer = Sealer(key_file)
        self.policy = NetworkPolicy(settings.notify_schemes, settings.notify_allow_hosts)
        self.destinations = Destinations(self.outbox, self.sealer, self.policy, settings.notify_timeout_s)

        def metrics(run_dir: str) -> dict[str, Any]:
            found = files.progress(run_dir) if run_dir else None
            return dict(found["metrics"]) if found else {}

        self.worker = NotifyWorker(self.outbox, settings, self.sealer, self.policy, metrics)
        host = urlsplit(settings.public_url).hostname if settings.public_url else None
        self.server = ServerEvents(
            self.outbox, settings.notify_server_event_min_s, host or socket.gethostname()
        )
        self._watch: ServerWatch | None = None
        self._check_s = settings.notify_server_check_s

    @classmethod
    def watching(cls, manager: RunManager, files: RunFiles) -> Notifications:
        """The service's notifications, its server events hooked onto ``manager`` (before it starts)."""
        found = cls(manager.settings, manager.store, files)
        found.watch_server(manager)
        return found

    def watch_server(self, manager: RunManager) -> None:
        """Hook the server's events (``server_events.py``) onto the GPU guard, the disk guard and the
        launcher's health; called once, before the manager starts (the guard's first pass is told too)."""
        guard, before = manager.guard, manager.guard.on_change

        def guard_changed() -> None:
            before()
            view = guard.view()
            if view.gpus:  # a pass NVML did not answer knows nothing: what was told stands
                self.server.gpus(
                    {g: "; ".join(p.describe() for p in found) for g, found in view.busy.items()}
                )

        guard.on_change = guard_changed
        manager.disk.on_check = lambda state: self.server.disk(state.ok, state.reason)
        self._watch = ServerWatch(self.server, self._check_s, manager.launcher.health, manager.disk.check)

    def start(self) -> None:
        self.worker.start()
        if self._watch is not None:
            self._watch.start()

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        self.worker.stop()

    def choose(self, subject: str, events: Sequence[str] | None) -> None:
        """A run's or sweep's own choice of events, made at submission (None: it made none)."""
        if events is not None:
            self.outbox.set_choice(subject, events)
