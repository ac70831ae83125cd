"""The polls answered before routing (app/api/polls.py) and what they keep (issue 22): the same answers as
their routes, byte for byte; a revoked token refused on the very next request; a status change seen on the
very next poll; everything else handed to the routes. A real store, a real app, real runs (the fake trainer).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.models import RunStatus
from app.statedir import StateDir
from app.store import RunStore
from app.users import Users

QUICK = "+extra.fake_sleep=0.3"
LONG = "+extra.fake_sleep=30"


def _add_users(output_dir: Path, **people: bool) -> dict[str, str]:
    store = RunStore(StateDir(output_dir).db)
    try:
        return {name: Users(store).add(name, admin=admin) for name, admin in people.items()}
    finally:
        store.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _both_ways(client, path: str, headers: dict[str, str]) -> tuple:
    """(status, content type, content length, body) of ``path`` answered before routing and by its route."""
    answers = []
    for fast in (True, False):
        client.app.state.fast_polls = fast
        r = client.get(path, headers=headers)
        answers.append((r.status_code, r.headers["content-type"], r.headers["content-length"], r.content))
    client.app.state.fast_polls = True
    return answers[0], answers[1]


def test_polls_answer_as_their_routes(output_dir, make_client):
    tokens = _add_users(output_dir, alice=True)
    client = make_client(max_cpu_runs=1)
    auth = _bearer(tokens["alice"])
    names = [
        client.post("/runs", json={"overrides": [LONG, f"seed={i}"]}, headers=auth).json()["name"]
        for i in range(3)
    ]  # one running, two queued: queue positions, progress and the wait reason all show
    client.get("/queue", headers=auth)  # the queue's JSON kept: the next poll is answered before routing
    paths = [f"/runs/{n}" for n in names] + ["/runs", "/runs?limit=2", "/runs?limit=1000", "/queue"]
    for path in paths:
        fast, routed = _both_ways(client, path, auth)
        assert fast == routed, path
        assert fast[0] == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/runs/no-such-run", 404),
        ("/runs?limit=0", 422),
        ("/runs?limit=1001", 422),
        ("/runs?status=bogus", 422),
    ],
)
def test_what_is_not_a_plain_poll_goes_to_the_route(output_dir, make_client, path, status):
    tokens = _add_users(output_dir, alice=True)
    client = make_client()
    fast, routed = _both_ways(client, path, _bearer(tokens["alice"]))
    assert fast == routed
    assert fast[0] == status


def test_a_revoked_token_is_refused_on_the_very_next_poll(output_dir, make_client):
    tokens = _add_users(output_dir, alice=True, bob=False)
    client = make_client()
    run = client.post("/runs", json={"overrides": [LONG]}, headers=_bearer(tokens["alice"])).json()["name"]
    paths = [f"/runs/{run}", "/runs?limit=50", "/queue"]
    for path in paths:  # answered (and anything a cache would keep, kept)
        assert client.get(path, headers=_bearer(tokens["bob"])).status_code == 200
    store = RunStore(StateDir(output_dir).db)  # the admin's command line: another connection, no API call
    try:
        Users(store).revoke("bob")
    finally:
        store.close()
    for path in paths:
        r = client.get(path, headers=_bearer(tokens["bob"]))
        assert r.status_code == 401, path
        assert "revoked" in r.json()["detail"]


def test_a_wrong_token_is_refused_and_counted_by_the_route(output_dir, make_client, caplog):
    _add_users(output_dir, alice=True)
    client = make_client()
    caplog.set_level("WARNING", logger="labrun.auth")
    for path in ("/runs/x", "/runs", "/queue"):
        assert client.get(path, headers=_bearer("alice.wrong")).status_code == 401
        assert client.get(path).status_code == 401
    assert sum("failed login" in r.message for r in caplog.records) == 3  # the no-token tries guess nothing


def _store_status(output_dir: Path, name: str) -> RunStatus:
    """The run's status as the store file holds it (another connection: what the service wrote)."""
    store = RunStore(StateDir(output_dir).db)
    try:
        record = store.get(name)
        assert record is not None
        return record.status
    finally:
        store.close()


def test_a_status_change_is_seen_on_the_very_next_poll(output_dir, make_client):
    tokens = _add_users(output_dir, alice=True)
    client = make_client()
    auth = _bearer(tokens["alice"])
    name = client.post("/runs", json={"overrides": [QUICK]}, headers=auth).json()["name"]
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stored = _store_status(output_dir, name)  # first the store, then the polls: never behind it
        one = client.get(f"/runs/{name}", headers=auth).json()["status"]
        page = {r["name"]: r["status"] for r in client.get("/runs?limit=50", headers=auth).json()["data"]}
        queue = client.get("/queue", headers=auth).json()["users"].get("alice", {"running": [], "queued": []})
        in_queue = {r["name"] for r in queue["running"] + queue["queued"]}
        seen.add(one)
        if stored.is_terminal():
            assert one == page[name] == stored.value
            assert name not in in_queue
            break
        if stored == RunStatus.RUNNING:
            assert one in ("running", "succeeded")
            assert page[name] in ("running", "succeeded")
        time.sleep(0.01)
    else:
        pytest.fail(f"{name} did not end")
    assert "running" in seen


def test_a_store_read_is_kept_only_until_the_next_write(tmp_path):
    from service_helpers import queued_record

    store = RunStore(tmp_path / "runs.db")
    try:
        store.insert(queued_record("a"))
        first = store.get("a")
        assert first is not None
        assert store.get("a") is first  # asked again, nothing written: the same record
        store.finish("a", [RunStatus.QUEUED], RunStatus.CANCELLED, reason="test")
        after = store.get("a")
        assert after is not None
        assert after.status == RunStatus.CANCELLED
        assert [r.name for r in store.list([RunStatus.CANCELLED])] == ["a"]
        store.insert(queued_record("b"))
        assert [r.name for r in store.list()] == ["b", "a"]  # a new run shows on the next page
    finally:
        store.close()


def test_plain_polls_do_not_reach_the_routes(output_dir, make_client, monkeypatch):
    """The shorter way is taken (else the comparisons above would compare the route with itself)."""
    from app.api.routes import runs as routes

    def unreachable(*_args: object) -> None:
        raise AssertionError("the route was reached")

    tokens = _add_users(output_dir, alice=True)
    client = make_client()
    auth = _bearer(tokens["alice"])
    name = client.post("/runs", json={"overrides": [LONG]}, headers=auth).json()["name"]
    monkeypatch.setattr(routes, "get_run", unreachable)
    monkeypatch.setattr(routes, "_statuses", unreachable)
    assert client.get(f"/runs/{name}", headers=auth).status_code == 200
    assert client.get("/runs?limit=5", headers=auth).status_code == 200
    client.app.state.fast_polls = False
    assert client.get(f"/runs/{name}", headers=auth).status_code == 500
