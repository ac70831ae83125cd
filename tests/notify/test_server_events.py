"""The server's own events (app/notify/server_events.py) to the server-wide destinations an admin sets: a
GPU busy outside labrun (through a real service process, NVML faked at the boundary only), the disk low
and the engine down (an in-process service with its real lifecycle), each told once when it starts and
once when it clears, never more often than LABRUN_NOTIFY_SERVER_EVENT_MIN_S; admins only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from notify_helpers import notify_env
from service_helpers import FAKE_TRAINER, ROOT, ServiceProcess

from app.launchers.local import LocalLauncher
from app.notify.events import SERVER, ServerCondition
from app.notify.server_events import ServerEvents
from app.statedir import StateDir
from app.store import RunStore
from app.users import Users

FAKE_NVML = Path(__file__).resolve().parents[1] / "helpers" / "fake_nvml"
sys.path.insert(0, str(FAKE_NVML.parents[1] / "app"))
from test_gpu_guard import FakeNvml  # noqa: E402 - the JSON file the stand-in pynvml answers from


def server_events(receiver, n: int, timeout: float = 30) -> list[dict]:
    return [m for m in receiver.wait(n, timeout=timeout) if m.get("server")]


def test_a_gpu_busy_outside_labrun_is_told_once_at_start_and_once_at_clear_rate_limited(
    output_dir, tmp_path, receiver
):
    nvml = FakeNvml(tmp_path / "nvml.json")
    foreign = subprocess.Popen(["sleep", "300"])  # someone's process, real in /proc
    env = notify_env(
        tmp_path,
        LABRUN_GPUS="0,1",
        LABRUN_GPU_GUARD_INTERVAL_S="0.2",
        LABRUN_FOREIGN_GPU_MIN_MB="100",
        LABRUN_NOTIFY_SERVER_EVENT_MIN_S="3",
        LABRUN_NOTIFY_SERVER_CHECK_S="0.2",
        FAKE_NVML_FILE=str(nvml.path),
        PYTHONPATH=os.pathsep.join([str(FAKE_NVML), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    svc = ServiceProcess(output_dir, **env).start()
    try:
        added = subprocess.run(  # the admin's CLI (auth off: the caller is the admin-like local)
            [sys.executable, "-m", "labrun", "notify", "add", "--server"],
            input=receiver.url + "\n",
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "LABRUN_URL": svc.url},
            timeout=60,
        )
        assert added.returncode == 0, added.stderr
        receiver.secret = added.stderr.split("shown this once: ")[1].split()[0]
        assert svc.http.get("/me/notify/destinations").json()["count"] == 0  # not the caller's own

        nvml.put(0, foreign.pid, used_mb=2048)
        [started] = server_events(receiver, 1)
        nvml.clear()  # gone at once: the clear waits for the interval
        time.sleep(1)
        assert len(receiver.events()) == 1
        [_, cleared] = server_events(receiver, 2)
        nvml.put(0, foreign.pid, used_mb=2048)  # flaps back and forth within the interval: nothing more
        time.sleep(0.8)
        nvml.clear()
        time.sleep(4)
    finally:
        svc.stop()
        foreign.kill()
        foreign.wait()
    assert len(receiver.events()) == 2, receiver.events()
    assert receiver.bad_signatures == 0
    assert started["event"] == cleared["event"] == "gpu_busy_outside"
    assert started["id"] != cleared["id"]
    assert started["run"] is None
    assert started["server"]["state"] == "started"
    assert started["server"]["subject"] == "gpu:0"
    assert f"pid {foreign.pid}" in started["server"]["detail"]
    assert started["server"]["host"] == "labrun.example"  # LABRUN_PUBLIC_URL's host
    assert cleared["server"]["state"] == "cleared"
    gap = _time(cleared["created_at"]) - _time(started["created_at"])
    assert gap >= 3, gap


def _time(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso).timestamp()


class SwitchedEngine(LocalLauncher):
    """The local launcher with an engine that can be switched off (its health is the boundary faked)."""

    name = "switched"
    down = False

    def health(self) -> tuple[bool, str]:
        return (False, "engine at unix:///nowhere refused the connection") if self.down else (True, "up")


def test_the_disk_low_and_the_engine_down_reach_the_server_wide_destinations(
    output_dir, tmp_path, make_client, receiver
):
    engine = SwitchedEngine(FAKE_TRAINER, StateDir(output_dir))
    client = make_client(
        launcher=engine,
        secret_key_file=tmp_path / "k" / "secret.key",
        notify_schemes=("labrun+http",),
        notify_allow_hosts=("127.0.0.1",),
        notify_poll_s=0.05,
        notify_server_event_min_s=0,
        notify_server_check_s=0.1,
    )
    added = client.post("/notify/server/destinations", json={"url": receiver.url})
    assert added.status_code == 201, added.text
    receiver.secret = added.json()["signing_secret"]
    disk = client.app.state.manager.disk

    disk.min_free_percent = 100.0  # no disk has that much free: runs stop starting, and the admin hears
    assert client.get("/healthz").status_code == 503
    engine.down = True
    messages = receiver.wait(2)
    disk.min_free_percent = 0.0
    engine.down = False
    messages = receiver.wait(4)
    time.sleep(0.5)
    told = [(m["event"], m["server"]["state"]) for m in receiver.events()]
    assert sorted(told[:2]) == [("disk_low", "started"), ("engine_down", "started")]
    assert sorted(told[2:]) == [("disk_low", "cleared"), ("engine_down", "cleared")]
    down = next(m for m in messages if m["event"] == "engine_down")
    assert "refused the connection" in down["server"]["detail"]
    assert "nearly full" in next(m for m in messages if m["event"] == "disk_low")["server"]["detail"]


def test_only_an_admin_sets_server_wide_destinations(output_dir, tmp_path, make_client):
    store = RunStore(StateDir(output_dir).db)
    tokens = {name: Users(store).add(name, admin=name == "root") for name in ("alice", "root")}
    store.close()
    client = make_client(secret_key_file=tmp_path / "k" / "secret.key")
    alice, root = ({"Authorization": f"Bearer {tokens[n]}"} for n in ("alice", "root"))
    url = {"url": "slack://T1/B2/C3"}
    refused = client.post("/notify/server/destinations", json=url, headers=alice)
    assert refused.status_code == 403
    assert "admin" in refused.json()["detail"]
    assert client.get("/notify/server/destinations", headers=alice).status_code == 403
    added = client.post("/notify/server/destinations", json=url, headers=root)
    assert added.status_code == 201, added.text
    id = added.json()["id"]
    assert client.delete(f"/notify/server/destinations/{id}", headers=alice).status_code == 403
    only = client.put(f"/notify/server/destinations/{id}/events", json={"events": ["disk_low"]}, headers=root)
    assert only.json()["events"] == ["disk_low"]
    run_event = {"events": ["failed"]}  # a run's event: not one a server-wide destination gets
    assert (
        client.put(f"/notify/server/destinations/{id}/events", json=run_event, headers=root).status_code
        == 422
    )
    assert client.post(f"/notify/server/destinations/{id}/test", headers=alice).status_code == 403
    # a server-wide destination is nobody's own: not listed, not removable, as one of root's
    assert client.get("/me/notify/destinations", headers=root).json()["count"] == 0
    assert client.delete(f"/me/notify/destinations/{id}", headers=root).status_code == 404
    assert client.get("/notify/server/destinations", headers=root).json()["count"] == 1
    assert client.delete(f"/notify/server/destinations/{id}", headers=root).status_code == 204
    assert client.get("/notify/server/destinations", headers=root).json()["count"] == 0


@pytest.fixture
def store(output_dir):
    found = RunStore(StateDir(output_dir).db)
    yield found
    found.close()


def test_a_restart_does_not_tell_again_a_condition_that_still_holds(store):
    first = ServerEvents(store.outbox, min_interval_s=3600, host="gpu1")
    first.disk(False, "the output directory's disk is nearly full")
    first.disk(False, "the output directory's disk is nearly full: less now")
    assert [e.kind for e in store.outbox.events_of("disk")] == ["disk_low"]
    again = ServerEvents(store.outbox, min_interval_s=3600, host="gpu1")  # the service restarted
    again.disk(False, "the output directory's disk is nearly full")
    again.disk(True, None)  # cleared within the interval: held back, and told once it has passed
    assert len(store.outbox.events_of("disk")) == 1
    again.min_interval_s = 0
    again.flush()
    events = store.outbox.events_of("disk")
    assert [e.body["state"] for e in events] == ["started", "cleared"]
    assert all(e.owner is None for e in events)
    assert SERVER not in {e.owner for e in events}
    assert {c.value for c in ServerCondition} >= {e.kind for e in events}
