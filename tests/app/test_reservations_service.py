"""Reservations end to end, through a real service process with the local launcher on fake GPU ids, users
with tokens, and the stand-in trainer (it preempts as the trainer does: SIGTERM -> ckpt/last.ckpt, exit 75)
or the real one on the CPU. Real short windows of a few seconds, on the wall clock."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import ServiceProcess, cancel_all, starts, wait_for
from test_gpu_guard import FakeNvml, foreign, guarded  # noqa: F401 - its fixture
from test_users_and_fair_share import bearer, make_users

from app.statedir import StateDir
from app.store import RunStore

GPU = ("accelerator=gpu", "devices=1")
# Preempted at once by a window, never by another run (a normal run may preempt a low one: not here)
FAST = {"LABRUN_PREEMPT_GRACE_S": "2", "LABRUN_PREEMPT_MIN_RUN_S": "600", "LABRUN_MAX_CPU_RUNS": "1"}


@pytest.fixture
def team(output_dir: Path) -> Iterator[dict]:
    """Tokens of alice and bob; ``start(**env)`` starts a service (again) and gives a client per user."""
    tokens = make_users(output_dir, alice=False, bob=False)
    made: list[tuple[ServiceProcess, list[httpx.Client]]] = []

    def start(
        svc: ServiceProcess | None = None, real: bool = False, **env: str
    ) -> tuple[ServiceProcess, httpx.Client, httpx.Client]:
        """``real``: the real ``python -m trainer``, not the stand-in."""
        kind: dict = {"trainer_command": None} if real else {}
        svc = (svc or ServiceProcess(output_dir, **kind, **{**FAST, **env})).start()
        alice, bob = (
            httpx.Client(base_url=svc.url, headers=bearer(tokens[n]), timeout=60) for n in ("alice", "bob")
        )
        made.append((svc, [alice, bob]))
        return svc, alice, bob

    yield {"start": start}
    for svc, clients in made:
        if svc.proc is not None and svc.proc.poll() is None:
            for client in clients:
                cancel_all(client)
        for client in clients:
            client.close()
        svc.stop()


def post(client: httpx.Client, *overrides: str, priority: str = "normal") -> dict:
    response = client.post("/runs", json={"overrides": list(overrides), "priority": priority})
    assert response.status_code == 201, response.text
    return response.json()


def reserve(client: httpx.Client, start: float, end: float, gpus: int | list[int] = 1) -> dict:
    def rfc3339(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()

    made = client.post("/reservations", json={"gpus": gpus, "start": rfc3339(start), "end": rfc3339(end)})
    assert made.status_code == 201, made.text
    return made.json()


def ts(value: str | float) -> float:
    """A time the API shows (RFC 3339 for a run, a timestamp for an attempt) as a timestamp."""
    return value if isinstance(value, float) else dt.datetime.fromisoformat(value).timestamp()


def until(check, timeout: float = 30.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def first_line(client: httpx.Client, name: str) -> None:
    """Until the run's trainer is past its start-up (its SIGTERM handler is in place)."""
    wait_for(client, name, {"running"})
    until(lambda: ": line 1" in client.get(f"/runs/{name}/logs").text, what=f"{name}'s first line")


def attempts(client: httpx.Client, name: str) -> list[dict]:
    return client.get(f"/runs/{name}/attempts").json()["attempts"]


