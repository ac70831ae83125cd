"""Shared bench plumbing: start a real service process, time things, run wrk, print figures."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "bench" / "standin_trainer.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    proc: subprocess.Popen
    url: str
    output_dir: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def service(trainer_command: list[str] | None = None, **env: str) -> Iterator[Service]:
    """A real `python -m app` on a free loopback port with its own output dir, stopped afterwards.

    ``trainer_command`` replaces the trainer (LABRUN_TRAINER_COMMAND): the service benchmarks measure the
    service, so runs are a stand-in shell script that does almost nothing, not a 15 s training run."""
    with tempfile.TemporaryDirectory(prefix="labrun-bench-") as tmp:
        port = free_port()
        full_env = {
            **os.environ,
            "LABRUN_HOST": "127.0.0.1",
            "LABRUN_PORT": str(port),
            "LABRUN_OUTPUT_DIR": tmp,
            "LABRUN_LAUNCHER": "local",
            "LABRUN_GPUS": "",
            # One user queues thousands of runs here: the per-user limit would refuse them (0: none).
            "LABRUN_MAX_QUEUED_PER_USER": "0",
            **env,
        }
        if trainer_command is not None:
            full_env["LABRUN_TRAINER_COMMAND"] = json.dumps(trainer_command)
        log = open(Path(tmp) / "service.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=full_env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError("service did not start:\n" + (Path(tmp) / "service.log").read_text())
                time.sleep(0.1)
            yield Service(proc, url, Path(tmp))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            _kill_leftovers(tmp)


def _kill_leftovers(marker: str) -> None:
    """Runs outlive the service by design (they survive its restarts); a benchmark must not leave any."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(marker in part for part in p.info["cmdline"] or []):
                p.kill()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def summary(values: list[float]) -> str:
    return f"p50 {ms(pct(values, 50))}, p99 {ms(pct(values, 99))}, mean {ms(statistics.fmean(values))}"


def ensure_wrk() -> str | None:
    """wrk (a C load generator: the load must not steal the GIL of a Python client); installed with apt
    when missing and we are root, else None and callers fall back to a Python client."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0:
        return found
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "wrk"],
        capture_output=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("wrk")


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


def run_wrk(
    url: str,
    connections: int,
    seconds: int,
    script: Path | None = None,
    threads: int = 2,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def latency(label: str) -> float:
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        rps,
        latency("50%"),
        latency("99%"),
        int(non_2xx.group(1)) if non_2xx else 0,
        sum(int(x) for x in errors.groups()) if errors else 0,
    )


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
