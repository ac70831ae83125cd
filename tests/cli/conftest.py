"""Fixtures for the command-line tests: one real service process per test module (fake trainer, up to four
CPU runs at once, a short cancel grace), and ``labrun`` to run the CLI against it (helpers: cli_helpers.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_helpers import FAKE_TRAINER, run_cli
from service_process import ServiceProcess


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    output_dir: Path = tmp_path_factory.mktemp("cli") / "outputs"
    output_dir.mkdir()
    svc = ServiceProcess(output_dir, FAKE_TRAINER, LABRUN_MAX_CPU_RUNS="4", LABRUN_CANCEL_GRACE_S="2").start()
    yield svc
    with contextlib.suppress(Exception):  # leave no fake trainer behind
        for run in svc.http.get("/runs", params={"status": "running,queued", "limit": 1000}).json()["data"]:
            svc.http.post(f"/runs/{run['name']}/cancel")
    svc.stop()


@pytest.fixture
def labrun(service: ServiceProcess) -> Callable[..., object]:
    """``labrun("ls", "--json")``: the CLI as a process against the module's service."""

    def run(*args: str, timeout: float = 60, **env: str):
        return run_cli(service.url, *args, timeout=timeout, **env)

    return run
