"""Helpers for the service tests (imported by name: ``from service_helpers import ...``; a module called
``conftest`` would clash with the other test folders' conftest files)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.core.config import Settings
from app.models import RunRecord, RunStatus

ROOT = Path(__file__).resolve().parents[2]
FAKE_TRAINER = [sys.executable, str(Path(__file__).with_name("fake_trainer.py"))]
TERMINAL = {"succeeded", "failed", "cancelled"}


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


def wait_for(client, name: str, statuses=TERMINAL, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/runs/{name}").json()
        if run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {name} still {run['status']} after {timeout} s: {run}")
        time.sleep(0.02)


def submit(client, *overrides: str, **kwargs) -> dict:
    response = client.post("/runs", json={"overrides": list(overrides)}, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()


def starts(output_dir: Path) -> list[str]:
    """Names of the runs the fake trainer started, in order (one line per start)."""
    path = output_dir / "fake_starts.log"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """``python -m app`` as a real process on a free loopback port."""

    def __init__(
        self, output_dir: Path, trainer_command: list[str] | None = FAKE_TRAINER, **env: str
    ) -> None:
        self.output_dir = output_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "LABRUN_PORT": str(self.port),
            "LABRUN_HOST": "127.0.0.1",
            "LABRUN_OUTPUT_DIR": str(output_dir),
            "LABRUN_GPUS": "",
            **env,
        }
        if trainer_command is not None:
            self.env["LABRUN_TRAINER_COMMAND"] = json.dumps(trainer_command)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> ServiceProcess:
        log = open(self.output_dir.parent / f"service-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return (self.output_dir.parent / f"service-{self.port}.log").read_text(errors="replace")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


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
