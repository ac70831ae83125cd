"""Ray Jobs as a peer in the benchmark: the tool a lab would otherwise pick to queue jobs on one machine.

Ray is a bench-only dependency. It goes into a virtual environment of its own (``bench/.ray-venv``,
git-ignored), never into the project's: ``ensure_ray`` makes it on first use, with the pinned version from
the package index pip is configured with. When Ray cannot be installed or started, the callers get a reason
(``RayUnavailable``) and say so; the rest of the benchmark goes on.

A head is a local ``ray start --head`` with the dashboard (which serves the Jobs REST API); a job is
``sleep 1``. The same probes as labrun's: POST /api/jobs/ (submit), submit -> RUNNING (polling the job),
GET /api/jobs/{id} (polling, with wrk), and the idle memory of every process the head runs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
VENV = HERE / ".ray-venv"
RAY_VERSION = "2.60.0"  # the release the figures were measured with
RAY_SPEC = f"ray[default]=={RAY_VERSION}"


class RayUnavailable(Exception):
    """Ray could not be installed or started here; the message says why."""


def _python() -> Path:
    return VENV / "bin" / "python"


def ensure_ray() -> Path:
    """The ``ray`` program of the bench's own venv, installing it there first if needed."""
    ray = VENV / "bin" / "ray"
    if ray.exists() and _installed_version() == RAY_VERSION:
        return ray
    try:
        if not _python().exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
        # pip's own configured index: no URL here
        done = subprocess.run(
            [str(_python()), "-m", "pip", "install", "-q", RAY_SPEC], capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RayUnavailable(f"could not make {VENV}: {exc}") from None
    if done.returncode != 0 or not ray.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RayUnavailable(f"pip install {RAY_SPEC} failed: {' | '.join(tail)}")
    return ray


def _installed_version() -> str | None:
    try:
        out = subprocess.run(
            [str(_python()), "-c", "import ray; print(ray.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@dataclass
class RayHead:
    url: str  # the dashboard: the Jobs REST API

    def submit(self, client: httpx.Client, entrypoint: str) -> str:
        r = client.post(f"{self.url}/api/jobs/", json={"entrypoint": entrypoint})
        r.raise_for_status()
        return str(r.json()["submission_id"])

    def status(self, client: httpx.Client, job: str) -> str:
        r = client.get(f"{self.url}/api/jobs/{job}")
        r.raise_for_status()
        return str(r.json()["status"])


@contextlib.contextmanager
def ray_head(num_cpus: int, dashboard_port: int) -> Iterator[RayHead]:
    """A local Ray head with ``num_cpus`` CPUs and its dashboard on ``dashboard_port``, stopped afterwards."""
    ray = ensure_ray()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = [
        str(ray),
        "start",
        "--head",
        f"--num-cpus={num_cpus}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        "--disable-usage-stats",
    ]
    try:
        done = subprocess.run(start, capture_output=True, text=True, env=env, timeout=180)
    except subprocess.TimeoutExpired:
        _stop(ray, env)
        raise RayUnavailable("ray start --head did not finish within 180 s") from None
    if done.returncode != 0:
        _stop(ray, env)
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RayUnavailable(f"ray start --head failed: {' | '.join(tail)}")
    head = RayHead(f"http://127.0.0.1:{dashboard_port}")
    try:
        if not _jobs_api_up(head.url, 120):
            raise RayUnavailable("the Ray dashboard's Jobs API did not answer within 120 s")
        yield head
    finally:
        _stop(ray, env)


def _jobs_api_up(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/jobs/", timeout=2).status_code == 200:
                return True
        time.sleep(0.5)
    return False


def _stop(ray: Path, env: dict[str, str]) -> None:
    subprocess.run([str(ray), "stop", "--force"], capture_output=True, env=env, timeout=120, check=False)


def ray_processes_rss_mb() -> tuple[float, int]:
    """(MB, how many) of every process of the bench's Ray install (gcs_server, raylet, dashboard, workers...):
    they all run from its venv."""
    import psutil

    total, count = 0.0, 0
    marker = str(VENV)
    for p in psutil.process_iter(["cmdline", "exe"]):
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(p.info["cmdline"] or [])
            if marker in cmd or marker in (p.info["exe"] or ""):
                total += p.memory_info().rss / 2**20
                count += 1
    return total, count
