"""``labrun show`` says a run is stalled, and ``labrun extend-stall`` keeps it: the CLI as a process against
a real service process (``python -m app``) whose stall limit is a second, running the stand-in trainer."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import FAKE_TRAINER
from service_process import ServiceProcess, wait_for


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    output_dir: Path = tmp_path_factory.mktemp("cli-stalls") / "outputs"
    output_dir.mkdir()
    svc = ServiceProcess(
        output_dir,
        FAKE_TRAINER,
        LABRUN_CANCEL_GRACE_S="2",
        LABRUN_STALL_AFTER_S="1",
        LABRUN_STALL_GRACE_S="600",
    ).start()
    yield svc
    with contextlib.suppress(Exception):  # leave no fake trainer behind
        for run in svc.http.get("/runs", params={"status": "running,queued", "limit": 1000}).json()["data"]:
            svc.http.post(f"/runs/{run['name']}/cancel")
    svc.stop()


def test_show_says_a_run_is_stalled_and_extend_stall_keeps_it(labrun, service: ServiceProcess) -> None:
    http = service.http
    name = http.post("/runs", json={"overrides": ["+extra.fake_hang=60"]}).json()["name"]
    wait_for(http, name, {"running"})
    deadline = time.monotonic() + 15
    while not http.get(f"/runs/{name}").json()["stalled"]:
        assert time.monotonic() < deadline, "the run was never called stalled"
        time.sleep(0.1)
    shown = labrun("show", name)
    assert shown.returncode == 0, shown.stderr
    assert "stalled" in shown.stdout
    assert "no progress and no output for 1 s (last step 1" in " ".join(shown.stdout.split())
    extended = labrun("extend-stall", name, "--limit", "30")
    assert extended.returncode == 0, extended.stderr
    assert extended.stdout.strip() == f"{name}: extended (stall limit 30 s)"
    run = http.get(f"/runs/{name}").json()
    assert run["status"] == "running"
    assert not run["stalled"]
    assert run["stall_after_s"] == 30
    http.post(f"/runs/{name}/cancel")
    refused = labrun("extend-stall", name)
    assert refused.returncode != 0
    assert "only a running run" in refused.stderr
