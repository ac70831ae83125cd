"""compose.yaml: valid for Compose (checked with Debian's docker-compose 1.29, the Compose available
here), and brought up for real from the test images: the API container reaches the Engine through the
socket, starts a run container on the shared outputs path, and the run succeeds."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from docker_helpers import TINY, in_ci

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2400)]


def compose_bin() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        reason = "docker-compose is not installed (.ci/engines/docker.sh installs Debian's)"
        if in_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def compose(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [compose_bin(), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABRUN_", "WANDB_", "COMPOSE_"))}
    env.update(extra)
    return env


def test_compose_file_is_valid_and_says_what_it_must():
    done = compose(
        base_env(LABRUN_OUTPUT_DIR="/srv/x/outputs", WANDB_API_KEY="k" * 40, WANDB_MODE="offline"), "config"
    )
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    api, trainer = config["services"]["api"], config["services"]["trainer"]
    assert trainer["build"]["dockerfile"] == "docker/trainer.Dockerfile"
    assert api["build"]["dockerfile"] == "docker/api.Dockerfile"
    env = api["environment"]
    assert env["LABRUN_LAUNCHER"] == "docker"
    assert env["LABRUN_OUTPUT_DIR"] == "/srv/x/outputs"
    assert env["WANDB_API_KEY"] == "k" * 40
    assert env["WANDB_MODE"] == "offline"  # the launcher keeps runs offline, without a network
    assert env["LABRUN_GPUS"] == "0"
    assert env["LABRUN_DEFAULT_OVERRIDES"] == "auto"  # a plain request means the GPU on a GPU box
    # The outputs at the same path inside as on the host; the Engine's socket for the API.
    assert "/srv/x/outputs:/srv/x/outputs:rw" in api["volumes"]
    assert any(v.startswith("/var/run/docker.sock:/var/run/docker.sock") for v in api["volumes"])
    assert api["restart"] == "unless-stopped"
    assert api["healthcheck"]["test"][0] == "CMD"
    assert api["ports"]
    assert api["depends_on"]["trainer"]["condition"] == "service_completed_successfully"


def test_compose_up_serves_and_runs_a_container(engine, trainer_image, api_image, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    output_dir = tmp_path / "outputs"
    project = f"labrun-test-{uuid.uuid4().hex[:8]}"
    env = base_env(
        COMPOSE_PROJECT_NAME=project,
        LABRUN_TRAINER_IMAGE=trainer_image,
        LABRUN_API_IMAGE=api_image,
        LABRUN_OUTPUT_DIR=str(output_dir),
        LABRUN_BIND=f"127.0.0.1:{port}",
        LABRUN_GPUS="",  # this machine has no GPU
        LABRUN_DOCKER_MEMORY="3g",
        LABRUN_DOCKER_SHM_SIZE="256m",
    )
    try:
        up = compose(env, "up", "-d", "--no-build")
        assert up.returncode == 0, up.stdout + up.stderr
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            health = _until(lambda: _get(http, "/healthz"), 90, "the API never answered /healthz")
            assert health.status_code == 200, health.text
            assert health.json()["launcher"] == "docker"
            assert health.json()["launcher_ok"]

            # Compose comes up with auth on: nothing without a token, then the README's first-user step.
            refused = http.post("/runs", json={"overrides": TINY})
            assert refused.status_code == 401, refused.text
            assert "users add" in refused.json()["detail"], refused.text
            made = compose(
                env, "exec", "-T", "api", "python", "-m", "app", "users", "add", "alice", "--admin"
            )
            assert made.returncode == 0, made.stdout + made.stderr
            http.headers["Authorization"] = f"Bearer {made.stdout.strip()}"
            response = http.post("/runs", json={"overrides": TINY})
            assert response.status_code == 201, response.text
            assert response.json()["owner"] == "alice"
            name = response.json()["name"]
            run = _until(
                lambda: (
                    (r := http.get(f"/runs/{name}").json())["status"] in {"succeeded", "failed", "cancelled"}
                    and r
                ),
                240,
                f"{name} never ended",
            )
            assert run["status"] == "succeeded", (run, http.get(f"/runs/{name}/logs").text)
        # The run directory is on the host, at the path the API named.
        record = json.loads((output_dir / run["run_dir"] / "run.json").read_text())
        assert record["status"] == "succeeded"
        assert record["image"] == engine.images.get(trainer_image).id
        # Compose's own health check of the API passes.
        api = engine.containers.list(
            filters={"label": [f"com.docker.compose.project={project}", "com.docker.compose.service=api"]}
        )[0]
        _until(lambda: _health(engine, api.id) == "healthy", 60, "the API container never became healthy")
    finally:
        down = compose(env, "down", "--remove-orphans", "--timeout", "5")
        for container in engine.containers.list(
            all=True, filters={"label": f"labrun.output_dir={output_dir}"}
        ):
            container.remove(force=True)
        assert down.returncode == 0, down.stderr


def _get(http: httpx.Client, path: str):
    try:
        return http.get(path)
    except httpx.TransportError:
        return None


def _health(engine, container_id: str) -> str | None:
    return engine.api.inspect_container(container_id)["State"].get("Health", {}).get("Status")


def _until(probe, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, message
        time.sleep(0.5)
