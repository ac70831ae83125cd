"""``labrun gpus ignore|ignores|unignore`` as a process against a real service process with users (an admin
and a user who is not one), its GPU guard reading the stand-in NVML (tests/helpers/fake_nvml/) that lists a
real ``sleep`` as a process outside labrun on GPU 0."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import FAKE_TRAINER, one_line, run_cli
from service_process import ROOT, ServiceProcess

FAKE_NVML = ROOT / "tests" / "helpers" / "fake_nvml"


def add_user(svc: ServiceProcess, name: str, *flags: str) -> str:
    return svc.admin("users", "add", name, *flags)


@pytest.fixture
def foreign() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def guarded(tmp_path: Path, foreign: subprocess.Popen) -> Iterator[tuple[ServiceProcess, dict[str, str]]]:
    nvml = tmp_path / "nvml.json"
    nvml.write_text(
        json.dumps(
            {
                "gpus": [{"uuid": "GPU-fake-0000", "name": "Fake GPU"}],
                "processes": [{"gpu": 0, "pid": foreign.pid, "used_mb": 2048}],
            }
        )
    )
    output_dir = tmp_path / "outputs"
    output_dir.mkdir()
    svc = ServiceProcess(
        output_dir,
        FAKE_TRAINER,
        LABRUN_GPUS="0",
        LABRUN_GPU_GUARD_INTERVAL_S="0.2",
        LABRUN_FOREIGN_GPU_MIN_MB="100",
        FAKE_NVML_FILE=str(nvml),
        PYTHONPATH=os.pathsep.join([str(FAKE_NVML), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    tokens = {"admin": add_user(svc, "root", "--admin"), "user": add_user(svc, "bob")}
    svc.start()
    try:
        yield svc, tokens
    finally:
        svc.stop()


def busy_outside(svc: ServiceProcess) -> list[int]:
    return svc.http.get("/healthz").json()["gpu_guard"]["busy_outside"]


def until(check, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def test_an_admin_ignores_a_process_and_undoes_it_and_a_user_is_told_it_is_an_admins(guarded, foreign):
    svc, tokens = guarded
    admin, user = {"LABRUN_TOKEN": tokens["admin"]}, {"LABRUN_TOKEN": tokens["user"]}
    until(lambda: busy_outside(svc) == [0], what="GPU 0 busy outside labrun")

    refused = run_cli(svc.url, "gpus", "ignore", "--pid", str(foreign.pid), **user)
    assert refused.returncode == 4, refused
    line = one_line(refused.stderr)
    assert "only an admin may change what the GPU guard lets be" in line
    assert "LABRUN_TOKEN" in line

    added = run_cli(
        svc.url, "gpus", "ignore", "--pid", str(foreign.pid), "--note", "the monitoring agent", **admin
    )
    assert added.returncode == 0, added.stderr
    rule = int(added.stdout.strip())
    assert f"undo: labrun gpus unignore {rule}" in added.stderr
    until(lambda: busy_outside(svc) == [], what="the ignored process no longer blocks GPU 0")

    pattern = run_cli(svc.url, "gpus", "ignore", "--command", "*jupyter*", **admin)
    assert pattern.returncode == 0, pattern.stderr
    listed = run_cli(svc.url, "gpus", "ignores", **user)  # anyone may read the rules
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[0] == str(rule)
    assert f"pid {foreign.pid} (the monitoring agent), by root" in lines[0]
    assert "command matching '*jupyter*', by root" in lines[1]
    as_json = json.loads(run_cli(svc.url, "gpus", "ignores", "--json", **user).stdout)
    assert [r["pid"] for r in as_json["ignores"]] == [foreign.pid, None]

    refused = run_cli(svc.url, "gpus", "unignore", str(rule), **user)
    assert refused.returncode == 4
    assert "only an admin may" in one_line(refused.stderr)
    undone = run_cli(svc.url, "gpus", "unignore", str(rule), **admin)
    assert undone.returncode == 0, undone.stderr
    assert f"GPU ignore rule {rule} removed" in undone.stderr
    until(lambda: busy_outside(svc) == [0], what="blocking again once the rule is undone")
    assert "pid" not in run_cli(svc.url, "gpus", "ignores", **user).stdout

    shown = run_cli(svc.url, "gpus", **user, COLUMNS="200")  # without an action: the GPU map, as before
    assert shown.returncode == 0, shown.stderr
    assert f"outside labrun: pid {foreign.pid}" in shown.stdout


def test_bad_ignore_commands_say_what_is_wrong(guarded):
    svc, tokens = guarded
    admin = {"LABRUN_TOKEN": tokens["admin"]}
    gone = run_cli(svc.url, "gpus", "unignore", "999", **admin)
    assert gone.returncode == 5
    assert "no GPU ignore rule with id 999" in one_line(gone.stderr)
    nobody = run_cli(svc.url, "gpus", "ignore", "--pid", str(2**22 + 12345), **admin)
    assert nobody.returncode == 5
    assert "no process with pid" in one_line(nobody.stderr)
    neither = run_cli(svc.url, "gpus", "ignore", **admin)
    assert neither.returncode == 2
    assert "one of the arguments --pid --command is required" in neither.stderr
    both = run_cli(svc.url, "gpus", "ignore", "--pid", "1", "--command", "x", **admin)
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    anonymous = run_cli(svc.url, "gpus", "ignore", "--command", "x")
    assert anonymous.returncode == 4
    assert "LABRUN_TOKEN" in one_line(anonymous.stderr)
