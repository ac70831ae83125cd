"""The service with LABRUN_LAUNCHER=docker, as a real process (``python -m app``), running the real
trainer in containers on a real Engine: a tiny CPU run end to end, cancel, a kill -9 of the service while
a container runs, and an Engine that is down when runs are submitted."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from docker_helpers import TINY
from service_process import ServiceProcess
from tiny_run import tiny_run

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture
def service(output_dir, trainer_image):
    """``service(**env)``: the service with the Docker launcher on ``output_dir`` (not started yet)."""
    made: list[ServiceProcess] = []

    def make(**env: str) -> ServiceProcess:
        settings = {
            "LABRUN_LAUNCHER": "docker",
            "LABRUN_CANCEL_GRACE_S": "10",
            "LABRUN_DOCKER_IMAGE": trainer_image,
            "LABRUN_DOCKER_MEMORY": "3g",
            "LABRUN_DOCKER_SHM_SIZE": "256m",
        }
        svc = ServiceProcess(output_dir, **{**settings, **env})
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.stop()


def containers_of(engine, name: str) -> list:
    return engine.containers.list(all=True, filters={"label": f"labrun.run={name}"})


def assert_released(engine, name: str, timeout: float = 15) -> None:
    """The container goes once the outcome is recorded (just after the status turns final)."""
    deadline = time.monotonic() + timeout
    # sparse: no second request per container, which fails (404) for one removed between list and inspect
    while engine.containers.list(all=True, filters={"label": f"labrun.run={name}"}, sparse=True):
        assert time.monotonic() < deadline, f"the container of {name} was never released"
        time.sleep(0.1)


def test_tiny_cpu_run_end_to_end(service, engine, trainer_image):
    svc = service().start()
    health = svc.http.get("/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["launcher"] == "docker"
    assert health.json()["launcher_ok"]

    started = time.monotonic()
    name = svc.submit(TINY)["name"]
    run = svc.wait_for(name)
    took = time.monotonic() - started
    assert run["status"] == "succeeded", (run, svc.http.get(f"/runs/{name}/logs").text)
    assert run["exit_code"] == 0
    assert run["reason"] is None

    run_dir = svc.output_dir / run["run_dir"]
    assert run_dir.name == name
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "succeeded"
    assert record["image"] == engine.images.get(trainer_image).id  # the image id, from the launcher
    assert record["code_version"]["source"] == "env"
    assert record["code_version"]["commit"]
    for part in (".hydra/config.yaml", ".hydra/overrides.yaml", "progress.json", "metrics.csv"):
        assert (run_dir / part).is_file(), part
    assert json.loads((run_dir / "progress.json").read_text())["fraction"] == pytest.approx(1.0)
    assert list((run_dir / "wandb").glob("offline-run-*")), "WandB wrote no offline run"
    assert list((run_dir / "ckpt").glob("*.ckpt")), "no checkpoint"
    log = svc.http.get(f"/runs/{name}/logs").text
    assert "succeeded" in log
    # The data cache is read-only to runs: the run solved its data and could not leave them there.
    assert "could not write the cache" in log
    assert not any((svc.output_dir / ".data_cache").iterdir())
    # The outcome is recorded, so the container is gone.
    assert_released(engine, name)
    sys.stderr.write(f"\n[docker] tiny CPU run through the service: {took:.1f} s\n")


def test_cancel_a_running_container(service, engine):
    svc = service().start()
    name = svc.submit([*TINY, "training.max_epochs=100000"])["name"]
    svc.wait_for(name, {"running"})
    _wait_for_progress(svc, name)
    response = svc.http.post(f"/runs/{name}/cancel")
    assert response.status_code == 200, response.text
    run = svc.wait_for(name, timeout=60)
    assert run["status"] == "cancelled", run
    assert_released(engine, name)
    record = json.loads((svc.output_dir / run["run_dir"] / "run.json").read_text())
    assert record["status"] == "cancelled"  # the trainer had its SIGTERM and said so


def test_service_killed_while_a_container_runs(service, engine):
    svc = service().start()
    name = svc.submit([*TINY, "training.max_epochs=10"])["name"]
    svc.wait_for(name, {"running"})
    svc.kill9()
    [container] = containers_of(engine, name)
    assert container.status == "running"  # the run goes on without the service
    svc.start()
    run = svc.wait_for(name)
    assert run["status"] == "succeeded", (run, svc.http.get(f"/runs/{name}/logs").text)
    assert run["exit_code"] == 0
    assert_released(engine, name)  # released after the outcome was recorded
    dated = [p for p in svc.output_dir.glob("*/*") if p.name == name]
    assert len(dated) == 1
    assert (dated[0] / "run.json").is_file()


def test_run_that_ended_while_the_service_was_down(service, engine):
    svc = service().start()
    name = svc.submit(TINY)["name"]
    svc.wait_for(name, {"running"})
    svc.kill9()
    [container] = containers_of(engine, name)
    assert container.wait(timeout=240)["StatusCode"] == 0
    svc.start()
    run = svc.wait_for(name, timeout=60)
    assert run["status"] == "succeeded"
    assert run["exit_code"] == 0
    assert_released(engine, name)


def test_engine_down_runs_stay_queued_and_start_when_it_is_back(service, tmp_path):
    engine_host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not engine_host.startswith("unix://"):
        pytest.skip(f"needs the Engine on a unix socket to stand in for its outage, not {engine_host}")
    socket_path = tmp_path / "engine.sock"  # absent: the Engine is unreachable
    svc = service(LABRUN_DOCKER_HOST=f"unix://{socket_path}").start()
    health = svc.http.get("/healthz")
    assert health.status_code == 503
    assert "docker engine down" in health.json()["detail"]
    name = svc.submit(TINY)["name"]
    time.sleep(3)
    assert svc.http.get(f"/runs/{name}").json()["status"] == "queued"
    socket_path.symlink_to(engine_host.removeprefix("unix://"))  # the Engine is back
    run = svc.wait_for(name)
    assert run["status"] == "succeeded", run
    assert svc.http.get("/healthz").status_code == 200


def _wait_for_progress(svc: ServiceProcess, name: str, timeout: float = 120) -> None:
    """Until the trainer reports progress: it is past its imports and its SIGTERM handler is in place."""
    deadline = time.monotonic() + timeout
    while not (svc.http.get(f"/runs/{name}").json().get("progress") or {}).get("step"):
        assert time.monotonic() < deadline, f"{name} never reported progress: {svc.log(4000)}"
        time.sleep(0.25)


def test_a_sweeps_run_writes_into_its_sweeps_folder(service):
    """A sweep files its runs under <date>/<sweep>/<index>_<name>: the container mounts exactly that one."""
    svc = service().start()
    response = svc.http.post("/sweeps", json={"overrides": [*TINY, "seed=1,2"]})
    assert response.status_code == 201, response.text
    names = [run["name"] for run in response.json()["runs"]]
    for name in names:
        run = svc.wait_for(name)
        assert run["status"] == "succeeded", (run, svc.http.get(f"/runs/{name}/logs").text)
        run_dir = svc.output_dir / run["run_dir"]
        assert run_dir.parent.name == response.json()["name"]
        assert json.loads((run_dir / "run.json").read_text())["status"] == "succeeded"


def test_a_high_run_preempts_a_low_container_which_resumes_from_its_checkpoint(service, output_dir):
    """Priorities with the Docker launcher (one CPU slot): the low run's container is stopped at a safe
    point (SIGTERM without a cancel marker: a checkpoint, exit 75), the high run takes its place, and the
    low run goes on in a new container from ckpt/last.ckpt as its second attempt."""
    svc = service(LABRUN_MAX_CPU_RUNS="1", LABRUN_PREEMPT_MIN_RUN_S="0", LABRUN_PREEMPT_GRACE_S="60").start()
    low = svc.http.post("/runs", json={"overrides": tiny_run(epochs=30), "priority": "low"})
    assert low.status_code == 201, low.text
    name = low.json()["name"]
    deadline = time.monotonic() + 240
    while ((svc.http.get(f"/runs/{name}").json().get("progress") or {}).get("epoch") or 0) < 1:
        assert time.monotonic() < deadline, f"{name} never reached its second epoch: {svc.log(4000)}"
        time.sleep(0.25)
    high = svc.http.post("/runs", json={"overrides": [*TINY, "seed=2"], "priority": "high"})
    assert high.status_code == 201, high.text
    assert svc.wait_for(high.json()["name"], timeout=300)["status"] == "succeeded"
    (first,) = svc.http.get(f"/runs/{name}/attempts").json()["attempts"]
    assert (first["status"], first["exit_code"]) == ("preempted", 75), first
    assert "resumes from ckpt/last.ckpt as attempt 2" in first["reason"], first
    done = svc.wait_for(name, timeout=600)
    assert (done["status"], done["attempts"]) == ("succeeded", 2), done
    assert (output_dir / done["run_dir"] / "ckpt" / "last.ckpt").exists()
