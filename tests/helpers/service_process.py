"""Shared by the tests in tests/app and tests/docker: the service as a real process (``python -m app``),
and the helpers that talk to it over HTTP (the ``output_dir`` fixture is tests/conftest.py's).

Imported by name (``from service_process import ...``): pyproject.toml's pytest ``pythonpath`` puts
tests/helpers on sys.path.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def submit(client, *overrides: str, **kwargs) -> dict:
    """POST /runs; the run (asserting 201)."""
    response = client.post("/runs", json={"overrides": list(overrides)}, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()


def wait_for(
    client,
    name: str,
    statuses=TERMINAL,
    timeout: float = 30.0,
    poll_s: float = 0.02,
    context: Callable[[], str] = str,
) -> dict:
    """Poll GET /runs/<name> until its status is one of ``statuses``; ``context()`` adds to the failure."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/runs/{name}").json()
        if run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {name} still {run['status']} after {timeout} s: {run}\n{context()}")
        time.sleep(poll_s)


class ServiceProcess:
    """``python -m app`` on a free loopback port; ``kill9()`` and ``start()`` again on the same output dir.

    Its environment is this process's without any ``LABRUN_*`` or ``WANDB_*`` variable (a developer's own
    settings stay out), plus host, port, output dir, no GPUs, and ``env``. ``trainer_command`` becomes
    ``LABRUN_TRAINER_COMMAND`` when given. Its log, across restarts, is ``service-<port>.log`` beside the
    output dir."""

    def __init__(self, output_dir: Path, trainer_command: list[str] | None = None, **env: str) -> None:
        self.output_dir = output_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("LABRUN_", "WANDB_"))}
        self.env.update(
            LABRUN_HOST="127.0.0.1",
            LABRUN_PORT=str(self.port),
            LABRUN_OUTPUT_DIR=str(output_dir),
            LABRUN_GPUS="",
        )
        if trainer_command is not None:
            self.env["LABRUN_TRAINER_COMMAND"] = json.dumps(trainer_command)
        self.env.update(env)
        self.proc: subprocess.Popen | None = None
        self._http: httpx.Client | None = None

    @property
    def log_path(self) -> Path:
        return self.output_dir.parent / f"service-{self.port}.log"

    def start(self, timeout: float = 60) -> ServiceProcess:
        """Start it and wait until /healthz answers (any status: 503 says its engine is down)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(self.url + "/healthz", timeout=2)
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start:\n{self.log(4000)}")
            time.sleep(0.05)

    def log(self, tail: int | None = None) -> str:
        """Its log since the first start (the last ``tail`` characters)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text if tail is None else text[-tail:]

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        if self._http is not None:
            self._http.close()

    def admin(self, *args: str) -> str:
        """``python -m app ARGS`` (the server's own command line) on this service's output dir; its stdout,
        e.g. ``svc.admin("users", "add", "alice", "--admin")`` -> alice's token."""
        done = subprocess.run(
            [sys.executable, "-m", "app", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    def client(self) -> httpx.Client:
        """A new client (``with svc.client() as client: ...``)."""
        return httpx.Client(base_url=self.url, timeout=60)

    @property
    def http(self) -> httpx.Client:
        """One client kept for the service's lifetime (closed by ``stop()``)."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=30)
        return self._http

    def submit(self, overrides: list[str]) -> dict:
        return submit(self.http, *overrides)

    def wait_for(self, name: str, statuses=TERMINAL, timeout: float = 240) -> dict:
        """Like ``wait_for``, for the slower runs of a real trainer, with the service's log on failure."""
        return wait_for(self.http, name, statuses, timeout, poll_s=0.25, context=lambda: self.log(4000))


def wait_until(check: Callable[[], object], timeout: float = 30.0, what: str = "the condition") -> object:
    """Poll ``check`` until it returns something true (returned); fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return found