def test_a_window_preempts_the_low_runs_on_its_gpus_and_its_users_runs_start_on_time(team, output_dir):
    svc, alice, bob = team["start"](LABRUN_GPUS="0,1")
    lows = [post(alice, *GPU, "+extra.fake_sleep=20", f"+extra.fake_i={i}", priority="low") for i in (1, 2)]
    for low in lows:
        first_line(alice, low["name"])
    start = time.time() + 6
    booked = reserve(bob, start, start + 8)
    (gpu,) = booked["gpus"]
    on_it = next(low for low in lows if alice.get(f"/runs/{low['name']}").json()["gpus"] == [gpu])
    other = next(low for low in lows if low is not on_it)
    bobs = post(bob, *GPU, "+extra.fake_sleep=5")
    time.sleep(2)
    assert bob.get(f"/runs/{bobs['name']}").json()["status"] == "queued"  # before the window: it waits
    ran = wait_for(bob, bobs["name"], {"running", "succeeded"}, timeout=30)
    assert ran["gpus"] == [gpu]
    assert start - 2.5 <= ts(ran["started_at"]) <= start + 3, ts(ran["started_at"]) - start  # the grace
    (stopped,) = attempts(alice, on_it["name"])
    assert stopped["status"] == "preempted"
    assert stopped["exit_code"] == 75  # it saved its checkpoint
    assert ts(stopped["finished_at"]) <= start + 0.5, ts(stopped["finished_at"]) - start  # free in time
    assert "preempted by reservation" in stopped["reason"]
    print(
        f"window start: the reservation's run started {ts(ran['started_at']) - start:+.2f} s from it, the"
        f" preempted run had ended {ts(stopped['finished_at']) - start:+.2f} s from it (grace 2 s)"
    )
    assert alice.get(f"/runs/{other['name']}").json()["attempts"] == 1  # not on the reserved GPU: untouched
    done = wait_for(alice, on_it["name"], timeout=90)
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    assert len(attempts(alice, on_it["name"])) == 1
    assert ts(done["started_at"]) >= ts(wait_for(bob, bobs["name"])["finished_at"]) - 0.5  # after bob's
    assert "resumed, from ckpt/last.ckpt" in alice.get(f"/runs/{on_it['name']}/logs").text
    assert starts(output_dir).count(on_it["name"]) == 2
    assert starts(output_dir).count(bobs["name"]) == 1


def test_a_normal_run_without_a_time_limit_does_not_take_reserved_gpus_before_the_window(team):
    svc, alice, bob = team["start"](LABRUN_GPUS="0")
    booked = reserve(bob, time.time() + 60, time.time() + 120)
    assert booked["gpus"] == [0]
    normal = post(alice, *GPU, "+extra.fake_sleep=0.2")
    time.sleep(1.5)
    assert alice.get(f"/runs/{normal['name']}").json()["status"] == "queued"
    low = post(alice, *GPU, "+extra.fake_sleep=0.2", priority="low")  # may be preempted: it may go there
    assert wait_for(alice, low["name"], timeout=20)["status"] == "succeeded"
    assert alice.get(f"/runs/{normal['name']}").json()["status"] == "queued"
    assert bob.post(f"/reservations/{booked['id']}/end").status_code == 200  # ended early: the GPU is free
    assert wait_for(alice, normal["name"], timeout=20)["status"] == "succeeded"


def test_kill_9_just_before_a_window_and_a_restart_after_it_began_honour_it_at_once(team, output_dir):
    svc, alice, bob = team["start"](LABRUN_GPUS="0")
    low = post(alice, *GPU, "+extra.fake_sleep=12", priority="low")
    first_line(alice, low["name"])
    start = time.time() + 5
    reserve(bob, start, start + 60)
    bobs = post(bob, *GPU, "+extra.fake_sleep=1")
    until(lambda: time.time() >= start - 3.5, what="just before the clearing")
    svc.kill9()
    until(lambda: time.time() >= start + 1, what="the window's start")
    restarted = time.time()
    svc, alice, bob = team["start"](svc)
    ran = wait_for(bob, bobs["name"], {"running", "succeeded"}, timeout=30)
    assert (
        ts(ran["started_at"]) - restarted < 10
    )  # at once: the restart's first round preempts, then it starts
    assert wait_for(bob, bobs["name"])["status"] == "succeeded"
    (stopped,) = attempts(alice, low["name"])
    assert (stopped["status"], stopped["exit_code"]) == ("preempted", 75)
    # idle again, the window's GPU may be filled by the preemptible run: it resumes and ends
    done = wait_for(alice, low["name"], timeout=60)
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    assert starts(output_dir) == [low["name"], bobs["name"], low["name"]]  # nothing ran twice


