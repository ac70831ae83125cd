"""The notifications of one service: built once at start-up from the settings, started and stopped with
the service (``app/main.py``); the routes reach it as ``app.state.notify``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.core.config import Settings, SettingsError
from app.notify.destinations import Destinations
from app.notify.safety import NetworkPolicy
from app.notify.sealing import Sealer
from app.notify.worker import NotifyWorker
from app.runfiles import RunFiles
from app.store import RunStore


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

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    def choose(self, subject: str, events: Sequence[str] | None) -> None:
        """A run's or sweep's own choice of events, made at submission (None: it made none)."""
        if events is not None:
            self.outbox.set_choice(subject, events)
