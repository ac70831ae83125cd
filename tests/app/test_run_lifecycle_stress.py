"""The run lifecycle under stress (issue 16): stand-in trainers that misbehave the way real ones do, real
processes and a real service. Each case names the harm it prevents."""

from __future__ import annotations

import contextlib
import os
import time

import httpx
import pytest
from service_helpers import ServiceProcess, submit, wait_for


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_what_a_run_forks_dies_with_it_before_its_slot_is_handed_on(client, output_dir):
    """A stray child (a DataLoader worker, a `sleep 300 &`) would keep a GPU's memory for the next run."""
    run = wait_for(client, submit(client, "+extra.fake_orphan=1")["name"])
    assert run["status"] == "succeeded"
    orphan = int((output_dir / run["run_dir"] / "orphan.pid").read_text())
    assert not _alive(orphan)


def test_a_cancelled_run_that_exits_0_on_sigterm_is_cancelled(client):
    name = submit(client, "+extra.fake_on_term=exit0", "+extra.fake_sleep=30")["name"]
    wait_for(client, name, ("running",))
    time.sleep(0.5)  # its handler is installed
    run = client.post(f"/runs/{name}/cancel").json()
    assert (run["status"], run["exit_code"]) == ("cancelled", 0), run
    assert run["reason"] == "cancelled by request (exited with code 0 after SIGTERM)"


def test_reasons_say_what_happened(make_client):
    client = make_client(cancel_grace_s=0.5)
    exited = wait_for(client, submit(client, "+extra.fake_exit=200")["name"])
    assert exited["reason"] == "exited with code 200"  # not "killed by signal 72"
    stubborn = submit(client, "+extra.fake_on_term=ignore", "+extra.fake_sleep=30")["name"]
    wait_for(client, stubborn, ("running",))
    time.sleep(0.5)
    run = client.post(f"/runs/{stubborn}/cancel").json()
    assert run["status"] == "cancelled", run
    assert "after the cancel's grace period" in run["reason"], run
    assert "out-of-memory" not in run["reason"]


def test_a_supervisor_killed_while_the_service_runs_is_not_called_lost(client, output_dir):
    name = submit(client, "+extra.fake_sleep=30")["name"]
    wait_for(client, name, ("running",))
    time.sleep(0.3)  # the watcher is following it
    wrapper = int((output_dir / ".labrun" / "runs" / name / "pid").read_text().split()[0])
    os.kill(wrapper, 9)
    run = wait_for(client, name)
    assert run["status"] == "failed", run
    assert "supervisor process was killed" in run["reason"], run


def test_a_failed_runs_log_tail_is_bounded_in_bytes(client):
    run = wait_for(client, submit(client, "+extra.fake_huge_line=2000000", "+extra.fake_exit=1")["name"])
    assert run["status"] == "failed"
    assert len(run["log_tail"].encode()) <= 4096 + 8  # the setting's default, plus the "[...] " mark
    assert run["log_tail"].endswith("failing with exit code 1\n")


def test_logs_are_lines_of_the_file_pages_and_say_when_cut(client):
    run = wait_for(client, submit(client, "+extra.fake_cr=50", "+extra.fake_lines=3")["name"])
    last_two = client.get(f"/runs/{run['name']}/logs", params={"tail": 2})
    lines = last_two.text.removesuffix("\n").split("\n")  # lines end at \n alone, as in the file
    assert len(lines) == 2
    assert lines[0].endswith(": line 3")
    assert lines[1].startswith("progress 0\rprogress 1\r")
    assert lines[1].endswith("progress done")
    assert last_two.headers["X-Log-Truncated"] == "true"
    whole = client.get(f"/runs/{run['name']}/logs")
    assert whole.headers["X-Log-Truncated"] == "false"
    assert whole.headers["X-Log-Start"] == "0"
    assert whole.text.endswith(last_two.text)
    window = len(whole.text.split("\n")[0]) + 10  # the first line and a bit of the second
    first = client.get(f"/runs/{run['name']}/logs", params={"offset": 0, "length": window})
    assert first.text.endswith("\n")
    assert first.text.count("\n") == 1
    rest = client.get(f"/runs/{run['name']}/logs", params={"offset": first.headers["X-Log-End"]})
    assert first.text + rest.text == whole.text


