"""An engine that is down (Docker, Slurm, ...): runs are still accepted and queued, /healthz says so, and
they start once it is back. The boundary is faked (a launcher that refuses), the lifecycle is real."""

from __future__ import annotations

import time

import pytest
from service_helpers import FAKE_TRAINER, submit, wait_for

from app.launchers.base import EngineUnavailable
from app.launchers.local import LocalLauncher
from app.statedir import StateDir


class FlakyEngine(LocalLauncher):
    name = "flaky"
    down = True

    def _check(self) -> None:
        if FlakyEngine.down:
            raise EngineUnavailable("engine at unix:///nowhere refused the connection")

    def start(self, spec):
        self._check()
        return super().start(spec)

    def reattach(self, name):
        self._check()
        return super().reattach(name)

    def poll(self, name, handle):
        self._check()
        return super().poll(name, handle)

    def wait(self, name, handle, timeout=None):
        self._check()
        return super().wait(name, handle, timeout)

    def health(self):
        return (False, "engine down") if FlakyEngine.down else (True, "engine up")


@pytest.fixture
def flaky():
    FlakyEngine.down = True
    yield FlakyEngine
    FlakyEngine.down = False


@pytest.fixture
def engine_client(make_client, output_dir):
    """``make_client`` with a new FlakyEngine each time (a restarted service builds its launcher anew)."""
    return lambda **settings: make_client(
        launcher=FlakyEngine(FAKE_TRAINER, StateDir(output_dir)), **settings
    )


def test_runs_queue_while_the_engine_is_down_and_start_when_it_is_back(flaky, engine_client):
    client = engine_client()
    run = submit(client, "+extra.fake_sleep=0")
    time.sleep(0.5)
    assert client.get(f"/runs/{run['name']}").json()["status"] == "queued"
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["detail"] == "engine down"
    flaky.down = False
    assert wait_for(client, run["name"], timeout=10)["status"] == "succeeded"
    assert client.get("/healthz").status_code == 200


def test_a_restart_while_the_engine_is_down_does_not_start_anything_twice(flaky, engine_client, output_dir):
    flaky.down = False
    first = engine_client()
    run = submit(first, "+extra.fake_sleep=1")
    queued = submit(first, "+extra.fake_sleep=0")
    wait_for(first, run["name"], {"running"})
    first.__exit__(None, None, None)  # the service goes away; the run carries on
    flaky.down = True
    second = engine_client()  # start-up cannot ask the engine about anything
    assert second.get(f"/runs/{run['name']}").json()["status"] == "running"
    time.sleep(0.5)
    assert second.get(f"/runs/{queued['name']}").json()["status"] == "queued"
    flaky.down = False
    assert wait_for(second, run["name"], timeout=10)["status"] == "succeeded"
    assert wait_for(second, queued["name"], timeout=10)["status"] == "succeeded"
    starts = (output_dir / "fake_starts.log").read_text()
    assert starts.count(run["name"]) == 1
    assert starts.count(queued["name"]) == 1


def test_a_run_found_after_an_engine_outage_at_start_up_keeps_the_gpus_it_started_on(
    flaky, engine_client, output_dir
):
    """Killed between starting a run (on GPU 1) and recording it; restarted while the engine was down."""
    from service_helpers import FAKE_TRAINER as TRAINER
    from service_helpers import queued_record

    from app.launchers.base import LaunchSpec
    from app.store import RunStore

    store = RunStore(output_dir / ".labrun" / "runs.db")
    name = "2026-01-01_00-00-00_on_gpu1"
    store.insert(queued_record(name, ["accelerator=gpu"], gpu_need=1))
    store.assign_gpus(name, [1])
    launcher = LocalLauncher(TRAINER, StateDir(output_dir))
    state = launcher.state.run(name)
    handle = launcher.start(
        LaunchSpec(
            name=name,
            trainer_args=["+extra.fake_sleep=2", f"run_name={name}", f"log_dir={output_dir}"],
            gpus=(1,),
            output_dir=output_dir,
            state_dir=state,
            log_path=state / "log",
        )
    )
    client = engine_client(gpus=(0, 1))  # the engine is down: start-up cannot ask about the run
    flaky.down = False
    other = submit(client, "accelerator=gpu", "batch_size=16", "+extra.fake_sleep=0.5")
    found = wait_for(client, name, timeout=15)
    assert found["status"] == "succeeded", found
    assert found["gpus"] == [1], found
    assert wait_for(client, other["name"], timeout=15)["gpus"] == [0]  # never GPU 1 while it ran there
    launcher.wait(name, handle, timeout=30)  # the dead service's child, reaped (not left to the collector)
