"""Auth as a hostile colleague would attack it (issue 20, security): auth never switches itself off, a
revoked token ends its open streams, and failed logins are throttled per client address and logged.
A real SQLite store and a real service process (real HTTP, real uvicorn) where the network matters."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import pytest
from service_helpers import ServiceProcess

from app.statedir import StateDir
from app.store import RunStore
from app.users import Users

SLEEP_LONG = "+extra.fake_sleep=30"


def _users(output_dir, **people: bool) -> dict[str, str]:
    store = RunStore(StateDir(output_dir).db)
    try:
        return {name: Users(store).add(name, admin=admin) for name, admin in people.items()}
    finally:
        store.close()


def _revoke(output_dir, name: str) -> None:
    store = RunStore(StateDir(output_dir).db)
    try:
        Users(store).revoke(name)
    finally:
        store.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_revoking_the_last_user_keeps_auth_on(output_dir, make_client):
    tokens = _users(output_dir, alice=True)
    client = make_client()
    run = client.post("/runs", json={"overrides": [SLEEP_LONG]}, headers=_bearer(tokens["alice"])).json()
    assert client.get("/users").status_code == 401
    _revoke(output_dir, "alice")
    time.sleep(1.5)  # longer than auth's own look-up interval: a switch-off would show by now
    assert client.get("/users").status_code == 401
    assert client.post(f"/runs/{run['name']}/cancel").status_code == 401
    assert client.get("/runs").status_code == 401
    assert client.get("/healthz").status_code == 200  # probes need no token


def test_a_store_that_had_users_starts_with_auth_on_and_refuses_open_exposure(output_dir):
    from service_helpers import make_settings

    from app.core.config import SettingsError
    from app.main import create_app

    _users(output_dir, alice=False)
    _revoke(output_dir, "alice")
    with pytest.raises(SettingsError, match="LABRUN_AUTH=off"):
        create_app(make_settings(output_dir, host="0.0.0.0", auth="off"))
    app = create_app(make_settings(output_dir, host="0.0.0.0"))  # auth stays on: no refusal
    assert app.state.auth.required()
    app.state.manager.store.close()


def test_auth_off_after_users_is_said_loudly_at_start(output_dir):
    _users(output_dir, alice=False)
    svc = ServiceProcess(output_dir, LABRUN_AUTH="off").start()
    try:
        assert httpx.get(f"{svc.url}/users").status_code == 200  # the admin opened it on purpose
    finally:
        svc.stop()
    log = svc.log()
    assert "WARNING" in log
    assert "LABRUN_AUTH=off" in log
    assert "1 user" in log


def test_a_revoked_token_ends_its_open_log_stream_within_2_s(output_dir):
    tokens = _users(output_dir, alice=False)
    svc = ServiceProcess(output_dir).start()
    try:
        headers = _bearer(tokens["alice"])
        run = httpx.post(f"{svc.url}/runs", json={"overrides": [SLEEP_LONG]}, headers=headers).json()
        ended = threading.Event()
        with httpx.stream(
            "GET", f"{svc.url}/runs/{run['name']}/logs?follow=true", headers=headers, timeout=30
        ) as stream:

            def read() -> None:
                for _ in stream.iter_raw():
                    pass
                ended.set()

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            time.sleep(1.0)
            assert not ended.is_set()  # streaming while the token is good
            _revoke(output_dir, "alice")
            revoked_at = time.monotonic()
            assert ended.wait(10)
            assert time.monotonic() - revoked_at <= 2.5
        assert httpx.get(f"{svc.url}/runs", headers=headers).status_code == 401
    finally:
        svc.stop()


def test_failed_logins_are_throttled_per_address_and_logged(output_dir):
    tokens = _users(output_dir, alice=False)
    svc = ServiceProcess(output_dir, LABRUN_LOGIN_FAILURES_PER_MINUTE="10").start()
    try:
        with httpx.Client(base_url=svc.url) as client:
            codes = [client.get("/runs", headers=_bearer(f"alice.wrong{i}")).status_code for i in range(30)]
            assert codes[:10] == [401] * 10
            assert set(codes[10:]) == {429}
            last = client.get("/runs", headers=_bearer("mallory.guess"))
            assert last.status_code == 429
            assert 1 <= int(last.headers["Retry-After"]) <= 60
            assert client.get("/runs").status_code == 401  # no token guesses nothing: never throttled
            # a valid token from the same address is never throttled
            assert client.get("/runs", headers=_bearer(tokens["alice"])).status_code == 200
    finally:
        svc.stop()
    log = svc.log()
    assert "failed login from 127.0.0.1" in log
    assert "throttling 127.0.0.1" in log
    assert tokens["alice"].split(".")[1] not in log
    assert "wrong1" not in log


def test_the_throttle_trusts_a_forwarded_address_only_from_a_named_proxy():
    from app.api.auth import LoginThrottle

    throttle = LoginThrottle(failures_per_minute=2, trusted_proxies=("10.0.0.5",))
    # from the named proxy: the client is the last address the proxy added
    assert throttle.client_address("10.0.0.5", "1.2.3.4, 6.6.6.6") == "6.6.6.6"
    assert throttle.client_address("10.0.0.5", None) == "10.0.0.5"
    # from anyone else the header is the caller's own claim: ignored
    assert throttle.client_address("6.6.6.6", "1.2.3.4") == "6.6.6.6"
    now = 1000.0
    assert throttle.failed("a", now) is False
    assert throttle.retry_after("a", now) is None
    assert throttle.failed("a", now + 1) is True  # its limit: the next try is refused ...
    assert throttle.retry_after("a", now + 2) == pytest.approx(58.0)  # ... until the first is a minute old
    assert throttle.retry_after("b", now + 2) is None  # another address is not locked out
    assert throttle.retry_after("a", now + 61) is None  # the window moved on


def test_the_throttle_keeps_bounded_memory():
    from app.api.auth import LoginThrottle

    throttle = LoginThrottle(failures_per_minute=5, max_addresses=100)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}", 1000.0 + i * 0.001)
    assert len(throttle) <= 100


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level(logging.WARNING)