def test_a_log_over_the_window_is_cut_at_a_line_start_and_says_so(client):
    big = wait_for(client, submit(client, "+extra.fake_huge_line=3000000", "+extra.fake_lines=2")["name"])
    small = submit(
        client, "+extra.fake_huge_line=3000000", "+extra.fake_lines=2"
    )  # a second one: 6 MB in one log
    del small
    log_path = client.app.state.files.log_path(big["name"])
    with open(log_path, "ab") as f:
        f.write(b"y" * 3_000_000 + b"\nend\n")
    response = client.get(f"/runs/{big['name']}/logs")
    assert response.headers["X-Log-Truncated"] == "true"
    start = int(response.headers["X-Log-Start"])
    assert start > 0
    assert log_path.read_bytes()[start - 1 : start] == b"\n"
    assert response.text.endswith("end\n")
    assert response.text.startswith("y")


def test_an_idempotency_key_is_bound_to_its_first_request(client):
    original = wait_for(client, submit(client, "+extra.fake_sleep=0")["name"])
    other = submit(client, "+extra.fake_sleep=0", "+extra.fake_lines=1", headers={"Idempotency-Key": "k1"})
    reused = client.post(f"/runs/{original['name']}/rerun", headers={"Idempotency-Key": "k1"})
    assert reused.status_code == 409, reused.text  # not a replay of the unrelated run
    first = client.post(f"/runs/{original['name']}/rerun", headers={"Idempotency-Key": "k2"})
    again = client.post(f"/runs/{original['name']}/rerun", headers={"Idempotency-Key": "k2"})
    assert first.status_code == again.status_code == 201
    assert again.json()["name"] == first.json()["name"] != other["name"]
    assert again.json()["rerun_of"] == original["name"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"] == f"/runs/{first.json()['name']}"
    assert "Idempotent-Replayed" not in first.headers


def test_head_probes_and_bodies_that_are_not_json(client):
    assert client.head("/healthz").status_code == 200
    assert client.head("/runs").status_code == 200
    form = client.post("/runs", content=b"overrides=model=fno", headers={"Content-Type": "text/plain"})
    assert form.status_code == 415
    assert "application/json" in form.json()["detail"]
    packed = client.post(
        "/runs",
        content=b"\x1f\x8b...",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert packed.status_code == 415
    assert "uncompressed" in packed.json()["detail"]
    assert client.get("/runs").json()["count"] == 0


@pytest.fixture
def service(output_dir):
    services: list[ServiceProcess] = []

    def make(**env) -> ServiceProcess:
        services.append(ServiceProcess(output_dir, **env))
        return services[-1].start()

    yield make
    for svc in services:
        svc.stop()


def test_a_cancel_cut_short_by_a_service_stop_is_carried_out_after_the_restart(service, output_dir):
    """The store holds cancel_requested; the next service must see it through (SIGTERM, grace, SIGKILL)."""
    svc = service(LABRUN_CANCEL_GRACE_S="3")
    name = svc.submit(["+extra.fake_on_term=ignore", "+extra.fake_sleep=300"])["name"]
    svc.wait_for(name, ("running",), timeout=30)
    time.sleep(0.5)
    import threading

    def cancel_cut_short() -> None:
        with contextlib.suppress(httpx.TransportError):  # the service is killed before it answers
            svc.http.post(f"/runs/{name}/cancel", timeout=30)

    cancel = threading.Thread(target=cancel_cut_short, daemon=True)
    cancel.start()
    time.sleep(1)  # the SIGTERM was sent and ignored; the grace period is running
    svc.kill9()
    trainer = int((output_dir / ".labrun" / "runs" / name / "child_pid").read_text().split()[0])
    assert _alive(trainer)
    restarted = service(LABRUN_CANCEL_GRACE_S="1")
    run = restarted.wait_for(name, timeout=30)
    assert run["status"] == "cancelled", run
    assert not _alive(trainer)
