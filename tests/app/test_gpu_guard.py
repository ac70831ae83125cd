"""The GPU guard (app/gpus/, docs/gpu-guard.md) through a real service process: GPUs busy outside labrun are
not handed out, runs wait for them with a reason, and get them back once the process is gone. The same
NVML pass samples utilisation: a run whose GPUs stay at 0% while it says it is training is stalled
(docs/stalls.md).

NVML is faked at the boundary only: tests/helpers/fake_nvml/pynvml.py stands in for nvidia-ml-py in the
service's process and answers from a JSON file the test writes. The processes on the "GPUs" are real (a
``sleep`` this test starts, the stand-in trainer's own), so the guard's /proc look-ups are real.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import ROOT, ServiceProcess, cancel_all, starts, submit, wait_for

FAKE_NVML = Path(__file__).resolve().parents[1] / "helpers" / "fake_nvml"
GPU_RUN = ("accelerator=gpu", "devices=1")
BOTH_GPUS = ("accelerator=gpu", "devices=2")


class FakeNvml:
    """The JSON file the stand-in ``pynvml`` answers from."""

    def __init__(self, path: Path, gpus: int = 2) -> None:
        self.path = path
        self.gpus = [
            {"uuid": f"GPU-fake-{i:04d}", "name": f"Fake GPU model {'AB'[i % 2]}"} for i in range(gpus)
        ]
        self.processes: list[dict] = []
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"gpus": self.gpus, "processes": self.processes}))
        os.replace(tmp, self.path)  # the service reads it whole or not at all

    def put(self, gpu: int, pid: int, used_mb: int | None = 2048, graphics: bool = False) -> None:
        self.processes.append({"gpu": gpu, "pid": pid, "used_mb": used_mb, "graphics": graphics})
        self.write()

    def clear(self) -> None:
        self.processes = []
        self.write()

    def utilization(self, gpu: int, percent: int | None) -> None:
        """What nvmlDeviceGetUtilizationRates says of ``gpu`` (None: the board does not report it)."""
        self.gpus[gpu]["utilization"] = percent
        self.write()


@pytest.fixture
def nvml(tmp_path: Path) -> FakeNvml:
    return FakeNvml(tmp_path / "nvml.json")


@pytest.fixture
def foreign() -> Iterator[subprocess.Popen]:
    """A process outside labrun (someone's `python train.py` by hand), real in /proc."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def guarded(
    output_dir: Path, nvml: FakeNvml, gpus: str = "0,1", interval: str = "0.2", **env: str
) -> ServiceProcess:
    return ServiceProcess(
        output_dir,
        LABRUN_GPUS=gpus,
        LABRUN_GPU_GUARD_INTERVAL_S=interval,
        LABRUN_FOREIGN_GPU_MIN_MB="100",
        LABRUN_MAX_CPU_RUNS="2",
        FAKE_NVML_FILE=str(nvml.path),
        PYTHONPATH=os.pathsep.join([str(FAKE_NVML), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        **env,
    )


@pytest.fixture
def service(output_dir: Path, nvml: FakeNvml) -> Iterator[ServiceProcess]:
    svc = guarded(output_dir, nvml).start()
    try:
        yield svc
    finally:
        cancel_all(svc.http)
        svc.stop()


def until(check, timeout: float = 15.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def outside_gpus(http: httpx.Client) -> list[int]:
    return http.get("/healthz").json()["gpu_guard"]["busy_outside"]


def test_the_guard_is_on_and_a_foreign_process_keeps_its_gpu_out(service, nvml, foreign):
    health = service.http.get("/healthz").json()
    assert health["gpu_guard"]["enabled"] is True, health
    assert health["gpu_guard"]["busy_outside"] == []

    nvml.put(0, foreign.pid, used_mb=2048)
    until(lambda: outside_gpus(service.http) == [0], what="GPU 0 busy outside labrun")
    run = submit(service.http, *GPU_RUN, "+extra.fake_sleep=30")
    running = wait_for(service.http, run["name"], {"running"})
    assert running["gpus"] == [1]  # not GPU 0, which the process outside labrun holds

    gpus = service.http.get("/gpus").json()
    assert [g["state"] for g in gpus["gpus"]] == ["outside", "run"]
    assert gpus["gpus"][0]["uuid"] == "GPU-fake-0000"
    assert gpus["gpus"][1]["run"] == run["name"]
    (process,) = gpus["gpus"][0]["outside"]
    assert process["pid"] == foreign.pid
    assert process["user"] == getpass.getuser()
    assert process["command"] == "sleep 300"
    assert process["used_mb"] == 2048

    cli = subprocess.run(
        [sys.executable, "-m", "labrun", "gpus", "--json"],
        cwd=ROOT,
        env={**os.environ, "LABRUN_URL": service.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    shown = json.loads(cli.stdout)
    assert [p["pid"] for p in shown["gpus"][0]["outside"]] == [foreign.pid]
    assert shown["gpus"][1]["run"]["name"] == run["name"]
    text = subprocess.run(
        [sys.executable, "-m", "labrun", "gpus"],
        cwd=ROOT,
        env={**os.environ, "LABRUN_URL": service.url, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert f"outside labrun: pid {foreign.pid} sleep 300" in text

    queue = service.http.get("/queue").json()
    assert [p["pid"] for p in queue["gpus_outside"]] == [foreign.pid]
    metrics = service.http.get("/metrics").text
    assert 'labrun_gpus{state="outside"} 1.0' in metrics
    assert 'labrun_gpus{state="busy"} 1.0' in metrics
    assert 'labrun_gpus{state="free"} 0.0' in metrics


def test_small_and_graphics_processes_never_count(service, nvml, foreign):
    nvml.put(0, foreign.pid, used_mb=50)  # under LABRUN_FOREIGN_GPU_MIN_MB
    nvml.put(1, foreign.pid, used_mb=4096, graphics=True)  # a desktop's Xorg: NVML's graphics list
    time.sleep(1.0)  # several passes
    assert outside_gpus(service.http) == []
    run = submit(service.http, *BOTH_GPUS)
    assert wait_for(service.http, run["name"])["status"] == "succeeded"


def test_a_run_that_needs_every_gpu_waits_with_the_reason_then_starts(service, nvml, foreign):
    nvml.put(1, foreign.pid, used_mb=3000)
    until(lambda: outside_gpus(service.http) == [1], what="GPU 1 busy outside labrun")
    run = submit(service.http, *BOTH_GPUS)
    reason = until(
        lambda: service.http.get(f"/runs/{run['name']}").json()["waiting_reason"], what="a waiting reason"
    )
    assert service.http.get(f"/runs/{run['name']}").json()["status"] == "queued"
    assert re.search(
        rf"GPU 1 is busy outside labrun: pid {foreign.pid} \({getpass.getuser()}: sleep 300\) holds 3000 MiB "
        r"since \d\d:\d\d:\d\d",
        str(reason),
    ), reason
    time.sleep(1.0)
    assert run["name"] not in starts(service.output_dir)  # it really waits

    foreign.kill()  # the process goes: the GPU comes back by itself
    foreign.wait()
    gone = time.monotonic()
    running = wait_for(service.http, run["name"], {"running", "succeeded"})
    took = time.monotonic() - gone
    assert running["gpus"] == [0, 1]
    assert took < 2.5, f"the run started {took:.2f} s after the process ended"
    assert wait_for(service.http, run["name"])["status"] == "succeeded"


def test_an_ignored_process_no_longer_blocks_and_the_ignore_can_be_undone(service, nvml, foreign):
    nvml.put(0, foreign.pid)
    until(lambda: outside_gpus(service.http) == [0], what="GPU 0 busy outside labrun")
    rule = service.http.post("/gpus/ignores", json={"pid": foreign.pid, "note": "the monitoring agent"})
    assert rule.status_code == 201, rule.text
    until(lambda: outside_gpus(service.http) == [], what="the ignored process no longer blocks")
    listed = service.http.get("/gpus").json()["gpus"][0]
    assert listed["state"] == "free"
    assert listed["outside"][0]["ignored_by"] == rule.json()["id"]
    run = submit(service.http, *BOTH_GPUS)
    assert wait_for(service.http, run["name"])["status"] == "succeeded"

    assert service.http.delete(f"/gpus/ignores/{rule.json()['id']}").status_code == 204
    until(lambda: outside_gpus(service.http) == [0], what="blocking again once the rule is undone")

    # by command pattern, through python -m app gpus (the store the service reads)
    env = {**service.env}
    done = subprocess.run(
        [sys.executable, "-m", "app", "gpus", "ignore", "--command", "sleep 3*", "--note", "x"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "ignore rule" in done.stdout
    until(lambda: outside_gpus(service.http) == [], what="the pattern rule lets it be")
    listed = subprocess.run(
        [sys.executable, "-m", "app", "gpus", "ignores"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "command matching 'sleep 3*'" in listed.stdout


def test_bad_ignore_requests_say_what_is_wrong(service):
    both = service.http.post("/gpus/ignores", json={"pid": 1, "pattern": "x"})
    assert both.status_code == 422
    assert "exactly one of pid" in both.text
    gone = service.http.post("/gpus/ignores", json={"pid": 2**22 + 12345})
    assert gone.status_code == 404
    assert "no process with pid" in gone.text
    assert service.http.delete("/gpus/ignores/999").status_code == 404


def test_a_runs_own_processes_never_count_as_foreign(service, nvml):
    run = submit(service.http, *GPU_RUN, "+extra.fake_sleep=30", "+extra.fake_orphan=1")
    running = wait_for(service.http, run["name"], {"running"})
    log = service.output_dir / "fake_starts.log"
    trainer_pid = until(
        lambda: log.exists() and [int(line.split()[1]) for line in log.read_text().splitlines()],
        what="the trainer's pid",
    )[0]
    orphan = until(lambda: next(service.output_dir.rglob("orphan.pid"), None), what="the trainer's child")
    orphan_pid = int(until(lambda: orphan.read_text().strip(), what="its pid"))
    for pid in (trainer_pid, orphan_pid):  # the trainer and a process it started, in its session
        nvml.put(running["gpus"][0], pid, used_mb=8000)
        nvml.put(1, pid, used_mb=8000)  # even on a GPU it was not given, it is not "outside labrun"
    time.sleep(1.0)
    gpus = service.http.get("/gpus").json()
    assert gpus["guard"]["outside"] == [], gpus
    other = submit(service.http, *GPU_RUN)
    assert wait_for(service.http, other["name"], {"running", "succeeded"})["gpus"] == [1]


def test_a_process_that_appears_between_the_pick_and_the_start(output_dir, nvml, foreign):
    """The re-check just before the start: the run goes back to waiting, nothing lost. The guard's own
    passes are 4 s apart here, so the pick reads a view from before the process came."""
    svc = guarded(output_dir, nvml, gpus="0", interval="4").start()
    try:
        health = svc.http.get("/healthz").json()["gpu_guard"]
        first = health["probed_at"]
        until(
            lambda: svc.http.get("/healthz").json()["gpu_guard"]["probed_at"] != first,
            timeout=10,
            what="a pass",
        )
        nvml.put(0, foreign.pid)  # right after a pass: the next one is ~4 s away
        run = submit(svc.http, *GPU_RUN)
        until(lambda: "waits again, not started" in svc.log(), timeout=3, what="the re-check sent it back")
        waiting = svc.http.get(f"/runs/{run['name']}").json()
        assert waiting["status"] == "queued"
        assert waiting["attempts"] == 1
        assert f"pid {foreign.pid}" in (waiting["waiting_reason"] or "")
        assert waiting["gpus"] == []
        assert run["name"] not in starts(output_dir)
        foreign.kill()
        foreign.wait()
        done = wait_for(svc.http, run["name"], timeout=30)
        assert done["status"] == "succeeded"
        assert done["gpus"] == [0]
        assert starts(output_dir).count(run["name"]) == 1
    finally:
        cancel_all(svc.http)
        svc.stop()


def test_outside_gpu_time_of_a_mapped_user_counts_toward_fair_share(output_dir, nvml, foreign):
    svc = guarded(output_dir, nvml)
    token = svc.admin("users", "add", "alice", "--admin")
    svc.start()
    try:
        http = httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        me = getpass.getuser()
        mapped = http.put(f"/gpus/unix-users/{me}", json={"user": "alice"})
        assert mapped.status_code == 200, mapped.text
        assert mapped.json()["unix_users"] == {me: "alice"}
        assert http.put(f"/gpus/unix-users/{me}", json={"user": "nobody"}).status_code == 404
        nvml.put(0, foreign.pid)
        nvml.put(1, foreign.pid)  # two GPUs held
        time.sleep(1.5)
        usage = http.get("/queue").json()["users"]["alice"]["usage"]["gpu"]
        assert usage >= 1.0, usage  # ~2 GPUs x ~1.5 s
        svc.stop()
        svc.start()  # the store keeps it: fair share reads it again at start-up
        again = http.get("/queue").json()["users"]["alice"]["usage"]["gpu"]
        assert again >= usage * 0.9, (usage, again)
        http.close()
    finally:
        with contextlib.suppress(Exception):
            svc.stop()


def test_without_nvml_the_guard_is_off_and_says_so(output_dir, tmp_path):
    broken = FakeNvml(tmp_path / "none.json")
    broken.path.unlink()  # no file: the stand-in's nvmlInit raises, as without a driver
    svc = guarded(output_dir, broken).start()
    try:
        guard = svc.http.get("/healthz").json()["gpu_guard"]
        assert guard["enabled"] is False
        assert "NVML is not available" in guard["detail"]
        run = submit(svc.http, *GPU_RUN)
        assert wait_for(svc.http, run["name"])["status"] == "succeeded"
        assert svc.log().count("GPU guard off") == 1
    finally:
        svc.stop()


def test_a_run_training_on_an_idle_gpu_is_stalled_but_not_a_busy_one_nor_one_building_data(
    output_dir, tmp_path
):
    """Three stand-in trainers that keep logging (the rule of progress and output alone never stalls them):
    one says it is training on a GPU at 0% (stalled, then cancelled with its GPU's idle time), one trains on
    a GPU at 100%, one builds its data on a GPU at 0% (neither is)."""
    nvml = FakeNvml(tmp_path / "nvml.json", gpus=3)
    for gpu in range(3):
        nvml.utilization(gpu, 100)  # busy while they start: no clock runs before the test says so
    svc = guarded(
        output_dir,
        nvml,
        gpus="0,1,2",
        LABRUN_STALL_AFTER_S="1.5",
        LABRUN_STALL_GRACE_S="1.5",
    ).start()
    try:
        chatter = ("+extra.fake_chatter=60", "+extra.fake_lines=1")
        idle = submit(svc.http, *GPU_RUN, *chatter, "+extra.fake_phase=training")["name"]
        busy = submit(svc.http, *GPU_RUN, *chatter, "+extra.fake_phase=training")["name"]
        data = submit(svc.http, *GPU_RUN, *chatter, "+extra.fake_phase=data")["name"]
        on = {name: wait_for(svc.http, name, {"running"})["gpus"][0] for name in (idle, busy, data)}
        time.sleep(0.5)  # each has written its phase (after its first step it only logs)
        nvml.utilization(on[idle], 0)
        nvml.utilization(on[data], 0)
        went_idle = time.time()

        stalled = until(
            lambda: (r := svc.http.get(f"/runs/{idle}").json())["stalled"] and r, what="the stall"
        )
        assert isinstance(stalled, dict)
        assert stalled["stall"]["message"].startswith(f"GPU {on[idle]} at 0% for "), stalled["stall"]
        assert "while training (last step 1 at " in stalled["stall"]["message"]
        assert stalled["stall"]["since"] is not None
        ended = wait_for(svc.http, idle, timeout=30)
        assert ended["status"] == "cancelled"
        assert re.match(
            rf"cancelled: stalled, GPU {on[idle]} at 0% for \d+ s while training \(last step 1 at ",
            ended["reason"],
        ), ended["reason"]
        # its limit and its grace came first (counted from the guard's last pass that saw it working, at
        # most one interval, 0.2 s, before the test set it to 0%)
        assert time.time() - went_idle >= 3.0 - 0.25

        for name in (busy, data):  # they went through the same limit and grace: still running, not stalled
            run = svc.http.get(f"/runs/{name}").json()
            assert run["status"] == "running", run
            assert run["stalled"] is False, run
        log = svc.log()
        assert f"run {busy} is stalled" not in log
        assert f"run {data} is stalled" not in log
    finally:
        cancel_all(svc.http)
        svc.stop()


def test_a_gpu_stall_keeps_its_start_across_a_restart(output_dir, nvml):
    """Stalled by the GPU rule, then the service is killed: the next one, whose guard sees the GPU still
    idle, shows the same stall and cancels at the same time, not a full limit and grace after its start."""
    nvml.utilization(0, 0)
    limit, grace = 3.0, 5.0
    svc = guarded(
        output_dir, nvml, gpus="0", LABRUN_STALL_AFTER_S=str(limit), LABRUN_STALL_GRACE_S=str(grace)
    ).start()
    try:
        name = submit(svc.http, *GPU_RUN, "+extra.fake_chatter=120", "+extra.fake_phase=training")["name"]
        wait_for(svc.http, name, {"running"})
        before = until(
            lambda: (r := svc.http.get(f"/runs/{name}").json())["stalled"] and r["stall"], what="stall"
        )
        assert isinstance(before, dict)
        svc.kill9()
        svc.start()
        restarted = time.time()
        again = until(
            lambda: (r := svc.http.get(f"/runs/{name}").json())["stalled"] and r["stall"], what="again"
        )
        assert isinstance(again, dict)
        assert again["message"].startswith("GPU 0 at 0% for ")
        assert again["cancel_at"] == before["cancel_at"]
        ended = svc.wait_for(name, timeout=30)
        assert ended["status"] == "cancelled"
        assert ended["reason"].startswith("cancelled: stalled, GPU 0 at 0% for "), ended["reason"]
        assert time.time() - restarted < limit + grace - 1.0, "a full limit and grace again"
    finally:
        cancel_all(svc.http)
        svc.stop()
