"""The server's default overrides (LABRUN_DEFAULT_OVERRIDES, app/defaults.py) through the in-process
service and the stand-in trainer: applied before a request's own, overridable by it, refused at start-up
when bad (naming the setting), shown in /config/schema, recorded with each run and used by its rerun after
the server's defaults changed; never in run names; an Idempotency-Key compares what the request sent."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import cancel_all, make_settings, submit, wait_for

from app.core.config import SettingsError
from app.main import create_app


@contextlib.contextmanager
def service(output_dir: Path, **settings) -> Iterator[TestClient]:
    """One service on ``output_dir`` for the block: a second one may follow on the same directory."""
    with TestClient(create_app(make_settings(output_dir, **settings))) as client:
        try:
            yield client
        finally:
            cancel_all(client)


def log_of(client: TestClient, name: str) -> str:
    return client.get(f"/runs/{name}/logs").text


def test_defaults_come_before_the_requests_own_lines_and_stay_out_of_the_name(output_dir: Path) -> None:
    with service(output_dir, default_overrides="+extra.fake_lines=7") as client:
        schema = client.get("/config/schema").json()
        assert schema["default_overrides"] == ["+extra.fake_lines=7"]
        plain = wait_for(client, submit(client)["name"])
        assert plain["status"] == "succeeded"
        assert plain["overrides"] == []
        assert plain["default_overrides"] == ["+extra.fake_lines=7"]
        assert "line 7" in log_of(client, plain["name"])
        assert "fake_lines" not in plain["name"]
        own = wait_for(client, submit(client, "+extra.fake_lines=2")["name"])  # the request's line wins
        assert own["default_overrides"] == []
        assert "line 2" in log_of(client, own["name"])
        assert "line 3" not in log_of(client, own["name"])


def test_auto_means_one_gpu_when_the_service_has_gpus_and_a_request_may_still_ask_for_the_cpu(
    output_dir: Path,
) -> None:
    with service(output_dir, default_overrides="auto", gpus=(0,)) as client:
        gpu = submit(client)
        assert gpu["default_overrides"] == ["accelerator=gpu", "devices=1"]
        assert wait_for(client, gpu["name"])["gpus"] == [0]
        cpu = submit(client, "accelerator=cpu")
        assert cpu["default_overrides"] == ["devices=1"]
        assert wait_for(client, cpu["name"])["gpus"] == []
    with service(output_dir, default_overrides="auto", gpus=()) as client:  # no GPUs: nothing
        assert client.get("/config/schema").json()["default_overrides"] == []
        assert submit(client)["default_overrides"] == []


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("accelerator=gpu devices=1", "the run needs 1 GPU(s)"),  # this service has no GPUs
        ("hydra.run.dir=/tmp/x", "hydra.* keys"),
        ("accelerator=tpu", "accelerator"),
        ("'unclosed", "cannot split"),
    ],
)
def test_a_bad_default_stops_the_start_naming_the_setting(output_dir: Path, setting: str, named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        create_app(make_settings(output_dir, default_overrides=setting))
    message = str(caught.value)
    assert "LABRUN_DEFAULT_OVERRIDES" in message
    assert named in message
    with service(output_dir) as client:  # nothing was left held: the next start works
        assert client.get("/healthz").status_code == 200


def test_a_rerun_gets_the_defaults_its_original_got_after_the_servers_changed(output_dir: Path) -> None:
    headers = {"Idempotency-Key": "same-request"}
    with service(output_dir, default_overrides="+extra.fake_lines=7") as client:
        original = wait_for(client, submit(client, headers=headers)["name"])
    with service(output_dir, default_overrides="+extra.fake_lines=5") as client:
        # The key compares what the request sent (no lines), not the defaults: the same request again.
        assert submit(client, headers=headers)["name"] == original["name"]
        assert client.get("/runs").json()["count"] == 1
        rerun = client.post(f"/runs/{original['name']}/rerun")
        assert rerun.status_code == 201, rerun.text
        done = wait_for(client, rerun.json()["name"])
        assert done["default_overrides"] == ["+extra.fake_lines=7"]
        assert "line 7" in log_of(client, done["name"])
        fresh = wait_for(client, submit(client)["name"])  # a new request gets the server's current ones
        assert fresh["default_overrides"] == ["+extra.fake_lines=5"]
        assert "line 6" not in log_of(client, fresh["name"])
