"""A lab team on one server (issue 10): users and tokens, who may change which run, fair share, limits.
Real HTTP (in-process app and a real service process), a real SQLite store, the real dispatcher, the fake
trainer."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from service_helpers import ROOT, ServiceProcess, make_settings, starts

from app.statedir import StateDir
from app.store import RunStore
from app.users import Users

SLEEP = "+extra.fake_sleep=0"


def make_users(output_dir: Path, **people: bool) -> dict[str, str]:
    """name -> token for each user (value: admin?), written to the store before the service starts."""
    store = RunStore(StateDir(output_dir).db)
    try:
        users = Users(store)
        return {name: users.add(name, admin=admin) for name, admin in people.items()}
    finally:
        store.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_as(
    client, headers: dict[str, str], name: str, statuses=("succeeded", "failed", "cancelled")
) -> dict:
    deadline = time.monotonic() + 60
    while (run := client.get(f"/runs/{name}", headers=headers).json())["status"] not in statuses:
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
    return run


@pytest.fixture
def team(output_dir, make_client):
    tokens = make_users(output_dir, alice=False, bob=False, root=True, carol=False)
    store = RunStore(StateDir(output_dir).db)
    Users(store).revoke("carol")
    store.close()
    # the tests below try every route with wrong tokens: more failed logins than one address may send
    client = make_client(login_failures_per_minute=10_000)
    return client, tokens


def test_every_route_needs_a_token_and_only_owners_or_admins_change_runs(team, output_dir, caplog):
    client, t = team
    alice, bob, root, carol = (bearer(t[n]) for n in ("alice", "bob", "root", "carol"))
    run = client.post("/runs", json={"overrides": [SLEEP]}, headers=alice).json()
    assert run["owner"] == "alice"
    name = wait_as(client, alice, run["name"])["name"]
    reads = [
        "/runs",
        f"/runs/{name}",
        f"/runs/{name}/logs",
        f"/runs/{name}/metrics",
        "/usage",
        "/queue",
        "/config/schema",
        "/metrics",
    ]
    for path in reads:
        for headers, code in (
            ({}, 401),
            (bearer("alice.wrong"), 401),
            (bearer("nobody.x"), 401),
            (carol, 401),
            (bob, 200),
            (root, 200),
        ):
            response = client.get(path, headers=headers)
            assert response.status_code == code, (path, headers, response.text)
            if code == 401:
                assert response.headers["WWW-Authenticate"] == "Bearer"
                assert "token" in response.json()["detail"]
    assert client.get("/healthz").status_code == 200  # probes need no token
    # Changes: the owner or an admin; anyone with a token may submit and rerun (as themselves).
    assert client.post("/runs", json={"overrides": [SLEEP]}).status_code == 401
    assert client.post(f"/runs/{name}/cancel", headers=bob).status_code == 403
    assert client.delete(f"/runs/{name}", headers=bob).status_code == 403
    rerun = client.post(f"/runs/{name}/rerun", headers=bob)
    assert rerun.status_code == 201
    assert rerun.json()["owner"] == "bob"
    long = client.post("/runs", json={"overrides": ["+extra.fake_sleep=30"]}, headers=alice).json()["name"]
    cancelled = client.post(f"/runs/{long}/cancel", headers=root)
    assert cancelled.status_code == 200
    assert cancelled.json()["cancelled_by"] == "root"
    assert client.delete(f"/runs/{name}", headers=alice).status_code == 200
    # Admin routes.
    assert client.get("/users", headers=alice).status_code == 403
    assert client.put("/users/bob/limits", json={"max_queued": 1}, headers=bob).status_code == 403
    assert client.put("/users/bob/limits", json={"max_queued": 1}, headers=root).status_code == 200
    assert [u["name"] for u in client.get("/users", headers=root).json()["users"]] == [
        "alice",
        "bob",
        "carol",
        "root",
    ]
    # Owner filters.
    mine = client.get("/runs", params={"owner": "me"}, headers=bob).json()
    assert {r["owner"] for r in mine["data"]} == {"bob"}
    assert mine["count"] == 1
    # No token in clear: not in answers, not in the log, not in the store.
    secrets = [token.split(".", 1)[1] for token in t.values()]
    db = b"".join(p.read_bytes() for p in StateDir(output_dir).root.glob("runs.db*"))
    logged = caplog.text
    for secret in secrets:
        assert secret.encode() not in db
        assert secret not in logged


def test_fair_share_a_colleagues_runs_are_not_held_back(output_dir, make_client):
    t = make_users(output_dir, alice=False, bob=False, carol=False)
    client = make_client(max_cpu_runs=1)
    alice, bob, carol = bearer(t["alice"]), bearer(t["bob"]), bearer(t["carol"])
    # carol holds the one slot while the others submit, so that the order is the scheduler's, not the
    # order in which the submissions happened to arrive.
    holder = client.post("/runs", json={"overrides": ["+extra.fake_sleep=60"]}, headers=carol).json()["name"]
    wait_as(client, carol, holder, ("running",))
    mine = [
        client.post(
            "/runs", json={"overrides": ["+extra.fake_sleep=0.5", f"+extra.fake_i={i}"]}, headers=alice
        )
        for i in range(20)
    ]
    assert all(r.status_code == 201 for r in mine)
    theirs = [
        client.post("/runs", json={"overrides": ["+extra.fake_sleep=0.5", f"+extra.fake_i={i}"]}, headers=bob)
        for i in range(2)
    ]
    # The fair order is what the API says: bob's first run is next (or right after alice's running one).
    positions = [
        client.get(f"/runs/{r.json()['name']}", headers=bob).json()["queue_position"] for r in theirs
    ]
    assert positions[0] in (1, 2), positions
    queue = client.get("/queue", headers=bob).json()["users"]
    assert len(queue["bob"]["queued"]) == 2
    assert queue["alice"]["usage"]["cpu"] >= 0
    client.post(f"/runs/{holder}/cancel", headers=carol)
    # Usage is measured run time, so who goes next after bob's first run depends on how long each run
    # took (process start-up varies on a loaded machine): bob's second run goes once alice has used more
    # than his first run did. Both of bob's runs must start before alice's fourth; under FIFO they would
    # wait for all twenty.
    names = [r.json()["name"] for r in theirs] + [r.json()["name"] for r in mine[:4]]
    for name in names:
        wait_as(client, alice, name)
    order = starts(output_dir)
    a4 = order.index(mine[3].json()["name"])
    assert all(order.index(r.json()["name"]) < a4 for r in theirs), order[:7]
    for r in mine[4:]:
        client.post(f"/runs/{r.json()['name']}/cancel", headers=alice)


def test_per_user_limits_queued_runs_and_run_time(output_dir, make_client):
    t = make_users(output_dir, alice=False)
    client = make_client(max_queued_per_user=2, max_run_s=1.0, max_cpu_runs=1)
    alice = bearer(t["alice"])
    first = client.post("/runs", json={"overrides": ["+extra.fake_sleep=30"]}, headers=alice).json()["name"]
    wait_as(client, alice, first, ("running",))
    for i in range(2):
        assert (
            client.post("/runs", json={"overrides": [f"+extra.fake_i={i}"]}, headers=alice).status_code == 201
        )
    over = client.post("/runs", json={"overrides": ["+extra.fake_i=9"]}, headers=alice)
    assert over.status_code == 429, over.text
    assert "2 runs queued" in over.json()["detail"], over.text
    ended = wait_as(client, alice, first)
    assert ended["status"] == "cancelled", ended
    assert "time limit of 1 s reached" in ended["reason"], ended
    server_limits = {
        "max_gpus": None,
        "max_queued": 2,
        "max_run_s": 1.0,
        "stall_after_s": 2700.0,
        "high_gpus": 0,
    }
    assert client.get("/queue", headers=alice).json()["users"]["alice"]["limits"] == server_limits


def test_an_admin_sets_a_users_own_limits_over_the_servers(output_dir, make_client):
    t = make_users(output_dir, root=True, bob=False)
    client = make_client(max_queued_per_user=5)
    root = bearer(t["root"])
    changed = client.put(
        "/users/bob/limits", json={"max_gpus": 2, "max_run_s": 60, "stall_after_s": 600}, headers=root
    )
    own = {
        "max_gpus": 2,
        "max_queued": 5,
        "max_run_s": 60.0,
        "stall_after_s": 600.0,
        "high_gpus": 0,
    }  # stalls: docs/stalls.md
    assert changed.json() == {"name": "bob", "limits": own}
    users = {u["name"]: u for u in client.get("/users", headers=root).json()["users"]}
    assert users["bob"] == {
        "name": "bob",
        "admin": False,
        "active": True,
        "limits": own,
    }
    assert users["root"]["admin"] is True
    assert users["root"]["limits"]["max_gpus"] is None
    unknown = client.put("/users/nobody/limits", json={"max_gpus": 1}, headers=root)
    assert unknown.status_code == 404
    assert "python -m app users add nobody" in unknown.json()["detail"]


def test_serving_beyond_loopback_needs_auth(output_dir):
    from app.core.config import SettingsError
    from app.main import create_app

    with pytest.raises(SettingsError, match="without auth"):
        create_app(make_settings(output_dir, host="0.0.0.0"))
    create_app(make_settings(output_dir, host="0.0.0.0", auth="on")).state.manager.store.close()
    del create_app


def test_the_admin_command_makes_lists_and_revokes_users(output_dir):
    env = {"LABRUN_OUTPUT_DIR": str(output_dir), "PATH": "/usr/bin:/bin"}

    def users(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "app", "users", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )

    made = users("add", "dana", "--admin")
    assert made.returncode == 0
    assert made.stdout.startswith("dana.")
    assert "shown this once" in made.stderr
    token = made.stdout.strip()
    store = RunStore(StateDir(output_dir).db)
    assert Users(store).authenticate(token).is_admin
    assert users("add", "dana").returncode == 2  # exists
    assert "dana\tadmin\tactive" in users("list").stdout
    assert users("revoke", "dana").returncode == 0
    assert Users(store).authenticate(token) is None
    rotated = users("token", "dana").stdout.strip()
    assert rotated != token
    assert Users(store).authenticate(rotated) is not None
    assert "max_gpus=1" in users("limits", "dana", "--max-gpus", "1").stdout
    assert users("add", "Bad Name").returncode == 2
    store.close()


def test_kill_9_keeps_owners_and_the_fair_order(output_dir):
    t = make_users(output_dir, alice=False, bob=False)
    svc = ServiceProcess(output_dir, LABRUN_MAX_CPU_RUNS="1").start()
    try:
        alice, bob = bearer(t["alice"]), bearer(t["bob"])
        post = svc.http.post
        a = [
            post("/runs", json={"overrides": ["+extra.fake_sleep=1", f"+extra.fake_i={i}"]}, headers=alice)
            for i in range(3)
        ]
        b = post("/runs", json={"overrides": ["+extra.fake_sleep=0.2"]}, headers=bob)
        names = [r.json()["name"] for r in (*a, b)]
        time.sleep(0.5)
        svc.kill9()
        svc.start()
        for name in names:
            done = wait_as(svc.http, alice, name)
            assert done["status"] == "succeeded"
            assert done["owner"] == ("bob" if name == names[3] else "alice")
        order = starts(output_dir)
        assert sorted(order) == sorted(names)  # nothing ran twice
        assert order.index(names[3]) < order.index(names[2])  # bob's run went before alice's third
    finally:
        svc.stop()


def test_high_priority_needs_an_allowance_admins_always_may(output_dir, make_client):
    t = make_users(output_dir, root=True, bob=False, carol=False)
    client = make_client(high_priority_gpus=0, gpus=(0, 1, 2))
    root, bob, carol = bearer(t["root"]), bearer(t["bob"]), bearer(t["carol"])
    body = {"overrides": ["+extra.fake_sleep=0"], "priority": "high"}
    refused = client.post("/runs", json=body, headers=bob)
    assert refused.status_code == 403, refused.text
    assert "allowance of high-priority GPUs is 0" in refused.json()["detail"]
    assert "users limits bob --high-gpus N" in refused.json()["detail"]
    low = client.post("/runs", json={**body, "priority": "low"}, headers=bob)  # open to everyone
    assert low.status_code == 201, low.text
    assert low.json()["priority"] == "low"
    assert client.post("/runs", json=body, headers=root).status_code == 201  # an admin always may
    # an admin gives carol an allowance of 1 GPU: a 2-GPU high run is refused, naming it
    granted = client.put("/users/carol/limits", json={"high_gpus": 1}, headers=root)
    assert granted.json()["limits"]["high_gpus"] == 1
    two = {**body, "overrides": ["accelerator=gpu", "devices=2", "+extra.fake_sleep=0"]}
    too_big = client.post("/runs", json=two, headers=carol)
    assert too_big.status_code == 422, too_big.text
    assert "allowance of high-priority GPUs (1)" in too_big.json()["detail"]
    one = client.post("/runs", json={**two, "overrides": ["accelerator=gpu", "devices=1"]}, headers=carol)
    assert one.status_code == 201, one.text
    sweep = client.post("/sweeps", json={"overrides": ["seed=1,2"], "priority": "high"}, headers=bob)
    assert sweep.status_code == 403, sweep.text
    sweep = client.post("/sweeps", json={"overrides": ["seed=1,2"], "priority": "low"}, headers=bob)
    assert sweep.status_code == 201, sweep.text
    names = [run["name"] for run in sweep.json()["runs"]]
    assert {client.get(f"/runs/{n}", headers=bob).json()["priority"] for n in names} == {"low"}
    bad = client.post("/runs", json={**body, "priority": "urgent"}, headers=bob)
    assert bad.status_code == 422
    assert client.get("/queue", headers=bob).json()["users"]["bob"]["limits"]["high_gpus"] == 0
