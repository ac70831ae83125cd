"""Notifications against real receivers on loopback: a JSON webhook receiver (pytest-httpserver) that
checks signatures, an SMTP server (aiosmtpd), and the service as a real process running the fake trainer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "app"))  # service_helpers, fake_trainer
sys.path.insert(0, str(HERE))  # notify_helpers

from notify_helpers import Receiver, notify_env  # noqa: E402
from service_helpers import ServiceProcess, clients  # noqa: E402


@pytest.fixture
def receiver(httpserver) -> Receiver:
    return Receiver(httpserver)


@pytest.fixture
def service(output_dir, tmp_path):
    made: list[ServiceProcess] = []

    def make(**extra: str) -> ServiceProcess:
        svc = ServiceProcess(output_dir, **notify_env(tmp_path, **extra))
        made.append(svc)
        return svc.start()

    yield make
    for svc in made:
        svc.stop()


@pytest.fixture
def make_client(output_dir):
    """``make_client(**settings)``: an in-process service (lifespan run) on ``output_dir``."""
    yield from clients(output_dir)
