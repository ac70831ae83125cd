"""Launchers that place runs themselves (a cluster) and answer for all runs in one query: the service hands
them every queued run with its GPU count (no host GPU ids, no cap) and follows them with one poll per
interval instead of a thread per run. Local and Docker keep their own behaviour (the other tests)."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from service_helpers import FAKE_TRAINER, make_settings, wait_for

from app.launchers.local import LocalLauncher
from app.launchers.registry import LAUNCHERS, launcher_class
from app.main import create_app
from app.statedir import StateDir


class ClusterLike(LocalLauncher):
    """Real local processes, declared the way a cluster launcher is."""

    name = "local"  # the store's runs stay this launcher's
    places_runs = True
    batch_polling = True
    poll_interval_s = 0.05

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.specs = []
        self.queries: list[set[str]] = []
        self.waited = threading.Event()

    def start(self, spec):
        self.specs.append(spec)
        return super().start(spec)

    def poll_many(self, runs):
        self.queries.append(set(runs))
        return super().poll_many(runs)

    def wait(self, name, handle, timeout=None):
        self.waited.set()  # a batch-polling launcher is never waited on by the service
        return super().wait(name, handle, timeout)


@pytest.fixture
def cluster(output_dir):
    launcher = ClusterLike(FAKE_TRAINER, StateDir(output_dir))
    client = TestClient(create_app(make_settings(output_dir, gpus=(), max_cpu_runs=1), launcher=launcher))
    with client:
        yield client, launcher


def test_the_engine_places_runs_and_one_query_follows_them_all(cluster):
    client, launcher = cluster
    # No GPUs here and one CPU slot, yet both start: the engine's scheduler decides, not the service.
    gpu_run = client.post(
        "/runs", json={"overrides": ["accelerator=gpu", "devices=2", "+extra.fake_sleep=1"]}
    )
    cpu_run = client.post("/runs", json={"overrides": ["+extra.fake_sleep=1"]})
    assert gpu_run.status_code == cpu_run.status_code == 201, gpu_run.text
    names = {gpu_run.json()["name"], cpu_run.json()["name"]}
    for name in names:
        assert wait_for(client, name, ("succeeded",), timeout=30)["gpus"] == []
    assert {spec.name: (spec.gpu_need, spec.gpus) for spec in launcher.specs} == {
        gpu_run.json()["name"]: (2, ()),
        cpu_run.json()["name"]: (0, ()),
    }
    assert names in launcher.queries  # one query asked about both runs
    assert not launcher.waited.is_set()


def test_the_registry_names_every_launcher_and_refuses_unknown_ones():
    assert launcher_class("local") is LocalLauncher
    assert set(LAUNCHERS) >= {"local", "docker"}
    with pytest.raises(ValueError, match="choose one of: local, docker"):
        launcher_class("kubernetes")
