"""The GPU proof kit's GPU guard phase (bench/gpu_proof.py calls ``guard_phase``; docs/gpu-guard.md).

On the GPU machine: a foreign CUDA process (someone's ``python`` holding 1 GiB on GPU 0) starts first; then
labrun (``python -m app``, the local launcher, ``LABRUN_GPUS=0``) starts, and a tiny GPU run is submitted.
The phase checks that /healthz names GPU 0 busy outside labrun, that the run waits with a reason naming
the process, then ends the process and measures how long the run takes to start, and that it succeeds.
HTTP through the standard library only. The CPU rehearsal (``--cpu``) skips it: there is no NVML.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SERVICE_MODULES = ("fastapi", "uvicorn", "pydantic_settings", "pynvml")
FOREIGN = (
    "import time, torch\n"
    "x = torch.empty(1 << 30, dtype=torch.uint8, device='cuda')\n"
    "print('holding', flush=True)\n"
    "time.sleep(900)\n"
)
RUN = (
    "accelerator=gpu",
    "devices=1",
    "data=32x64",
    "model=fno",
    "model.hidden_channels=8",
    "model.n_layers=2",
    "data.num_examples=32",
    "batch_size=8",
    "training.effective_batch_size=8",
    "training.max_epochs=1",
    "num_workers=0",
)


def _http(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # /healthz answers 503 with its body too
        answer = json.loads(exc.read())
    return answer


def _until(check, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def guard_phase(work: Path, env: dict[str, str], accelerator: str, left: float) -> dict[str, Any]:
    """``env``: the trainer's environment (the tree and the kit importable); ``left``: seconds of budget."""
    if accelerator != "gpu":
        return {"skipped": "no GPU (cpu rehearsal): the guard needs NVML"}
    missing = [m for m in SERVICE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"the service's packages are not here: {', '.join(missing)}"}
    out: dict[str, Any] = {}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    foreign = subprocess.Popen([sys.executable, "-c", FOREIGN], env=env, stdout=subprocess.PIPE, text=True)
    service: subprocess.Popen[bytes] | None = None
    try:
        assert foreign.stdout is not None
        assert foreign.stdout.readline().strip() == "holding", "the foreign CUDA process did not start"
        service_env = {k: v for k, v in env.items() if not k.startswith("LABRUN_")}
        service_env.update(
            LABRUN_PORT=str(port),
            LABRUN_OUTPUT_DIR=str(work / "guard-outputs"),
            LABRUN_GPUS="0",
            LABRUN_GPU_GUARD_INTERVAL_S="1",
            LABRUN_TRAINER_COMMAND=json.dumps([sys.executable, "-m", "trainer"]),
        )
        with open(work / "guard-service.log", "wb") as log:
            service = subprocess.Popen(
                [sys.executable, "-m", "app"], cwd=work, env=service_env, stdout=log, stderr=log
            )
        guard = _until(lambda: _try(lambda: _http(url + "/healthz")["gpu_guard"]), 60, "the service")
        out["guard"] = guard["detail"]
        _until(lambda: _http(url + "/healthz")["gpu_guard"]["busy_outside"] == [0], 10, "GPU 0 busy outside")
        name = _http(url + "/runs", {"overrides": list(RUN)})["name"]
        time.sleep(3)
        waiting = _http(f"{url}/runs/{name}")
        out["waiting"] = {"status": waiting["status"], "reason": waiting.get("waiting_reason")}
        assert waiting["status"] == "queued", waiting
        assert f"pid {foreign.pid}" in (waiting.get("waiting_reason") or ""), waiting
        foreign.send_signal(signal.SIGKILL)
        foreign.wait()
        gone = time.monotonic()
        _until(lambda: _http(f"{url}/runs/{name}")["status"] != "queued", 30, "the run to start")
        out["start_after_process_ended_s"] = round(time.monotonic() - gone, 2)
        done = _until(
            lambda: (
                (r := _http(f"{url}/runs/{name}"))["status"] in ("succeeded", "failed", "cancelled") and r
            ),
            max(30.0, left - 30),
            "the run to end",
        )
        out["run"] = {"status": done["status"], "gpus": done["gpus"], "reason": done.get("reason")}
        assert done["status"] == "succeeded", done
        return out
    finally:
        for proc in (foreign, service):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM if proc is service else signal.SIGKILL)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if foreign.stdout is not None:
            foreign.stdout.close()


def _try(fn):
    try:
        return fn()
    except (OSError, ValueError, KeyError):
        return None
