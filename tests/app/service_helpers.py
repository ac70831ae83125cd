"""Helpers for the service tests (imported by name: ``from service_helpers import ...``; a module called
``conftest`` would clash with the other test folders' conftest files). What tests/docker needs too (the
service as a process, ``submit``, ``wait_for``) lives in tests/helpers/service_process.py."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import service_process
from fastapi.testclient import TestClient
from service_process import ROOT, TERMINAL, submit, wait_for  # noqa: F401 - for the tests here

from app.core.config import Settings
from app.models import RunRecord, RunStatus

FAKE_TRAINER = [sys.executable, str(Path(__file__).with_name("fake_trainer.py"))]


def make_settings(output_dir: Path, **overrides) -> Settings:
    values = {
        "output_dir": output_dir,
        "gpus": (),
        "trainer_command": FAKE_TRAINER,
        "cancel_grace_s": 3.0,
        "max_cpu_runs": 1,
    }
    values.update(overrides)
    return Settings(**values)


def cancel_all(client) -> None:
    """Leave no stand-in process behind."""
    with contextlib.suppress(Exception):
        for run in client.get("/runs", params={"status": "running,queued", "limit": 1000}).json()["data"]:
            client.post(f"/runs/{run['name']}/cancel")


def starts(output_dir: Path) -> list[str]:
    """Names of the runs the fake trainer started, in order (one line per start)."""
    path = output_dir / "fake_starts.log"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


class ServiceProcess(service_process.ServiceProcess):
    """``python -m app`` as a real process (tests/helpers/service_process.py), running the fake trainer
    unless a test names another command (None: the service's own default)."""

    def __init__(
        self, output_dir: Path, trainer_command: list[str] | None = FAKE_TRAINER, **env: str
    ) -> None:
        super().__init__(output_dir, trainer_command, **env)


def queued_record(name: str, overrides=("model=fno",), gpu_need: int = 0, **fields) -> RunRecord:
    """A queued run as the store keeps it, for tests that write the store directly."""
    return RunRecord(
        seq=0,
        name=name,
        status=RunStatus.QUEUED,
        config_name="neuraloperator",
        overrides=list(overrides),
        run_dir=f"2026-01-01/{name}",
        gpu_need=gpu_need,
        created_at=time.time(),
        **fields,
    )


def clients(output_dir: Path, **defaults) -> Iterator[Callable[..., TestClient]]:
    """The body of a ``make_client`` fixture: ``make(launcher=None, **settings)`` starts an in-process
    service (lifespan run) on ``output_dir``, with a test's own engine if it gives one; every one is
    cancelled out and closed afterwards."""
    from app.main import create_app

    made: list[TestClient] = []

    def make(launcher=None, **overrides) -> TestClient:
        settings = make_settings(output_dir, **{**defaults, **overrides})
        client = TestClient(create_app(settings, launcher=launcher), raise_server_exceptions=False)
        client.__enter__()
        made.append(client)
        return client

    yield make
    for client in made:
        cancel_all(client)
        client.__exit__(None, None, None)


def service_processes(
    output_dir: Path, cancel_at_end: bool = False, **defaults
) -> Iterator[Callable[..., ServiceProcess]]:
    """A fixture's body (``yield from``): ``make(**kwargs)`` starts a service process on ``output_dir`` with
    ``defaults`` and then ``kwargs``; at the end every one is stopped (with ``cancel_at_end``, its queued and
    running runs cancelled first, where it still runs: no stand-in is left behind)."""
    services: list[ServiceProcess] = []

    def make(**kwargs) -> ServiceProcess:
        svc = ServiceProcess(output_dir, **{**defaults, **kwargs})
        services.append(svc)
        return svc.start()

    yield make
    for svc in services:
        if cancel_at_end and svc.proc is not None and svc.proc.poll() is None:  # (not one killed by a test)
            with svc.client() as client:
                cancel_all(client)
        svc.stop()