def test_a_process_outside_labrun_on_a_reserved_gpu_keeps_its_runs_waiting_and_tells_the_admins(
    output_dir,
    tmp_path,
    foreign,  # noqa: F811
):
    nvml = FakeNvml(tmp_path / "nvml.json", gpus=1)
    tokens = make_users(output_dir, bob=False, root=True)
    svc = guarded(output_dir, nvml, gpus="0", LABRUN_PREEMPT_GRACE_S="2").start()
    try:
        with httpx.Client(base_url=svc.url, headers=bearer(tokens["bob"]), timeout=60) as bob:
            nvml.put(0, foreign.pid)  # someone's process by hand, on the GPU bob reserves
            until(lambda: bob.get("/gpus").json()["gpus"][0]["outside"], what="the guard's look")
            booked = reserve(bob, time.time() + 2.5, time.time() + 60)
            bobs = post(bob, *GPU, "+extra.fake_sleep=0.2")

            def reason() -> str:
                return bob.get(f"/runs/{bobs['name']}").json()["waiting_reason"] or ""

            until(lambda: "reservation" in reason(), timeout=15, what="the reservation's reason")
            assert f"reservation {booked['id']}: GPU 0 is busy outside labrun: pid {foreign.pid}" in reason()
            until(
                lambda: "reservation_blocked" in [e["kind"] for e in store_events(output_dir, booked["id"])],
                what="the admins' event",
            )
            nvml.clear()
            assert wait_for(bob, bobs["name"], timeout=20)["status"] == "succeeded"
            until(
                lambda: "reservation_started" in [e["kind"] for e in store_events(output_dir, booked["id"])],
                what="its start, told by the dispatcher woken at it",
            )
    finally:
        svc.stop()
    told = store_events(output_dir, booked["id"])
    assert [e["kind"] for e in told] == ["reservation_soon", "reservation_blocked", "reservation_started"]
    blocked = told[1]
    assert blocked["owner"] is None  # a server event: it goes to the admins' destinations
    assert "GPU 0 busy outside labrun at its start" in blocked["body"]["detail"]
    assert told[0]["owner"] == "bob"


def store_events(output_dir: Path, id: int) -> list[dict]:
    """The outbox's events of reservation ``id`` (read beside the service: SQLite allows it)."""
    store = RunStore(StateDir(output_dir).db)
    try:
        events = store.outbox.events_of(f"reservation:{id}")
        return [{"kind": e.kind, "owner": e.owner, "body": e.body} for e in events]
    finally:
        store.close()


@pytest.mark.slow
def test_the_real_trainer_preempted_by_a_window_resumes_after_it_with_the_same_metrics(team, output_dir):
    from tiny_run import tiny_run

    run = [*tiny_run(epochs=30), "deterministic=true", "accelerator=auto"]  # on GPU 0: the CPU, here
    svc, alice, bob = team["start"](real=True, LABRUN_GPUS="0", LABRUN_PREEMPT_GRACE_S="30")
    low = post(alice, *run, priority="low")
    until(
        lambda: ((alice.get(f"/runs/{low['name']}").json().get("progress") or {}).get("epoch") or 0) >= 1,
        timeout=300,
        what="the low run's second epoch",
    )
    start = time.time() + 31  # the clearing begins at once (the grace is 30 s)
    reserve(bob, start, start + 5)
    bobs = post(bob, *tiny_run(epochs=1), "seed=2", "accelerator=auto")
    ran = wait_for(bob, bobs["name"], {"running", "succeeded"}, timeout=300)
    assert ts(ran["started_at"]) < start  # the low run checkpointed and left within the grace
    assert wait_for(bob, bobs["name"], timeout=300)["status"] == "succeeded"
    (first,) = attempts(alice, low["name"])
    assert (first["status"], first["exit_code"]) == ("preempted", 75), first
    done = wait_for(alice, low["name"], timeout=900)
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    alone = post(alice, *run)  # the same run left alone
    assert wait_for(alice, alone["name"], timeout=900)["status"] == "succeeded"
    record = json.loads((output_dir / low["run_dir"] / "run.json").read_text())
    assert record["status"] == "succeeded"
    preempted_csv = (output_dir / low["run_dir"] / "metrics.csv").read_text()
    assert preempted_csv == (output_dir / alone["run_dir"] / "metrics.csv").read_text()
    assert preempted_csv.count("\n") > 30
