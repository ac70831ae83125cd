"""/reservations through the HTTP API of an in-process service with users and tokens: booking in RFC 3339,
the GPU ids shown at once, refusals with their reason and status, ending early, admins' grants."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from test_users_and_fair_share import bearer, make_users


@pytest.fixture
def team(output_dir, make_client):
    tokens = make_users(output_dir, alice=False, bob=False, root=True)
    client = make_client(gpus=(0, 1, 2, 3), reserve_gpu_hours=8.0)
    return client, {name: bearer(token) for name, token in tokens.items()}


NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)  # (windows of whole hours: exact GPU-hours)


def at(hours: float) -> str:
    """A time ``hours`` from now, RFC 3339 with an offset (+01:00, not the server's own)."""
    when = NOW + dt.timedelta(hours=hours)
    return when.astimezone(dt.timezone(dt.timedelta(hours=1))).isoformat()


def test_a_booking_gets_its_gpu_ids_at_once_and_is_listed(team):
    client, as_ = team
    made = client.post(
        "/reservations", json={"gpus": 2, "start": at(24), "end": at(26)}, headers=as_["alice"]
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["owner"], body["users"], body["gpus"], body["phase"]) == (
        "alice",
        ["alice"],
        [0, 1],
        "upcoming",
    )
    assert body["gpu_hours"] == pytest.approx(4.0)
    for_team = client.post(
        "/reservations",
        json={"gpus": [3], "start": at(25), "end": at(27), "users": ["alice", "bob"], "note": "deadline"},
        headers=as_["bob"],
    )
    assert for_team.status_code == 201, for_team.text
    listed = client.get("/reservations", headers=as_["bob"]).json()
    assert [(r["id"], r["gpus"]) for r in listed["data"]] == [
        (2, [3]),
        (1, [0, 1]),
    ]  # the latest window first
    assert listed["grant"]["gpu_hours"] == 8.0
    assert client.get("/reservations", headers=as_["root"]).json()["grant"] is None  # an admin: no bound


def test_refusals_say_why(team):
    client, as_ = team
    alice = as_["alice"]
    naive = client.post(
        "/reservations", json={"gpus": 1, "start": "2030-01-01T14:00", "end": at(2)}, headers=alice
    )
    assert naive.status_code == 422
    assert "start" in naive.json()["detail"]
    past = client.post("/reservations", json={"gpus": 1, "start": at(-3), "end": at(-1)}, headers=alice)
    assert (past.status_code, "in the past" in past.json()["detail"]) == (422, True)
    over = client.post("/reservations", json={"gpus": 4, "start": at(1), "end": at(4)}, headers=alice)
    assert over.status_code == 422
    assert "12 GPU-hours asked, over your grant of 8" in over.json()["detail"]
    assert (
        client.post(
            "/reservations", json={"gpus": 4, "start": at(1), "end": at(3)}, headers=alice
        ).status_code
        == 201
    )
    clash = client.post("/reservations", json={"gpus": 1, "start": at(2), "end": at(5)}, headers=as_["bob"])
    assert clash.status_code == 409
    assert "only 0 of this server's 4" in clash.json()["detail"]
    nobody = client.post(
        "/reservations", json={"gpus": 1, "start": at(9), "end": at(10), "users": ["zed"]}, headers=alice
    )
    assert (nobody.status_code, "no user named 'zed'" in nobody.json()["detail"]) == (422, True)


def test_the_owner_or_an_admin_ends_one_early_and_admins_set_grants(team):
    client, as_ = team
    made = client.post(
        "/reservations", json={"gpus": 1, "start": at(1), "end": at(2)}, headers=as_["alice"]
    ).json()
    assert client.delete(f"/reservations/{made['id']}", headers=as_["bob"]).status_code == 403
    ended = client.post(f"/reservations/{made['id']}/end", headers=as_["alice"])
    assert (ended.status_code, ended.json()["phase"], ended.json()["ended_by"]) == (200, "over", "alice")
    assert client.delete(f"/reservations/{made['id']}", headers=as_["root"]).status_code == 409
    assert client.get("/reservations", headers=as_["alice"]).json()["count"] == 0
    assert client.get("/reservations", params={"all": True}, headers=as_["alice"]).json()["count"] == 1
    grant = {"gpu_hours": 100, "max_window_s": 7200, "ahead_s": None}
    assert client.put("/users/bob/reservation-grant", json=grant, headers=as_["bob"]).status_code == 403
    set_ = client.put("/users/bob/reservation-grant", json=grant, headers=as_["root"])
    assert set_.json()["grant"] == {"gpu_hours": 100.0, "max_window_s": 7200.0, "ahead_s": 14 * 24 * 3600.0}
    long = client.post("/reservations", json={"gpus": 4, "start": at(1), "end": at(4)}, headers=as_["bob"])
    assert "longest window of 2 h" in long.json()["detail"]


def test_an_admin_sets_a_grant_on_the_server_too(output_dir, monkeypatch, capsys):
    from app.admin import main

    make_users(output_dir, carol=False)
    monkeypatch.setenv("LABRUN_OUTPUT_DIR", str(output_dir))
    assert main(["grant", "carol", "--gpu-hours", "10", "--ahead", "3600"]) == 0
    assert capsys.readouterr().out.strip() == "carol: gpu_hours=10.0 max_window_s=None ahead_s=3600.0"
    assert main(["grant", "carol", "--max-window", "600"]) == 0  # the others are kept
    assert "gpu_hours=10.0 max_window_s=600.0 ahead_s=3600.0" in capsys.readouterr().out
    assert main(["grant", "carol", "--clear"]) == 0
    assert "gpu_hours=None max_window_s=None ahead_s=None" in capsys.readouterr().out
    assert main(["grant", "nobody", "--gpu-hours", "1"]) == 2


def test_a_run_on_gpus_reserved_later_cannot_be_given_time_into_the_window(output_dir, make_client):
    from service_process import wait_until

    tokens = make_users(output_dir, alice=False, bob=False)
    alice, bob = bearer(tokens["alice"]), bearer(tokens["bob"])
    client = make_client(gpus=(0,), reserve_gpu_hours=8.0)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)  # (not the module's NOW: minutes may have passed)
    window = {
        "start": (now + dt.timedelta(hours=1)).isoformat(),
        "end": (now + dt.timedelta(hours=2)).isoformat(),
    }
    booked = client.post("/reservations", json={"gpus": 1, **window}, headers=bob)
    assert booked.status_code == 201, booked.text
    # a normal run whose limit ends before bob's window may take the GPU meanwhile
    body = {"overrides": ["accelerator=gpu", "devices=1", "+extra.fake_sleep=60"], "time_limit": "30m"}
    run = client.post("/runs", json=body, headers=alice).json()
    started = wait_until(
        lambda: (r := client.get(f"/runs/{run['name']}", headers=alice).json())["status"] == "running" and r,
        what="the run to start",
    )
    assert started["gpus"] == [0]
    into = client.post(f"/runs/{run['name']}/time-limit", json={"extend_by": "1h"}, headers=alice)
    assert into.status_code == 409, into.text
    assert "holds GPU 0, reserved for bob from" in into.json()["detail"]
    # the window's start (an hour away, to the second) less the grace of 5 min, less the moment this took
    assert re.search(
        r"its time limit may end at most (54 min( \d+ s)?|55 min) from now", into.json()["detail"]
    )
    assert (
        client.post(f"/runs/{run['name']}/time-limit", json={"extend_by": "10m"}, headers=alice).status_code
        == 200
    )
    client.post(f"/runs/{run['name']}/cancel", headers=alice)
